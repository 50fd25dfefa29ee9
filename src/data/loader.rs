//! The data loader of the training loop: PyTorch's `DataLoader(dataset, batch_size, shuffle,
//! drop_last, num_workers)` with reproducible epochs, behind Burn's [`DataLoader`] trait.
//!
//! The order of epoch `e` and the augmentation of each image are pure functions of
//! `(seed, e, item index)`, so they do not depend on the number of workers, on how many epochs
//! were iterated before (a run resumed at epoch 3 sees the batches an uninterrupted run sees),
//! or on thread timing. Worker `w` of `n` prepares batches `w, w + n, w + 2n, ...` on the host
//! and the iterator takes them in order, then uploads each as one tensor from the consuming
//! thread.
//!
//! Why not Burn's `MultiThreadDataLoader` directly: it yields batches in completion order (not
//! reproducible with several workers), keeps its shuffle RNG across `iter()` calls, creates
//! tensors on worker threads, and its `Batcher` cannot report errors. This loader implements
//! the same `DataLoader` trait, so code written against Burn's loaders accepts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Dataset, Progress};
use burn::data::dataset::DatasetError;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::batcher::{HostBatch, ImageBatch, ImageBatcher, SeededItem};
use super::dataset::ImageItem;
use super::error::DataError;
use super::rng::{SeededRng, derive_seed};
use super::transform::{Pipeline, TransformCache};

/// Batches each worker may prepare ahead of the consumer.
const PREFETCH_PER_WORKER: usize = 2;
const TAG_SHUFFLE: u64 = 0x5348_5546; // "SHUF"
const TAG_AUGMENT: u64 = 0x4155_474D; // "AUGM"

/// Settings of an [`ImageLoader`] (PyTorch's `DataLoader` arguments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Images per batch (at least 1).
    pub batch_size: usize,
    /// Visit the items in a new random order each epoch.
    pub shuffle: bool,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Threads preparing batches; 0 prepares them on the consuming thread.
    pub num_workers: usize,
    /// Seed of the order and of the augmentation.
    pub seed: u64,
}

impl LoaderConfig {
    /// Training: shuffled, last partial batch dropped, [`default_workers`] workers.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: true,
            num_workers: default_workers(),
            seed,
        }
    }

    /// Evaluation: in order, every item, [`default_workers`] workers.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: false,
            drop_last: false,
            num_workers: default_workers(),
            seed: 0,
        }
    }

    /// The same settings with `num_workers` workers.
    pub fn with_workers(mut self, num_workers: usize) -> Self {
        self.num_workers = num_workers;
        self
    }
}

/// The number of available CPU cores (at least 1).
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Everything an epoch needs, shared by its loaders, iterators and workers.
struct Shared {
    dataset: Arc<dyn Dataset<ImageItem>>,
    batcher: ImageBatcher,
    batch_size: usize,
    num_workers: usize,
    seed: u64,
    epoch: u64,
}

impl Shared {
    fn item_seed(&self, index: usize) -> u64 {
        derive_seed(self.seed, &[TAG_AUGMENT, self.epoch, index as u64])
    }

    /// Builds batch `b` of `order` on the host.
    fn host_batch(
        &self,
        order: &[usize],
        b: usize,
        cache: &mut TransformCache,
    ) -> Result<HostBatch, DataError> {
        if self.batch_size == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        let start = b * self.batch_size;
        let end = (start + self.batch_size).min(order.len());
        let mut items = Vec::with_capacity(end.saturating_sub(start));
        for &index in &order[start.min(end)..end] {
            let item = self.dataset.get(index).map_err(|e| DataError::Item {
                index,
                reason: e.to_string(),
            })?;
            items.push(SeededItem {
                item,
                index,
                seed: self.item_seed(index),
            });
        }
        self.batcher.batch_host_cached(items, cache)
    }
}

/// A reproducible, multi-threaded loader of [`ImageBatch`]es. Cheap to clone; `Send + Sync`.
///
/// ```no_run
/// # fn main() -> finetune::Result<()> {
/// use std::sync::Arc;
/// use burn::tensor::Device;
/// use finetune::data::{Cifar10, ImageLoader, LoaderConfig, Pipeline};
///
/// let cifar = Cifar10::download()?;
/// let loader = ImageLoader::new(
///     Arc::new(cifar.train()),
///     Pipeline::cifar_train(),
///     LoaderConfig::train(128, 42),
///     Device::default(),
/// );
/// for epoch in 0..2 {
///     for batch in loader.epoch(epoch).iter() {
///         let batch = batch?; // images [128, 3, 32, 32], targets [128]
///         # let _ = batch;
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ImageLoader {
    dataset: Arc<dyn Dataset<ImageItem>>,
    batcher: ImageBatcher,
    config: LoaderConfig,
    device: Device,
}

