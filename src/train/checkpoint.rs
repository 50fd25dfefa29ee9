//! Checkpoints written atomically every epoch, so an interrupted run resumes exactly: model
//! (with its freeze state), best model, optimizer state (Burn's `OptimizerRecord`, keyed by the
//! parameter ids that burnpack preserves), scheduler state, and the loop's own state (epoch,
//! best metric, history, seed). The whole directory is written next to the previous one and
//! swapped in with renames; a crash mid-write leaves the last good checkpoint intact.

use std::fs;
use std::path::{Path, PathBuf};

use burn::lr_scheduler::LrSchedulerRecord;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::config::LearnerConfig;
use super::history::History;
use crate::model::VisionModel;

const MODEL: &str = "model.bpk";
const BEST: &str = "best.bpk";
const OPTIMIZER: &str = "optimizer.bpk";
const SCHEDULER: &str = "scheduler.bpk";
const STATE: &str = "state.json";
/// The model EMA's weights, in runs with EMA on.
const EMA: &str = "ema.bpk";
const LOCK: &str = ".lock";
/// The files of a complete checkpoint, each recorded with its SHA-256 in the state.
const FILES: [&str; 4] = [MODEL, BEST, OPTIMIZER, SCHEDULER];

/// The files of a checkpoint besides its state, sorted as `LoopState::files`'s keys: [`FILES`],
/// and the EMA's weights when the run keeps an EMA.
fn sorted_files(ema: bool) -> Vec<&'static str> {
    let mut files: Vec<&str> = FILES.to_vec();
    if ema {
        files.push(EMA);
    }
    files.sort_unstable();
    files
}
/// Files a run writes besides its checkpoint: their presence means a previous run.
const OUTPUTS: [&str; 5] = [
    "history.json",
    "history.csv",
    "config.json",
    "best_model.bpk",
    "summary.json",
];

/// Writes `bytes` to `path` atomically (a fresh temporary file in the same directory, then a
/// rename; never through a symlink planted at `path`), creating the directory first.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| TrainError::io("creating", parent, e))?;
    }
    crate::fsutil::write_atomic(path, bytes).map_err(|e| TrainError::io("writing", path, e))
}

/// An exclusive lock on a run directory, held while a run writes into it (released on drop).
#[derive(Debug)]
pub(crate) struct RunLock {
    _file: fs::File,
}

/// Creates `run_dir` if needed and locks it (`<run>/.lock`) for this process, or fails at once
/// when another run holds it.
pub(crate) fn lock_run_dir(run_dir: &Path) -> Result<RunLock, TrainError> {
    fs::create_dir_all(run_dir).map_err(|e| TrainError::io("creating", run_dir, e))?;
    let path = run_dir.join(LOCK);
    let file = crate::fsutil::open_lock_file(&path)
        .map_err(|e| TrainError::io("opening the lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(TrainError::RunDirInUse {
            path: run_dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(TrainError::io("locking", &path, e)),
    }
}

/// The training loop's own state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LoopState {
    /// Epochs completed (the next epoch to run is `epochs_done + 1`).
    pub epochs_done: usize,
    /// Best monitored metric so far.
    pub best_metric: f64,
    /// Epochs since the monitored metric last improved.
    pub stale_epochs: usize,
    /// Everything recorded so far.
    pub history: History,
    /// The configuration of the run (resuming checks it is compatible).
    pub config: LearnerConfig,
    /// Number of scheduler units consumed so far.
    pub schedule_steps: usize,
    /// Updates applied to the model EMA so far (0 without EMA).
    #[serde(default)]
    pub ema_updates: u64,
    /// The training source's [`signature`](super::BatchSource::signature), when it has one.
    #[serde(default)]
    pub train_data: Option<String>,
    /// SHA-256 (hex) of each of the checkpoint's other files, written last. Empty in
    /// checkpoints written before checksums were recorded (those are checked for presence only).
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
}

impl LoopState {
    /// The state agrees with itself: one history record per epoch done, epochs numbered from 1,
    /// and the best epoch among them.
    fn check_consistent(&self) -> Result<(), String> {
        let records = &self.history.epochs;
        if records.len() != self.epochs_done {
            return Err(format!(
                "it says {} epochs are done but its history holds {}",
                self.epochs_done,
                records.len()
            ));
        }
        if let Some((i, r)) = records.iter().enumerate().find(|(i, r)| r.epoch != i + 1) {
            return Err(format!(
                "history record {} is numbered epoch {}",
                i + 1,
                r.epoch
            ));
        }
        if self.history.best_epoch > self.epochs_done {
            return Err(format!(
                "its best epoch ({}) is after its last epoch ({})",
                self.history.best_epoch, self.epochs_done
            ));
        }
        if self.stale_epochs > self.epochs_done {
            return Err(format!(
                "{} epochs without improvement out of {} done",
                self.stale_epochs, self.epochs_done
            ));
        }
        Ok(())
    }
}

