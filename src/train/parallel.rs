//! Data parallelism for the [`Learner`](super::Learner) ([`Learner::data_parallel`](super::Learner::data_parallel)):
//! PyTorch's `nn.DataParallel` on Burn devices. Each batch is split into contiguous chunks,
//! one per device, as `torch.chunk` splits it (`ceil(n / k)` rows each, the last fewer); each
//! device runs a replica of the model (forked from the main one every step, so it holds the
//! current weights) forward and backward on its chunk, on its own thread; the gradients are
//! moved to the main device and summed. Each chunk's loss is weighted by its share of the
//! batch, so the sum is the gradient of the whole batch's mean loss: the same step as one
//! device with the same global batch, up to float summation order.
//!
//! MixUp / CutMix and soft targets are drawn on the whole batch before it is split, so they
//! are those of one device. BatchNorm normalises each chunk with its own statistics (as
//! `DataParallel` and `DistributedDataParallel` without `SyncBatchNorm` do), and the running
//! statistics are the main device's, as DDP broadcasts rank 0's buffers: each other replica is
//! made through `valid()`, so it updates running statistics of its own, which are dropped.
//! Dropout and stochastic depth in the other replicas draw from their device's generator,
//! which only the main device's seed sets.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Int, Tensor};

use super::TrainError;
use super::epoch::{StepStats, read_loss_and_hits};
use super::mix::{BatchMix, Mixed, mix_images, soft_cross_entropy, soft_target_tensor};
use crate::data::ImageBatch;
use crate::model::VisionModel;

/// One replica's forward and backward on its chunk `x` of a batch of `n` images: the gradients
/// of its mean loss weighted by its share of the batch (times `scale`), on its device, and the
/// chunk's statistics.
fn replica_step<M: VisionModel>(
    model: &M,
    x: Tensor<4>,
    t: Tensor<1, Int>,
    soft: Option<Tensor<2>>,
    n: usize,
    scale: f32,
) -> Result<(GradientsParams, StepStats), TrainError> {
    let rows = t.dims()[0];
    let logits = model.forward(x);
    let loss = match soft {
        Some(soft) => soft_cross_entropy(logits.clone(), soft),
        None => CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), t.clone()),
    };
    let (value, hits) = read_loss_and_hits(loss.clone(), logits, t)?;
    let weighted = loss.mul_scalar(scale * rows as f32 / n as f32);
    let grads = GradientsParams::from_grads(weighted.backward(), model);
    Ok((
        grads,
        StepStats {
            value,
            images: rows,
            hits,
        },
    ))
}

/// Row ranges of `n` rows split into at most `k` chunks of `ceil(n / k)` (`torch.chunk`).
pub(super) fn chunks(n: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let size = n.div_ceil(k.max(1)).max(1);
    (0..n)
        .step_by(size)
        .map(|start| start..(start + size).min(n))
        .collect()
}

/// One batch forward and backward over `devices` (autodiff devices, the first the model's):
/// the gradients of the whole batch's mean loss times `scale` (1 / the accumulation group's
/// length), summed on the main device, and the batch's statistics.
pub(super) fn step<M: VisionModel>(
    model: &M,
    devices: &[Device],
    batch: ImageBatch,
    mix: &BatchMix,
    mixed: Mixed,
    scale: f32,
) -> Result<(GradientsParams, StepStats), TrainError> {
    let images = mix_images(batch.images.without_autodiff(), mixed);
    let targets = batch.targets.without_autodiff();
    let [n, c, h, w] = images.dims();
    model
        .check_input(images.dims())
        .map_err(TrainError::model)?;
    let soft = if mix.soft() {
        let classes = model.num_classes();
        Some(soft_target_tensor(
            targets.clone(),
            classes,
            mixed,
            mix.label_smoothing,
        )?)
    } else {
        None
    };
    let ranges = chunks(n, devices.len());
    for range in &ranges {
        model
            .check_training_batch([range.len(), c, h, w])
            .map_err(|e| {
                TrainError::Config(format!(
                    "data parallel: a batch of {n} images over {} devices gives chunks of {} images, and {e}: use batches of at least {} images, or fewer devices",
                    devices.len(),
                    range.len(),
                    2 * devices.len()
                ))
            })?;
    }
    // Each replica's inputs, cut and moved on this thread; the other replicas' models forked
    // here too and moved into their threads.
    let inputs = |index: usize, range: &std::ops::Range<usize>| {
        let device = &devices[index];
        let rows = range.len();
        let x = images
            .clone()
            .narrow(0, range.start, rows)
            .to_device(device);
        let t = targets
            .clone()
            .narrow(0, range.start, rows)
            .to_device(device);
        let soft = soft
            .as_ref()
            .map(|s| s.clone().narrow(0, range.start, rows).to_device(device));
        (x, t, soft)
    };
    let main = devices[0].clone();
    let results: Vec<Result<(GradientsParams, StepStats), TrainError>> = std::thread::scope(
        |scope| {
            let others: Vec<_> = ranges
                .iter()
                .enumerate()
                .skip(1)
                .map(|(i, range)| {
                    let (x, t, soft) = inputs(i, range);
                    // Through `valid()`: a replica gets BatchNorm running statistics of its own
                    // (a clone would share the main model's storage, which the fork would
                    // move to this device); `train()` restores gradients and training flags
                    // (frozen parameters stay frozen).
                    let local = model.valid().fork(&devices[i]).train();
                    let main = main.clone();
                    scope.spawn(move || {
                        let (grads, stats) = replica_step(&local, x, t, soft, n, scale)?;
                        Ok((grads.to_device(&main, &local), stats))
                    })
                })
                .collect();
            // The main replica on this thread: Burn records its BatchNorm running statistics
            // per thread.
            let (x, t, soft) = inputs(0, &ranges[0]);
            let mut results = vec![replica_step(model, x, t, soft, n, scale)];
            for (i, handle) in others.into_iter().enumerate() {
                results.push(handle.join().unwrap_or_else(|payload| {
                    let why = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(TrainError::Config(format!(
                        "the data-parallel replica on {:?} failed: {why}; check that device on its own (--device) first",
                        devices[i + 1]
                    )))
                }));
            }
            results
        },
    );
    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut total = StepStats {
        value: 0.0,
        images: 0,
        hits: 0,
    };
    let mut loss_sum = 0.0f64;
    for result in results {
        let (grads, stats) = result?;
        accumulator.accumulate(model, grads);
        loss_sum += stats.value as f64 * stats.images as f64;
        total.images += stats.images;
        total.hits += stats.hits;
    }
    total.value = (loss_sum / total.images.max(1) as f64) as f32;
    Ok((accumulator.grads(), total))
}
