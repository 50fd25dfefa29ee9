//! Pretrained weights, after torchvision's multi-weight API and timm's `pretrained=True`: the
//! registry by timm/torchvision name for any registered architecture ([`pretrained`]), and of
//! torchvision's ImageNet ResNets ([`ResNetWeights`], [`ResNet::pretrained`]), strict import of
//! `.pth` / `.safetensors` state_dicts ([`WeightsFile`], [`VisionModel::load_weights`],
//! [`VisionModel::load_backbone`]) behind PyTorch's `weights_only` pickle
//! allow-list ([`pickle`]), the key mapping ([`keymap`]), load reports, and the weights' own
//! inference preprocessing and classification helpers.
//!
//! [`ResNet::pretrained`]: crate::ResNet::pretrained
//! [`VisionModel::load_weights`]: crate::VisionModel::load_weights
//! [`VisionModel::load_backbone`]: crate::VisionModel::load_backbone

mod bundled;
pub mod error;
mod export;
pub mod hub;
pub mod import;
pub mod inference;
pub mod keymap;
pub mod pickle;
pub mod preprocess;
mod pth_writer;
pub mod registry;
mod registry_table;
pub mod report;
mod table;

pub use bundled::{BUNDLED, BundledWeights, FINETUNE_MINI_ROTATION, ROTATION_CLASSES};
pub use error::WeightsError;
pub use export::{Export, export_pytorch, save_pth, save_safetensors};
pub use hub::{HUB_PREFIX, HubModel, HubOptions, HubWeights, load_hub, load_hub_with};
pub use import::{LoadOptions, WeightsFile, WeightsFormat};
pub use inference::{
    Classifier, Prediction, WeightsSource, read_input_tensor, read_safetensors_f32,
};
pub use preprocess::{Interpolation, Preprocess, open_image};
pub use registry::{ResNetWeights, imagenet_classes, pretrained, pretrained_in, pretrained_names};
pub use registry_table::{Entry as WeightsEntry, Weights};
pub use report::{LoadMismatch, LoadReport};
