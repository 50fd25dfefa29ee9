//! The Learner's training features beyond the tutorial: gradient accumulation and clipping,
//! model EMA (timm's ModelEmaV3), fastai's fine_tune phases, top-5 accuracy, flip TTA, and
//! the learning-rate finder (fastai's lr_find and its suggestions); every feature on at once
//! resumes exactly.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Distribution, Tensor};
use finetune::model::{BnPolicy, ResNet, VisionModel};
use finetune::train::{
    Learner, LearnerConfig, LrFind, LrFindConfig, ModelEma, OptimizerConfig, Schedule,
    TensorSource, TrainError, ema_decay_at, evaluate, evaluate_tta, lr_find,
};

use crate::common::{changed, cpu, snapshot, tiny_model};

/// `n` random 8x8 images of 3 classes.
fn data(n: usize, seed: u64, device: &Device) -> (Tensor<4>, Vec<usize>) {
    device.seed(seed);
    let x = Tensor::<4>::random([n, 3, 8, 8], Distribution::Default, device);
    let y: Vec<usize> = (0..n).map(|i| (i * 7 + seed as usize) % 3).collect();
    (x, y)
}

fn sgd(epochs: usize, lr: f64) -> LearnerConfig {
    LearnerConfig::default()
        .with_epochs(epochs)
        .with_lr(lr)
        .with_optimizer(OptimizerConfig::sgd(0.9))
        .with_schedule(Schedule::Constant)
}

fn floats(snap: &[(String, Vec<u32>)]) -> Vec<(String, Vec<f32>)> {
    snap.iter()
        .map(|(p, v)| (p.clone(), v.iter().map(|b| f32::from_bits(*b)).collect()))
        .collect()
}

fn assert_close(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    for ((pa, va), (_, vb)) in a.iter().zip(b) {
        for (x, y) in va.iter().zip(vb) {
            assert!((x - y).abs() <= tol, "{what}: {pa}: {x} vs {y}");
        }
    }
}

#[test]
fn accumulating_two_half_batches_steps_like_one_full_batch() {
    // A head-only model (BatchNorm frozen): the loss of a batch of 8 is the mean of its two
    // halves' losses, so accumulating halves (each loss / 2) gives the full batch's gradient.
    let device = cpu();
    let (x, y) = data(16, 1, &device);
    let (vx, vy) = data(6, 2, &device);
    let val = TensorSource::new(vx, &vy, 6);
    let model = || {
        tiny_model()
            .with_bn_policy(BnPolicy::Frozen)
            .freeze_backbone()
    };
    let full = Learner::new(sgd(2, 0.1))
        .fit(model(), &TensorSource::new(x.clone(), &y, 8), &val)
        .unwrap();
    let halves = Learner::new(sgd(2, 0.1).with_grad_accum_steps(Some(2)))
        .fit(model(), &TensorSource::new(x.clone(), &y, 4), &val)
        .unwrap();
    assert_close(
        &floats(&snapshot(&full.model)),
        &floats(&snapshot(&halves.model)),
        1e-5,
        "accumulated",
    );
    // Without accumulation the batches of 4 take twice the steps: the weights differ.
    let steps = Learner::new(sgd(2, 0.1))
        .fit(model(), &TensorSource::new(x, &y, 4), &val)
        .unwrap();
    assert!(!changed(&snapshot(&full.model), &snapshot(&steps.model)).is_empty());
    assert!(matches!(
        sgd(1, 0.1).with_grad_accum_steps(Some(0)).validate(),
        Err(TrainError::Config(_))
    ));
}

