//! Where the [`Learner`](super::Learner) gets its batches: any [`BatchSource`] — the data
//! module's image loaders, or a [`TensorSource`] over tensors already in memory.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::{Dataset, InMemDataset};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::{ImageBatch, ImageItem, ImageLoader};

/// A source of batches, epoch by epoch.
///
/// `batches(epoch)` must be a pure function of its configuration and `epoch` (order and
/// augmentation included), so that a resumed run sees the batches an uninterrupted one would.
pub trait BatchSource: Send + Sync {
    /// The batches of `epoch` (from 1).
    fn batches(&self, epoch: usize) -> Arc<dyn DataLoader<ImageBatch>>;
    /// Items per epoch.
    fn num_items(&self) -> usize;
    /// Batch size.
    fn batch_size(&self) -> usize;
    /// Batches per epoch (every item in a batch, the last one possibly partial; a source that
    /// drops its last partial batch says so here).
    fn num_batches(&self) -> usize {
        self.num_items().div_ceil(self.batch_size().max(1))
    }
    /// Whether `batches` gives the same images every epoch (no random augmentation), which
    /// allows caching backbone features.
    fn is_deterministic(&self) -> bool {
        false
    }
    /// The items in batch order when the source does not shuffle (for picture reports).
    fn items(&self) -> Option<Arc<dyn Dataset<ImageItem>>> {
        None
    }
    /// What makes this source's batches what they are (its transforms, batch size, number of
    /// items, order and seed), in a form that changes when they change: a checkpoint records
    /// the training source's, and resuming on a source with another is refused. `None`: not
    /// known (nothing is checked).
    fn signature(&self) -> Option<String> {
        None
    }
}

/// Batches cut from tensors held in memory: images `[N, C, H, W]` (already transformed) and
/// their labels. Shuffling, when enabled, is seeded by `(seed, epoch)`.
#[derive(Clone)]
pub struct TensorSource {
    images: Tensor<4>,
    targets: Tensor<1, Int>,
    batch_size: usize,
    shuffle: Option<u64>,
    device: Device,
}

impl TensorSource {
    /// Wraps `images` and `labels` (one per image). Batches are produced on the images' device.
    pub fn new(images: Tensor<4>, labels: &[usize], batch_size: usize) -> Self {
        let device = images.device();
        let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let targets = Tensor::from_data(TensorData::new(labels.clone(), [labels.len()]), &device);
        TensorSource {
            images,
            targets,
            batch_size: batch_size.max(1),
            shuffle: None,
            device,
        }
    }
    /// Shuffles every epoch, deterministically from `seed` and the epoch number.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        self
    }
}

#[derive(Clone)]
struct SelectBatcher {
    images: Tensor<4>,
    targets: Tensor<1, Int>,
}

impl Batcher<usize, ImageBatch> for SelectBatcher {
    fn batch(&self, items: Vec<usize>, device: &Device) -> ImageBatch {
        let idx: Vec<i64> = items.iter().map(|&i| i as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [items.len()]), device);
        ImageBatch {
            images: self.images.clone().select(0, idx.clone()),
            targets: self.targets.clone().select(0, idx),
        }
    }
}

/// A seed for epoch `epoch` derived from `seed` (SplitMix64 finaliser, portable).
pub(crate) fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    let mut z = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl BatchSource for TensorSource {
    fn batches(&self, epoch: usize) -> Arc<dyn DataLoader<ImageBatch>> {
        let n = self.images.dims()[0];
        let mut builder = DataLoaderBuilder::new(SelectBatcher {
            images: self.images.clone(),
            targets: self.targets.clone(),
        })
        .batch_size(self.batch_size)
        .set_device(self.device.clone());
        if let Some(seed) = self.shuffle {
            builder = builder.shuffle(epoch_seed(seed, epoch));
        }
        builder.build(InMemDataset::new((0..n).collect::<Vec<usize>>()))
    }
    fn num_items(&self) -> usize {
        self.images.dims()[0]
    }
    fn batch_size(&self) -> usize {
        self.batch_size
    }
    fn is_deterministic(&self) -> bool {
        true
    }
}

impl BatchSource for ImageLoader {
    fn batches(&self, epoch: usize) -> Arc<dyn DataLoader<ImageBatch>> {
        self.epoch(epoch)
    }
    fn num_items(&self) -> usize {
        ImageLoader::num_items(self)
    }
    fn batch_size(&self) -> usize {
        ImageLoader::batch_size(self)
    }
    /// With `drop_last` (the training default) the last partial batch is not one.
    fn num_batches(&self) -> usize {
        let (n, b) = (self.num_items(), self.batch_size().max(1));
        if self.config().drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }
    fn is_deterministic(&self) -> bool {
        ImageLoader::is_deterministic(self)
    }
    fn items(&self) -> Option<Arc<dyn Dataset<ImageItem>>> {
        (!self.config().shuffle).then(|| self.dataset().clone())
    }
    /// The pipeline, the number of items and the loader's batch size, order and seed (not its
    /// number of workers, which changes nothing).
    fn signature(&self) -> Option<String> {
        let c = self.config();
        serde_json::to_string(&serde_json::json!({
            "pipeline": self.pipeline(),
            "items": self.num_items(),
            "batch_size": c.batch_size,
            "shuffle": c.shuffle,
            "drop_last": c.drop_last,
            "seed": c.seed,
        }))
        .ok()
    }
}
