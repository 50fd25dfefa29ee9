//! burn-train interop (feature `train`): the crate's models under burn-train's
//! `SupervisedTraining`, on one device and on two CPU replicas (`MultiDevice`).

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::Device;
use burn::train::{
    ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining, TrainingStrategy,
    metric::{AccuracyMetric, LossMetric},
};
use finetune::data::{ImageLoader, LoaderConfig, Normalize, Pipeline};
use finetune::model::{BnPolicy, ResNet, VisionModel};
use finetune::train::{EpochLines, LearnerConfig, OptimizerConfig, Schedule};

use crate::common::{changed, cpu, snapshot, tiny_model};
use crate::data::batch_data;
use crate::train::coloured_dataset;

/// `epochs` epochs of burn-train over `items` coloured images in batches of `batch` per
/// device, SGD with momentum 0.9 at a constant `lr`; the trained model.
fn train(
    model: ResNet,
    strategy: ExecutionStrategy,
    items: usize,
    batch: usize,
    lr: f64,
    epochs: usize,
) -> ResNet {
    let device = cpu();
    let train = ImageLoader::new(
        Arc::new(coloured_dataset(items, 1)),
        Pipeline::eval(Normalize::cifar10()),
        LoaderConfig::train(batch, 7).with_workers(0),
        device.clone(),
    );
    let val = ImageLoader::new(
        Arc::new(coloured_dataset(6, 2)),
        Pipeline::eval(Normalize::cifar10()),
        LoaderConfig::eval(6).with_workers(0),
        device.clone(),
    );
    let optimizer = LearnerConfig::default()
        .with_optimizer(OptimizerConfig::sgd(0.9))
        .build_optimizer()
        .unwrap();
    let scheduler = Schedule::Constant
        .build(lr, epochs, 1.0, model.backbone_group())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let result = SupervisedTraining::new(dir.path(), train.epochs(0), val.epoch(0))
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .renderer(Box::new(EpochLines::new()))
        .with_training_strategy(TrainingStrategy::Default(strategy))
        .num_epochs(epochs)
        .launch(Learner::new(
            model.fork(&device.clone().autodiff()).train(),
            optimizer,
            scheduler,
        ));
    result.model.fork(&device)
}

#[test]
fn supervised_training_trains_the_head_and_leaves_a_frozen_backbone_bitwise() {
    let model = tiny_model()
        .with_bn_policy(BnPolicy::Frozen)
        .freeze_backbone();
    let before = snapshot(&model);
    let trained = train(
        model,
        ExecutionStrategy::SingleDevice(cpu()),
        12,
        6,
        0.05,
        1,
    );
    let moved = changed(&before, &snapshot(&trained));
    assert!(!moved.is_empty(), "nothing trained");
    assert!(moved.iter().all(|p| p.starts_with("fc.")), "{moved:?}");
}

#[test]
fn multi_device_on_two_cpu_replicas_equals_one_device_with_the_global_batch() {
    // One step per epoch: each replica takes half of the epoch's 16 images, the single device
    // all 16. burn-train sums the replicas' gradients of their mean losses, twice the global
    // mean's gradient, so the replicas run at half the rate. Frozen BatchNorm: no batch
    // statistics, which would differ between halves and the whole.
    let model = tiny_model()
        .with_bn_policy(BnPolicy::Frozen)
        .freeze_backbone();
    let one = train(
        model.clone(),
        ExecutionStrategy::SingleDevice(cpu()),
        16,
        16,
        0.1,
        3,
    );
    let devices: Vec<Device> = vec![cpu(), cpu()];
    let two = train(
        model.clone(),
        ExecutionStrategy::MultiDevice(devices, MultiDeviceOptim::OptimMainDevice),
        16,
        8,
        0.05,
        3,
    );
    let (a, b, start) = (snapshot(&one), snapshot(&two), snapshot(&model));
    assert!(!changed(&start, &a).is_empty(), "nothing trained");
    for ((path, x), (_, y)) in a.iter().zip(&b) {
        let diff = x
            .iter()
            .zip(y)
            .map(|(p, q)| (f32::from_bits(*p) - f32::from_bits(*q)).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{path}: {diff}");
    }
}

/// The images and labels of every batch a Burn data loader gives in one pass.
fn pass(
    loader: &dyn burn::data::dataloader::DataLoader<finetune::data::ImageBatch>,
) -> Vec<(Vec<f32>, Vec<i64>)> {
    loader.iter().map(|b| batch_data(b.unwrap())).collect()
}

#[test]
fn the_epochs_loader_gives_epoch_k_on_pass_k_and_its_slices_partition_each_epoch() {
    let loader = ImageLoader::new(
        Arc::new(coloured_dataset(16, 3)),
        Pipeline::train(Normalize::cifar10()),
        LoaderConfig::train(4, 11).with_workers(2),
        cpu(),
    );
    let epochs = loader.epochs(0);
    assert_eq!(epochs.num_items(), 16);
    let first = pass(epochs.as_ref());
    let second = pass(epochs.as_ref());
    assert_eq!(first, pass(loader.epoch(0).as_ref()));
    assert_eq!(second, pass(loader.epoch(1).as_ref()));
    assert_ne!(
        first, second,
        "the second pass must reshuffle and re-augment"
    );
    // Resuming at epoch 2 starts there.
    assert_eq!(
        pass(loader.epochs(2).as_ref()),
        pass(loader.epoch(2).as_ref())
    );
    // Burn's split_dataloader: one slice per device, each a part of every epoch.
    let halves = [epochs.slice(0, 8), epochs.slice(8, 16)];
    assert_eq!(halves[0].num_items() + halves[1].num_items(), 16);
    // A slice that is not whole batches drops its partial batch (drop_last), as the loader.
    let odd = epochs.slice(0, 6);
    assert_eq!(odd.num_items(), 4);
    assert_eq!(pass(odd.as_ref()).len(), 1);
    assert_eq!(epochs.slice(usize::MAX - 1, usize::MAX).num_items(), 0);
    for epoch in 2..4 {
        let whole = pass(loader.epoch(epoch).as_ref());
        let joined: Vec<_> = halves.iter().flat_map(|h| pass(h.as_ref())).collect();
        assert_eq!(joined, whole, "epoch {epoch}");
    }
}
