//! The Learner end to end on tiny in-memory data: history, best weights, checkpoints and exact
//! resume, NaN detection, the frozen fast path, feature caching, early stopping, schedules.

use finetune::model::VisionModel;
use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::tensor::{Device, Distribution, Tensor};
use finetune::data::ImageBatch;
use finetune::model::ResNet;
use finetune::train::{
    BatchSource, FitEvent, FitSink, Learner, LearnerConfig, Monitor, OptimizerConfig, Schedule,
    ScheduleUnit, TensorSource, TrainError, evaluate,
};

use crate::common::{changed, cpu, snapshot, tiny_model};

const CLASSES: usize = 3;

/// `n` 16x16 images whose class shows in the mean of one colour channel, with labels.
fn toy_data(n: usize, seed: u64, device: &Device) -> (Tensor<4>, Vec<usize>) {
    device.seed(seed);
    let labels: Vec<usize> = (0..n).map(|i| i % CLASSES).collect();
    let noise = Tensor::<4>::random([n, 3, 16, 16], Distribution::Normal(0.0, 0.5), device);
    let mut shift = vec![0f32; n * 3];
    for (i, &l) in labels.iter().enumerate() {
        shift[i * 3 + l] = 2.0;
    }
    let shift = Tensor::<1>::from_floats(shift.as_slice(), device).reshape([n, 3, 1, 1]);
    (noise + shift, labels)
}

fn sources(device: &Device) -> (TensorSource, TensorSource) {
    let (x, y) = toy_data(48, 1, device);
    let (vx, vy) = toy_data(24, 2, device);
    (
        TensorSource::new(x, &y, 8).shuffled(5),
        TensorSource::new(vx, &vy, 12),
    )
}

fn config(epochs: usize) -> LearnerConfig {
    LearnerConfig::default()
        .with_epochs(epochs)
        .with_lr(0.05)
        .with_optimizer(OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-4,
        })
        .with_schedule(Schedule::Step {
            step_size: 1,
            gamma: 0.5,
        })
        .with_schedule_unit(ScheduleUnit::Epoch)
}

