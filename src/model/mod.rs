//! Models: the contract every architecture implements ([`VisionModel`]: timm's
//! `forward_features` / `forward_head` / `num_features` / `reset_classifier`, named stages,
//! freezing, save/load), the registry of architectures by name ([`create_model`],
//! [`AnyModel`]), and the families: ResNet (He et al., 2016) with torchvision's topology and
//! names.

mod any;
mod block;
mod config;
mod contract;
mod freeze;
mod fused;
mod input;
mod io;
mod resnet;
mod stage;
mod summary;

pub(crate) use any::arch_of;
pub use any::infer_architecture;
pub use any::{AnyConfig, AnyFeatures, AnyInference, AnyModel, architectures, create_model};
pub use block::{BatchNormInput, Block, Downsample};
pub use config::{BlockKind, MAX_PARAMS, ResNetConfig, Stem};
pub use contract::{InferenceModel, ModelConfig, VisionModel};
pub(crate) use freeze::apply_freeze;
pub use freeze::{BnPolicy, FreezeState, backbone_group, batch_norm_paths, is_batch_norm_path};
pub use fused::{FusedBlock, FusedResNet};
pub use io::METADATA_KEY;
pub use resnet::ResNet;
pub(crate) use stage::{regex_literal, under};
pub use stage::{Stage, StageSpec, Stages};
pub use summary::{ParamSummary, StageCount};
