//! What a [`Learner`](super::Learner) reports while it runs, delivered to a sink the caller
//! chooses (the library itself prints nothing). The examples' `ConsoleProgress` turns the
//! events into a progress bar and one line per epoch; a test or a service can record them,
//! forward them to a logger, or ignore them.

use std::path::Path;

use super::history::EpochRecord;

/// What the Learner reports while it runs.
///
/// Events arrive in this order: at most one [`Resumed`](Self::Resumed), at most one
/// [`FeaturesCached`](Self::FeaturesCached), then per epoch [`EpochStarted`](Self::EpochStarted),
/// one [`Batch`](Self::Batch) per training batch and [`EpochEnded`](Self::EpochEnded); then
/// possibly [`EarlyStopped`](Self::EarlyStopped), and [`Finished`](Self::Finished) when at
/// least one epoch is recorded. An error ends the sequence where it happens (a non-finite loss
/// mid-epoch: no [`EpochEnded`](Self::EpochEnded) follows).
#[derive(Debug)]
#[non_exhaustive]
pub enum FitEvent<'a> {
    /// The run continues from a checkpoint.
    Resumed {
        /// The checkpoint directory it was read from (`<run>/checkpoint`, or its `.old`
        /// sibling when the newest one was incomplete).
        checkpoint: &'a Path,
        /// Epochs the checkpoint had completed; the next epoch is `epochs_done + 1`.
        epochs_done: usize,
    },
    /// The frozen backbone's features were computed once for the whole run.
    FeaturesCached {
        /// Number of training images embedded.
        train_images: usize,
        /// Number of validation images embedded.
        val_images: usize,
        /// Wall time of the extraction, seconds.
        seconds: f64,
    },
    /// An epoch's training phase starts.
    EpochStarted {
        /// The epoch, from 1.
        epoch: usize,
        /// The configured number of epochs ([`LearnerConfig::epochs`](super::LearnerConfig)).
        epochs: usize,
        /// Training batches expected this epoch (`ceil(items / batch_size)`).
        batches: usize,
    },
    /// A training batch was stepped.
    Batch {
        /// The epoch, from 1.
        epoch: usize,
        /// The batch within the epoch, from 1.
        batch: usize,
        /// Training batches expected this epoch (as in [`EpochStarted`](Self::EpochStarted)).
        batches: usize,
        /// Mean training loss over the epoch's images so far.
        loss: f64,
        /// Training accuracy over the epoch's images so far, a fraction in [0, 1].
        accuracy: f64,
    },
    /// An epoch was trained and validated. Sent before its checkpoint is written (and before
    /// the [`on_epoch`](super::Learner::on_epoch) callback, which runs after it).
    EpochEnded {
        /// The epoch's results.
        record: &'a EpochRecord,
        /// The configured number of epochs.
        epochs: usize,
        /// Whether the monitored metric improved (this epoch is the best so far).
        improved: bool,
    },
    /// Early stopping ended the run after the epoch last reported.
    EarlyStopped {
        /// Name of the monitored metric (`val_acc`, `val_loss`).
        monitor: &'static str,
        /// Epochs in a row without improvement.
        stale_epochs: usize,
    },
    /// The loop ended; the best epoch's weights are restored and evaluated next.
    Finished {
        /// Name of the monitored metric (`val_acc`, `val_loss`).
        monitor: &'static str,
        /// The monitored metric at the best epoch.
        best_metric: f64,
        /// The best epoch, from 1.
        best_epoch: usize,
    },
    /// Free-form information in one line, without a trailing newline: the recipe's data, model
    /// and result lines, or the Learner's own (a resume that finds no checkpoint).
    Note(&'a str),
}

/// Receives a [`Learner`](super::Learner)'s [`FitEvent`]s (set with
/// [`Learner::sink`](super::Learner::sink)). Called on the training thread, between steps:
/// keep it cheap (a [`Batch`](FitEvent::Batch) event comes after every training batch).
pub trait FitSink: Send + Sync {
    /// Handles one event.
    fn event(&self, event: &FitEvent<'_>);
}