#[test]
fn fit_trains_keeps_the_best_epoch_and_writes_its_outputs() {
    let device = cpu();
    let (train, val) = sources(&device);
    let dir = tempfile::tempdir().unwrap();
    let outcome = Learner::new(config(3))
        .run_dir(dir.path())
        .fit(tiny_model(), &train, &val)
        .unwrap();
    let h = &outcome.history;
    assert_eq!(h.epochs.len(), 3);
    assert_eq!(
        h.epochs.iter().map(|e| e.lr).collect::<Vec<_>>(),
        vec![0.05, 0.025, 0.0125]
    );
    let best = h
        .epochs
        .iter()
        .max_by(|a, b| a.val_acc.partial_cmp(&b.val_acc).unwrap())
        .unwrap();
    assert_eq!(h.best_val_acc, best.val_acc);
    assert!(h.epochs.iter().all(|e| e.val_acc <= h.best_val_acc));
    assert!(h.epochs[h.best_epoch - 1].val_acc == h.best_val_acc);
    // The returned model is the best epoch's: evaluating it reproduces the best accuracy.
    let eval = evaluate(&outcome.model, &val).unwrap();
    assert_eq!(eval.accuracy, h.best_val_acc);
    assert_eq!(eval.len(), 24);
    let total: u64 = eval.confusion.iter().flatten().sum();
    assert_eq!(total, 24);
    assert!(
        h.best_val_acc > 1.0 / CLASSES as f64,
        "did not learn: {h:?}"
    );
    for file in [
        "history.json",
        "history.csv",
        "config.json",
        "best_model.bpk",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("history.json")).unwrap()).unwrap();
    assert_eq!(json["epochs"].as_array().unwrap().len(), 3);
    for key in [
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "seconds",
        "images_per_sec",
    ] {
        assert!(json["epochs"][0].get(key).is_some(), "{key}");
    }
    assert!(json.get("best_epoch").is_some() && json.get("best_val_acc").is_some());
    let csv = std::fs::read_to_string(dir.path().join("history.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    let saved = ResNet::load(dir.path().join("best_model.bpk"), &device).unwrap();
    assert!(changed(&snapshot(&saved), &snapshot(&outcome.model)).is_empty());
}

#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
    let device = cpu();
    let (train, val) = sources(&device);
    let straight = tempfile::tempdir().unwrap();
    let a = Learner::new(config(4))
        .run_dir(straight.path())
        .fit(tiny_model(), &train, &val)
        .unwrap();

    let split = tempfile::tempdir().unwrap();
    let first = Learner::new(config(4))
        .run_dir(split.path())
        .stop_after(Some(2))
        .fit(tiny_model(), &train, &val)
        .unwrap();
    assert!(!first.completed);
    assert_eq!(first.history.epochs.len(), 2);
    // A fresh model object: everything must come from the checkpoint.
    let b = Learner::new(config(4))
        .run_dir(split.path())
        .resume(true)
        .fit(tiny_model(), &train, &val)
        .unwrap();
    assert_eq!(b.resumed_from, Some(2));
    assert!(b.completed);

    let lrs = |h: &finetune::train::History| h.epochs.iter().map(|e| e.lr).collect::<Vec<_>>();
    assert_eq!(lrs(&a.history), lrs(&b.history));
    assert_eq!(a.history.best_epoch, b.history.best_epoch);
    let last =
        |dir: &std::path::Path| ResNet::load(dir.join("checkpoint/model.bpk"), &device).unwrap();
    let (wa, wb) = (
        snapshot(&last(straight.path())),
        snapshot(&last(split.path())),
    );
    for ((path, va), (_, vb)) in wa.iter().zip(&wb) {
        for (x, y) in va.iter().zip(vb) {
            let (x, y) = (f32::from_bits(*x), f32::from_bits(*y));
            assert!((x - y).abs() <= 1e-6, "{path}: {x} vs {y}");
        }
    }
    for (ea, eb) in a.history.epochs.iter().zip(&b.history.epochs) {
        assert!((ea.train_loss - eb.train_loss).abs() < 1e-6);
        assert!((ea.val_acc - eb.val_acc).abs() < 1e-9);
    }
}

/// Wraps a source and poisons its images from epoch `from` on.
struct PoisonFrom {
    inner: TensorSource,
    poisoned: TensorSource,
    from: usize,
}

impl BatchSource for PoisonFrom {
    fn batches(&self, epoch: usize) -> Arc<dyn DataLoader<ImageBatch>> {
        if epoch >= self.from {
            self.poisoned.batches(epoch)
        } else {
            self.inner.batches(epoch)
        }
    }
    fn num_items(&self) -> usize {
        self.inner.num_items()
    }
    fn batch_size(&self) -> usize {
        self.inner.batch_size()
    }
}

#[test]
fn a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let device = cpu();
    let (x, y) = toy_data(16, 1, &device);
    let nan = x.clone().mul_scalar(f32::NAN);
    let train = PoisonFrom {
        inner: TensorSource::new(x, &y, 8),
        poisoned: TensorSource::new(nan, &y, 8),
        from: 2,
    };
    let (_, val) = sources(&device);
    let dir = tempfile::tempdir().unwrap();
    let err = Learner::new(config(3))
        .run_dir(dir.path())
        .fit(tiny_model(), &train, &val)
        .unwrap_err();
    match &err {
        TrainError::NonFiniteLoss {
            epoch,
            batch,
            last_good,
            ..
        } => assert_eq!((*epoch, *batch, *last_good), (2, 1, 1)),
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("epoch 2, batch 1"), "{err}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("checkpoint/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["epochs_done"], 1);
    ResNet::load(dir.path().join("checkpoint/model.bpk"), &device).unwrap();
}

