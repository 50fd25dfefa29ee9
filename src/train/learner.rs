//! The Learner: PyTorch's tutorial `train_model` (Chilamkurthy, "Transfer Learning for Computer
//! Vision Tutorial") as a reusable loop — a train and a validation phase every epoch with
//! running loss and accuracy, the best epoch's weights kept and restored at the end — made
//! fault-tolerant (atomic checkpoints every epoch, exact resume, NaN detection) and fast for
//! the fixed-feature-extractor case (a frozen backbone runs without autodiff; its features can
//! be computed once).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use super::TrainError;
use super::checkpoint::{self, LoopState};
use super::config::LearnerConfig;
use super::evaluate::{EvalPath, Evaluation, evaluate_with, read_indices};
use super::features;
use super::history::{EpochRecord, History};
use super::schedule::ScheduleUnit;
use super::source::BatchSource;
use crate::model::{InferenceModel, VisionModel};

/// What [`Learner::fit`] returns.
#[derive(Debug)]
pub struct FitOutcome<M> {
    /// The model with the best epoch's weights (on the model's device, without autodiff; call
    /// `.train()` after moving it to an autodiff device to continue training).
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
    config: LearnerConfig,
    run_dir: Option<PathBuf>,
    resume: bool,
    cache_features: bool,
    stop_after: Option<usize>,
    class_names: Vec<String>,
    quiet: bool,
    on_epoch: Option<EpochCallback>,
}

