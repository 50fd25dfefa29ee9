//! Learning-rate schedules as data, built on Burn's schedulers (`burn::lr_scheduler`): PyTorch's
//! `StepLR` (the tutorial's 7/0.1), `CosineAnnealingLR`, a one-cycle policy (Smith & Topin,
//! "Super-Convergence", 2017), linear warm-up, and a constant rate. Each advances once per epoch
//! or once per batch ([`ScheduleUnit`]): the unit is explicit because the tutorial's `StepLR`
//! counts epochs while one-cycle policies count batches.

use burn::lr_scheduler::LrSchedulerConfig;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::{ModuleLrScheduler, ModuleLrSchedulerConfig};
use burn::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::lr_scheduler::step::StepLrSchedulerConfig;
use serde::{Deserialize, Serialize};

use super::TrainError;
use burn::module::ParamGroup;

/// When the schedule advances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleUnit {
    /// Once at the start of every epoch (PyTorch: `scheduler.step()` after each epoch).
    #[default]
    Epoch,
    /// Once before every optimizer step.
    Batch,
}

/// A learning-rate schedule, relative to the configured base rate `lr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// `lr` throughout.
    Constant,
    /// `lr * gamma^(t / step_size)` (PyTorch `StepLR`).
    Step {
        /// Units between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// Cosine annealing from `lr` to `min_lr` over the whole run (PyTorch `CosineAnnealingLR`
    /// with `T_max` = all units of the run).
    Cosine {
        /// Final learning rate.
        min_lr: f64,
    },
    /// One-cycle: linear warm-up from `lr / div_factor` to `lr` over the first `pct_start` of
    /// the run, then cosine annealing to `lr / (div_factor * final_div_factor)` (PyTorch's
    /// `OneCycleLR` defaults are 0.3, 25, 1e4; it anneals the warm-up with a cosine too).
    OneCycle {
        /// Fraction of the run spent warming up.
        pct_start: f64,
        /// Initial rate is `lr / div_factor`.
        div_factor: f64,
        /// Final rate is the initial rate divided by this.
        final_div_factor: f64,
    },
    /// Linear warm-up from `lr * start_factor` to `lr` over `steps` units, then `then`
    /// (counted from the end of the warm-up).
    Warmup {
        /// Warm-up length in units.
        steps: usize,
        /// Initial multiplier of `lr`.
        start_factor: f64,
        /// Schedule after the warm-up.
        then: Box<Schedule>,
    },
}

impl Schedule {
    /// PyTorch's `OneCycleLR` defaults.
    pub fn one_cycle() -> Self {
        Schedule::OneCycle {
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }
    }

    /// Burn's scheduler configuration for a run of `total` units at base rate `lr`.
    fn burn_config(&self, lr: f64, total: usize) -> Result<LrSchedulerConfig, TrainError> {
        let bad = |msg: String| TrainError::Config(format!("schedule: {msg}"));
        let total = total.max(1);
        Ok(match self {
            Schedule::Constant => LrSchedulerConfig::Constant(lr),
            Schedule::Step { step_size, gamma } => {
                if *step_size == 0 {
                    return Err(bad("step_size must be at least 1".into()));
                }
                StepLrSchedulerConfig::new(lr, *step_size)
                    .with_gamma(*gamma)
                    .into()
            }
            Schedule::Cosine { min_lr } => {
                if !(0.0..=lr).contains(min_lr) {
                    return Err(bad(format!("min_lr {min_lr} must be in [0, lr = {lr}]")));
                }
                CosineAnnealingLrSchedulerConfig::new(lr, total)
                    .with_min_lr(*min_lr)
                    .into()
            }
            Schedule::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                if !(0.0..1.0).contains(pct_start) || *div_factor < 1.0 || *final_div_factor < 1.0 {
                    return Err(bad(
                        "one-cycle needs 0 <= pct_start < 1, div_factor >= 1, final_div_factor >= 1"
                            .into(),
                    ));
                }
                let up = ((total as f64 * pct_start).round() as usize).clamp(1, total);
                let start = lr / div_factor;
                let end = start / final_div_factor;
                if up >= total {
                    LinearLrSchedulerConfig::new(start, lr, up).into()
                } else {
                    SequentialLrSchedulerConfig::new(
                        vec![
                            LinearLrSchedulerConfig::new(start, lr, up).into(),
                            CosineAnnealingLrSchedulerConfig::new(lr, total - up)
                                .with_min_lr(end)
                                .into(),
                        ],
                        vec![up],
                    )
                    .into()
                }
            }
            Schedule::Warmup {
                steps,
                start_factor,
                then,
            } => {
                if *steps == 0 || !(*start_factor > 0.0 && *start_factor <= 1.0) {
                    return Err(bad(
                        "warm-up needs steps >= 1 and 0 < start_factor <= 1".into()
                    ));
                }
                let rest = total.saturating_sub(*steps).max(1);
                SequentialLrSchedulerConfig::new(
                    vec![
                        LinearLrSchedulerConfig::new(lr * start_factor, lr, *steps).into(),
                        then.burn_config(lr, rest)?,
                    ],
                    vec![*steps],
                )
                .into()
            }
        })
    }

    /// Builds Burn's scheduler for a run of `total` units: the base rate for the head, and
    /// `lr * backbone_lr_mult` for the parameters of `backbone` (a model's
    /// [`backbone_group`](crate::model::VisionModel::backbone_group)) when the multiplier is
    /// not 1.
    pub fn build(
        &self,
        lr: f64,
        total: usize,
        backbone_lr_mult: f64,
        backbone: ParamGroup,
    ) -> Result<ModuleLrScheduler, TrainError> {
        let mut config = ModuleLrSchedulerConfig::new(self.burn_config(lr, total)?);
        if backbone_lr_mult != 1.0 {
            let rate = if backbone_lr_mult == 0.0 {
                LrSchedulerConfig::Constant(0.0)
            } else {
                self.burn_config(lr * backbone_lr_mult, total)?
            };
            config = config.with_group(backbone, rate);
        }
        config
            .init()
            .map_err(|e| TrainError::Config(format!("schedule: {e}")))
    }

    /// The sequence of base learning rates over `total` units (what [`build`](Self::build)'s
    /// scheduler returns for the head), for display and tests.
    pub fn rates(&self, lr: f64, total: usize) -> Result<Vec<f64>, TrainError> {
        let mut scheduler = self.build(lr, total, 1.0, ParamGroup::all())?;
        Ok((0..total).map(|_| scheduler.step().base()).collect())
    }
}