#[test]
fn frozen_backbone_trains_only_the_head_with_or_without_cached_features() {
    let device = cpu();
    let (train, val) = sources(&device);
    let model = tiny_model().freeze_backbone();
    let before = snapshot(&model);
    for cache in [false, true] {
        let outcome = Learner::new(config(2))
            .cache_features(cache)
            .fit(model.clone(), &train, &val)
            .unwrap();
        let moved = changed(&before, &snapshot(&outcome.model));
        assert!(!moved.is_empty());
        assert!(moved.iter().all(|p| p.starts_with("fc.")), "{moved:?}");
        assert_eq!(outcome.model.freeze_state(), model.freeze_state());
    }
}

#[test]
fn feature_caching_is_refused_when_it_would_be_wrong() {
    let device = cpu();
    let (train, val) = sources(&device);
    let err = Learner::new(config(1))
        .cache_features(true)
        .fit(tiny_model(), &train, &val)
        .unwrap_err();
    assert!(err.to_string().contains("frozen backbone"), "{err}");
}

#[test]
fn early_stopping_and_refusing_to_overwrite_a_run() {
    let device = cpu();
    let (train, val) = sources(&device);
    let dir = tempfile::tempdir().unwrap();
    // A learning rate too small to change predictions, and a frozen backbone whose BatchNorm
    // keeps its running statistics (a trainable one's would drift and could move the
    // predictions): validation accuracy never improves after the first epoch.
    let outcome = Learner::new(
        config(10)
            .with_lr(1e-12)
            .with_monitor(Monitor::ValAccuracy)
            .with_early_stopping_patience(Some(2)),
    )
    .run_dir(dir.path())
    .fit(tiny_model().freeze_backbone(), &train, &val)
    .unwrap();
    assert!(outcome.stopped_early);
    assert_eq!(outcome.history.epochs.len(), 3);
    assert_eq!(outcome.best_epoch, 1);

    let err = Learner::new(config(1))
        .run_dir(dir.path())
        .fit(tiny_model(), &train, &val)
        .unwrap_err();
    assert!(
        err.to_string().contains("already holds a checkpoint"),
        "{err}"
    );
}

/// A sink that writes every event as one short line.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl FitSink for Recorder {
    fn event(&self, event: &FitEvent<'_>) {
        let line = match event {
            FitEvent::Resumed { epochs_done, .. } => format!("resumed {epochs_done}"),
            FitEvent::FeaturesCached {
                train_images,
                val_images,
                ..
            } => {
                format!("cached {train_images}+{val_images}")
            }
            FitEvent::EpochStarted {
                epoch,
                epochs,
                batches,
            } => {
                format!("start {epoch}/{epochs} {batches}")
            }
            FitEvent::Batch {
                batch,
                batches,
                loss,
                accuracy,
                ..
            } => {
                assert!(loss.is_finite() && (0.0..=1.0).contains(accuracy));
                format!("batch {batch}/{batches}")
            }
            FitEvent::EpochEnded {
                record,
                epochs,
                improved,
            } => {
                format!("end {}/{epochs} {improved}", record.epoch)
            }
            FitEvent::EarlyStopped {
                monitor,
                stale_epochs,
            } => {
                format!("stop {monitor} {stale_epochs}")
            }
            FitEvent::Finished {
                monitor,
                best_epoch,
                ..
            } => format!("best {monitor} {best_epoch}"),
            FitEvent::Note(line) => format!("note {line}"),
            _ => "other".into(),
        };
        self.0.lock().unwrap().push(line);
    }
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[test]
fn a_sink_hears_every_phase_in_order() {
    let device = cpu();
    let (train, val) = sources(&device);
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    // As in the early-stopping test: validation accuracy never improves after epoch 1.
    let learner = Learner::new(
        config(3)
            .with_lr(1e-12)
            .with_early_stopping_patience(Some(1)),
    )
    .run_dir(dir.path())
    .sink(recorder.clone());
    let batches: Vec<String> = (1..=6).map(|b| format!("batch {b}/6")).collect();
    let epoch = |n: usize, improved: bool| {
        let mut lines = vec![format!("start {n}/3 6")];
        lines.extend(batches.iter().cloned());
        lines.push(format!("end {n}/3 {improved}"));
        lines
    };

    learner
        .clone()
        .stop_after(Some(1))
        .fit(tiny_model(), &train, &val)
        .unwrap();
    let mut expected = epoch(1, true);
    expected.push("best val_acc 1".into());
    assert_eq!(recorder.take(), expected);

    let outcome = learner
        .resume(true)
        .fit(tiny_model(), &train, &val)
        .unwrap();
    assert!(outcome.stopped_early);
    let mut expected = vec!["resumed 1".to_string()];
    expected.extend(epoch(2, false));
    expected.extend(["stop val_acc 1".to_string(), "best val_acc 1".into()]);
    assert_eq!(recorder.take(), expected);

    // Silent without a sink; the recorder hears nothing from another learner.
    Learner::new(config(1))
        .fit(tiny_model(), &train, &val)
        .unwrap();
    assert!(recorder.take().is_empty());
}

