//! The Learner: PyTorch's tutorial `train_model` (Chilamkurthy, "Transfer Learning for Computer
//! Vision Tutorial") as a reusable loop — a train and a validation phase every epoch with
//! running loss and accuracy, the best epoch's weights kept and restored at the end — made
//! fault-tolerant (atomic checkpoints every epoch, exact resume, NaN detection) and fast for
//! the fixed-feature-extractor case (a frozen backbone runs without autodiff; its features can
//! be computed once).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::Device;

use super::TrainError;
use super::config::LearnerConfig;
use super::evaluate::Evaluation;
use super::history::{EpochRecord, History};
use super::progress::{FitEvent, FitSink};
use super::source::BatchSource;
use crate::model::VisionModel;

/// What [`Learner::fit`] returns.
#[derive(Debug)]
pub struct FitOutcome<M> {
    /// The model with the best epoch's weights (the EMA's, with `ema_decay`; on the model's
    /// device, without autodiff; call `.train()` after moving it to an autodiff device to
    /// continue training).
    pub model: M,
    /// Every epoch, and the best one.
    pub history: History,
    /// Best epoch (from 1).
    pub best_epoch: usize,
    /// The monitored metric at the best epoch.
    pub best_metric: f64,
    /// Epochs already done in the checkpoint this run resumed from.
    pub resumed_from: Option<usize>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Whether every configured epoch ran (false when `stop_after` ended this call first).
    pub completed: bool,
    /// The best model evaluated on the validation data.
    pub evaluation: Evaluation,
}

/// A reusable training loop. Configure it, then call [`fit`](Self::fit).
///
/// ```no_run
/// # fn run(model: finetune::ResNet, train: &dyn finetune::train::BatchSource,
/// #        val: &dyn finetune::train::BatchSource) -> Result<(), finetune::train::TrainError> {
/// use finetune::train::{Learner, LearnerConfig};
/// let outcome = Learner::new(LearnerConfig::default())
///     .run_dir("runs/cifar10")
///     .fit(model, train, val)?;
/// println!("best val acc {:.4} at epoch {}", outcome.history.best_val_acc, outcome.best_epoch);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Learner {
    pub(super) config: LearnerConfig,
    pub(super) run_dir: Option<PathBuf>,
    pub(super) resume: bool,
    pub(super) cache_features: bool,
    pub(super) stop_after: Option<usize>,
    pub(super) class_names: Vec<String>,
    pub(super) sink: Option<Arc<dyn FitSink>>,
    pub(super) on_epoch: Option<EpochCallback>,
    pub(super) devices: Vec<Device>,
}

/// Called after every epoch with its record (logging, memory probes, custom stopping rules).
pub type EpochCallback = Arc<dyn Fn(&EpochRecord) + Send + Sync>;

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learner")
            .field("config", &self.config)
            .field("run_dir", &self.run_dir)
            .field("resume", &self.resume)
            .field("cache_features", &self.cache_features)
            .field("stop_after", &self.stop_after)
            .field("sink", &self.sink.is_some())
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

impl Learner {
    /// A learner with this configuration, no run directory, not resuming, reporting nothing.
    pub fn new(config: LearnerConfig) -> Self {
        Learner {
            config,
            run_dir: None,
            resume: false,
            cache_features: false,
            stop_after: None,
            class_names: Vec::new(),
            sink: None,
            on_epoch: None,
            devices: Vec::new(),
        }
    }

    /// Trains data parallel over `devices` (PyTorch's `nn.DataParallel`): every training batch
    /// split into one contiguous chunk per device (`torch.chunk`), a replica of the model
    /// forward and backward on each, on its own thread, and the gradients summed on the first
    /// device, which steps the optimizer. Each chunk's loss is weighted by its share of the
    /// batch, so a step is one device's step with the same global batch, up to the order of
    /// float sums, for models without BatchNorm, dropout or stochastic depth. BatchNorm
    /// normalises each chunk with its own statistics, as `DataParallel` does, and keeps the
    /// first device's running statistics; the other replicas' dropout masks come from their
    /// own devices' generators. Validation, checkpoints and resume are unchanged. Head-only
    /// training (a frozen backbone with frozen BatchNorm, cached or not) stays on the first
    /// device. The same device may be listed twice (two replicas on one device, e.g. to try it
    /// on a CPU). No devices: the model's own device alone.
    ///
    /// The devices are Burn's, without autodiff (e.g. `Device::cuda(0)`, `Device::cuda(1)`);
    /// the first must be the model's device, or [`fit`](Self::fit) returns
    /// [`TrainError::Config`]. A batch must give every device at least 2 images when the model
    /// has BatchNorm. Source: PyTorch's `torch.nn.DataParallel` (scatter, replicate,
    /// parallel_apply, gather).
    pub fn data_parallel(mut self, devices: Vec<Device>) -> Self {
        self.devices = devices;
        self
    }

