//! What the examples' and benchmarks' command lines share (`#[path]`-included): `clap` parsing
//! whose usage errors are one line on stderr with exit code 2, value parsers that name the
//! bad value, and the flags that stand for the library's options in its error messages.

#![allow(dead_code)]

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use clap::builder::{OsStringValueParser, TypedValueParser};

/// Lets a closed standard output end the program quietly, as Unix tools do (`example | head`):
/// Rust ignores `SIGPIPE`, so `println!` would panic on the closed pipe instead.
pub fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Parses the process's arguments as `T`. `--help` prints the help generated from `T`'s doc
/// comments and ends the program successfully; a usage error is one line on stderr,
/// `error: ... (see --help)`, and exit code 2.
pub fn parse<T: Parser>() -> Result<T, ExitCode> {
    parse_from(std::env::args_os())
}

/// [`parse`] over `args` (the program name first).
pub fn parse_from<T: Parser>(args: impl IntoIterator<Item = OsString>) -> Result<T, ExitCode> {
    T::try_parse_from(args).map_err(|e| {
        if e.use_stderr() {
            eprintln!("error: {} (see --help)", one_line(&e));
            ExitCode::from(2)
        } else {
            // `--help`: the help on stdout.
            let _ = e.print();
            ExitCode::SUCCESS
        }
    })
}

/// [`parse`], ending the program itself on `--help` (exit code 0) or a usage error (exit code
/// 2, one line on stderr).
pub fn parse_or_exit<T: Parser>() -> T {
    match parse_from(std::env::args_os()) {
        Ok(args) => args,
        Err(code) => std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 2 }),
    }
}

/// clap's message without its usage paragraph and its "For more information" line, on one
/// line: the error, then any tips after "; " (a line ending in ':' runs on into the next, and
/// a "[possible values: ...]" line into the one before).
pub fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut out = String::new();
    let mut in_usage = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            in_usage = false;
        } else if line.starts_with("Usage:") {
            in_usage = true;
        } else if !in_usage && !line.starts_with("For more information") {
            if out.ends_with(':') || line.starts_with('[') {
                out.push(' ');
            } else if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    out
}

/// A value that must be valid UTF-8; the error names it (lossily) rather than only saying
/// that some argument was not.
pub fn utf8() -> impl TypedValueParser<Value = String> {
    OsStringValueParser::new().try_map(|v: OsString| {
        v.into_string()
            .map_err(|v| format!("'{}' is not valid UTF-8", v.to_string_lossy()))
    })
}

/// A whole number of at least 1 (`usize`, `u32`, ...).
pub fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(value: &str) -> Result<T, String> {
    match value.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err("expected a whole number of at least 1".into()),
    }
}

/// The library's error, with the command-line flag for each library option it names (the
/// library names its API, e.g. `TutorialOptions::batch_size`; `flags` maps such names to
/// flags, e.g. `("batch_size", "--batch-size")`).
pub fn with_flags(message: String, flags: &[(&str, &str)]) -> String {
    let mut named: Vec<&str> = Vec::new();
    for (api, flag) in flags {
        if message.contains(api) && !named.contains(flag) {
            named.push(flag);
        }
    }
    if named.is_empty() {
        message
    } else {
        format!("{message} (on the command line: {})", named.join(", "))
    }
}

/// A device name: `auto`, `flex`, `ndarray`, `wgpu[:N]` or `cuda[:N]` (`finetune::DeviceChoice`).
pub fn device(value: &str) -> Result<finetune::DeviceChoice, String> {
    value.parse().map_err(|e: finetune::Error| e.to_string())
}

/// A float type: `f32`, `bf16` or `f16` (`finetune::Precision`).
pub fn precision(value: &str) -> Result<finetune::Precision, String> {
    value.parse().map_err(|e: finetune::Error| e.to_string())
}
