//! Batching: transformed images stacked into one `[B, 3, H, W]` `f32` buffer on the host, then
//! one tensor per batch on the device (like PyTorch's default `collate_fn` after `ToTensor`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::dataset::ImageItem;
use super::error::DataError;
use super::rng::{SeededRng, derive_seed};
use super::transform::{Pipeline, TransformCache, to_chw};

/// A batch on the device: images `[B, 3, H, W]` (`f32`, normalised) and class indices `[B]`.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    /// The images, `[batch, 3, height, width]`.
    pub images: Tensor<4>,
    /// The labels, `[batch]`.
    pub targets: Tensor<1, Int>,
}

/// A batch still on the host: what worker threads produce before the upload.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBatch {
    /// `len * 3 * height * width` values, CHW per image.
    pub images: Vec<f32>,
    /// The labels.
    pub targets: Vec<i64>,
    /// The dataset index of each image.
    pub indices: Vec<usize>,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
}

impl HostBatch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Uploads the batch: one image tensor and one target tensor.
    pub fn to_device(self, device: &Device) -> ImageBatch {
        let n = self.targets.len();
        let images = TensorData::new(self.images, [n, 3, self.height, self.width]);
        let targets = TensorData::new(self.targets, [n]);
        ImageBatch {
            images: Tensor::from_data(images, device),
            targets: Tensor::from_data(targets, device),
        }
    }
}

/// An item together with its dataset index and the seed of its augmentation.
#[derive(Clone, Debug, PartialEq)]
pub struct SeededItem {
    /// The image and label.
    pub item: ImageItem,
    /// The item's index in its dataset.
    pub index: usize,
    /// Seed of the item's random transforms.
    pub seed: u64,
}

/// Applies a [`Pipeline`] to items and stacks them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ImageBatcher {
    pipeline: Arc<Pipeline>,
    lut: Arc<[[f32; 256]; 3]>,
    /// Seeds for items batched through Burn's `Batcher<ImageItem, _>` (no per-item seed).
    seed: u64,
    counter: Arc<AtomicU64>,
}

impl ImageBatcher {
    /// A batcher running `pipeline`.
    pub fn new(pipeline: Pipeline) -> Self {
        Self::with_seed(pipeline, 0)
    }

    /// A batcher running `pipeline`; items without a seed of their own (batched through
    /// `Batcher<ImageItem, _>`) get seeds derived from `seed` and a counter.
    pub fn with_seed(pipeline: Pipeline, seed: u64) -> Self {
        ImageBatcher {
            lut: Arc::new(pipeline.lut()),
            pipeline: Arc::new(pipeline),
            seed,
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Transforms and stacks `items` on the host (see [`batch_host_cached`](Self::batch_host_cached)).
    pub fn batch_host(&self, items: Vec<SeededItem>) -> Result<HostBatch, DataError> {
        self.batch_host_cached(items, &mut TransformCache::default())
    }

    /// Transforms and stacks `items` on the host, reusing `cache` across batches. Fails when
    /// a transform cannot apply or the transformed images differ in size.
    pub fn batch_host_cached(
        &self,
        items: Vec<SeededItem>,
        cache: &mut TransformCache,
    ) -> Result<HostBatch, DataError> {
        let n = items.len();
        let mut batch = HostBatch {
            images: Vec::new(),
            targets: Vec::with_capacity(n),
            indices: Vec::with_capacity(n),
            height: 0,
            width: 0,
        };
        let mut per = 0;
        for (k, s) in items.into_iter().enumerate() {
            let mut rng = SeededRng::new(s.seed);
            let image = self.pipeline.apply_cached(s.item.image, &mut rng, cache)?;
            let (w, h) = (image.width() as usize, image.height() as usize);
            if k == 0 {
                batch.width = w;
                batch.height = h;
                per = 3 * w * h;
                batch.images = vec![0f32; n * per];
            } else if (w, h) != (batch.width, batch.height) {
                return Err(DataError::MixedSizes {
                    first_w: batch.width as u32,
                    first_h: batch.height as u32,
                    w: w as u32,
                    h: h as u32,
                    index: s.index,
                });
            }
            let chw = &mut batch.images[k * per..(k + 1) * per];
            to_chw(&image, &self.lut, chw);
            // RandomErasing runs on the normalised tensor, with the image's own generator
            // after the `u8` transforms have drawn from it.
            self.pipeline.erase(chw, h as u32, w as u32, &mut rng);
            batch.targets.push(s.item.label as i64);
            batch.indices.push(s.index);
        }
        Ok(batch)
    }

    fn next_seed(&self) -> u64 {
        derive_seed(self.seed, &[self.counter.fetch_add(1, Ordering::Relaxed)])
    }
}

/// A batching failure, cheap to clone (Burn's data loaders require clonable batches).
#[derive(Clone, Debug, thiserror::Error)]
#[error(transparent)]
pub struct BatchError(pub Arc<DataError>);

/// For Burn's `DataLoaderBuilder` with items that carry their own seed. Prefer
/// [`ImageLoader`](super::ImageLoader), which seeds items and orders batches reproducibly.
impl Batcher<SeededItem, Result<ImageBatch, BatchError>> for ImageBatcher {
    fn batch(&self, items: Vec<SeededItem>, device: &Device) -> Result<ImageBatch, BatchError> {
        self.batch_host(items)
            .map(|b| b.to_device(device))
            .map_err(|e| BatchError(Arc::new(e)))
    }
}

/// For Burn's `DataLoaderBuilder` with plain items: each item's random transforms are seeded
/// from the batcher's seed and a counter, so augmentation is random but not reproducible across
/// runs with several workers. [`ImageLoader`](super::ImageLoader) is reproducible.
impl Batcher<ImageItem, Result<ImageBatch, BatchError>> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> Result<ImageBatch, BatchError> {
        let items = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| SeededItem {
                item,
                index,
                seed: self.next_seed(),
            })
            .collect();
        Batcher::<SeededItem, _>::batch(self, items, device)
    }
}