/// Everything a resumed run needs.
pub(crate) struct Checkpoint<M> {
    pub model: M,
    pub best: M,
    /// The model EMA's weights, in runs with EMA on.
    pub ema: Option<M>,
    pub optimizer: OptimizerRecord,
    pub scheduler: LrSchedulerRecord,
    pub state: LoopState,
}

/// `<run>/checkpoint`.
pub fn checkpoint_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint")
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Writes a complete checkpoint into a fresh `<run>/.checkpoint.<random>.tmp`, then swaps it in.
pub(crate) fn save<M: VisionModel>(
    run_dir: &Path,
    model: &M,
    best: &M,
    ema: Option<&M>,
    optimizer: &ModuleOptimizer,
    scheduler: &ModuleLrScheduler,
    state: &LoopState,
) -> Result<(), TrainError> {
    let dir = checkpoint_dir(run_dir);
    let old = sibling(&dir, ".old");
    fs::create_dir_all(run_dir).map_err(|e| TrainError::io("creating", run_dir, e))?;
    // The caller holds the run directory's lock: a temporary directory left here is a crashed
    // writer's.
    crate::fsutil::remove_stale_temps(&dir, "tmp");
    let tmp = crate::fsutil::create_temp_dir_beside(&dir, "tmp")
        .map_err(|e| TrainError::io("creating a temporary directory in", run_dir, e))?;
    let written = write_files(&tmp, model, best, ema, optimizer, scheduler, state);
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }

    // Swap: checkpoint -> checkpoint.old, the new directory -> checkpoint, drop the old one.
    // When `checkpoint` is missing (a crash between the two renames), `.old` is the only
    // checkpoint: it stays until the new one is in place. (`remove_dir_all` removes a symlink
    // itself, never what it points to.)
    if fs::symlink_metadata(&dir).is_ok() {
        if fs::symlink_metadata(&old).is_ok() {
            fs::remove_dir_all(&old).map_err(|e| TrainError::io("removing", &old, e))?;
        }
        fs::rename(&dir, &old).map_err(|e| TrainError::io("renaming", &dir, e))?;
    }
    fs::rename(&tmp, &dir).map_err(|e| TrainError::io("renaming", &tmp, e))?;
    if fs::symlink_metadata(&old).is_ok() {
        fs::remove_dir_all(&old).map_err(|e| TrainError::io("removing", &old, e))?;
    }
    Ok(())
}

/// Writes every file of a checkpoint into the fresh directory `tmp`, the state (with the other
/// files' checksums) last.
fn write_files<M: VisionModel>(
    tmp: &Path,
    model: &M,
    best: &M,
    ema: Option<&M>,
    optimizer: &ModuleOptimizer,
    scheduler: &ModuleLrScheduler,
    state: &LoopState,
) -> Result<(), TrainError> {
    let record_err = |path: PathBuf| {
        move |e: burn::store::RecordError| TrainError::Checkpoint {
            path,
            reason: format!("writing failed: {e}"),
        }
    };
    model.save(tmp.join(MODEL)).map_err(TrainError::model)?;
    best.save(tmp.join(BEST)).map_err(TrainError::model)?;
    if let Some(ema) = ema {
        ema.save(tmp.join(EMA)).map_err(TrainError::model)?;
    }
    optimizer
        .to_record()
        .save(tmp.join(OPTIMIZER))
        .map_err(record_err(tmp.join(OPTIMIZER)))?;
    scheduler
        .to_record()
        .save(tmp.join(SCHEDULER))
        .map_err(record_err(tmp.join(SCHEDULER)))?;
    let mut state = state.clone();
    state.files = sorted_files(ema.is_some())
        .into_iter()
        .map(|name| {
            let path = tmp.join(name);
            sha256_hex(&path).map(|digest| (name.to_string(), digest))
        })
        .collect::<Result<_, _>>()?;
    let json = serde_json::to_vec_pretty(&state)
        .map_err(|e| TrainError::Config(format!("serialising checkpoint state: {e}")))?;
    write_atomic(&tmp.join(STATE), &json)
}

fn sha256_hex(path: &Path) -> Result<String, TrainError> {
    crate::download::sha256_file(path).map_err(|e| TrainError::io("reading", path, e))
}

