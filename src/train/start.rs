//! The first phase of [`Learner::fit`]: the inputs checked, the run directory locked, the
//! checkpoint resumed (or a previous run's outputs refused), the optimizer and schedule built,
//! and the frozen backbone's features cached; plus the state the later phases share.

use std::path::Path;
use std::time::Instant;

use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;

use super::TrainError;
use super::checkpoint::{self, LoopState, RunLock};
use super::config::LearnerConfig;
use super::ema::ModelEma;
use super::evaluate::EvalPath;
use super::features;
use super::history::History;
use super::learner::Learner;
use super::progress::FitEvent;
use super::source::{BatchSource, TensorSource};
use crate::model::VisionModel;

/// The loop's mutable state between phases (the model being trained moves through the
/// optimizer by value and travels beside it).
pub(super) struct FitRun<M> {
    /// The best epoch's weights so far (without autodiff; the EMA's, with EMA on).
    pub best: M,
    /// The model EMA, when on.
    pub ema: Option<ModelEma<M>>,
    pub optim: ModuleOptimizer,
    pub scheduler: ModuleLrScheduler,
    /// What checkpoints store: epochs done, best metric, history, schedule steps.
    pub state: LoopState,
    /// Epochs done in the checkpoint this run resumed from.
    pub resumed_from: Option<usize>,
    pub stopped_early: bool,
    /// The run directory's lock, held until `fit` returns.
    pub lock: Option<RunLock>,
}

/// What the phases read: the data, in the form the loop trains on (the prepared backbone is
/// dropped when a `fine_tune` run unfreezes it).
pub(super) struct FitData<'a, M: VisionModel> {
    /// The training data as given.
    pub train: &'a dyn BatchSource,
    /// The validation data as given (the picture reports read its items).
    pub val: &'a dyn BatchSource,
    /// Cached backbone features of `train` and `val`, when caching.
    pub cached: Option<(TensorSource, TensorSource)>,
    /// The frozen backbone, prepared once for inference (head-only training without a cache).
    pub backbone: Option<M::Inference>,
    pub loss_fn: CrossEntropyLoss,
    /// Training batches per epoch.
    pub batches: usize,
    /// The data-parallel replicas' autodiff devices, the model's first
    /// ([`Learner::data_parallel`]; empty: the model's device alone).
    pub replicas: Vec<Device>,
}

impl<M: VisionModel> FitData<'_, M> {
    /// The devices a training batch is split over: the replicas, when there are several and
    /// the whole model trains (head-only training, on cached features or a prepared frozen
    /// backbone, stays on the main device: its step is a small fraction of the forward pass).
    pub fn parallel_devices(&self) -> Option<&[Device]> {
        (self.replicas.len() > 1 && self.cached.is_none() && self.backbone.is_none())
            .then_some(&self.replicas[..])
    }

    /// The batches the training phase runs on: cached features, or the data as given.
    pub fn train_source(&self) -> &dyn BatchSource {
        match &self.cached {
            Some((train, _)) => train,
            None => self.train,
        }
    }

    /// The batches validation runs on.
    pub fn val_source(&self) -> &dyn BatchSource {
        match &self.cached {
            Some((_, val)) => val,
            None => self.val,
        }
    }

    /// How validation turns a batch into logits: the head on cached features, the prepared
    /// frozen backbone then the head, or the whole model.
    pub fn eval_path(&self) -> EvalPath<'_, M::Inference> {
        match (&self.cached, &self.backbone) {
            (Some(_), _) => EvalPath::HeadOnly,
            (None, Some(backbone)) => EvalPath::Backbone(backbone),
            (None, None) => EvalPath::Full,
        }
    }
}

