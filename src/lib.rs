//! # finetune
//!
//! Transfer learning for computer vision in pure Rust, on [Burn](https://burn.dev): the workflow
//! of PyTorch's "Transfer Learning for Computer Vision" tutorial with the backbones people
//! fine-tune today: torchvision's ResNets, ConvNeXts, EfficientNets (V1 and V2), MobileNetV3s and
//! Vision Transformers.
//!
//! - [`model`]: the model contract every architecture implements, [`VisionModel`] (timm's
//!   `forward_features` / `forward_head` / `num_features` / `reset_classifier`, named stages,
//!   freezing with an explicit [`BnPolicy`], save/load), models by timm/torchvision name
//!   ([`create_model`], [`AnyModel`]), and the families, each with torchvision's topology,
//!   initialisation and parameter names: ResNet-18..152, ConvNeXt-T/S/B/L, EfficientNet-B0..B7 and
//!   V2-S/M/L, MobileNetV3-Small/Large, ViT-B/16, B/32, L/16.
//! - [`weights`]: pretrained weights by name ([`weights::pretrained`], [`weights::Weights`]: every
//!   torchvision ImageNet weight of those architectures, with its preset), verified downloads,
//!   strict `.pth` / `.safetensors` import with PyTorch parity, backbone-only loading.
//! - [`data`]: CIFAR-10/100 from the official archives, image folders, seeded splits,
//!   torchvision's transforms (pixel-exact with Pillow) and a reproducible multi-threaded loader.
//! - [`train`]: the [`Learner`](train::Learner) (train and validation phases, best weights,
//!   checkpoints and exact resume, schedules, early stopping), reporting through a
//!   [`FitSink`](train::FitSink) the caller chooses; [`recipe`]: the tutorial's steps.
//! - [`viz`]: image grids with captions and a small drawing canvas for pictures.
//! - [`kernels`]: the convolution, BatchNorm, max-pooling and activation entry points the models go through
//!   and the CPU kernels behind them, with the strategy switch [`kernels::set_conv_impl`] (for
//!   benchmarks and debugging).
//!
//! The model code has no backend type parameter: the same model runs on any device Burn was
//! built with (features `flex` — the CPU default —, `ndarray`, `wgpu`).
//!
//! ```
//! use burn::tensor::Device;
//! use finetune::model::{VisionModel, create_model};
//!
//! // Any Burn device works: `Device::default()` (a GPU when built with `wgpu`), `Device::flex()`...
//! let device = Device::flex();
//! // A ResNet-18 by its torchvision name (`finetune::weights::pretrained("resnet18", ..)` loads
//! // ImageNet weights), re-headed for 10 classes, with the backbone frozen: only the new head
//! // trains.
//! let model = create_model("resnet18", 1000, &device)?
//!     .reset_classifier(10)?
//!     .freeze_backbone();
//! let summary = model.param_summary();
//! assert_eq!(summary.total(), 11_181_642);
//! assert_eq!(summary.trainable(), 5_130);
//! assert_eq!(summary.stage("layer4").trainable, 0);
//! # Ok::<(), finetune::Error>(())
//! ```

#![warn(missing_docs)]

mod allocator;
pub mod data;
pub mod device;
pub mod download;
pub mod error;
mod fsutil;
pub mod kernels;
pub mod model;
pub mod recipe;
pub mod train;
pub mod viz;
pub mod weights;

pub use allocator::tune_allocator;
pub use device::{DeviceChoice, Precision};
pub use error::{Error, Result};
pub use model::{
    AnyModel, BnPolicy, ConvNeXt, EfficientNet, MobileNetV3, ResNet, ResNetConfig, Stage,
    VisionModel, VisionTransformer, architectures, create_model,
};
pub use weights::{LoadOptions, ResNetWeights, Weights};

/// The README's code examples, compiled (not run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
