//! Data: CIFAR-10/100 from the official archives, image folders, seeded splits, torchvision
//! transforms (with TrivialAugmentWide, RandAugment and RandomErasing), batchers and a
//! reproducible multi-threaded loader — the data side of PyTorch's transfer-learning tutorial
//! (`torchvision.datasets`, `torchvision.transforms`, `torch.utils.data`).
//!
//! ```no_run
//! # fn main() -> finetune::Result<()> {
//! use std::sync::Arc;
//! use burn::tensor::Device;
//! use finetune::data::{Cifar10, ImageLoader, LoaderConfig, Normalize, Pipeline, random_split};
//!
//! let cifar = Cifar10::download()?;
//! // The tutorial splits the test set 50/50 into validation and test.
//! let parts = random_split(cifar.test(), [0.5, 0.5], 42)?;
//! let device = Device::default();
//! let train = ImageLoader::new(
//!     Arc::new(cifar.train()),
//!     Pipeline::train(Normalize::cifar10()),
//!     LoaderConfig::train(128, 42),
//!     device.clone(),
//! );
//! let val = ImageLoader::new(
//!     Arc::new(parts[0].clone()),
//!     Pipeline::eval(Normalize::cifar10()),
//!     LoaderConfig::eval(256),
//!     device,
//! );
//! println!("{} train batches, {} val batches", train.num_batches(), val.num_batches());
//! # Ok(())
//! # }
//! ```
//!
//! Everything stays in memory as `u8` and becomes `f32` one batch at a time. Randomness (splits,
//! shuffles, augmentation) is seeded and portable: see [`rng`].

mod autoaugment;
mod batcher;
mod cifar;
mod dataset;
mod erasing;
mod error;
mod folder;
pub mod functional;
mod image_file;
mod loader;
pub mod rng;
mod split;
mod transform;

pub use autoaugment::{AugmentOp, RandAugment, TrivialAugmentWide, apply_op};
pub use batcher::{BatchError, HostBatch, ImageBatch, ImageBatcher, SeededItem};
pub use cifar::{
    CIFAR_SIZE, CIFAR10_MD5, CIFAR10_URL, CIFAR100_MD5, CIFAR100_URL, Cifar10, Cifar100,
    DATASETS_SUBDIR,
};
pub use dataset::{ImageDataset, ImageItem};
pub use erasing::{ErasingValue, RandomErasing, erase};
pub use error::DataError;
pub use folder::{
    IMAGE_EXTENSIONS, IgnoreReason, IgnoredFile, ImageFolder, ImageFolderOptions, SkippedFile,
};
pub use image_file::read_image;
pub use loader::{ImageLoader, LoaderConfig, default_workers};
pub use split::{Lengths, Subset, random_split};
pub use transform::{
    CIFAR10_MEAN, CIFAR10_STD, CenterCrop, ColorJitter, IMAGENET_MEAN, IMAGENET_STD, Interpolation,
    MAX_SIDE, Normalize, Pipeline, RandomCrop, RandomHorizontalFlip, RandomResizedCrop, Resize,
    ResizeTo, Transform, TransformCache, to_chw,
};
