//! Models: the ResNet family (He et al., 2016) with torchvision's topology and names, its
//! configuration, head replacement, freezing and parameter summary.

mod block;
mod config;
mod freeze;
mod fused;
mod input;
mod io;
mod resnet;
mod summary;

pub use block::{BatchNormInput, Block, Downsample};
pub use config::{BlockKind, MAX_PARAMS, ResNetConfig, Stem};
pub use freeze::{BnPolicy, FreezeState, Stage, is_batch_norm_path};
pub use fused::{FusedBlock, FusedResNet};
pub use io::METADATA_KEY;
pub use resnet::ResNet;
pub use summary::{ParamSummary, StageCount};