impl Learner {
    /// Start or resume: everything before the first epoch. Returns the model to train (on the
    /// autodiff device, in train mode), the loop state and the data.
    pub(super) fn start<'a, M: VisionModel>(
        &self,
        model: M,
        train: &'a dyn BatchSource,
        val: &'a dyn BatchSource,
    ) -> Result<(M, FitRun<M>, FitData<'a, M>), TrainError> {
        let head_only = self.check_inputs(&model, train, val)?;
        let plain = model.device().without_autodiff();
        if let Some(first) = self.devices.first()
            && first.clone().without_autodiff() != plain
        {
            return Err(TrainError::Config(format!(
                "data_parallel: the first device ({first:?}) must be the model's ({plain:?}): move the model there, or list its device first"
            )));
        }
        let autodiff = plain.clone().autodiff();
        plain.seed(self.config.seed);

        let batches = train.num_batches();
        let mut run = self.new_run(&model, batches)?;
        // Held until `fit` returns: a second run into the same directory fails at once.
        run.lock = self
            .run_dir
            .as_deref()
            .map(checkpoint::lock_run_dir)
            .transpose()?;
        let (model, mut run) = match &self.run_dir {
            Some(run_dir) => self.resume_or_refuse(run_dir, model, run, &plain, batches)?,
            None => (model, run),
        };
        let signature = train.signature();
        if let (Some(saved), Some(now)) = (&run.state.train_data, &signature)
            && saved != now
        {
            return Err(TrainError::Checkpoint {
                path: self
                    .run_dir
                    .as_deref()
                    .map(checkpoint::checkpoint_dir)
                    .unwrap_or_default(),
                reason: format!(
                    "it was trained on other data ({} differ): resume with the same transforms, batch size, image limits and seed, or use another output directory",
                    differing_keys(saved, now)
                ),
            });
        }
        run.state.train_data = signature;

        // A fine_tune run freezes or unfreezes the backbone for the phase of its next epoch.
        let phase = self.config.phase_of(run.state.epochs_done + 1);
        let model = self.phase_model(model, phase);
        let head_only = if self.config.is_fine_tune() {
            model.is_head_only()
        } else {
            head_only
        };
        let model = model.fork(&autodiff).train();
        let cached = self.cached_features(&model, train, val, head_only)?;
        // A frozen backbone never changes: fold it (and, on CPU, prepare its host path) once.
        let backbone = (head_only && cached.is_none()).then(|| model.for_inference());
        if self.devices.len() > 1 && head_only {
            self.emit(FitEvent::Note(
                "data parallel: only the head trains (frozen backbone with frozen BatchNorm), which runs on the first device alone",
            ));
        }
        let data = FitData {
            train,
            val,
            cached,
            backbone,
            loss_fn: CrossEntropyLossConfig::new().init(&autodiff),
            batches,
            replicas: self.devices.iter().map(|d| d.clone().autodiff()).collect(),
        };
        Ok((model, run, data))
    }

    /// Checks the configuration, the data and the model; returns whether only the head trains
    /// (backbone frozen with frozen BatchNorm).
    fn check_inputs<M: VisionModel>(
        &self,
        model: &M,
        train: &dyn BatchSource,
        val: &dyn BatchSource,
    ) -> Result<bool, TrainError> {
        self.config.validate()?;
        if self.cache_features && self.config.is_fine_tune() {
            return Err(TrainError::Config(
                "freeze_epochs unfreezes the backbone after the head-only epochs, so its features cannot be computed once: turn off feature caching, or train the head alone without freeze_epochs".into(),
            ));
        }
        if self.cache_features && self.config.batch_mix().mixes() {
            return Err(TrainError::Config(
                "MixUp and CutMix mix images, and cached features have no images to mix: turn off feature caching, or set mixup_alpha and cutmix_alpha to 0".into(),
            ));
        }
        if train.num_items() == 0 {
            return Err(TrainError::Data("the training data is empty".into()));
        }
        if val.num_items() == 0 {
            return Err(TrainError::Data("the validation data is empty".into()));
        }
        let stages = model.stages();
        if self.config.is_fine_tune() && stages.len() < 2 {
            return Err(TrainError::Config(
                "freeze_epochs needs a model with a backbone and a head to freeze one and train the other".into(),
            ));
        }
        if !self.config.is_fine_tune()
            && model.freeze_state().frozen_index(&stages) == Some(stages.len().saturating_sub(1))
        {
            return Err(TrainError::Config(
                "the whole model is frozen: nothing would train (unfreeze the head)".into(),
            ));
        }
        Ok(model.is_head_only())
    }

    /// A fresh run: the schedule of the first phase, the optimizer (with gradient clipping),
    /// the EMA and an empty loop state; the best model so far is the one given.
    fn new_run<M: VisionModel>(&self, model: &M, batches: usize) -> Result<FitRun<M>, TrainError> {
        let config = &self.config;
        let scheduler = self.phase_scheduler(model, config.phase_of(1), batches)?;
        let ema = config
            .ema_decay
            .map(|decay| ModelEma::new(model.valid(), decay, config.ema_warmup == Some(true)));
        Ok(FitRun {
            best: model.valid(),
            ema,
            optim: config.build_optimizer()?,
            scheduler,
            state: LoopState {
                epochs_done: 0,
                best_metric: config.monitor.worst(),
                stale_epochs: 0,
                history: History::default(),
                config: config.clone(),
                schedule_steps: 0,
                ema_updates: 0,
                train_data: None,
                files: Default::default(),
            },
            resumed_from: None,
            stopped_early: false,
            lock: None,
        })
    }

    /// With a checkpoint in `run_dir`: resumes it when asked to (its model and state replace
    /// `model` and `run`), refuses otherwise. Without one: refuses a directory holding a
    /// previous run's outputs.
    fn resume_or_refuse<M: VisionModel>(
        &self,
        run_dir: &Path,
        model: M,
        run: FitRun<M>,
        device: &Device,
        batches: usize,
    ) -> Result<(M, FitRun<M>), TrainError> {
        match checkpoint::latest(run_dir)? {
            Some(dir) if self.resume => self.resume_from(&dir, &model, run, device, batches),
            Some(dir) => Err(TrainError::Checkpoint {
                path: dir,
                reason: "the run directory already holds a checkpoint: resume it, or choose another output directory".into(),
            }),
            None => {
                // No checkpoint, but a previous run's results: never overwrite them.
                let found = checkpoint::previous_outputs(run_dir);
                if found.is_empty() {
                    if self.resume {
                        // A mistyped run directory should not pass unnoticed.
                        self.emit(FitEvent::Note(&format!(
                            "no checkpoint in {}: nothing to resume, starting a new run",
                            run_dir.display()
                        )));
                    }
                    return Ok((model, run));
                }
                Err(TrainError::Checkpoint {
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
                })
            }
        }
    }

    /// Loads the checkpoint in `dir` after checking it fits this configuration and `model`'s
    /// architecture; returns its model and `run` continued from its state.
    fn resume_from<M: VisionModel>(
        &self,
        dir: &Path,
        model: &M,
        run: FitRun<M>,
        device: &Device,
        batches: usize,
    ) -> Result<(M, FitRun<M>), TrainError> {
        let ck = checkpoint::load::<M>(dir, device)?;
        check_compatible(&ck.state.config, &self.config, dir)?;
        if ck.model.config() != model.config() {
            return Err(TrainError::Checkpoint {
                path: dir.to_path_buf(),
                reason:
                    "the checkpoint holds a different architecture than the model passed to fit"
                        .into(),
            });
        }
        // Head-only training and the feature cache were decided from the model passed in (a
        // fine_tune run sets the freeze itself: only its BatchNorm policy must agree).
        let (saved, given) = (ck.model.freeze_state(), model.freeze_state());
        if self.config.is_fine_tune() && saved.bn != given.bn {
            return Err(TrainError::Checkpoint {
                path: dir.to_path_buf(),
                reason: format!(
                    "the run's BatchNorm policy is {} but the model passed to fit has {}: pass the model with with_bn_policy(BnPolicy::{:?}), or use another output directory",
                    saved.bn, given.bn, saved.bn
                ),
            });
        }
        if !self.config.is_fine_tune() && saved != given {
            return Err(TrainError::Checkpoint {
                path: dir.to_path_buf(),
                reason: format!(
                    "the checkpoint's model is {} but the model passed to fit is {}: freeze it as the run was started, or use another output directory",
                    saved.describe(),
                    given.describe()
                ),
            });
        }
        // The scheduler of the last completed epoch's phase continues (the next phase, if
        // any, starts a fresh one).
        let phase = self.config.phase_of(ck.state.epochs_done);
        let scheduler = self.phase_scheduler(model, phase, batches)?;
        let ema = match (run.ema, ck.ema) {
            (Some(mut ema), Some(saved)) => {
                ema.model = saved;
                ema.updates = ck.state.ema_updates;
                Some(ema)
            }
            (ema, _) => ema,
        };
        let run = FitRun {
            best: ck.best,
            ema,
            optim: run.optim.load_record(ck.optimizer),
            scheduler: scheduler.load_record(ck.scheduler),
            resumed_from: Some(ck.state.epochs_done),
            state: LoopState {
                config: self.config.clone(),
                ..ck.state
            },
            ..run
        };
        self.emit(FitEvent::Resumed {
            checkpoint: dir,
            epochs_done: run.state.epochs_done,
        });
        Ok((ck.model, run))
    }

    /// The frozen backbone's features of `train` and `val`, when caching is on; errors when
    /// the backbone or the training transform does not allow it.
    fn cached_features<M: VisionModel>(
        &self,
        model: &M,
        train: &dyn BatchSource,
        val: &dyn BatchSource,
        head_only: bool,
    ) -> Result<Option<(TensorSource, TensorSource)>, TrainError> {
        if !self.cache_features {
            return Ok(None);
        }
        if !head_only {
            return Err(TrainError::Config(format!(
                "feature caching needs a frozen backbone with frozen BatchNorm (freeze_backbone() with BnPolicy::Frozen; this model has {}): under BnPolicy::TrainMode or Trainable the backbone's BatchNorm statistics change every batch, so its features cannot be computed once (turn cache_features off, or use with_bn_policy(BnPolicy::Frozen))",
                model.freeze_state().describe()
            )));
        }
        if !train.is_deterministic() {
            return Err(TrainError::Config(
                "feature caching needs a training transform without randomness (no random flip or crop)".into(),
            ));
        }
        let t0 = Instant::now();
        let extracted = (
            features::extract(model, train, Some(self.config.seed))?,
            features::extract(model, val, None)?,
        );
        self.emit(FitEvent::FeaturesCached {
            train_images: train.num_items(),
            val_images: val.num_items(),
            seconds: t0.elapsed().as_secs_f64(),
        });
        Ok(Some(extracted))
    }
}

