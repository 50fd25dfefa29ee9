//! The learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural
//! Networks", 2017) as fastai's `Learner.lr_find` runs it: a mock training whose learning rate
//! grows exponentially from `start_lr` to `end_lr` over `num_it` batches, recording the loss
//! smoothed as fastai's `AvgSmoothLoss` (β = 0.98, debiased), stopping when the smoothed loss
//! exceeds four times its minimum (or is NaN), and suggesting rates with fastai's `valley`
//! (the default), `steep` and `minimum`. It trains a copy: the model given and its optimizer
//! state are untouched.

use std::path::Path;

use burn::module::ParamGroup;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;

use super::TrainError;
use super::config::LearnerConfig;
use super::epoch::forward;
use super::learner::Learner;
use super::mix::Mixed;
use super::schedule::Schedule;
use super::source::BatchSource;
use super::start::FitData;
use crate::model::VisionModel;

/// The range test's settings, with fastai's defaults ([`Default`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LrFindConfig {
    /// First learning rate (fastai: 1e-7).
    pub start_lr: f64,
    /// Last learning rate (fastai: 10).
    pub end_lr: f64,
    /// Batches of the test (fastai: 100); the training data is cycled when it has fewer.
    pub num_it: usize,
    /// Stop when the smoothed loss exceeds four times its minimum or becomes NaN.
    pub stop_div: bool,
}

impl Default for LrFindConfig {
    fn default() -> Self {
        LrFindConfig {
            start_lr: 1e-7,
            end_lr: 10.0,
            num_it: 100,
            stop_div: true,
        }
    }
}

impl LrFindConfig {
    /// The learning rate of batch `i` (from 0): `start · (end / start)^(i / num_it)`
    /// (fastai's `SchedExp`).
    pub fn lr_at(&self, i: usize) -> f64 {
        let pos = i as f64 / self.num_it.max(1) as f64;
        self.start_lr * (self.end_lr / self.start_lr).powf(pos)
    }

    fn validate(&self) -> Result<(), TrainError> {
        if !(self.start_lr.is_finite()
            && self.start_lr > 0.0
            && self.end_lr.is_finite()
            && self.end_lr > self.start_lr)
        {
            return Err(TrainError::Config(format!(
                "the learning-rate finder needs 0 < start_lr < end_lr (got {} and {})",
                self.start_lr, self.end_lr
            )));
        }
        if self.num_it < 2 {
            return Err(TrainError::Config(format!(
                "the learning-rate finder needs at least 2 batches (num_it = {})",
                self.num_it
            )));
        }
        Ok(())
    }
}

/// What the range test recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct LrFind {
    /// The learning rate of every batch run.
    pub lrs: Vec<f64>,
    /// The smoothed loss after every batch.
    pub losses: Vec<f64>,
    /// Whether the loss diverged before `num_it` batches.
    pub diverged: bool,
    /// The configured number of batches.
    pub num_it: usize,
}

/// fastai's window for suggestions: from `num_it / 10` to the fifth-last point, cut at the
/// first NaN loss.
fn window(find: &LrFind) -> (&[f64], &[f64]) {
    let recorded = find.lrs.len().min(find.losses.len());
    let end = recorded.saturating_sub(5);
    let start = (find.num_it / 10).min(end);
    let mut lrs = &find.lrs[start..end];
    let mut losses = &find.losses[start..end];
    if let Some(nan) = losses.iter().position(|l| l.is_nan()) {
        lrs = &lrs[..nan];
        losses = &losses[..nan];
    }
    (lrs, losses)
}