#[test]
fn learner_config_json_keeps_its_form() {
    // The form checkpoints and config.json hold (field order included), from before the
    // setters were derived.
    let json = serde_json::to_string(&LearnerConfig::default()).unwrap();
    let keys = [
        "epochs",
        "lr",
        "optimizer",
        "schedule",
        "schedule_unit",
        "backbone_lr_mult",
        "seed",
        "early_stopping_patience",
        "monitor",
        "prediction_grid",
        "label_smoothing",
        "mixup_alpha",
        "cutmix_alpha",
        "grad_accum_steps",
        "clip_grad_norm",
        "clip_grad_value",
        "ema_decay",
        "ema_warmup",
        "freeze_epochs",
    ];
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| json.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{json}");
    assert!(json.starts_with(r#"{"epochs":5,"lr":0.001,"optimizer":{"kind":"sgd","momentum":0.9,"nesterov":false,"weight_decay":0.0},"#), "{json}");
    assert!(json.ends_with(r#""backbone_lr_mult":1.0,"seed":42,"early_stopping_patience":null,"monitor":"val_accuracy","prediction_grid":16,"label_smoothing":null,"mixup_alpha":null,"cutmix_alpha":null,"grad_accum_steps":null,"clip_grad_norm":null,"clip_grad_value":null,"ema_decay":null,"ema_warmup":null,"freeze_epochs":null}"#), "{json}");
    let back: LearnerConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, LearnerConfig::default());
    assert_eq!(LearnerConfig::new(), LearnerConfig::default());
    // A config.json without the optional field still reads.
    let without = json.replace(r#""early_stopping_patience":null,"#, "");
    let back: LearnerConfig = serde_json::from_str(&without).unwrap();
    assert_eq!(back.early_stopping_patience, None);
    // A config.json written before the regularisers and training features existed reads as
    // "off".
    let before = json.replace(
        r#","label_smoothing":null,"mixup_alpha":null,"cutmix_alpha":null,"grad_accum_steps":null,"clip_grad_norm":null,"clip_grad_value":null,"ema_decay":null,"ema_warmup":null,"freeze_epochs":null"#,
        "",
    );
    assert_ne!(before, json);
    let back: LearnerConfig = serde_json::from_str(&before).unwrap();
    assert_eq!(back, LearnerConfig::default());
}

#[test]
fn schedules_follow_pytorch() {
    let step = Schedule::Step {
        step_size: 7,
        gamma: 0.1,
    }
    .rates(0.001, 15)
    .unwrap();
    assert_eq!(step[0], 0.001);
    assert_eq!(step[6], 0.001);
    assert!((step[7] - 1e-4).abs() < 1e-12);
    assert!((step[14] - 1e-5).abs() < 1e-12);

    let cosine = Schedule::Cosine { min_lr: 0.0 }.rates(0.1, 11).unwrap();
    assert_eq!(cosine[0], 0.1);
    assert!(cosine.windows(2).all(|w| w[1] <= w[0]));

    let one = Schedule::one_cycle().rates(0.1, 100).unwrap();
    let peak = one.iter().cloned().fold(0.0, f64::max);
    let at = one.iter().position(|&r| r == peak).unwrap();
    assert!(
        (peak - 0.1).abs() < 1e-9 && (25..=35).contains(&at),
        "peak {peak} at {at}"
    );
    assert!((one[0] - 0.1 / 25.0).abs() < 1e-9);
    assert!(one[99] < 1e-4);

    let warm = Schedule::Warmup {
        steps: 4,
        start_factor: 0.25,
        then: Box::new(Schedule::Constant),
    }
    .rates(0.4, 8)
    .unwrap();
    assert!((warm[0] - 0.1).abs() < 1e-9);
    assert!(warm[1] > warm[0] && warm[4] == 0.4 && warm[7] == 0.4);

    assert!(
        Schedule::Step {
            step_size: 0,
            gamma: 0.1
        }
        .rates(0.1, 3)
        .is_err()
    );
}

#[test]
fn invalid_learner_configs_are_typed_errors() {
    let device = cpu();
    let (train, val) = sources(&device);
    for cfg in [
        config(0),
        config(1).with_lr(-1.0),
        config(1).with_backbone_lr_mult(-2.0),
    ] {
        let err = Learner::new(cfg)
            .fit(tiny_model(), &train, &val)
            .unwrap_err();
        assert!(matches!(err, TrainError::Config(_)), "{err}");
    }
    let err = Learner::new(config(1))
        .fit(tiny_model().freeze(), &train, &val)
        .unwrap_err();
    assert!(err.to_string().contains("nothing would train"), "{err}");
}

#[test]
fn discriminative_learning_rates_move_the_backbone_less() {
    let device = cpu();
    let (train, val) = sources(&device);
    let model = tiny_model();
    let before = snapshot(&model);
    let frozen_lr = Learner::new(config(1).with_backbone_lr_mult(0.0))
        .fit(model.clone(), &train, &val)
        .unwrap();
    let moved = changed(&before, &snapshot(&frozen_lr.model));
    // With a zero backbone rate only the head's weights (and BatchNorm running statistics,
    // which are not optimizer-driven) change.
    assert!(moved.iter().any(|p| p.starts_with("fc.")));
    assert!(
        moved.iter().all(|p| p.starts_with("fc.")
            || p.ends_with("running_mean")
            || p.ends_with("running_var")),
        "{moved:?}"
    );
}

/// Colour-coded 16x16 images: class `c` is bright in channel `c`, plus noise.
pub(crate) fn coloured_dataset(n: usize, seed: u64) -> finetune::data::ImageDataset {
    let mut state = seed;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u8
    };
    let mut pixels = Vec::with_capacity(n * 16 * 16 * 3);
    let labels: Vec<usize> = (0..n).map(|i| i % CLASSES).collect();
    for &l in &labels {
        for _ in 0..16 * 16 {
            for c in 0..3 {
                let base = if c == l { 160 } else { 40 };
                pixels.push(base + next() % 60);
            }
        }
    }
    let classes = vec!["red".to_string(), "green".into(), "blue".into()];
    finetune::data::ImageDataset::from_uniform(16, 16, pixels, labels, classes).unwrap()
}

#[test]
fn fit_over_image_loaders_writes_the_picture_reports() {
    use finetune::data::{ImageLoader, LoaderConfig, Normalize, Pipeline};
    let device = cpu();
    let train = ImageLoader::new(
        Arc::new(coloured_dataset(48, 1)),
        Pipeline::train(Normalize::cifar10()),
        LoaderConfig::train(8, 7).with_workers(2),
        device.clone(),
    );
    let val = ImageLoader::new(
        Arc::new(coloured_dataset(12, 2)),
        Pipeline::eval(Normalize::cifar10()),
        LoaderConfig::eval(6).with_workers(0),
        device,
    );
    let dir = tempfile::tempdir().unwrap();
    let outcome = Learner::new(config(2))
        .run_dir(dir.path())
        .class_names(vec!["red".into(), "green".into(), "blue".into()])
        .fit(tiny_model(), &train, &val)
        .unwrap();
    assert_eq!(outcome.evaluation.len(), 12);
    for file in ["curves.png", "confusion.png", "predictions.png"] {
        let img = image::open(dir.path().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            img.width() > 200 && img.height() > 100,
            "{file} is too small"
        );
    }
    // The training transform flips at random: feature caching must refuse it.
    let err = Learner::new(config(1))
        .cache_features(true)
        .fit(tiny_model().freeze_backbone(), &train, &val)
        .unwrap_err();
    assert!(err.to_string().contains("without randomness"), "{err}");
}

#[test]
fn fused_sgd_matches_burns_sgd_step_for_step() {
    use burn::module::Module;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::momentum::MomentumConfig;
    use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
    use burn::tensor::Int;
    use finetune::train::FusedSgd;

    let device = cpu().autodiff();
    let (images, labels) = toy_data(8, 3, &device);
    let targets = Tensor::<1, Int>::from_data(
        labels
            .iter()
            .map(|&l| l as i64)
            .collect::<Vec<_>>()
            .as_slice(),
        &device,
    );
    for (momentum, nesterov, wd) in [(0.9, false, 0.0), (0.9, true, 5e-4), (0.0, false, 1e-3)] {
        let burn_sgd = {
            let mut c = SgdConfig::new();
            if momentum > 0.0 {
                c = c.with_momentum(Some(
                    MomentumConfig::new()
                        .with_momentum(momentum)
                        .with_dampening(0.0)
                        .with_nesterov(nesterov),
                ));
            }
            if wd > 0.0 {
                c = c.with_weight_decay(Some(WeightDecayConfig::new(wd as f32)));
            }
            c.init()
        };
        let fused = ModuleOptimizer::from(FusedSgd {
            momentum: momentum as f32,
            nesterov,
            weight_decay: wd as f32,
        });
        let run = |mut optim: ModuleOptimizer| {
            let mut model = tiny_model().fork(&device).train();
            let loss_fn = CrossEntropyLossConfig::new().init(&device);
            for _ in 0..3 {
                let loss = loss_fn.forward(model.forward(images.clone()), targets.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(0.05, model, grads);
            }
            snapshot(&model.valid())
        };
        // Burn's SGD for two steps, then its record loaded into FusedSgd for the third, must
        // equal three steps of Burn's SGD (the momentum buffers carry over).
        if momentum > 0.0 {
            let mut model = tiny_model().fork(&device).train();
            let loss_fn = CrossEntropyLossConfig::new().init(&device);
            let mut optim = burn_sgd.clone();
            let step = |optim: &mut ModuleOptimizer, model: ResNet| {
                let loss = loss_fn.forward(model.forward(images.clone()), targets.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                optim.step(0.05, model, grads)
            };
            model = step(&mut optim, model);
            model = step(&mut optim, model);
            let mut resumed = fused.clone().load_record(optim.to_record());
            let a = snapshot(&step(&mut optim, model.clone()).valid());
            let b = snapshot(&step(&mut resumed, model).valid());
            assert_eq!(a.len(), b.len());
            // (Clones share BatchNorm running statistics, so only parameters are compared.)
            let params = a
                .iter()
                .zip(&b)
                .filter(|((name, _), _)| !name.contains("running_"));
            for ((name, x), (_, y)) in params {
                let d = max_bits_diff(x, y);
                assert!(
                    d <= 1e-6,
                    "{name} differs by {d} after resuming Burn's SGD state"
                );
            }
        }
        let (a, b) = (run(burn_sgd), run(fused));
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            let d = max_bits_diff(x, y);
            assert!(
                d <= 1e-6,
                "{name} differs by {d} (momentum {momentum}, nesterov {nesterov}, wd {wd})"
            );
        }
    }
}

/// Largest absolute difference between two [`snapshot`] entries (f32 bit patterns).
fn max_bits_diff(x: &[u32], y: &[u32]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(&p, &q)| (f32::from_bits(p) - f32::from_bits(q)).abs())
        .fold(0.0f32, f32::max)
}

#[test]
fn batches_per_epoch_count_the_dropped_partial_batch_out() {
    use finetune::data::{Cifar10, ImageLoader, LoaderConfig, Normalize, Pipeline};
    use finetune::train::BatchSource;
    let test = std::sync::Arc::new(Cifar10::sample().unwrap().test());
    let n = test.len();
    let pipeline = Pipeline::eval(Normalize::imagenet());
    let train = ImageLoader::new(
        test.clone(),
        pipeline.clone(),
        LoaderConfig::train(64, 1),
        cpu(),
    );
    let eval = ImageLoader::new(test, pipeline, LoaderConfig::eval(64), cpu());
    assert!(
        !n.is_multiple_of(64),
        "the sample's test split is a whole number of batches"
    );
    assert_eq!(train.num_batches(), n / 64);
    assert_eq!(eval.num_batches(), n.div_ceil(64));
    let sizes: Vec<usize> = BatchSource::batches(&train, 1)
        .iter()
        .map(|b| b.unwrap().targets.dims()[0])
        .collect();
    assert_eq!(sizes, vec![64; train.num_batches()]);
}

/// `Learner::data_parallel`: two replicas (here both on the CPU) give the one-device run with
/// the same global batch, for a model without BatchNorm (a small ViT: every image is
/// normalised on its own), with MixUp and gradient accumulation on; with BatchNorm (ResNet) it
/// trains and its first replica keeps the running statistics.
#[test]
fn data_parallel_over_two_replicas_equals_one_device_with_the_global_batch() {
    use finetune::model::VisionTransformerConfig;
    let device = cpu();
    let images = Tensor::<4>::random([24, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let labels: Vec<usize> = (0..24).map(|i| i % 3).collect();
    let train = TensorSource::new(images.clone(), &labels, 8).shuffled(5);
    let val = TensorSource::new(images.narrow(0, 0, 8), &labels[..8], 8);
    let vit = VisionTransformerConfig::new(16, 8, 1, 2, 8, 16, 3)
        .try_init(&device)
        .unwrap();
    let _ = snapshot(&vit); // materialise the lazy parameters before cloning
    let cfg = config(2)
        .with_mixup_alpha(Some(0.4))
        .with_grad_accum_steps(Some(2));
    let one = Learner::new(cfg.clone())
        .fit(vit.clone(), &train, &val)
        .unwrap();
    let two = Learner::new(cfg.clone())
        .data_parallel(vec![device.clone(), device.clone()])
        .fit(vit.clone(), &train, &val)
        .unwrap();
    assert!(!changed(&snapshot(&vit), &snapshot(&one.model)).is_empty());
    for ((path, a), (_, b)) in snapshot(&one.model).iter().zip(&snapshot(&two.model)) {
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (f32::from_bits(*x) - f32::from_bits(*y)).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{path}: {diff}");
    }
    for (x, y) in one.history.epochs.iter().zip(&two.history.epochs) {
        assert!((x.train_loss - y.train_loss).abs() < 1e-5, "{x:?} {y:?}");
        assert_eq!(x.train_acc, y.train_acc);
    }
    // BatchNorm: chunks of 4 images normalised on their own; the run trains, running
    // statistics included.
    let model = tiny_model();
    let before = snapshot(&model);
    let bn = Learner::new(config(1))
        .data_parallel(vec![device.clone(), device.clone()])
        .fit(model, &train, &val)
        .unwrap();
    let moved = changed(&before, &snapshot(&bn.model));
    assert!(
        moved.iter().any(|p| p.ends_with("running_mean")),
        "{moved:?}"
    );
    assert!(moved.iter().any(|p| p.starts_with("fc.")), "{moved:?}");
}