impl std::fmt::Debug for ImageLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageLoader")
            .field("items", &self.dataset.len())
            .field("pipeline", self.batcher.pipeline())
            .field("config", &self.config)
            .field("device", &self.device)
            .finish()
    }
}

impl ImageLoader {
    /// A loader of `dataset` through `pipeline`. Invalid settings (a zero batch size, a
    /// transform that cannot apply) surface as errors from the epoch's iterator; use
    /// [`check`](Self::check) to find them up front.
    pub fn new(
        dataset: Arc<dyn Dataset<ImageItem>>,
        pipeline: Pipeline,
        config: LoaderConfig,
        device: Device,
    ) -> Self {
        ImageLoader {
            dataset,
            batcher: ImageBatcher::with_seed(pipeline, config.seed),
            config,
            device,
        }
    }

    /// Checks the settings and the pipeline against the first item. Errors: a batch size of 0
    /// ([`DataError::Config`]), invalid transforms, a non-empty dataset smaller than one batch
    /// while `drop_last` drops the partial batch ([`DataError::BatchLargerThanData`]: an epoch
    /// would have no batch), and a first item the pipeline cannot transform.
    pub fn check(&self) -> Result<(), DataError> {
        if self.config.batch_size == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        self.batcher.pipeline().validate()?;
        let items = self.dataset.len();
        if self.config.drop_last && items > 0 && items < self.config.batch_size {
            return Err(DataError::BatchLargerThanData {
                batch_size: self.config.batch_size,
                items,
                what: "dataset",
                fix: format!(
                    "lower LoaderConfig::batch_size to at most {items}, or keep the last partial \
                     batch (LoaderConfig::drop_last = false)"
                ),
            });
        }
        if !self.dataset.is_empty() {
            let item = self.dataset.get(0).map_err(|e| DataError::Item {
                index: 0,
                reason: e.to_string(),
            })?;
            self.batcher
                .pipeline()
                .output_size(item.image.width(), item.image.height())?;
        }
        Ok(())
    }

