//! The Learner's serialisable configuration: what the PyTorch tutorial's `train_model` hard-codes
//! (epochs, SGD with momentum, StepLR 7/0.1 per epoch) as data, plus fastai-style options
//! (discriminative backbone learning rate, early stopping, monitored metric).

use burn::config::Config;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer};
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::mix::BatchMix;
use super::schedule::{Schedule, ScheduleUnit};
use super::sgd::FusedSgd;

/// The optimizer, with PyTorch's defaults and semantics (SGD momentum without dampening).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// `torch.optim.SGD(momentum, nesterov, weight_decay)` (dampening 0).
    Sgd {
        /// Momentum factor (0 disables momentum).
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
    },
    /// `torch.optim.Adam` (L2 weight decay added to the gradient).
    Adam {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Numerical stabiliser (PyTorch's default 1e-8).
        eps: f32,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
    },
    /// `torch.optim.AdamW` (decoupled weight decay).
    AdamW {
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Numerical stabiliser (PyTorch's default 1e-8).
        eps: f32,
        /// Decoupled weight decay (PyTorch's default 0.01).
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// The tutorial's optimizer: SGD, momentum 0.9, no weight decay.
    pub fn sgd(momentum: f64) -> Self {
        OptimizerConfig::Sgd {
            momentum,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
    /// Adam with PyTorch's defaults.
    pub fn adam() -> Self {
        OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
    /// AdamW with PyTorch's defaults.
    pub fn adamw() -> Self {
        OptimizerConfig::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }

    /// Builds the optimizer: [`FusedSgd`] for SGD, Burn's Adam and AdamW.
    pub fn build(&self) -> Result<ModuleOptimizer, TrainError> {
        let decay = |wd: f64| (wd > 0.0).then(|| WeightDecayConfig::new(wd as f32));
        match *self {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                if !(0.0..1.0).contains(&momentum) || weight_decay < 0.0 {
                    return Err(TrainError::Config(format!(
                        "SGD needs 0 <= momentum < 1 and weight_decay >= 0 (got {momentum}, {weight_decay})"
                    )));
                }
                Ok(ModuleOptimizer::from(FusedSgd {
                    momentum: momentum as f32,
                    nesterov,
                    weight_decay: weight_decay as f32,
                }))
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Ok(AdamConfig::new()
                .with_beta_1(beta1)
                .with_beta_2(beta2)
                .with_epsilon(eps)
                .with_weight_decay(decay(weight_decay))
                .init()),
            OptimizerConfig::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => Ok(AdamWConfig::new()
                .with_beta_1(beta1)
                .with_beta_2(beta2)
                .with_epsilon(eps)
                .with_weight_decay(weight_decay as f32)
                .init()),
        }
    }
}

/// The metric that selects the best epoch and drives early stopping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// Validation accuracy, higher is better (the tutorial's choice).
    #[default]
    ValAccuracy,
    /// Validation loss, lower is better.
    ValLoss,
}

impl Monitor {
    /// Whether `candidate` is strictly better than `best`.
    pub fn improves(self, candidate: f64, best: f64) -> bool {
        match self {
            Monitor::ValAccuracy => candidate > best,
            Monitor::ValLoss => candidate < best,
        }
    }
    /// The worst possible value.
    pub fn worst(self) -> f64 {
        match self {
            Monitor::ValAccuracy => f64::NEG_INFINITY,
            Monitor::ValLoss => f64::INFINITY,
        }
    }
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Monitor::ValAccuracy => "val_acc",
            Monitor::ValLoss => "val_loss",
        }
    }
}

/// Everything that defines a training run. Serialised next to its results (`config.json`)
/// and in every checkpoint (a resumed run must have the same settings but for `epochs`,
/// `early_stopping_patience` and `prediction_grid`).
///
/// [`LearnerConfig::new`] (and [`Default`]) is the tutorial: 5 epochs here (25 there), SGD
/// lr 0.001 momentum 0.9, StepLR(7, 0.1) per epoch, best validation accuracy kept. Burn's
/// [`Config`] derive provides a `with_<field>` setter for every field, the JSON
/// [`Display`](std::fmt::Display), and `save` / `load`.
///
/// ```
/// use finetune::train::{LearnerConfig, Monitor, Schedule, ScheduleUnit};
/// let config = LearnerConfig::default()
///     .with_epochs(25)
///     .with_schedule(Schedule::Step { step_size: 7, gamma: 0.1 })
///     .with_schedule_unit(ScheduleUnit::Epoch)
///     .with_monitor(Monitor::ValLoss)
///     .with_early_stopping_patience(Some(3));
/// assert!(config.validate().is_ok());
/// ```
// Every field has a `config(default)`, so the serialised fields keep their declaration order.
#[derive(Config, Debug, PartialEq)]
pub struct LearnerConfig {
    /// Number of epochs.
    #[config(default = 5)]
    pub epochs: usize,
    /// Base learning rate (the head's; the backbone's is `lr * backbone_lr_mult`).
    #[config(default = 0.001)]
    pub lr: f64,
    /// Optimizer.
    #[config(default = "OptimizerConfig::sgd(0.9)")]
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    #[config(default = "Schedule::Step { step_size: 7, gamma: 0.1 }")]
    pub schedule: Schedule,
    /// Whether the schedule advances once per epoch or once per batch. With `Epoch`, a
    /// `Step { step_size: 7 }` decays every 7 epochs (the tutorial's `StepLR` stepped once per
    /// epoch); with `Batch`, every 7 batches.
    #[config(default = "ScheduleUnit::Epoch")]
    pub schedule_unit: ScheduleUnit,
    /// Learning-rate multiplier for everything but the head (discriminative learning rates,
    /// through Burn's parameter-group learning rates). 1.0: one rate for all.
    #[config(default = 1.0)]
    pub backbone_lr_mult: f64,
    /// Seed for data order and augmentation (also re-seeds the device RNG).
    #[config(default = 42)]
    pub seed: u64,
    /// Stop when the monitored metric has not improved for this many epochs.
    #[config(default = "None")]
    pub early_stopping_patience: Option<usize>,
    /// Metric selecting the best epoch.
    #[config(default = "Monitor::ValAccuracy")]
    pub monitor: Monitor,
    /// Number of validation images drawn in `predictions.png`.
    #[config(default = 16)]
    pub prediction_grid: usize,
    /// Label smoothing `eps` of the training loss, in `[0, 1)` (`None` or 0: off; 0.1 in
    /// torchvision's and timm's recipes): `torch.nn.CrossEntropyLoss(label_smoothing=eps)`.
    /// Validation reports the plain cross-entropy. (`Option`s, so that configurations written
    /// before these fields existed still read.)
    #[config(default = "None")]
    pub label_smoothing: Option<f64>,
    /// MixUp's `alpha` (`None` or 0: off; 0.2 in torchvision's recipes):
    /// `transforms.v2.MixUp`.
    #[config(default = "None")]
    pub mixup_alpha: Option<f64>,
    /// CutMix's `alpha` (`None` or 0: off; 1.0 in torchvision's recipes):
    /// `transforms.v2.CutMix`. With MixUp too, each batch takes one of the two at random.
    #[config(default = "None")]
    pub cutmix_alpha: Option<f64>,
}

impl Default for LearnerConfig {
    /// The tutorial: 5 epochs here (25 there), SGD lr 0.001 momentum 0.9, StepLR(7, 0.1) per
    /// epoch, best validation accuracy kept ([`LearnerConfig::new`]).
    fn default() -> Self {
        LearnerConfig::new()
    }
}

impl LearnerConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.epochs == 0 {
            return Err(TrainError::Config("epochs must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(TrainError::Config(format!(
                "lr must be a positive number (got {})",
                self.lr
            )));
        }
        if !(self.backbone_lr_mult.is_finite() && self.backbone_lr_mult >= 0.0) {
            return Err(TrainError::Config(format!(
                "backbone_lr_mult must be >= 0 (got {})",
                self.backbone_lr_mult
            )));
        }
        self.batch_mix().validate()?;
        self.optimizer.build().map(|_| ())
    }

    /// The batch-level regularisers: label smoothing, MixUp, CutMix.
    pub fn batch_mix(&self) -> BatchMix {
        BatchMix {
            mixup_alpha: self.mixup_alpha.unwrap_or(0.0),
            cutmix_alpha: self.cutmix_alpha.unwrap_or(0.0),
            label_smoothing: self.label_smoothing.unwrap_or(0.0),
        }
    }
}
