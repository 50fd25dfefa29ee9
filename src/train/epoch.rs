//! One epoch's training phase of [`Learner::fit`]: per batch, the learning-rate step, the
//! input checks, MixUp / CutMix, the forward pass and loss (label-smoothed or soft), the
//! non-finite-loss check, the backward pass, gradient accumulation, and the optimizer step
//! (with clipping) followed by the EMA update, with running loss and accuracy.

use std::time::Instant;

use burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Int, Tensor};

use super::TrainError;
use super::evaluate::read_indices;
use super::learner::Learner;
use super::mix::{BatchMix, Mixed, mix_images, soft_cross_entropy, soft_target_tensor};
use super::parallel;
use super::progress::FitEvent;
use super::schedule::ScheduleUnit;
use super::start::{FitData, FitRun};
use crate::data::ImageBatch;
use crate::model::{InferenceModel, VisionModel};

/// What an epoch's training phase measured.
pub(super) struct EpochTotals {
    /// When the epoch started (its record's `seconds` include validation).
    pub started: Instant,
    /// Wall time of the training phase, seconds.
    pub train_seconds: f64,
    /// Training images seen.
    pub seen: usize,
    /// Of those, predicted correctly.
    pub correct: usize,
    /// Sum of the per-image training loss.
    pub loss_sum: f64,
    /// Base (head) learning rate of the first batch.
    pub first_lr: Option<f64>,
}

/// One batch's loss value and counts.
pub(super) struct StepStats {
    /// The mean loss.
    pub value: f32,
    /// Images in the batch.
    pub images: usize,
    /// Correct predictions.
    pub hits: usize,
}

/// One batch's forward pass.
pub(super) struct Forward {
    /// The mean loss, with its autodiff graph.
    pub loss: Tensor<1>,
    /// Its value.
    pub value: f32,
    /// Images in the batch.
    pub images: usize,
    /// Correct predictions.
    pub hits: usize,
}

impl EpochTotals {
    fn new(started: Instant) -> Self {
        EpochTotals {
            started,
            train_seconds: 0.0,
            seen: 0,
            correct: 0,
            loss_sum: 0.0,
            first_lr: None,
        }
    }

    /// Adds one stepped batch.
    fn add(&mut self, step: &StepStats) {
        self.seen += step.images;
        self.correct += step.hits;
        self.loss_sum += step.value as f64 * step.images as f64;
    }

    /// Mean training loss so far.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.seen as f64
    }

    /// Training accuracy so far.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.seen as f64
    }
}