#[test]
fn clipped_gradients_bound_every_step() {
    let device = cpu();
    let (x, y) = data(8, 3, &device);
    let train = TensorSource::new(x, &y, 8);
    let val = TensorSource::new(data(6, 4, &device).0, &[0, 1, 2, 0, 1, 2], 6);
    let lr = 0.5;
    let plain = || {
        LearnerConfig::default()
            .with_epochs(1)
            .with_lr(lr)
            .with_optimizer(OptimizerConfig::sgd(0.0))
            .with_schedule(Schedule::Constant)
    };
    let before = floats(&snapshot(&tiny_model()));
    // One step of plain SGD moves each value by lr * g: clipped at 1e-4, at most 5e-5.
    let by_value = Learner::new(plain().with_clip_grad_value(Some(1e-4)))
        .fit(tiny_model(), &train, &val)
        .unwrap();
    // By norm (per parameter tensor, Burn's semantics): each tensor moves by at most lr * 1e-3.
    let by_norm = Learner::new(plain().with_clip_grad_norm(Some(1e-3)))
        .fit(tiny_model(), &train, &val)
        .unwrap();
    let free = Learner::new(plain())
        .fit(tiny_model(), &train, &val)
        .unwrap();
    let mut largest_free = 0f32;
    for (outcome, what) in [(&by_value, "value"), (&by_norm, "norm"), (&free, "none")] {
        for ((path, b), (_, a)) in before.iter().zip(&floats(&snapshot(&outcome.model))) {
            if path.contains("running_") {
                continue;
            }
            let deltas: Vec<f32> = b.iter().zip(a).map(|(b, a)| (a - b).abs()).collect();
            let max = deltas.iter().copied().fold(0.0, f32::max);
            let norm = deltas.iter().map(|d| d * d).sum::<f32>().sqrt();
            match what {
                // (An f32 ulp of the weights on top of the step.)
                "value" => assert!(max <= lr as f32 * 1e-4 + 1e-6, "{path}: {max}"),
                "norm" => assert!(norm <= lr as f32 * 1e-3 + 1e-5, "{path}: {norm}"),
                _ => largest_free = largest_free.max(max),
            }
        }
    }
    assert!(
        largest_free > 1e-3,
        "the unclipped step is larger: {largest_free}"
    );
    for bad in [
        plain().with_clip_grad_norm(Some(0.0)),
        plain().with_clip_grad_value(Some(f64::NAN)),
        plain()
            .with_clip_grad_norm(Some(1.0))
            .with_clip_grad_value(Some(1.0)),
    ] {
        assert!(
            matches!(bad.validate(), Err(TrainError::Config(_))),
            "{bad}"
        );
    }
}

/// Adds `delta` to every float tensor of a module.
struct Shift(f32);
impl ModuleMapper for Shift {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let delta = self.0;
        param.map(|t| t.add_scalar(delta))
    }
}

#[test]
fn ema_follows_timm_model_ema_v3_step_for_step() {
    // timm's get_decay with warm-up (gamma 1, power 2/3), computed by timm's formula in Python.
    let warm = [
        0.0,
        0.3700394750525634,
        0.5192501432308638,
        0.6031497370079502,
        0.6580048106646605,
        0.69714656786131,
    ];
    for (step, expected) in (1..).zip(warm) {
        assert!((ema_decay_at(0.9, true, step) - expected).abs() < 1e-12);
    }
    assert_eq!(ema_decay_at(0.5, true, 4), 0.5);
    assert_eq!(ema_decay_at(0.9, false, 1), 0.0);
    assert_eq!(ema_decay_at(0.9, false, 2), 0.9);

    // The average of models shifted by 1, 2, 3, 4 from a start: lerp with those decays.
    let start = tiny_model();
    let mut ema = ModelEma::new(start.clone(), 0.9, true);
    let base = floats(&snapshot(&start));
    let mut expected: Vec<(String, Vec<f64>)> = base
        .iter()
        .map(|(p, v)| (p.clone(), v.iter().map(|&x| f64::from(x)).collect()))
        .collect();
    for k in 1..=4u64 {
        // (`valid` copies: a clone would share the BatchNorm statistics.)
        let model = start.valid().map(&mut Shift(k as f32));
        assert!(ema.update(&model));
        let d = ema_decay_at(0.9, true, k);
        for ((_, e), (_, b)) in expected.iter_mut().zip(&base) {
            for (e, b) in e.iter_mut().zip(b) {
                *e = d * *e + (1.0 - d) * (f64::from(*b) + k as f64);
            }
        }
        for ((path, got), (_, want)) in floats(&snapshot(&ema.model)).iter().zip(&expected) {
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (f64::from(*g) - w).abs() < 1e-5,
                    "step {k}, {path}: {g} vs {w}"
                );
            }
        }
    }
    assert_eq!(ema.updates, 4);
}