/// The top-level fields of two JSON objects whose values differ, each with its value in `a`
/// and in `b` (`None` where it is absent); empty when either is not an object.
fn differing_fields(
    a: &serde_json::Value,
    b: &serde_json::Value,
) -> Vec<(String, Option<serde_json::Value>, Option<serde_json::Value>)> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    a.keys()
        .chain(b.keys().filter(|k| !a.contains_key(*k)))
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| (k.clone(), a.get(k).cloned(), b.get(k).cloned()))
        .collect()
}

/// The names of the fields in which two training-data signatures differ (`the data` when
/// they are not JSON objects).
fn differing_keys(a: &str, b: &str) -> String {
    let parse = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
    let keys: Vec<String> = differing_fields(&parse(a), &parse(b))
        .into_iter()
        .map(|(k, _, _)| k)
        .collect();
    if keys.is_empty() {
        "the data".into()
    } else {
        keys.join(", ")
    }
}

/// A checkpoint can be resumed with the same settings (the number of epochs, early stopping
/// and report options may change).
fn check_compatible(
    saved: &LearnerConfig,
    current: &LearnerConfig,
    dir: &Path,
) -> Result<(), TrainError> {
    // Settings that may change, and the spellings of "off" that mean the same run.
    let normalise = |c: &LearnerConfig| LearnerConfig {
        epochs: 0,
        early_stopping_patience: None,
        prediction_grid: 0,
        grad_accum_steps: Some(c.accum_steps()),
        freeze_epochs: Some(c.head_epochs()),
        ema_warmup: Some(c.ema_warmup == Some(true)),
        label_smoothing: Some(c.label_smoothing.unwrap_or(0.0)),
        mixup_alpha: Some(c.mixup_alpha.unwrap_or(0.0)),
        cutmix_alpha: Some(c.cutmix_alpha.unwrap_or(0.0)),
        ..c.clone()
    };
    let (saved, current) = (normalise(saved), normalise(current));
    if saved != current {
        let json = |c: &LearnerConfig| serde_json::to_value(c).unwrap_or_default();
        let differ: Vec<String> = differing_fields(&json(&saved), &json(&current))
            .into_iter()
            .map(|(k, was, now)| {
                let show =
                    |v: Option<serde_json::Value>| v.map(|v| v.to_string()).unwrap_or_default();
                format!("{k} was {}, now {}", show(was), show(now))
            })
            .collect();
        return Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!(
                "it was written with different settings ({}); resume with the same settings or use another output directory",
                differ.join("; ")
            ),
        });
    }
    Ok(())
}
