//! The Learner's serialisable configuration: what the PyTorch tutorial's `train_model` hard-codes
//! (epochs, SGD with momentum, StepLR 7/0.1 per epoch) as data, plus fastai-style options
//! (discriminative backbone learning rate, early stopping, monitored metric).

use burn::config::Config;
use burn::grad_clipping::GradientClippingConfig;
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
    /// epoch); with `Batch`, every 7 optimizer steps (batches, without gradient accumulation).
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
    /// Gradient accumulation: the optimizer steps once every this many batches, on the mean of
    /// their gradients (each batch's loss divided by the number of batches in its group, as
    /// timm's `--grad-accum-steps` does; the last group of an epoch may be shorter and is
    /// divided by its own length). Gradients are summed with Burn's `GradientsAccumulator`.
    /// A per-batch schedule advances once per optimizer step. `None` or 1: every batch.
    #[config(default = "None")]
    pub grad_accum_steps: Option<usize>,
    /// Clips every parameter's gradient to this L2 norm before the optimizer step (Burn's
    /// `GradientClippingConfig::Norm`, which clips each parameter tensor by its own norm;
    /// PyTorch's `clip_grad_norm_` scales all gradients by their global norm instead).
    #[config(default = "None")]
    pub clip_grad_norm: Option<f64>,
    /// Clamps every gradient value to `[-x, x]` before the optimizer step (Burn's
    /// `GradientClippingConfig::Value`, PyTorch's `clip_grad_value_`). Exclusive with
    /// `clip_grad_norm`.
    #[config(default = "None")]
    pub clip_grad_value: Option<f64>,
    /// Model EMA decay in `[0, 1)` (timm's `ModelEmaV3`; 0.9998 in timm's recipes): after
    /// every optimizer step `ema ← lerp(ema, model, 1 - d)` over parameters and BatchNorm
    /// statistics, with `d = 0` at the first step. With EMA on, validation, best-epoch
    /// selection, the checkpoint's best weights and the returned model use the EMA weights
    /// (the trained model's own validation is recorded as `model_val_*`). `None`: off.
    #[config(default = "None")]
    pub ema_decay: Option<f64>,
    /// timm's EMA warm-up: `d_t = min(decay, 1 - (1 + t)^(-2/3))` for the `t`-th update after
    /// the first, so early averages follow the model closely.
    #[config(default = "None")]
    pub ema_warmup: Option<bool>,
    /// fastai's `fine_tune(epochs, freeze_epochs)`: this many head-only epochs first (the
    /// backbone frozen, its BatchNorm as the model's policy says, at `lr`), then `epochs`
    /// epochs with everything trainable at `lr / 2` (fastai halves the base rate), the
    /// backbone at `lr / 2 * backbone_lr_mult`, each phase with its own run of `schedule`.
    /// The run has `freeze_epochs + epochs` epochs in all. `None` or 0: off. fastai's own
    /// settings are `Schedule::OneCycle` per phase (`pct_start` 0.99 for the head epochs, 0.3
    /// and `div_factor` 5 after) and `lr_mult = 100`, i.e. `backbone_lr_mult = 0.01`; here
    /// both phases use `schedule` and `backbone_lr_mult` as configured.
    #[config(default = "None")]
    pub freeze_epochs: Option<usize>,
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
        if self.epochs.checked_add(self.head_epochs()).is_none() {
            return Err(TrainError::Config(format!(
                "freeze_epochs + epochs overflows ({} + {})",
                self.head_epochs(),
                self.epochs
            )));
        }
        if self.grad_accum_steps == Some(0) {
            return Err(TrainError::Config(
                "grad_accum_steps must be at least 1 (1: step after every batch)".into(),
            ));
        }
        for (name, v) in [
            ("clip_grad_norm", self.clip_grad_norm),
            ("clip_grad_value", self.clip_grad_value),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(TrainError::Config(format!(
                    "{name} must be a positive number (got {v})"
                )));
            }
        }
        if self.clip_grad_norm.is_some() && self.clip_grad_value.is_some() {
            return Err(TrainError::Config(
                "clip_grad_norm and clip_grad_value are exclusive: Burn's optimizer clips one way; choose one".into(),
            ));
        }
        if let Some(d) = self.ema_decay
            && !(0.0..1.0).contains(&d)
        {
            return Err(TrainError::Config(format!(
                "ema_decay must be in [0, 1) (timm's recipes use 0.9998; got {d})"
            )));
        }
        if self.ema_warmup == Some(true) && self.ema_decay.is_none() {
            return Err(TrainError::Config(
                "ema_warmup needs ema_decay (the EMA is off)".into(),
            ));
        }
        self.optimizer.build().map(|_| ())
    }

    /// The training features beyond the tutorial's, in words for a run's first line
    /// (`label smoothing 0.1, MixUp 0.2, 2 batches per step, ...`); `None` when none is on.
    pub fn describe_features(&self) -> Option<String> {
        let mut parts: Vec<String> = self.batch_mix().describe().into_iter().collect();
        if self.accum_steps() > 1 {
            parts.push(format!("{} batches per step", self.accum_steps()));
        }
        if let Some(x) = self.clip_grad_norm {
            parts.push(format!("gradients clipped to norm {x} per parameter"));
        }
        if let Some(x) = self.clip_grad_value {
            parts.push(format!("gradients clipped to +-{x}"));
        }
        if let Some(d) = self.ema_decay {
            let warmup = if self.ema_warmup == Some(true) {
                " with warm-up"
            } else {
                ""
            };
            parts.push(format!("model EMA {d}{warmup} (validated and kept)"));
        }
        if self.head_epochs() > 0 {
            parts.push(format!(
                "fine_tune: {} head-only epochs, then {} unfrozen at lr/2",
                self.head_epochs(),
                self.epochs
            ));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// Epochs of the whole run: `freeze_epochs + epochs`.
    pub fn total_epochs(&self) -> usize {
        self.head_epochs().saturating_add(self.epochs)
    }

    /// Head-only epochs at the start of the run (fastai's `freeze_epochs`; 0: none).
    pub fn head_epochs(&self) -> usize {
        self.freeze_epochs.unwrap_or(0)
    }

    /// Batches per optimizer step (1 without accumulation).
    pub fn accum_steps(&self) -> usize {
        self.grad_accum_steps.unwrap_or(1).max(1)
    }

    /// The optimizer with the configured gradient clipping.
    pub fn build_optimizer(&self) -> Result<ModuleOptimizer, TrainError> {
        let optim = self.optimizer.build()?;
        let clipping = match (self.clip_grad_norm, self.clip_grad_value) {
            (Some(norm), _) => Some(GradientClippingConfig::Norm(norm as f32)),
            (None, Some(value)) => Some(GradientClippingConfig::Value(value as f32)),
            (None, None) => None,
        };
        Ok(match clipping {
            Some(c) => optim.with_grad_clipping(c.init()),
            None => optim,
        })
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
