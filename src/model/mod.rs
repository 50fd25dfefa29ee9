//! Models: the contract every architecture implements ([`VisionModel`]: timm's
//! `forward_features` / `forward_head` / `num_features` / `reset_classifier`, named stages,
//! freezing, save/load), the registry of architectures by name ([`create_model`],
//! [`AnyModel`]), and the families, each with torchvision's topology, initialisation and
//! parameter names: ResNet (He et al., 2016), ConvNeXt (Liu et al., 2022), EfficientNet and
//! EfficientNetV2 (Tan & Le, 2019, 2021), MobileNetV3 (Howard et al., 2019) and the Vision
//! Transformer (Dosovitskiy et al., 2021).

mod any;
mod block;
mod config;
mod contract;
mod convnext;
mod efficientnet;
mod freeze;
mod fused;
mod input;
mod io;
mod layers;
mod mbconv;
mod mobilenet_v3;
mod resnet;
mod stage;
mod summary;
mod vit;

pub(crate) use any::arch_of;
pub use any::infer_architecture;
pub use any::{AnyConfig, AnyFeatures, AnyInference, AnyModel, architectures, create_model};
pub use block::{BatchNormInput, Block, Downsample};
pub use config::{BlockKind, FINETUNE_MINI_WIDTHS, MAX_PARAMS, ResNetConfig, Stem};
pub use contract::{Eval, InferenceModel, ModelConfig, VisionModel};
pub use convnext::{CNBlock, ConvNeXt, ConvNeXtConfig, ConvNeXtDownsample, ConvNeXtStage};
pub use efficientnet::{EfficientNet, EfficientNetConfig, MBConvKind, MBConvSetting};
pub(crate) use freeze::apply_freeze;
pub use freeze::{BnPolicy, FreezeState, backbone_group, batch_norm_paths, is_batch_norm_path};
pub use fused::{FusedBlock, FusedResNet};
pub use io::METADATA_KEY;
pub use layers::{Activation, ConvNormAct, SqueezeExcitation, StochasticDepth};
pub use mbconv::InvertedResidual;
pub use mobilenet_v3::{InvertedResidualSetting, MobileNetV3, MobileNetV3Config};
pub use resnet::ResNet;
pub use stage::{Stage, StageSpec, Stages};
pub(crate) use stage::{regex_literal, under};
pub use summary::{ParamSummary, StageCount};
pub use vit::{EncoderBlock, SelfAttention, VisionTransformer, VisionTransformerConfig};