/// The directory holding the last checkpoint, if any: `checkpoint`, or `checkpoint.old` when a
/// crash interrupted the swap. A checkpoint directory that exists but lacks one of its files (or
/// whose files are not regular files) is an error, so that a damaged run is never silently
/// restarted over what survives of it.
pub(crate) fn latest(run_dir: &Path) -> Result<Option<PathBuf>, TrainError> {
    let dir = checkpoint_dir(run_dir);
    let old = sibling(&dir, ".old");
    for candidate in [&dir, &old] {
        if fs::symlink_metadata(candidate).is_err() {
            continue;
        }
        let missing: Vec<&str> = [STATE]
            .iter()
            .chain(FILES.iter())
            .copied()
            .filter(|name| !candidate.join(name).is_file())
            .collect();
        if missing.is_empty() {
            return Ok(Some(candidate.clone()));
        }
        if candidate == &dir && complete(&old) {
            // Interrupted swap: `checkpoint` cannot be partial, but `.old` is whole.
            return Ok(Some(old.clone()));
        }
        return Err(TrainError::Checkpoint {
            path: candidate.clone(),
            reason: format!(
                "incomplete checkpoint: {} missing or not a file. Nothing was overwritten: restore the files, or start the run in another output directory",
                missing.join(", ")
            ),
        });
    }
    Ok(None)
}

/// The outputs of a previous run found in `run_dir` (empty for a fresh directory).
pub(crate) fn previous_outputs(run_dir: &Path) -> Vec<&'static str> {
    OUTPUTS
        .iter()
        .copied()
        .filter(|name| fs::symlink_metadata(run_dir.join(name)).is_ok())
        .collect()
}

fn complete(dir: &Path) -> bool {
    [STATE]
        .iter()
        .chain(FILES.iter())
        .all(|name| dir.join(name).is_file())
}

/// Loads the checkpoint in `dir` onto `device`.
pub(crate) fn load<M: VisionModel>(
    dir: &Path,
    device: &Device,
) -> Result<Checkpoint<M>, TrainError> {
    let bad = |path: PathBuf, reason: String| TrainError::Checkpoint { path, reason };
    let state_path = dir.join(STATE);
    let bytes = fs::read(&state_path).map_err(|e| TrainError::io("reading", &state_path, e))?;
    let state: LoopState = serde_json::from_slice(&bytes)
        .map_err(|e| bad(state_path.clone(), format!("unreadable state: {e}")))?;
    state.check_consistent().map_err(|reason| {
        bad(
            state_path.clone(),
            format!("inconsistent state: {reason}. The checkpoint was edited or damaged; nothing was overwritten"),
        )
    })?;
    let with_ema = state.config.ema_decay.is_some();
    let expected = sorted_files(with_ema);
    if !state.files.is_empty() && !state.files.keys().map(String::as_str).eq(expected.clone()) {
        return Err(bad(
            state_path.clone(),
            format!(
                "records checksums of {:?}, not of the checkpoint's files {expected:?}: the checkpoint was edited; nothing was overwritten",
                state.files.keys().collect::<Vec<_>>()
            ),
        ));
    }
    if with_ema && !dir.join(EMA).is_file() {
        return Err(bad(
            dir.join(EMA),
            "missing: the run keeps a model EMA and its checkpoint lacks the average's weights. Nothing was overwritten: restore the file, or start the run in another output directory".into(),
        ));
    }
    for (name, expected) in &state.files {
        let path = dir.join(name);
        let actual = sha256_hex(&path)?;
        if &actual != expected {
            return Err(bad(
                path,
                format!(
                    "its SHA-256 is {actual}, the checkpoint recorded {expected}: the file was changed or damaged after the checkpoint was written; nothing was overwritten"
                ),
            ));
        }
    }
    let model = M::load(dir.join(MODEL), device).map_err(TrainError::model)?;
    let best = M::load(dir.join(BEST), device).map_err(TrainError::model)?;
    let ema = if with_ema {
        Some(M::load(dir.join(EMA), device).map_err(TrainError::model)?)
    } else {
        None
    };
    let optimizer = OptimizerRecord::load(dir.join(OPTIMIZER))
        .map_err(|e| bad(dir.join(OPTIMIZER), e.to_string()))?;
    let scheduler = LrSchedulerRecord::load(dir.join(SCHEDULER))
        .map_err(|e| bad(dir.join(SCHEDULER), e.to_string()))?;
    Ok(Checkpoint {
        model,
        best,
        ema,
        optimizer,
        scheduler,
        state,
    })
}
