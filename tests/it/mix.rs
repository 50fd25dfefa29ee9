//! MixUp, CutMix and label smoothing against torchvision.transforms.v2 and PyTorch
//! (tests/fixtures/mix/make_mix_fixture.py), and in the Learner: trained and exactly resumed.

use burn::tensor::{Tensor, TensorData};
use finetune::model::{ResNet, VisionModel};
use finetune::train::{
    BatchMix, Learner, LearnerConfig, Mixed, OptimizerConfig, TensorSource, TrainError, cutmix_box,
    mix_images, soft_cross_entropy, soft_targets,
};
use finetune::weights::read_safetensors_f32;

use crate::common::{cpu, snapshot, tiny_model};

const LABELS: [usize; 4] = [0, 3, 1, 3];
const K: usize = 5;

fn reference(name: &str) -> (Vec<f32>, Vec<usize>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mix/reference.safetensors");
    read_safetensors_f32(path, name).unwrap()
}

fn tensor<const D: usize>(name: &str) -> Tensor<D> {
    let (values, shape) = reference(name);
    Tensor::from_data(TensorData::new(values, shape), &cpu())
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn mixup_and_cutmix_match_torchvision_v2() {
    let images = tensor::<4>("images");
    // MixUp at lam 0.3, and CutMix at lam 0.75 centred on (1, 7) (the clipped box, the
    // area-adjusted targets): images and targets bit for bit.
    for (name, mixed) in [
        ("mixup", Mixed::MixUp { lam: 0.3 }),
        ("cutmix", cutmix_box(0.75, (1, 7), 8, 8)),
    ] {
        assert_eq!(
            values(mix_images(images.clone(), mixed)),
            reference(&format!("{name}_images")).0,
            "{name}"
        );
        assert_eq!(
            soft_targets(&LABELS, K, mixed, 0.0),
            reference(&format!("{name}_targets")).0,
            "{name}"
        );
    }
    assert_eq!(
        values(mix_images(images.clone(), Mixed::None)),
        reference("images").0
    );
}

#[test]
fn soft_and_smoothed_cross_entropy_match_pytorch() {
    let logits = tensor::<2>("logits");
    let loss = |mixed: Mixed, eps: f64| {
        let targets = Tensor::<2>::from_data(
            TensorData::new(soft_targets(&LABELS, K, mixed, eps), [4, K]),
            &cpu(),
        );
        values(soft_cross_entropy(logits.clone(), targets))[0]
    };
    for (name, ours) in [
        ("ce_smoothed", loss(Mixed::None, 0.1)),
        ("ce_mixup", loss(Mixed::MixUp { lam: 0.3 }, 0.0)),
        (
            "ce_cutmix_smoothed",
            loss(cutmix_box(0.75, (1, 7), 8, 8), 0.1),
        ),
    ] {
        let theirs = reference(name).0[0];
        assert!(
            (ours - theirs).abs() <= 1e-6,
            "{name}: {ours} vs PyTorch {theirs}"
        );
    }
}

#[test]
fn draws_are_per_batch_streams_and_bad_values_are_refused() {
    let mix = BatchMix {
        mixup_alpha: 0.2,
        cutmix_alpha: 1.0,
        label_smoothing: 0.1,
    };
    let draws: Vec<Mixed> = (0..200).map(|b| mix.draw(7, 1, b, 8, 8)).collect();
    assert_eq!(
        draws,
        (0..200)
            .map(|b| mix.draw(7, 1, b, 8, 8))
            .collect::<Vec<_>>()
    );
    let cutmixes = draws
        .iter()
        .filter(|m| matches!(m, Mixed::CutMix { .. }))
        .count();
    assert!((60..140).contains(&cutmixes), "{cutmixes} CutMix of 200");
    for m in &draws {
        match *m {
            Mixed::MixUp { lam } => assert!((0.0..=1.0).contains(&lam)),
            Mixed::CutMix {
                y1,
                y2,
                x1,
                x2,
                lam,
            } => {
                assert!(y1 <= y2 && y2 <= 8 && x1 <= x2 && x2 <= 8);
                let kept = 1.0 - ((y2 - y1) * (x2 - x1)) as f64 / 64.0;
                assert_eq!(lam, kept);
            }
            Mixed::None => panic!("mixing is on"),
        }
    }
    assert_eq!(BatchMix::default().draw(7, 1, 0, 8, 8), Mixed::None);
    for bad in [
        LearnerConfig::default().with_label_smoothing(Some(1.0)),
        LearnerConfig::default().with_label_smoothing(Some(-0.1)),
        LearnerConfig::default().with_mixup_alpha(Some(-1.0)),
        LearnerConfig::default().with_cutmix_alpha(Some(f64::NAN)),
    ] {
        assert!(
            matches!(bad.validate(), Err(TrainError::Config(_))),
            "{bad}"
        );
    }
}

fn mixing_config(epochs: usize) -> LearnerConfig {
    LearnerConfig::default()
        .with_epochs(epochs)
        .with_lr(0.05)
        .with_optimizer(OptimizerConfig::sgd(0.9))
        .with_label_smoothing(Some(0.1))
        .with_mixup_alpha(Some(0.2))
        .with_cutmix_alpha(Some(1.0))
}

#[test]
fn a_run_with_every_regulariser_resumes_exactly() {
    let device = cpu();
    let data = |n: usize, seed: u64| {
        device.seed(seed);
        let x = Tensor::<4>::random([n, 3, 8, 8], burn::tensor::Distribution::Default, &device);
        let y: Vec<usize> = (0..n).map(|i| i % 3).collect();
        (x, y)
    };
    let (x, y) = data(24, 1);
    let (vx, vy) = data(12, 2);
    let train = TensorSource::new(x, &y, 6).shuffled(3);
    let val = TensorSource::new(vx, &vy, 6);
    let straight = tempfile::tempdir().unwrap();
    let a = Learner::new(mixing_config(3))
        .run_dir(straight.path())
        .fit(tiny_model(), &train, &val)
        .unwrap();
    assert!(a.history.epochs.iter().all(|e| e.train_loss.is_finite()));
    let split = tempfile::tempdir().unwrap();
    Learner::new(mixing_config(3))
        .run_dir(split.path())
        .stop_after(Some(1))
        .fit(tiny_model(), &train, &val)
        .unwrap();
    let b = Learner::new(mixing_config(3))
        .run_dir(split.path())
        .resume(true)
        .fit(tiny_model(), &train, &val)
        .unwrap();
    assert_eq!(b.resumed_from, Some(1));
    for (ea, eb) in a.history.epochs.iter().zip(&b.history.epochs) {
        assert!((ea.train_loss - eb.train_loss).abs() < 1e-6);
        assert!((ea.val_loss - eb.val_loss).abs() < 1e-6);
    }
    let last = |dir: &std::path::Path| {
        snapshot(&ResNet::load(dir.join("checkpoint/model.bpk"), &device).unwrap())
    };
    for ((path, va), (_, vb)) in last(straight.path()).iter().zip(&last(split.path())) {
        for (x, y) in va.iter().zip(vb) {
            let (x, y) = (f32::from_bits(*x), f32::from_bits(*y));
            assert!((x - y).abs() <= 1e-6, "{path}: {x} vs {y}");
        }
    }
    // The settings are part of the checkpoint: resuming with others is refused.
    let other = Learner::new(mixing_config(4).with_mixup_alpha(Some(0.4)))
        .run_dir(split.path())
        .resume(true)
        .fit(tiny_model(), &train, &val);
    assert!(other.is_err());
}