#[test]
fn the_learner_validates_and_keeps_the_ema() {
    let device = cpu();
    let (x, y) = data(24, 5, &device);
    let (vx, vy) = data(12, 6, &device);
    let train = TensorSource::new(x, &y, 6);
    let val = TensorSource::new(vx, &vy, 6);
    let config = sgd(2, 0.05).with_ema_decay(Some(0.5));
    let outcome = Learner::new(config)
        .fit(tiny_model(), &train, &val)
        .unwrap();
    for e in &outcome.history.epochs {
        assert!(e.model_val_acc.is_some() && e.model_val_loss.is_some());
        assert!(e.val_top5.is_some());
    }
    // The model returned is the best epoch's EMA: its validation is the record's.
    let best = &outcome.history.epochs[outcome.best_epoch - 1];
    let eval = evaluate(&outcome.model, &val).unwrap();
    assert!((eval.loss - best.val_loss).abs() < 1e-6);
    assert!(matches!(
        sgd(1, 0.1).with_ema_decay(Some(1.0)).validate(),
        Err(TrainError::Config(_))
    ));
    // Decay 0 copies the model at every step, BatchNorm statistics of the last batch included.
    let dir = tempfile::tempdir().unwrap();
    Learner::new(sgd(1, 0.05).with_ema_decay(Some(0.0)))
        .run_dir(dir.path())
        .fit(tiny_model(), &train, &val)
        .unwrap();
    let load =
        |f: &str| snapshot(&ResNet::load(dir.path().join("checkpoint").join(f), &device).unwrap());
    assert_eq!(
        changed(&load("model.bpk"), &load("ema.bpk")),
        Vec::<String>::new()
    );
}

#[test]
fn fine_tune_trains_the_head_first_then_everything() {
    let device = cpu();
    let (x, y) = data(24, 7, &device);
    let (vx, vy) = data(12, 8, &device);
    let train = TensorSource::new(x, &y, 6);
    let val = TensorSource::new(vx, &vy, 6);
    let config = sgd(1, 0.05).with_freeze_epochs(Some(1));
    assert_eq!(config.total_epochs(), 2);
    let dir = tempfile::tempdir().unwrap();
    let start = snapshot(&tiny_model());
    let first = Learner::new(config.clone())
        .run_dir(dir.path())
        .stop_after(Some(1))
        .fit(tiny_model(), &train, &val)
        .unwrap();
    assert!(!first.completed);
    let after_head =
        snapshot(&ResNet::load(dir.path().join("checkpoint/model.bpk"), &device).unwrap());
    let moved = changed(&start, &after_head);
    assert!(!moved.is_empty());
    // Only the head (`fc`) trained in the frozen epoch; BatchNorm statistics stayed (frozen
    // policy, the default).
    assert!(moved.iter().all(|p| p.starts_with("fc")), "{moved:?}");
    let done = Learner::new(config)
        .run_dir(dir.path())
        .resume(true)
        .fit(tiny_model(), &train, &val)
        .unwrap();
    assert!(done.completed);
    assert_eq!(done.history.epochs.len(), 2);
    let last = snapshot(&ResNet::load(dir.path().join("checkpoint/model.bpk"), &device).unwrap());
    let moved = changed(&after_head, &last);
    assert!(moved.iter().any(|p| p.starts_with("layer1")), "{moved:?}");
    // The head phase runs at lr, the unfrozen phase at lr / 2 (fastai).
    assert_eq!(done.history.epochs[0].lr, 0.05);
    assert_eq!(done.history.epochs[1].lr, 0.025);
}