impl LrFind {
    /// fastai's `valley` (its default suggestion): the point about two thirds down the longest
    /// run of decreasing loss. `None` when too few batches ran.
    pub fn valley(&self) -> Option<(f64, f64)> {
        let (lrs, losses) = window(self);
        let n = losses.len();
        if n == 0 {
            return None;
        }
        // Longest decreasing subsequence ending at each point, as fastai computes it (its
        // start may be -1, and a negative index counts from the end, as in Python).
        let mut lds = vec![1usize; n];
        let (mut max_start, mut max_end) = (0i64, 0usize);
        for i in 1..n {
            for j in 0..i {
                if losses[i] < losses[j] && lds[i] < lds[j] + 1 {
                    lds[i] = lds[j] + 1;
                }
                if lds[max_end] < lds[i] {
                    max_end = i;
                    max_start = max_end as i64 - lds[max_end] as i64;
                }
            }
        }
        let sections = (max_end as i64 - max_start) as f64 / 3.0;
        let idx = max_start + sections as i64 + (sections / 2.0) as i64;
        let idx = if idx < 0 { n as i64 + idx } else { idx };
        let idx = (idx.max(0) as usize).min(n - 1);
        Some((lrs[idx], losses[idx]))
    }

    /// fastai's `steep`: the rate where the loss falls fastest against `log(lr)`.
    pub fn steep(&self) -> Option<(f64, f64)> {
        let (lrs, losses) = window(self);
        let grads = lrs
            .windows(2)
            .zip(losses.windows(2))
            .map(|(l, y)| (y[1] - y[0]) / (l[1].ln() - l[0].ln()));
        let (i, _) = grads
            .enumerate()
            .filter(|(_, g)| !g.is_nan())
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        Some((lrs[i], losses[i]))
    }

    /// fastai's `minimum`: a tenth of the rate with the lowest loss, and that lowest loss
    /// (fastai marks the minimum's own point on the plot; the rate returned is ten times
    /// smaller).
    pub fn minimum(&self) -> Option<(f64, f64)> {
        let (lrs, losses) = window(self);
        let (i, loss) = losses
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))?;
        Some((lrs[i] / 10.0, *loss))
    }

    /// The suggestions in one line: `suggested learning rates: valley 1.10e-2 (fastai's
    /// default), steep 1.74e-1, minimum/10 7.59e-2; 100 batches`.
    pub fn describe(&self) -> String {
        let fmt = |s: Option<(f64, f64)>| {
            s.map(|(lr, _)| format!("{lr:.2e}"))
                .unwrap_or_else(|| "- (too few batches)".into())
        };
        format!(
            "suggested learning rates: valley {} (fastai's default), steep {}, minimum/10 {}; {} batches{}",
            fmt(self.valley()),
            fmt(self.steep()),
            fmt(self.minimum()),
            self.lrs.len(),
            if self.diverged {
                ", stopped when the loss diverged"
            } else {
                ""
            }
        )
    }

    /// Writes fastai's plot (all but the last five points, as `plot_lr_find(skip_end=5)`) with
    /// the `valley` and `steep` suggestions marked, as PNG.
    ///
    /// # Errors
    /// [`TrainError::Report`] when nothing can be drawn or the file cannot be written.
    pub fn save_plot(&self, path: impl AsRef<Path>) -> Result<(), TrainError> {
        let path = path.as_ref();
        let recorded = self.lrs.len().min(self.losses.len());
        let shown = recorded.saturating_sub(5).max(recorded.min(1));
        let mut marks = Vec::new();
        if let Some((lr, loss)) = self.valley() {
            marks.push(("valley", lr, loss));
        }
        if let Some((lr, loss)) = self.steep() {
            marks.push(("steep", lr, loss));
        }
        crate::viz::save_lr_find(path, &self.lrs[..shown], &self.losses[..shown], &marks).map_err(
            |e| TrainError::Report {
                path: path.to_path_buf(),
                reason: e.reason(),
            },
        )
    }
}

