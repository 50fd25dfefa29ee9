//! Training: the PyTorch tutorial's `train_model` as a reusable, fault-tolerant [`Learner`]
//! (train and validation phases per epoch, best-weights tracking, checkpoints and resume,
//! schedules per epoch or per batch, early stopping), [`evaluate`], and the history it writes.

#[cfg(feature = "train")]
mod burn_train;
mod checkpoint;
mod config;
mod ema;
mod end_of_epoch;
mod epoch;
mod evaluate;
mod features;
mod finish;
mod history;
mod learner;
mod lr_find;
mod mix;
mod parallel;
mod phase;
mod progress;
mod report;
mod schedule;
mod sgd;
mod source;
mod start;

use std::path::{Path, PathBuf};

#[cfg(feature = "train")]
pub use burn_train::EpochLines;
pub use checkpoint::checkpoint_dir;
pub(crate) use checkpoint::lock_run_dir;
pub use config::{LearnerConfig, Monitor, OptimizerConfig};
pub use ema::{ModelEma, ema_decay_at};
pub use evaluate::{Evaluation, evaluate, evaluate_tta};
pub use history::{EpochRecord, History};
pub use learner::{EpochCallback, FitOutcome, Learner};
pub use lr_find::{LrFind, LrFindConfig, lr_find};
pub use mix::{BatchMix, Mixed, cutmix_box, mix_images, soft_cross_entropy, soft_targets};
pub use progress::{FitEvent, FitSink};
pub use schedule::{Schedule, ScheduleUnit};
pub use sgd::{FusedSgd, FusedSgdState};
pub use source::{BatchSource, TensorSource};

/// Why training stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A configuration value is invalid.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// The loss became NaN or infinite.
    #[error(
        "the training loss became {loss} at epoch {epoch}, batch {batch}: lower the learning rate or check the data; the last checkpoint (end of epoch {last_good}) is intact"
    )]
    NonFiniteLoss {
        /// Epoch (from 1).
        epoch: usize,
        /// Batch within the epoch (from 1).
        batch: usize,
        /// The value seen.
        loss: f32,
        /// The last epoch whose checkpoint was written (0: none).
        last_good: usize,
    },
    /// A data loader failed or produced nothing.
    #[error("data: {0}")]
    Data(String),
    /// A checkpoint could not be read.
    #[error("checkpoint '{path}': {reason}")]
    Checkpoint {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Saving or loading a model failed.
    #[error(transparent)]
    Model(Box<crate::Error>),
    /// Writing a report picture failed.
    #[error("writing '{path}': {reason}")]
    Report {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Another run holds the run directory's lock.
    #[error(
        "the run directory '{}' is in use by another training run (its .lock is held): wait for that run to finish, or choose another run directory",
        path.display()
    )]
    RunDirInUse {
        /// The run directory.
        path: PathBuf,
    },
    /// File-system failure.
    #[error("{action} '{path}': {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl TrainError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn model(e: crate::Error) -> Self {
        TrainError::Model(Box::new(e))
    }
}