#[test]
fn every_feature_at_once_resumes_exactly_across_the_unfreeze() {
    let device = cpu();
    let (x, y) = data(24, 9, &device);
    let (vx, vy) = data(12, 10, &device);
    let train = TensorSource::new(x, &y, 6).shuffled(3);
    let val = TensorSource::new(vx, &vy, 6);
    let config = sgd(2, 0.05)
        .with_freeze_epochs(Some(1))
        .with_grad_accum_steps(Some(3))
        .with_clip_grad_norm(Some(1.0))
        .with_ema_decay(Some(0.9))
        .with_ema_warmup(Some(true))
        .with_label_smoothing(Some(0.1))
        .with_mixup_alpha(Some(0.2))
        .with_cutmix_alpha(Some(1.0))
        .with_schedule(Schedule::one_cycle())
        .with_schedule_unit(finetune::train::ScheduleUnit::Batch);
    let straight = tempfile::tempdir().unwrap();
    let a = Learner::new(config.clone())
        .run_dir(straight.path())
        .fit(tiny_model(), &train, &val)
        .unwrap();
    assert_eq!(a.history.epochs.len(), 3);
    let split = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        Learner::new(config.clone())
            .run_dir(split.path())
            .resume(true)
            .stop_after(Some(1))
            .fit(tiny_model(), &train, &val)
            .unwrap();
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(split.path().join("checkpoint/state.json")).unwrap())
            .unwrap();
    // 4 batches an epoch in groups of 3: 2 optimizer steps, 6 in 3 epochs.
    assert_eq!(state["ema_updates"], 6);
    let b = evaluate(
        &ResNet::load(split.path().join("checkpoint/best.bpk"), &device).unwrap(),
        &val,
    )
    .unwrap();
    let history: finetune::train::History =
        serde_json::from_value(state["history"].clone()).unwrap();
    for (ea, eb) in a.history.epochs.iter().zip(&history.epochs) {
        assert!((ea.train_loss - eb.train_loss).abs() < 1e-6);
        assert!((ea.val_loss - eb.val_loss).abs() < 1e-6);
        assert_eq!(ea.lr, eb.lr);
    }
    assert!((b.loss - a.evaluation.loss).abs() < 1e-6);
    for file in ["model.bpk", "ema.bpk", "best.bpk"] {
        let load = |dir: &std::path::Path| {
            floats(&snapshot(
                &ResNet::load(dir.join("checkpoint").join(file), &device).unwrap(),
            ))
        };
        assert_close(&load(straight.path()), &load(split.path()), 1e-6, file);
    }
    // Caching features with fine_tune is refused: the backbone unfreezes.
    let cached = Learner::new(config)
        .cache_features(true)
        .fit(tiny_model(), &train, &val);
    assert!(matches!(cached, Err(TrainError::Config(_))));
}

