//! A tiny dependency-free command-line parser shared by the examples (`#[path]`-included):
//! `--flag value`, `--flag=value` and boolean `--switch`, with typed getters and errors that
//! name the flag.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::str::FromStr;

/// Parsed arguments: flags with values, switches, and positional arguments.
pub struct Args {
    values: BTreeMap<String, String>,
    /// The values as given (paths need not be UTF-8); `values` holds them lossily.
    values_os: BTreeMap<String, OsString>,
    switches: Vec<String>,
    /// Arguments that are not flags, in order.
    pub positional: Vec<String>,
}

impl Args {
    /// Parses `std::env::args_os()` (values need not be UTF-8: see [`path`](Self::path)).
    /// `switches` lists the flags that take no value.
    pub fn parse(switches: &[&str]) -> Result<Self, String> {
        Self::parse_os_from(std::env::args_os().skip(1), switches)
    }

    /// Parses `args` (without the program name), keeping each value as given.
    pub fn parse_os_from(
        args: impl IntoIterator<Item = OsString>,
        switches: &[&str],
    ) -> Result<Self, String> {
        let args: Vec<OsString> = args.into_iter().collect();
        let mut out = Self::parse_from(
            args.iter().map(|a| a.to_string_lossy().into_owned()),
            switches,
        )?;
        // Same walk as `parse_from`, recording the raw values.
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let lossy = arg.to_string_lossy().into_owned();
            let Some(flag) = lossy.strip_prefix("--") else {
                continue;
            };
            if let Some((k, _)) = flag.split_once('=') {
                // The value starts after "--", the key and "=" (all UTF-8, so byte offsets agree).
                let value = os_suffix(&arg, 2 + k.len() + 1)
                    .unwrap_or_else(|| OsString::from(&flag[k.len() + 1..]));
                out.values_os.insert(k.to_string(), value);
            } else if !(switches.contains(&flag) || flag == "help")
                && let Some(v) = it.next()
            {
                out.values_os.insert(flag.to_string(), v);
            }
        }
        Ok(out)
    }

    /// Parses `args` (without the program name).
    pub fn parse_from(
        args: impl IntoIterator<Item = String>,
        switches: &[&str],
    ) -> Result<Self, String> {
        let mut out = Args {
            values: BTreeMap::new(),
            values_os: BTreeMap::new(),
            switches: Vec::new(),
            positional: Vec::new(),
        };
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            if let Some(flag) = arg.strip_prefix("--") {
                if let Some((k, v)) = flag.split_once('=') {
                    out.values.insert(k.to_string(), v.to_string());
                } else if switches.contains(&flag) || flag == "help" {
                    out.switches.push(flag.to_string());
                } else {
                    let v = it.next().ok_or(format!("--{flag} needs a value"))?;
                    out.values.insert(flag.to_string(), v);
                }
            } else if arg == "-h" {
                out.switches.push("help".into());
            } else {
                out.positional.push(arg);
            }
        }
        Ok(out)
    }

    /// Whether `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    /// The raw value of `--name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `--name` as a path, exactly as given (need not be UTF-8).
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.values_os
            .get(name)
            .map(PathBuf::from)
            .or_else(|| self.get(name).map(PathBuf::from))
    }

    /// The value of `--name` parsed as `T`, if given.
    pub fn opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("--{name}: cannot parse '{v}'"))
            })
            .transpose()
    }

    /// The value of `--name` parsed as `T`, or `default`.
    pub fn or<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        Ok(self.opt(name)?.unwrap_or(default))
    }

    /// Fails on flags not in `known` (typos).
    pub fn reject_unknown(&self, known: &[&str]) -> Result<(), String> {
        for k in self.values.keys().chain(self.switches.iter()) {
            if k != "help" && !known.contains(&k.as_str()) {
                return Err(format!("unknown flag --{k}"));
            }
        }
        Ok(())
    }
}

/// The part of `arg` from byte `at` on, when `arg` is valid in the platform's encoding there.
#[cfg(unix)]
fn os_suffix(arg: &OsStr, at: usize) -> Option<OsString> {
    use std::os::unix::ffi::OsStrExt;
    arg.as_bytes()
        .get(at..)
        .map(|b| OsStr::from_bytes(b).to_os_string())
}

#[cfg(not(unix))]
fn os_suffix(_arg: &OsStr, _at: usize) -> Option<OsString> {
    None
}