    /// Calls `callback` after every epoch (after its checkpoint is written).
    pub fn on_epoch(mut self, callback: EpochCallback) -> Self {
        self.on_epoch = Some(callback);
        self
    }

    /// Reports progress to `sink` ([`FitEvent`]s: resume, feature caching, every batch and
    /// epoch, early stopping, the best epoch). Without one, the Learner reports nothing.
    pub fn sink(mut self, sink: Arc<dyn FitSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &LearnerConfig {
        &self.config
    }

    /// Where checkpoints and results go. Without one, nothing is written.
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// Continue from the run directory's checkpoint when there is one.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Compute the frozen backbone's features once and train the head on them. Requires a
    /// backbone frozen with [`BnPolicy::Frozen`](crate::model::BnPolicy::Frozen) and a
    /// deterministic training source; [`fit`](Self::fit) returns [`TrainError::Config`]
    /// otherwise (under [`BnPolicy::TrainMode`](crate::model::BnPolicy::TrainMode) the
    /// backbone's features change with its running statistics).
    pub fn cache_features(mut self, cache: bool) -> Self {
        self.cache_features = cache;
        self
    }

    /// Run at most `epochs` epochs in this call (the run continues later with
    /// [`resume`](Self::resume)); for time-sliced or preemptible training.
    pub fn stop_after(mut self, epochs: Option<usize>) -> Self {
        self.stop_after = epochs;
        self
    }

    /// Class names, for the picture reports.
    pub fn class_names(mut self, names: Vec<String>) -> Self {
        self.class_names = names;
        self
    }

    /// Sends `event` to the sink, if any.
    pub(super) fn emit(&self, event: FitEvent<'_>) {
        if let Some(sink) = &self.sink {
            sink.event(&event);
        }
    }

    /// Trains `model` on `train`, validating on `val` after every epoch; returns the best
    /// epoch's model. Batches must live on the model's device.
    ///
    /// The phases: start or resume (checks, run-directory lock, checkpoint, optimizer and
    /// schedule, feature cache), then per epoch the training phase and the end of the epoch
    /// (validation, best weights, checkpoint, early stopping), then finish (best weights
    /// evaluated, reports written). Progress goes to the [`sink`](Self::sink), if any.
    ///
    /// # Errors
    ///
    /// [`TrainError::Config`] for invalid settings, a fully frozen model, feature caching
    /// without a frozen backbone, or a checkpoint that already covers every epoch;
    /// [`TrainError::Data`] for empty or failing data; [`TrainError::Checkpoint`] for a
    /// checkpoint that cannot be resumed or a run directory that holds a previous run;
    /// [`TrainError::RunDirInUse`]; [`TrainError::NonFiniteLoss`]; I/O and model errors.
    pub fn fit<M: VisionModel>(
        &self,
        model: M,
        train: &dyn BatchSource,
        val: &dyn BatchSource,
    ) -> Result<FitOutcome<M>, TrainError> {
        let (mut model, mut run, mut data) = self.start(model, train, val)?;
        let first = run.state.epochs_done + 1;
        for (ran, epoch) in (first..=self.config.total_epochs()).enumerate() {
            if self.stop_after.is_some_and(|n| ran >= n) {
                break;
            }
            if epoch > 1 && self.config.phase_of(epoch) != self.config.phase_of(epoch - 1) {
                model = self.enter_phase(model, &mut run, &mut data, epoch)?;
            }
            let started = Instant::now();
            let totals;
            (model, totals) = self.train_epoch(model, &mut run, &data, epoch, started)?;
            if self.end_epoch(&model, &mut run, &data, epoch, totals)? {
                break;
            }
        }
        self.finish(run, &data)
    }
}
