//! Strict loading reports, after burn-store's `ApplyResult`: what was applied, and every
//! missing, unused or mis-shaped key, returned as a typed error rather than printed and ignored.

use std::fmt;

use burn::store::{ApplyError, ApplyResult};

use super::pickle::short_list;

/// What a successful load applied, skipped and ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Model paths that received a tensor from the file.
    pub applied: Vec<String>,
    /// Model paths deliberately left as initialised (for example `fc.*` with
    /// `load_backbone`).
    pub skipped: Vec<String>,
    /// File keys deliberately ignored (`num_batches_tracked`).
    pub ignored: Vec<String>,
    /// Where in a checkpoint dict the state_dict was found (`model`, `state_dict`, dotted when
    /// nested); `None` when the file's root is the state_dict.
    pub key: Option<String>,
    /// The wrapper prefix stripped from every key (`module.` from `nn.DataParallel`/DDP,
    /// Lightning's `model.`, `torch.compile`'s `_orig_mod.`), if any.
    pub stripped_prefix: Option<String>,
    /// Entries of the file that are not tensors of the loaded state_dict, described
    /// (`epoch = 10`, `optimizer: dict with 40 tensors`): never loaded, never silently dropped.
    pub other_entries: Vec<String>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "applied {} tensors", self.applied.len())?;
        if !self.skipped.is_empty() {
            write!(f, "; left as initialised: {}", self.skipped.join(", "))?;
        }
        if !self.ignored.is_empty() {
            write!(f, "; ignored {} file keys", self.ignored.len())?;
            let suffixes: std::collections::BTreeSet<&str> = self
                .ignored
                .iter()
                .map(|k| k.rsplit('.').next().unwrap_or(k))
                .collect();
            let suffixes: Vec<&str> = suffixes.into_iter().collect();
            write!(f, " ({})", suffixes.join(", "))?;
        }
        if let Some(key) = &self.key {
            write!(f, "; state_dict read from key '{key}'")?;
        }
        if let Some(prefix) = &self.stripped_prefix {
            write!(f, "; stripped the prefix '{prefix}' from every key")?;
        }
        if !self.other_entries.is_empty() {
            write!(
                f,
                "; not loaded (not tensors of the state_dict): {}",
                short_list(&self.other_entries, 10)
            )?;
        }
        Ok(())
    }
}

/// Why a load was refused: the file and the model disagree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadMismatch {
    /// Model tensors the file does not provide.
    pub missing: Vec<String>,
    /// File tensors the model has no place for.
    pub unused: Vec<String>,
    /// `(path, model shape, file shape)` for tensors whose shapes differ.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Other per-tensor failures (dtype, decoding).
    pub other: Vec<String>,
}

impl LoadMismatch {
    /// Whether nothing disagrees.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unused.is_empty()
            && self.mismatched.is_empty()
            && self.other.is_empty()
    }
}

/// One `; title (n): a, b, ... and k more` part of the one-line mismatch message.
fn list(f: &mut fmt::Formatter<'_>, title: &str, items: &[String]) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 10;
    write!(f, "; {title} ({}): ", items.len())?;
    let shown: Vec<&str> = items.iter().take(SHOWN).map(String::as_str).collect();
    write!(f, "{}", shown.join(", "))?;
    if items.len() > SHOWN {
        write!(f, ", ... and {} more", items.len() - SHOWN)?;
    }
    Ok(())
}

impl fmt::Display for LoadMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the weights do not fit the model")?;
        let shapes: Vec<String> = self
            .mismatched
            .iter()
            .map(|(p, m, w)| format!("{p} (model {m:?}, file {w:?})"))
            .collect();
        list(f, "mis-shaped", &shapes)?;
        list(f, "missing from the file", &self.missing)?;
        list(f, "unused in the file", &self.unused)?;
        list(f, "other errors", &self.other)
    }
}

impl std::error::Error for LoadMismatch {}

impl LoadReport {
    /// Turns burn-store's result into a report, or a [`LoadMismatch`] when anything is missing,
    /// unused or mis-shaped. Keys matching one of `ignored_suffixes` (for example
    /// `num_batches_tracked`) are reported as ignored rather than unused; model paths a filter
    /// excluded are reported as skipped.
    pub fn strict(result: ApplyResult, ignored_suffixes: &[&str]) -> Result<Self, LoadMismatch> {
        let mut mismatch = LoadMismatch {
            missing: result.missing.into_iter().map(|(path, _)| path).collect(),
            ..Default::default()
        };
        let skipped = result.skipped;
        let mut ignored = Vec::new();
        for key in result.unused {
            if ignored_suffixes.iter().any(|s| key.ends_with(s)) {
                ignored.push(key);
            } else {
                mismatch.unused.push(key);
            }
        }
        for error in result.errors {
            match error {
                ApplyError::ShapeMismatch {
                    path,
                    expected,
                    found,
                } => mismatch
                    .mismatched
                    .push((path, expected.to_vec(), found.to_vec())),
                other => mismatch.other.push(other.to_string()),
            }
        }
        if mismatch.is_empty() {
            Ok(LoadReport {
                applied: result.applied,
                skipped,
                ignored,
                ..LoadReport::default()
            })
        } else {
            Err(mismatch)
        }
    }
}
