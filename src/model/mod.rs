//! Models: the ResNet family (He et al., 2016) with torchvision's topology and names, its
//! configuration, head replacement, freezing and parameter summary.

mod block;
mod config;
mod conv;
mod freeze;
mod fused;
mod gemm;
mod host;
#[cfg(feature = "flex")]
mod host_conv;
#[cfg(feature = "flex")]
mod host_norm;
#[cfg(feature = "flex")]
mod host_pool;
#[cfg(feature = "flex")]
mod host_tensor;
mod input;
mod io;
mod resnet;
mod summary;

pub use block::{BatchNormInput, Block, Downsample};
pub use config::{BlockKind, MAX_PARAMS, ResNetConfig, Stem};
pub use conv::{
    ConvImpl, GEMM_MAX_PIXELS, batch_norm, batch_norm_add_relu, batch_norm_relu,
    batch_norm_relu_with, batch_norm_with, conv_impl, conv2d, conv2d_with, max_pool2d,
    max_pool2d_with, set_conv_impl,
};
pub use freeze::{BnPolicy, FreezeState, Stage, is_batch_norm_path};
pub use fused::{FusedBlock, FusedResNet};
pub use io::METADATA_KEY;
pub use resnet::ResNet;
pub use summary::{ParamSummary, StageCount};