impl Learner {
    /// Trains `model` for one epoch on the training data; returns it with the epoch's
    /// totals. Errors on failing data, a bad input shape, a non-finite loss, or no batches.
    pub(super) fn train_epoch<M: VisionModel>(
        &self,
        mut model: M,
        run: &mut FitRun<M>,
        data: &FitData<'_, M>,
        epoch: usize,
        started: Instant,
    ) -> Result<(M, EpochTotals), TrainError> {
        let epoch_lr = self.epoch_lr(run);
        let (epochs, batches) = (self.config.total_epochs(), data.batches);
        self.emit(FitEvent::EpochStarted {
            epoch,
            epochs,
            batches,
        });
        let mut totals = EpochTotals::new(started);
        let mix = self.config.batch_mix();
        let accum = self.config.accum_steps();
        let mut accumulator = GradientsAccumulator::<M>::new();
        // Batches whose gradients wait in the accumulator, and the group's learning rate.
        let mut pending = 0usize;
        let mut group_lr = None;
        let loader = data.train_source().batches(epoch);
        for (b, batch) in loader.iter().enumerate() {
            let batch = batch.map_err(|e| TrainError::Data(e.to_string()))?;
            if pending == 0 {
                let lr = match &epoch_lr {
                    Some(lr) => lr.clone(),
                    None => step_schedule(run),
                };
                totals.first_lr.get_or_insert(lr.base());
                group_lr = Some(lr);
            }
            let mixed = if data.cached.is_some() {
                Mixed::None
            } else {
                let [_, _, h, w] = batch.images.dims();
                mix.draw(self.config.seed, epoch, b, h, w)
            };
            // timm's accumulation: each batch's loss divided by its group's length (the last
            // group of the epoch may be shorter).
            let group_start = b - pending;
            let group_len = accum.min(batches.saturating_sub(group_start)).max(1);
            let (grads, step) = match data.parallel_devices() {
                Some(devices) => {
                    parallel::step(&model, devices, batch, &mix, mixed, 1.0 / group_len as f32)?
                }
                None => {
                    let step = forward(&model, data, batch, &mix, mixed)?;
                    let stats = StepStats {
                        value: step.value,
                        images: step.images,
                        hits: step.hits,
                    };
                    if !stats.value.is_finite() {
                        (GradientsParams::new(), stats)
                    } else {
                        let loss = if group_len > 1 {
                            step.loss.div_scalar(group_len as f32)
                        } else {
                            step.loss
                        };
                        (GradientsParams::from_grads(loss.backward(), &model), stats)
                    }
                }
            };
            if !step.value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    epoch,
                    batch: b + 1,
                    loss: step.value,
                    last_good: run.state.epochs_done,
                });
            }
            pending += 1;
            totals.add(&step);
            if accum == 1 {
                model = self.optimizer_step(model, run, group_lr.take(), grads)?;
                pending = 0;
            } else {
                accumulator.accumulate(&model, grads);
                if pending >= group_len {
                    let grads = accumulator.grads();
                    model = self.optimizer_step(model, run, group_lr.take(), grads)?;
                    pending = 0;
                }
            }
            self.emit(FitEvent::Batch {
                epoch,
                batch: b + 1,
                batches,
                loss: totals.loss(),
                accuracy: totals.accuracy(),
            });
        }
        // A loader that produced fewer batches than it announced (breaking `BatchSource`'s
        // contract) leaves a partial group: it is stepped, its losses divided by the announced
        // group length.
        if pending > 0 {
            let grads = accumulator.grads();
            model = self.optimizer_step(model, run, group_lr.take(), grads)?;
        }
        if totals.seen == 0 {
            return Err(TrainError::Data(format!(
                "epoch {epoch} produced no training batches"
            )));
        }
        totals.train_seconds = started.elapsed().as_secs_f64();
        Ok((model, totals))
    }

    /// One optimizer step with `grads` at `lr` (the optimizer clips them as configured), then
    /// the EMA update.
    fn optimizer_step<M: VisionModel>(
        &self,
        model: M,
        run: &mut FitRun<M>,
        lr: Option<ModuleLearningRate>,
        grads: GradientsParams,
    ) -> Result<M, TrainError> {
        let lr = lr.ok_or_else(|| {
            TrainError::Config("internal: an optimizer step without a learning rate".into())
        })?;
        let model = run.optim.step(lr, model, grads);
        if let Some(ema) = &mut run.ema {
            // `valid` brings BatchNorm's running statistics up to date (Burn keeps the latest
            // batch's in a per-thread map until they are read this way), as timm reads the
            // model's current `state_dict()`.
            if !ema.update(&model.valid()) {
                return Err(TrainError::Config(
                    "the model EMA does not match the model's architecture".into(),
                ));
            }
            run.state.ema_updates = ema.updates;
        }
        Ok(model)
    }

    /// The learning rate of the whole epoch when the schedule steps per epoch (stepping it);
    /// `None` when it steps per batch.
    fn epoch_lr<M>(&self, run: &mut FitRun<M>) -> Option<ModuleLearningRate> {
        match self.config.schedule_unit {
            ScheduleUnit::Epoch => Some(step_schedule(run)),
            ScheduleUnit::Batch => None,
        }
    }
}

/// Advances the schedule one unit; returns its learning rates.
fn step_schedule<M>(run: &mut FitRun<M>) -> ModuleLearningRate {
    run.state.schedule_steps += 1;
    run.scheduler.step()
}

/// Checks a batch's shape and runs it forward: the head alone on cached features, the head on
/// the prepared frozen backbone, or the whole model; then the loss and the hits.
pub(super) fn forward<M: VisionModel>(
    model: &M,
    data: &FitData<'_, M>,
    batch: ImageBatch,
    mix: &BatchMix,
    mixed: Mixed,
) -> Result<Forward, TrainError> {
    let images = mix_images(batch.images.without_autodiff(), mixed);
    let targets = batch.targets.without_autodiff();
    let n = targets.dims()[0];
    let cached = data.cached.is_some();
    if !cached {
        model
            .check_input(images.dims())
            .map_err(TrainError::model)?;
    }
    let logits = if cached {
        model.forward_classifier(images.flatten(1, 3))
    } else if let Some(backbone) = &data.backbone {
        model.forward_classifier(backbone.forward_pre_logits(images))
    } else {
        // BatchNorm layers normalising with batch statistics need more than one value per
        // channel (PyTorch: "Expected more than 1 value per channel when training"); checked
        // from the shape before any kernel runs.
        model
            .check_training_batch(images.dims())
            .map_err(TrainError::model)?;
        model.forward(images)
    };
    let loss = if mix.soft() {
        let classes = logits.dims()[1];
        let soft = soft_target_tensor(targets.clone(), classes, mixed, mix.label_smoothing)?;
        soft_cross_entropy(logits.clone(), soft)
    } else {
        data.loss_fn.forward(logits.clone(), targets.clone())
    };
    let (value, hits) = read_loss_and_hits(loss.clone(), logits, targets)?;
    Ok(Forward {
        loss,
        value,
        images: n,
        hits,
    })
}

/// Loss value and number of correct predictions of one batch.
pub(super) fn read_loss_and_hits(
    loss: Tensor<1>,
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
) -> Result<(f32, usize), TrainError> {
    let hits = logits
        .without_autodiff()
        .argmax(1)
        .flatten::<1>(0, 1)
        .equal(targets)
        .int()
        .sum();
    let hits = read_indices(hits)?.first().copied().unwrap_or(0);
    Ok((loss.without_autodiff().into_scalar::<f32>(), hits))
}