/// Runs the learning-rate range test on a copy of `model` with `config`'s optimizer, gradient
/// clipping, backbone multiplier, label smoothing and MixUp / CutMix, on `train`'s batches
/// (epoch 1, 2, ... as needed), one optimizer step per batch (`grad_accum_steps` is not used:
/// each rate gets one batch). The model's freeze state decides what trains, as in
/// [`Learner::fit`]; with `freeze_epochs` the backbone is frozen, as for the head-only epochs
/// that start the run. `model` itself is not changed.
///
/// # Errors
/// [`TrainError::Config`] for invalid settings or a fully frozen model; data and input-shape
/// errors as [`Learner::fit`].
pub fn lr_find<M: VisionModel>(
    model: &M,
    train: &dyn BatchSource,
    config: &LearnerConfig,
    finder: &LrFindConfig,
) -> Result<LrFind, TrainError> {
    finder.validate()?;
    config.validate()?;
    if train.num_items() == 0 {
        return Err(TrainError::Data("the training data is empty".into()));
    }
    let stages = model.stages();
    if model.freeze_state().frozen_index(&stages) == Some(stages.len().saturating_sub(1)) {
        return Err(TrainError::Config(
            "the whole model is frozen: nothing would train (unfreeze the head)".into(),
        ));
    }
    let autodiff = model.device().without_autodiff().autodiff();
    model.device().without_autodiff().seed(config.seed);
    // A fine_tune run's rate is first used for its head-only epochs: test on that model, as
    // fastai's lr_find runs on the frozen learner.
    let model = if config.is_fine_tune() {
        model.valid().freeze_backbone()
    } else {
        model.valid()
    };
    let head_only = model.is_head_only();
    let mut model = model.fork(&autodiff).train();
    let data = FitData::<M> {
        train,
        val: train,
        cached: None,
        backbone: head_only.then(|| model.for_inference()),
        loss_fn: CrossEntropyLossConfig::new().init(&autodiff),
        replicas: Vec::new(),
        batches: train.num_batches(),
    };
    let mut optim = config.build_optimizer()?;
    let mix = config.batch_mix();
    let group = if config.backbone_lr_mult != 1.0 {
        model.backbone_group()
    } else {
        ParamGroup::all()
    };
    let beta = 0.98f64;
    let (mut avg, mut best) = (0.0f64, f64::INFINITY);
    let mut found = LrFind {
        lrs: Vec::new(),
        losses: Vec::new(),
        diverged: false,
        num_it: finder.num_it,
    };
    let mut epoch = 1;
    'run: loop {
        let mut produced = false;
        for (b, batch) in train.batches(epoch).iter().enumerate() {
            produced = true;
            let batch = batch.map_err(|e| TrainError::Data(e.to_string()))?;
            let i = found.lrs.len();
            let lr = finder.lr_at(i);
            let [_, _, h, w] = batch.images.dims();
            let mixed = if mix.mixes() {
                mix.draw(config.seed, epoch, b, h, w)
            } else {
                Mixed::None
            };
            let step = forward(&model, &data, batch, &mix, mixed)?;
            let rates = Schedule::Constant
                .build(lr, 1, config.backbone_lr_mult, group.clone())?
                .step();
            if step.value.is_finite() {
                let grads = GradientsParams::from_grads(step.loss.backward(), &model);
                model = optim.step(rates, model, grads);
            }
            // fastai's AvgSmoothLoss: a debiased exponential moving average.
            avg = beta * avg + (1.0 - beta) * f64::from(step.value);
            let smooth = avg / (1.0 - beta.powi(i as i32 + 1));
            found.lrs.push(lr);
            found.losses.push(smooth);
            if smooth < best {
                best = smooth;
            }
            if finder.stop_div
                && (smooth.is_nan() || !step.value.is_finite() || smooth > 4.0 * best)
            {
                found.diverged = true;
                break 'run;
            }
            if found.lrs.len() >= finder.num_it {
                break 'run;
            }
        }
        if !produced {
            return Err(TrainError::Data(format!(
                "epoch {epoch} produced no training batches"
            )));
        }
        epoch += 1;
    }
    Ok(found)
}

impl Learner {
    /// [`lr_find`] with this learner's configuration.
    ///
    /// # Errors
    /// As [`lr_find`].
    pub fn lr_find<M: VisionModel>(
        &self,
        model: &M,
        train: &dyn BatchSource,
        finder: &LrFindConfig,
    ) -> Result<LrFind, TrainError> {
        lr_find(model, train, &self.config, finder)
    }
}
