//! Checkpoints written atomically every epoch, so an interrupted run resumes exactly: model
//! (with its freeze state), best model, optimizer state (Burn's `OptimizerRecord`, keyed by the
//! parameter ids that burnpack preserves), scheduler state, and the loop's own state (epoch,
//! best metric, history, seed). The whole directory is written next to the previous one and
//! swapped in with renames; a crash mid-write leaves the last good checkpoint intact.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::lr_scheduler::LrSchedulerRecord;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::config::LearnerConfig;
use super::history::History;
use crate::model::ResNet;

const MODEL: &str = "model.bpk";
const BEST: &str = "best.bpk";
const OPTIMIZER: &str = "optimizer.bpk";
const SCHEDULER: &str = "scheduler.bpk";
const STATE: &str = "state.json";

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| TrainError::io("creating", parent, e))?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|e| TrainError::io("writing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| TrainError::io("renaming", &tmp, e))
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
}

/// Everything a resumed run needs.
pub(crate) struct Checkpoint {
    pub model: ResNet,
    pub best: ResNet,
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

/// Writes a complete checkpoint into `<run>/checkpoint.tmp`, then swaps it in.
pub(crate) fn save(
    run_dir: &Path,
    model: &ResNet,
    best: &ResNet,
    optimizer: &ModuleOptimizer,
    scheduler: &ModuleLrScheduler,
    state: &LoopState,
) -> Result<(), TrainError> {
    let dir = checkpoint_dir(run_dir);
    let tmp = sibling(&dir, ".tmp");
    let old = sibling(&dir, ".old");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| TrainError::io("removing", &tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| TrainError::io("creating", &tmp, e))?;
    let record_err = |path: PathBuf| {
        move |e: burn::store::RecordError| TrainError::Checkpoint {
            path,
            reason: format!("writing failed: {e}"),
        }
    };
    model.save(tmp.join(MODEL)).map_err(TrainError::model)?;
    best.save(tmp.join(BEST)).map_err(TrainError::model)?;
    optimizer
        .to_record()
        .save(tmp.join(OPTIMIZER))
        .map_err(record_err(tmp.join(OPTIMIZER)))?;
    scheduler
        .to_record()
        .save(tmp.join(SCHEDULER))
        .map_err(record_err(tmp.join(SCHEDULER)))?;
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| TrainError::Config(format!("serialising checkpoint state: {e}")))?;
    write_atomic(&tmp.join(STATE), &json)?;

    // Swap: checkpoint -> checkpoint.old, checkpoint.tmp -> checkpoint, drop the old one.
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| TrainError::io("removing", &old, e))?;
    }
    if dir.exists() {
        fs::rename(&dir, &old).map_err(|e| TrainError::io("renaming", &dir, e))?;
    }
    fs::rename(&tmp, &dir).map_err(|e| TrainError::io("renaming", &tmp, e))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| TrainError::io("removing", &old, e))?;
    }
    Ok(())
}

/// The directory holding the last complete checkpoint, if any (`checkpoint`, or
/// `checkpoint.old` when a crash interrupted the swap).
pub(crate) fn latest(run_dir: &Path) -> Option<PathBuf> {
    let dir = checkpoint_dir(run_dir);
    let old = sibling(&dir, ".old");
    [dir, old]
        .into_iter()
        .find(|d| d.join(STATE).is_file() && d.join(MODEL).is_file())
}

/// Loads the checkpoint in `dir` onto `device`.
pub(crate) fn load(dir: &Path, device: &Device) -> Result<Checkpoint, TrainError> {
    let bad = |path: PathBuf, reason: String| TrainError::Checkpoint { path, reason };
    let state_path = dir.join(STATE);
    let bytes = fs::read(&state_path).map_err(|e| TrainError::io("reading", &state_path, e))?;
    let state: LoopState = serde_json::from_slice(&bytes)
        .map_err(|e| bad(state_path.clone(), format!("unreadable state: {e}")))?;
    let model = ResNet::load(dir.join(MODEL), device).map_err(TrainError::model)?;
    let best = ResNet::load(dir.join(BEST), device).map_err(TrainError::model)?;
    let optimizer = OptimizerRecord::load(dir.join(OPTIMIZER))
        .map_err(|e| bad(dir.join(OPTIMIZER), e.to_string()))?;
    let scheduler = LrSchedulerRecord::load(dir.join(SCHEDULER))
        .map_err(|e| bad(dir.join(SCHEDULER), e.to_string()))?;
    Ok(Checkpoint {
        model,
        best,
        optimizer,
        scheduler,
        state,
    })
}
