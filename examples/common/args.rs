//! A tiny dependency-free command-line parser shared by the examples (`#[path]`-included):
//! `--flag value`, `--flag=value` and boolean `--switch`, with typed getters and errors that
//! name the flag.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::str::FromStr;

/// Parsed arguments: flags with values, switches, and positional arguments.
pub struct Args {
    values: BTreeMap<String, String>,
    switches: Vec<String>,
    /// Arguments that are not flags, in order.
    pub positional: Vec<String>,
}

impl Args {
    /// Parses `std::env::args()`. `switches` lists the flags that take no value.
    pub fn parse(switches: &[&str]) -> Result<Self, String> {
        Self::parse_from(std::env::args().skip(1), switches)
    }

    /// Parses `args` (without the program name).
    pub fn parse_from(
        args: impl IntoIterator<Item = String>,
        switches: &[&str],
    ) -> Result<Self, String> {
        let mut out = Args {
            values: BTreeMap::new(),
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