#[test]
fn top5_and_flip_tta_are_computed_as_defined() {
    let device = cpu();
    let model = finetune::model::ResNetConfig::resnet18(10)
        .with_widths([4, 4, 8, 8])
        .with_stem(finetune::model::Stem::Cifar)
        .init(&device);
    let (x, _) = data(12, 11, &device);
    let y: Vec<usize> = (0..12).map(|i| (i * 3) % 10).collect();
    let source = TensorSource::new(x.clone(), &y, 5);
    let plain = evaluate(&model, &source).unwrap();
    let tta = evaluate_tta(&model, &source).unwrap();
    // From the logits: the rank of the true class, and the averaged softmax of x and flip(x).
    let fused = model.for_inference();
    use finetune::model::InferenceModel;
    let logits = |x: Tensor<4>| fused.forward(x).into_data().try_to_vec::<f32>().unwrap();
    let direct = logits(x.clone());
    let top5 = y
        .iter()
        .enumerate()
        .filter(|&(i, &t)| {
            let row = &direct[i * 10..(i + 1) * 10];
            row.iter().filter(|&&v| v > row[t]).count() < 5
        })
        .count() as f64
        / 12.0;
    assert_eq!(plain.top5_accuracy, top5);
    assert!(plain.top5_accuracy >= plain.accuracy);
    let p = |x: Tensor<4>| {
        softmax(fused.forward(x), 1)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let (pa, pb) = (p(x.clone()), p(x.clone().flip([3])));
    let mut loss = 0.0f64;
    let mut correct = 0;
    for (i, &t) in y.iter().enumerate() {
        let avg: Vec<f32> = (0..10)
            .map(|c| (pa[i * 10 + c] + pb[i * 10 + c]) * 0.5)
            .collect();
        loss -= f64::from(avg[t]).ln();
        let best = (0..10).max_by(|&a, &b| avg[a].total_cmp(&avg[b])).unwrap();
        correct += usize::from(best == t);
    }
    assert!(
        (tta.loss - loss / 12.0).abs() < 1e-5,
        "{} vs {}",
        tta.loss,
        loss / 12.0
    );
    assert_eq!(tta.accuracy, correct as f64 / 12.0);
    // Three classes: every class is in the top five.
    let three = evaluate(&tiny_model(), &TensorSource::new(x, &[0; 12], 6)).unwrap();
    assert_eq!(three.top5_accuracy, 1.0);
}

#[test]
fn lr_find_ramps_smooths_suggests_and_leaves_the_model_alone() {
    let device = cpu();
    let (x, y) = data(12, 12, &device);
    let train = TensorSource::new(x, &y, 4).shuffled(1);
    let model = tiny_model();
    let before = snapshot(&model);
    let finder = LrFindConfig {
        num_it: 30,
        ..LrFindConfig::default()
    };
    let found = lr_find(&model, &train, &sgd(1, 0.1), &finder).unwrap();
    assert_eq!(snapshot(&model), before, "the model given is untouched");
    assert!(!found.lrs.is_empty() && found.lrs.len() <= 30);
    assert_eq!(found.lrs.len(), found.losses.len());
    for (i, lr) in found.lrs.iter().enumerate() {
        let want = 1e-7 * (10.0f64 / 1e-7).powf(i as f64 / 30.0);
        assert!((lr / want - 1.0).abs() < 1e-12);
    }
    // fastai stops when the smoothed loss passes four times its minimum; 30 batches up to
    // lr 10 diverge, or the test runs to the end.
    let min = found.losses.iter().copied().fold(f64::INFINITY, f64::min);
    let last = *found.losses.last().unwrap();
    assert!(found.diverged == (found.lrs.len() < 30));
    if found.diverged {
        assert!(last > 4.0 * min || last.is_nan());
    }
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("lr_find.png");
    found.save_plot(&plot).unwrap();
    let png = image::open(&plot).unwrap();
    assert!(png.width() > 100 && png.height() > 100);
    let bad = LrFindConfig {
        start_lr: 1.0,
        end_lr: 0.1,
        ..LrFindConfig::default()
    };
    assert!(matches!(
        lr_find(&model, &train, &sgd(1, 0.1), &bad),
        Err(TrainError::Config(_))
    ));
}

#[test]
fn lr_find_suggestions_match_fastai() {
    // A curve with a valley, and fastai's valley / steep / minimum on it, computed with
    // fastai's own functions over fastai's window (num_it // 10 .. -5).
    let n = 100;
    let found = LrFind {
        lrs: (0..n)
            .map(|i| 1e-7 * (10.0f64 / 1e-7).powf(i as f64 / n as f64))
            .collect(),
        losses: (0..n)
            .map(|i| {
                let i = i as f64;
                (i - 60.0).powi(2) / 1000.0 + 0.1 * i.sin() + 2.0
            })
            .collect(),
        diverged: false,
        num_it: n,
    };
    let close = |a: f64, b: f64| (a / b - 1.0).abs() < 1e-9;
    assert!(close(found.valley().unwrap().0, 0.0003981071705534973));
    assert!(close(found.steep().unwrap().0, 1.5848931924611132e-06));
    assert!(close(found.minimum().unwrap().0, 0.0007585775750291836));
    let short = LrFind {
        lrs: vec![1e-3; 4],
        losses: vec![1.0; 4],
        diverged: true,
        num_it: 100,
    };
    assert_eq!(short.valley(), None);
}

#[test]
fn histories_written_before_top5_still_read() {
    let json = r#"{"best_epoch":1,"best_val_acc":0.5,"epochs":[{"epoch":1,"lr":0.1,
        "train_loss":1.0,"train_acc":0.5,"val_loss":1.0,"val_acc":0.5,"seconds":1.0,
        "images_per_sec":10.0}]}"#;
    let history: finetune::train::History = serde_json::from_str(json).unwrap();
    assert_eq!(history.epochs[0].val_top5, None);
}