    /// The dataset indices of epoch `epoch`, in the order they are visited (after
    /// `drop_last`).
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let n = self.dataset.len();
        let mut order = if self.config.shuffle {
            SeededRng::new(derive_seed(self.config.seed, &[TAG_SHUFFLE, epoch as u64]))
                .permutation(n)
        } else {
            (0..n).collect()
        };
        order.truncate(self.num_items());
        order
    }

    /// The batches of epoch `epoch`: order and augmentation are a pure function of
    /// `(seed, epoch, item index)` — the same whatever `num_workers` and however many epochs
    /// were iterated before.
    pub fn epoch(&self, epoch: usize) -> Arc<dyn DataLoader<ImageBatch>> {
        Arc::new(EpochLoader {
            shared: Arc::new(Shared {
                dataset: self.dataset.clone(),
                batcher: self.batcher.clone(),
                batch_size: self.config.batch_size,
                num_workers: self.config.num_workers,
                seed: self.config.seed,
                epoch: epoch as u64,
            }),
            order: self.order(epoch).into(),
            device: self.device.clone(),
        })
    }

    /// The loader for code that iterates one [`DataLoader`] once per epoch, as burn-train's
    /// `SupervisedTraining` does: the `k`-th call to `iter()` gives epoch `first_epoch + k`
    /// (shuffled and augmented as [`epoch`](Self::epoch) gives it), like PyTorch's
    /// `DataLoader`, which reshuffles on every `iter()`.
    ///
    /// `slice(start, end)` (Burn's `split_dataloader`, one slice per device) takes items
    /// `start..end` of each epoch's order, so the slices of an epoch are disjoint and together
    /// are that epoch (with `drop_last`, each slice drops its own last partial batch); each
    /// slice counts its own epochs from the count of the loader it was cut from.
    pub fn epochs(&self, first_epoch: usize) -> Arc<dyn DataLoader<ImageBatch>> {
        Arc::new(EpochsLoader {
            loader: self.clone(),
            range: 0..self.num_items(),
            next_epoch: AtomicUsize::new(first_epoch),
        })
    }

    /// All batches of epoch `epoch`, collected (for tests and small datasets).
    pub fn batches(&self, epoch: usize) -> Result<Vec<ImageBatch>, DatasetError> {
        self.epoch(epoch).iter().collect()
    }

    /// The batches of epoch `epoch` on the host, prepared one at a time on the calling thread
    /// (for pictures, tests and benchmarks): the same values as [`epoch`](Self::epoch), before
    /// the upload.
    pub fn host_iter(
        &self,
        epoch: usize,
    ) -> impl Iterator<Item = Result<HostBatch, DataError>> + use<> {
        let loader = EpochLoader {
            shared: Arc::new(Shared {
                dataset: self.dataset.clone(),
                batcher: self.batcher.clone(),
                batch_size: self.config.batch_size,
                num_workers: 0,
                seed: self.config.seed,
                epoch: epoch as u64,
            }),
            order: self.order(epoch).into(),
            device: self.device.clone(),
        };
        let mut cache = TransformCache::default();
        (0..loader.num_batches())
            .map(move |b| loader.shared.host_batch(&loader.order, b, &mut cache))
    }

    /// All batches of epoch `epoch` on the host (see [`host_iter`](Self::host_iter)).
    pub fn host_batches(&self, epoch: usize) -> Result<Vec<HostBatch>, DataError> {
        self.host_iter(epoch).collect()
    }

    /// Items per epoch (after `drop_last`).
    pub fn num_items(&self) -> usize {
        let n = self.dataset.len();
        match self.config.batch_size {
            0 => 0,
            bs if self.config.drop_last => n / bs * bs,
            _ => n,
        }
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        match self.config.batch_size {
            0 => 0,
            bs => self.num_items().div_ceil(bs),
        }
    }

    /// Images per batch.
    pub fn batch_size(&self) -> usize {
        self.config.batch_size
    }

    /// Whether every epoch gives the same images (no random transform; the order may still
    /// change when shuffling), which allows caching backbone features.
    pub fn is_deterministic(&self) -> bool {
        !self.batcher.pipeline().is_random()
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset<ImageItem>> {
        &self.dataset
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        self.batcher.pipeline()
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The device batches are uploaded to.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The same loader uploading to `device`.
    pub fn with_device(&self, device: Device) -> Self {
        ImageLoader {
            device,
            ..self.clone()
        }
    }

    /// The same loader with another pipeline (e.g. the eval pipeline on the training images).
    pub fn with_pipeline(&self, pipeline: Pipeline) -> Self {
        ImageLoader {
            batcher: ImageBatcher::with_seed(pipeline, self.config.seed),
            ..self.clone()
        }
    }
}

/// The batches of one epoch (returned by [`ImageLoader::epoch`]).
#[derive(Clone)]
struct EpochLoader {
    shared: Arc<Shared>,
    order: Arc<[usize]>,
    device: Device,
}

impl EpochLoader {
    /// The iterator over this epoch's batches, with its worker threads started.
    fn start(self) -> EpochIter {
        let workers = if self.shared.num_workers > 0 && self.num_batches() > 1 {
            Some(Workers::spawn(
                self.shared.clone(),
                self.order.clone(),
                self.num_batches(),
            ))
        } else {
            None
        };
        EpochIter {
            loader: self,
            next: 0,
            items_done: 0,
            failed: false,
            cache: TransformCache::default(),
            workers,
        }
    }

    fn num_batches(&self) -> usize {
        match self.shared.batch_size {
            0 => 1, // one error item
            bs => self.order.len().div_ceil(bs),
        }
    }
}

impl DataLoader<ImageBatch> for EpochLoader {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<ImageBatch> + 'a> {
        Box::new(self.clone().start())
    }

    fn num_items(&self) -> usize {
        self.order.len()
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<ImageBatch>> {
        Arc::new(EpochLoader {
            shared: self.shared.clone(),
            order: self.order.clone(),
            device: device.clone(),
        })
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<ImageBatch>> {
        let end = end.min(self.order.len());
        let start = start.min(end);
        Arc::new(EpochLoader {
            shared: self.shared.clone(),
            order: self.order[start..end].into(),
            device: self.device.clone(),
        })
    }
}

/// Every epoch of an [`ImageLoader`], one per `iter()` (returned by [`ImageLoader::epochs`]).
struct EpochsLoader {
    loader: ImageLoader,
    /// The items of each epoch's order this loader takes.
    range: std::ops::Range<usize>,
    next_epoch: AtomicUsize,
}

impl EpochsLoader {
    /// Items of this loader's range it yields per epoch: with `drop_last`, whole batches only
    /// (a slice per device drops its own partial batch, as each DDP rank's sampler does).
    fn kept(&self) -> usize {
        let len = self.range.len();
        match self.loader.config.batch_size {
            bs if bs > 0 && self.loader.config.drop_last => len / bs * bs,
            _ => len,
        }
    }

    fn epoch_loader(&self, epoch: usize) -> EpochLoader {
        let order = self.loader.order(epoch);
        let end = self.range.end.min(order.len());
        let start = self.range.start.min(end);
        let end = start + self.kept().min(end - start);
        EpochLoader {
            shared: Arc::new(Shared {
                dataset: self.loader.dataset.clone(),
                batcher: self.loader.batcher.clone(),
                batch_size: self.loader.config.batch_size,
                num_workers: self.loader.config.num_workers,
                seed: self.loader.config.seed,
                epoch: epoch as u64,
            }),
            order: order[start..end].into(),
            device: self.loader.device.clone(),
        }
    }
}

impl DataLoader<ImageBatch> for EpochsLoader {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<ImageBatch> + 'a> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        Box::new(self.epoch_loader(epoch).start())
    }

    fn num_items(&self) -> usize {
        self.kept()
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<ImageBatch>> {
        Arc::new(EpochsLoader {
            loader: self.loader.with_device(device.clone()),
            range: self.range.clone(),
            next_epoch: AtomicUsize::new(self.next_epoch.load(Ordering::SeqCst)),
        })
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<ImageBatch>> {
        let end = self.range.start.saturating_add(end).min(self.range.end);
        let start = self.range.start.saturating_add(start).min(end);
        Arc::new(EpochsLoader {
            loader: self.loader.clone(),
            range: start..end,
            next_epoch: AtomicUsize::new(self.next_epoch.load(Ordering::SeqCst)),
        })
    }
}

type Message = Result<HostBatch, DataError>;

/// Worker threads, one channel each; worker `w` sends batches `w, w + n, ...` in order.
struct Workers {
    receivers: Vec<Receiver<Message>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Workers {
    fn spawn(shared: Arc<Shared>, order: Arc<[usize]>, num_batches: usize) -> Self {
        let n = shared.num_workers.min(num_batches).max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for w in 0..n {
            let (tx, rx): (SyncSender<Message>, _) = sync_channel(PREFETCH_PER_WORKER);
            let (shared, order, stop) = (shared.clone(), order.clone(), stop.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("finetune-loader-{w}"))
                .spawn(move || {
                    let mut cache = TransformCache::default();
                    for b in (w..num_batches).step_by(n) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let batch = shared.host_batch(&order, b, &mut cache);
                        let failed = batch.is_err();
                        if tx.send(batch).is_err() || failed {
                            break;
                        }
                    }
                });
            // A thread that cannot be spawned leaves its receiver disconnected: the iterator
            // reports it as a failed worker.
            if let Ok(h) = spawned {
                handles.push(h);
            }
            receivers.push(rx);
        }
        Workers {
            receivers,
            handles,
            stop,
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Disconnecting the channels unblocks workers waiting to send.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

struct EpochIter {
    loader: EpochLoader,
    next: usize,
    items_done: usize,
    failed: bool,
    cache: TransformCache,
    workers: Option<Workers>,
}

impl Iterator for EpochIter {
    type Item = Result<ImageBatch, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.loader.num_batches() {
            return None;
        }
        let b = self.next;
        self.next += 1;
        let host = match &self.workers {
            Some(workers) => {
                let w = b % workers.receivers.len();
                workers.receivers[w]
                    .recv()
                    .unwrap_or(Err(DataError::Worker(w)))
            }
            None => self
                .loader
                .shared
                .host_batch(&self.loader.order, b, &mut self.cache),
        };
        match host {
            Ok(host) => {
                self.items_done += host.len();
                Some(Ok(host.to_device(&self.loader.device)))
            }
            Err(e) => {
                self.failed = true;
                self.workers = None;
                Some(Err(DatasetError::new(e)))
            }
        }
    }
}

impl DataLoaderIterator<ImageBatch> for EpochIter {
    fn progress(&self) -> Progress {
        Progress::new(
            self.items_done,
            self.loader.order.len(),
            Some("items".to_string()),
        )
    }
}
