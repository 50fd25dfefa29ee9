//! # finetune
//!
//! Transfer learning for computer vision in pure Rust, on [Burn](https://burn.dev): the workflow
//! of PyTorch's "Transfer Learning for Computer Vision" tutorial with torchvision's ResNets.
//!
//! - [`model`]: ResNet-18/34/50/101/152 with torchvision's topology and parameter names, head
//!   replacement ([`ResNet::with_num_classes`]) and freezing ([`ResNet::freeze_backbone`],
//!   [`ResNet::freeze_to`], [`ResNet::unfreeze`], with an explicit [`BnPolicy`]).
//! - [`weights`]: torchvision's pretrained ResNets ([`ResNet::pretrained`]), verified downloads,
//!   strict `.pth` / `.safetensors` import with PyTorch parity, backbone-only loading.
//! - [`data`]: CIFAR-10/100 from the official archives, image folders, seeded splits,
//!   torchvision's transforms (pixel-exact with Pillow) and a reproducible multi-threaded loader.
//! - [`viz`]: image grids with captions and a small drawing canvas for pictures.
//! - [`kernels`]: the convolution, BatchNorm and max-pooling entry points the models go through
//!   and the CPU kernels behind them, with the strategy switch [`kernels::set_conv_impl`] (for
//!   benchmarks and debugging).
//!
//! The model code has no backend type parameter: the same [`ResNet`] runs on any device Burn
//! was built with (features `flex` — the CPU default —, `ndarray`, `wgpu`).
//!
//! ```
//! use burn::tensor::Device;
//! use finetune::model::{ResNetConfig, Stage};
//!
//! // Any Burn device works: `Device::default()` (a GPU when built with `wgpu`), `Device::flex()`...
//! let device = Device::flex();
//! // A 1000-class ResNet-18 (load ImageNet weights here), re-headed for 10 classes, with the
//! // backbone frozen: only the new head trains.
//! let model = ResNetConfig::resnet18(1000)
//!     .init(&device)
//!     .with_num_classes(10)
//!     .freeze_backbone();
//! let summary = model.param_summary();
//! assert_eq!(summary.total(), 11_181_642);
//! assert_eq!(summary.trainable(), 5_130);
//! assert!(model.freeze_state().is_stage_frozen(Stage::Layer4));
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
pub use device::DeviceChoice;
pub use error::{Error, Result};
pub use model::{
    AnyModel, BnPolicy, ResNet, ResNetConfig, Stage, VisionModel, architectures, create_model,
};
pub use weights::{LoadOptions, ResNetWeights};

/// The README's code examples, compiled (not run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