/// Called after every epoch with its record (logging, memory probes, custom stopping rules).
pub type EpochCallback = std::sync::Arc<dyn Fn(&EpochRecord) + Send + Sync>;

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learner")
            .field("config", &self.config)
            .field("run_dir", &self.run_dir)
            .field("resume", &self.resume)
            .field("cache_features", &self.cache_features)
            .field("stop_after", &self.stop_after)
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl Learner {
    /// A learner with this configuration, no run directory, not resuming.
    pub fn new(config: LearnerConfig) -> Self {
        Learner {
            config,
            run_dir: None,
            resume: false,
            cache_features: false,
            stop_after: None,
            class_names: Vec::new(),
            quiet: false,
            on_epoch: None,
        }
    }

    /// Calls `callback` after every epoch (after its checkpoint is written).
    pub fn on_epoch(mut self, callback: EpochCallback) -> Self {
        self.on_epoch = Some(callback);
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
    /// backbone frozen with [`BnPolicy::Frozen`] and a deterministic training source;
    /// [`fit`](Self::fit) returns [`TrainError::Config`] otherwise (under
    /// [`BnPolicy::TrainMode`] the backbone's features change with its running statistics).
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

    /// Print nothing.
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    fn say(&self, line: &str) {
        if !self.quiet {
            println!("{line}");
        }
    }

    /// Trains `model` on `train`, validating on `val` after every epoch; returns the best
    /// epoch's model. Batches must live on the model's device.
    pub fn fit<M: VisionModel>(
        &self,
        model: M,
        train: &dyn BatchSource,
        val: &dyn BatchSource,
    ) -> Result<FitOutcome<M>, TrainError> {
        let config = &self.config;
        config.validate()?;
        if train.num_items() == 0 {
            return Err(TrainError::Data("the training data is empty".into()));
        }
        if val.num_items() == 0 {
            return Err(TrainError::Data("the validation data is empty".into()));
        }
        let freeze = model.freeze_state().clone();
        let stages = model.stages();
        if freeze.frozen_index(&stages) == Some(stages.len() - 1) {
            return Err(TrainError::Config(
                "the whole model is frozen: nothing would train (unfreeze the head)".into(),
            ));
        }
        let head_only = model.is_head_only();

        let plain = model.device().without_autodiff();
        let autodiff = plain.clone().autodiff();
        plain.seed(config.seed);

        let batches_per_epoch = train.num_items().div_ceil(train.batch_size().max(1));
        let units_per_epoch = match config.schedule_unit {
            ScheduleUnit::Epoch => 1,
            ScheduleUnit::Batch => batches_per_epoch,
        };
        let mut scheduler = config.schedule.build(
            config.lr,
            config.epochs * units_per_epoch,
            config.backbone_lr_mult,
            model.backbone_group(),
        )?;
        let mut optim = config.optimizer.build()?;
        let mut state = LoopState {
            epochs_done: 0,
            best_metric: config.monitor.worst(),
            stale_epochs: 0,
            history: History::default(),
            config: config.clone(),
            schedule_steps: 0,
            files: Default::default(),
        };
        let mut model = model;
        let mut best = model.valid();
        let mut resumed_from = None;

        // Held until `fit` returns: a second run into the same directory fails at once.
        let _run_lock = self
            .run_dir
            .as_deref()
            .map(checkpoint::lock_run_dir)
            .transpose()?;
        if let Some(run_dir) = &self.run_dir {
            match checkpoint::latest(run_dir)? {
                Some(dir) if self.resume => {
                    let ck = checkpoint::load::<M>(&dir, &plain)?;
                    check_compatible(&ck.state.config, config, &dir)?;
                    if ck.model.config() != model.config() {
                        return Err(TrainError::Checkpoint {
                            path: dir,
                            reason: "the checkpoint holds a different architecture than the model passed to fit".into(),
                        });
                    }
                    model = ck.model;
                    best = ck.best;
                    optim = optim.load_record(ck.optimizer);
                    scheduler = scheduler.load_record(ck.scheduler);
                    resumed_from = Some(ck.state.epochs_done);
                    state = LoopState {
                        config: config.clone(),
                        ..ck.state
                    };
                    self.say(&format!(
                        "resuming from {} after epoch {}",
                        dir.display(),
                        state.epochs_done
                    ));
                }
                Some(dir) => {
                    return Err(TrainError::Checkpoint {
                        path: dir,
                        reason: "the run directory already holds a checkpoint: resume it, or choose another output directory".into(),
                    });
                }
                None => {
                    // No checkpoint, but a previous run's results: never overwrite them.
                    let found = checkpoint::previous_outputs(run_dir);
                    if !found.is_empty() {
                        return Err(TrainError::Checkpoint {
                            path: checkpoint::checkpoint_dir(run_dir),
                            reason: format!(
                                "missing, but the run directory holds a previous run's {}: {}; nothing was overwritten",
                                found.join(", "),
                                if self.resume {
                                    "there is nothing to resume from (restore the checkpoint directory, or start the run in another output directory)"
                                } else {
                                    "choose another output directory"
                                }
                            ),
                        });
                    }
                }
            }
        }

        let mut model = model.fork(&autodiff).train();
        let cached = if self.cache_features {
            if !head_only {
                return Err(TrainError::Config(format!(
                    "feature caching needs a frozen backbone with frozen BatchNorm (freeze_backbone() with BnPolicy::Frozen; this model has {}): under BnPolicy::TrainMode or Trainable the backbone's BatchNorm statistics change every batch, so its features cannot be computed once (turn cache_features off, or use with_bn_policy(BnPolicy::Frozen))",
                    freeze.describe()
                )));
            }
            if !train.is_deterministic() {
                return Err(TrainError::Config(
                    "feature caching needs a training transform without randomness (no random flip or crop)".into(),
                ));
            }
            let t0 = Instant::now();
            let extracted = (
                features::extract(&model, train, Some(config.seed))?,
                features::extract(&model, val, None)?,
            );
            self.say(&format!(
                "cached backbone features of {} + {} images in {:.1} s",
                train.num_items(),
                val.num_items(),
                t0.elapsed().as_secs_f64()
            ));
            Some(extracted)
        } else {
            None
        };
        let (train_src, val_src): (&dyn BatchSource, &dyn BatchSource) = match &cached {
            Some((t, v)) => (t, v),
            None => (train, val),
        };

        // A frozen backbone never changes: fold it (and, on CPU, prepare its host path) once.
        let backbone = (head_only && cached.is_none()).then(|| model.for_inference());
        let loss_fn = CrossEntropyLossConfig::new().init(&autodiff);
        let mut stopped_early = false;
        let first = state.epochs_done + 1;
        for (ran, epoch) in (first..=config.epochs).enumerate() {
            if self.stop_after.is_some_and(|n| ran >= n) {
                break;
            }
            let started = Instant::now();
            let epoch_lr: Option<ModuleLearningRate> = match config.schedule_unit {
                ScheduleUnit::Epoch => {
                    state.schedule_steps += 1;
                    Some(scheduler.step())
                }
                ScheduleUnit::Batch => None,
            };
            let mut first_lr = None;
            let progress = self.progress(epoch, batches_per_epoch);
            let (mut seen, mut correct, mut loss_sum) = (0usize, 0usize, 0.0f64);
            let loader = train_src.batches(epoch);
            for (b, batch) in loader.iter().enumerate() {
                let batch = batch.map_err(|e| TrainError::Data(e.to_string()))?;
                let lr = match &epoch_lr {
                    Some(lr) => lr.clone(),
                    None => {
                        state.schedule_steps += 1;
                        scheduler.step()
                    }
                };
                first_lr.get_or_insert(lr.base());
                let images = batch.images.without_autodiff();
                let targets = batch.targets.without_autodiff();
                let n = targets.dims()[0];
                if cached.is_none() {
                    model
                        .check_input(images.dims())
                        .map_err(TrainError::model)?;
                }
                let logits = if cached.is_some() {
                    model.forward_classifier(images.flatten(1, 3))
                } else if let Some(backbone) = &backbone {
                    model.forward_classifier(backbone.forward_pre_logits(images))
                } else {
                    // BatchNorm layers normalising with batch statistics need more than one
                    // value per channel (PyTorch: "Expected more than 1 value per channel when
                    // training"); checked from the shape before any kernel runs.
                    model
                        .check_training_batch(images.dims())
                        .map_err(TrainError::model)?;
                    model.forward(images)
                };
                let loss = loss_fn.forward(logits.clone(), targets.clone());
                let (loss_value, hits) = read_loss_and_hits(loss.clone(), logits, targets)?;
                if !loss_value.is_finite() {
                    progress.finish();
                    return Err(TrainError::NonFiniteLoss {
                        epoch,
                        batch: b + 1,
                        loss: loss_value,
                        last_good: state.epochs_done,
                    });
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(lr, model, grads);
                seen += n;
                correct += hits;
                loss_sum += loss_value as f64 * n as f64;
                progress.update(b + 1, loss_sum / seen as f64, correct as f64 / seen as f64);
            }
            progress.finish();
            if seen == 0 {
                return Err(TrainError::Data(format!(
                    "epoch {epoch} produced no training batches"
                )));
            }
            let train_seconds = started.elapsed().as_secs_f64();
            let eval = evaluate_with(&model, val_src, eval_path(cached.is_some(), &backbone))?;
            let record = EpochRecord {
                epoch,
                lr: first_lr.unwrap_or(config.lr),
                train_loss: loss_sum / seen as f64,
                train_acc: correct as f64 / seen as f64,
                val_loss: eval.loss,
                val_acc: eval.accuracy,
                seconds: started.elapsed().as_secs_f64(),
                images_per_sec: seen as f64 / train_seconds.max(1e-9),
            };
            let metric = match config.monitor {
                super::Monitor::ValAccuracy => record.val_acc,
                super::Monitor::ValLoss => record.val_loss,
            };
            let improved = config.monitor.improves(metric, state.best_metric);
            if improved {
                state.best_metric = metric;
                state.history.best_epoch = epoch;
                state.history.best_val_acc = record.val_acc;
                state.stale_epochs = 0;
                best = model.valid();
            } else {
                state.stale_epochs += 1;
            }
            self.say(&format!(
                "Epoch {epoch}/{}  train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} | lr {:.2e} | {:.1} s, {:.0} img/s{}",
                config.epochs,
                record.train_loss,
                record.train_acc,
                record.val_loss,
                record.val_acc,
                record.lr,
                record.seconds,
                record.images_per_sec,
                if improved { "  *" } else { "" }
            ));
            state.history.epochs.push(record.clone());
            state.epochs_done = epoch;
            if let Some(run_dir) = &self.run_dir {
                checkpoint::save(run_dir, &model.valid(), &best, &optim, &scheduler, &state)?;
            }
            if let Some(callback) = &self.on_epoch {
                callback(&record);
            }
            if config
                .early_stopping_patience
                .is_some_and(|p| state.stale_epochs >= p)
            {
                self.say(&format!(
                    "early stopping: {} has not improved for {} epochs",
                    config.monitor.name(),
                    state.stale_epochs
                ));
                stopped_early = true;
                break;
            }
        }
        let completed = state.epochs_done >= config.epochs || stopped_early;
        if state.history.best_epoch == 0 {
            return Err(TrainError::Config(
                "no epoch ran: the checkpoint already covers every configured epoch (raise epochs to continue)".into(),
            ));
        }
        self.say(&format!(
            "Best {} {:.4} at epoch {}",
            config.monitor.name(),
            state.best_metric,
            state.history.best_epoch
        ));

        // The tutorial's `model.load_state_dict(best_model_wts)`.
        let evaluation = match &cached {
            Some((_, v)) => evaluate_with(&best, v, EvalPath::HeadOnly)?,
            None => evaluate_with(&best, val, eval_path(false, &backbone))?,
        };
        if let Some(run_dir) = &self.run_dir {
            self.write_reports(run_dir, &best, &state.history, &evaluation, val)?;
        }
        Ok(FitOutcome {
            model: best,
            best_epoch: state.history.best_epoch,
            best_metric: state.best_metric,
            history: state.history,
            resumed_from,
            stopped_early,
            completed,
            evaluation,
        })
    }

    fn write_reports<M: VisionModel>(
        &self,
        run_dir: &Path,
        best: &M,
        history: &History,
        evaluation: &Evaluation,
        val: &dyn BatchSource,
    ) -> Result<(), TrainError> {
        history.save_json(&run_dir.join("history.json"))?;
        history.save_csv(&run_dir.join("history.csv"))?;
        let config = serde_json::to_vec_pretty(&self.config)
            .map_err(|e| TrainError::Config(format!("serialising config: {e}")))?;
        checkpoint::write_atomic(&run_dir.join("config.json"), &config)?;
        best.save(run_dir.join("best_model.bpk"))
            .map_err(TrainError::model)?;
        super::report::write_pictures(
            run_dir,
            history,
            evaluation,
            val,
            &self.class_names,
            self.config.prediction_grid,
        )
    }

    fn progress(&self, epoch: usize, batches: usize) -> Progress {
        if self.quiet || !std::io::stdout().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(batches as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("{epoch}/{}", self.config.epochs));
        Progress(Some(bar))
    }
}

struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn update(&self, pos: usize, loss: f64, acc: f64) {
        if let Some(bar) = &self.0 {
            bar.set_position(pos as u64);
            bar.set_message(format!("loss {loss:.4} acc {acc:.4}"));
        }
    }
    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// The evaluation path of a run: cached features, a prepared frozen backbone, or the model.
fn eval_path<I>(cached: bool, backbone: &Option<I>) -> EvalPath<'_, I> {
    match (cached, backbone) {
        (true, _) => EvalPath::HeadOnly,
        (false, Some(b)) => EvalPath::Backbone(b),
        (false, None) => EvalPath::Full,
    }
}

/// Loss value and number of correct predictions of one batch.
fn read_loss_and_hits(
    loss: Tensor<1>,
    logits: Tensor<2>,
    targets: burn::tensor::Tensor<1, burn::tensor::Int>,
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

/// A checkpoint can be resumed with the same settings (the number of epochs, early stopping
/// and report options may change).
fn check_compatible(
    saved: &LearnerConfig,
    current: &LearnerConfig,
    dir: &Path,
) -> Result<(), TrainError> {
    let normalise = |c: &LearnerConfig| LearnerConfig {
        epochs: 0,
        early_stopping_patience: None,
        prediction_grid: 0,
        ..c.clone()
    };
    if normalise(saved) != normalise(current) {
        return Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!(
                "it was written with different settings ({}); resume with the same settings or use another output directory",
                serde_json::to_string(saved).unwrap_or_default()
            ),
        });
    }
    Ok(())
}
