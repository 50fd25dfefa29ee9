//! One type for "any registered architecture", chosen by name at run time:
//! [`create_model`] (timm's `create_model`) builds it from a timm/torchvision name, and
//! [`pretrained`](crate::weights::pretrained) loads it with weights. [`AnyModel`] implements
//! [`VisionModel`] by delegating to the family it holds, so the Learner, evaluation,
//! checkpoints and the examples work with it unchanged. A new family adds a variant here and a
//! row in [`architectures`].
//!
//! Its [`Module`] implementation is written out (not derived) so that it adds no path segment:
//! an `AnyModel` holding a ResNet has exactly the ResNet's parameter paths (`layer1.0.conv1`),
//! so freezing, saved files and weight import see the same names either way.

use burn::module::{
    Content, Devices, DisplaySettings, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper,
    ModuleVisitor,
};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::config::ResNetConfig;
use super::contract::{InferenceModel, ModelConfig, VisionModel};
use super::freeze::FreezeState;
use super::fused::FusedResNet;
use super::resnet::ResNet;
use super::stage::Stages;
use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::weights::keymap::KeyMap;
use crate::weights::{LoadOptions, LoadReport, WeightsFile};

/// The architecture names [`create_model`] accepts (timm / torchvision spelling), in registry
/// order.
pub fn architectures() -> &'static [&'static str] {
    &["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
}

/// Builds a freshly initialised model from its timm / torchvision name (`resnet50`; a weights
/// tag such as `resnet50.tv2_in1k` is accepted and ignored: use
/// [`weights::pretrained`](crate::weights::pretrained) to load weights) with a
/// `num_classes`-way head, on `device`.
///
/// ```
/// use burn::tensor::Device;
/// use finetune::model::{VisionModel, create_model};
///
/// let model = create_model("resnet18", 10, &Device::flex())?;
/// assert_eq!((model.arch().as_str(), model.num_features()), ("resnet18", 512));
/// # Ok::<(), finetune::Error>(())
/// ```
///
/// # Errors
/// [`Error::UnknownModel`] listing [`architectures`]; [`Error::InvalidConfig`] for 0 classes.
pub fn create_model(name: &str, num_classes: usize, device: &Device) -> Result<AnyModel> {
    AnyConfig::from_name(name, num_classes)?.try_init(device)
}

/// The architecture part of a model or weights name: `resnet50.tv2_in1k` -> `resnet50`.
pub(crate) fn arch_of(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase();
    name.split('.').next().unwrap_or_default().replace('-', "")
}

/// Any registered architecture (see [`create_model`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum AnyModel {
    /// A ResNet (He et al., 2016), torchvision's topology.
    ResNet(ResNet),
}

/// The configuration of an [`AnyModel`]: one variant per family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", content = "config", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AnyConfig {
    /// A ResNet configuration.
    #[serde(rename = "resnet")]
    ResNet(ResNetConfig),
}

impl AnyConfig {
    /// The configuration of a registered architecture name with a `num_classes`-way head.
    ///
    /// # Errors
    /// [`Error::UnknownModel`] listing [`architectures`].
    pub fn from_name(name: &str, num_classes: usize) -> Result<Self> {
        let arch = arch_of(name);
        if arch.starts_with("resnet") && architectures().contains(&arch.as_str()) {
            return Ok(AnyConfig::ResNet(ResNetConfig::from_name(
                &arch,
                num_classes,
            )?));
        }
        Err(Error::UnknownModel {
            name: name.to_string(),
            known: architectures().join(", "),
        })
    }
}

impl AnyConfig {
    /// The registered architecture name (`resnet50`), or `None` for a custom shape.
    pub fn arch_name(&self) -> Option<String> {
        match self {
            AnyConfig::ResNet(c) => {
                let standard = c.widths == [64, 128, 256, 512]
                    && c.stem == super::config::Stem::ImageNet
                    && c.in_channels == 3;
                c.arch_name().filter(|_| standard).map(str::to_string)
            }
        }
    }

    /// The architecture for messages: its name (`resnet34`), or its shape when custom.
    pub fn label(&self) -> String {
        match self {
            AnyConfig::ResNet(c) => crate::weights::import::describe(c),
        }
    }

    /// The number of classes of the head.
    pub fn num_classes(&self) -> usize {
        match self {
            AnyConfig::ResNet(c) => c.num_classes,
        }
    }

    /// Whether two configurations build the same network apart from the head's class count.
    pub fn same_backbone(&self, other: &AnyConfig) -> bool {
        match (self, other) {
            (AnyConfig::ResNet(a), AnyConfig::ResNet(b)) => {
                let b = ResNetConfig {
                    num_classes: a.num_classes,
                    zero_init_residual: a.zero_init_residual,
                    ..b.clone()
                };
                *a == b
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// The architecture a weights file holds, read from its tensor names and shapes: the family
/// from [`keymap::ANCHORS`](crate::weights::keymap::ANCHORS), then (ResNet) depth, widths and
/// stem from the shapes, or (other families) the registered variant whose state_dict has
/// exactly the file's keys and shapes, with the file's number of classes.
///
/// # Errors
/// [`WeightsError::UnknownArchitecture`](crate::weights::WeightsError::UnknownArchitecture)
/// saying what does not fit.
pub fn infer_architecture(file: &WeightsFile) -> Result<AnyConfig> {
    match file.family() {
        Some("resnet") => file.infer_config().map(AnyConfig::ResNet),
        _ => Err(crate::weights::WeightsError::UnknownArchitecture {
            path: file.path().to_path_buf(),
            reason: "no registered architecture has its tensor names and shapes".into(),
        }
        .into()),
    }
}

impl AnyModel {
    /// Builds the model a weights file describes ([`infer_architecture`]) and loads it with
    /// `options`.
    ///
    /// # Errors
    /// As [`infer_architecture`] and [`WeightsFile::open_with`] / [`VisionModel::load_state_dict`].
    pub fn from_weights_file(
        path: impl AsRef<std::path::Path>,
        options: &LoadOptions,
        device: &Device,
    ) -> Result<(AnyModel, LoadReport)> {
        let mut file = WeightsFile::open_with(path, options)?;
        let config = infer_architecture(&file)?;
        let mut model = config.try_init(device)?;
        let report = file.load_into(&mut model, options)?;
        Ok((model, report))
    }
}

impl From<ResNet> for AnyModel {
    fn from(model: ResNet) -> Self {
        AnyModel::ResNet(model)
    }
}

impl From<ResNetConfig> for AnyConfig {
    fn from(config: ResNetConfig) -> Self {
        AnyConfig::ResNet(config)
    }
}

impl AnyModel {
    /// The ResNet inside, if this is one.
    pub fn as_resnet(&self) -> Option<&ResNet> {
        match self {
            AnyModel::ResNet(m) => Some(m),
        }
    }

    /// The ResNet inside, if this is one.
    pub fn into_resnet(self) -> Option<ResNet> {
        match self {
            AnyModel::ResNet(m) => Some(m),
        }
    }
}

/// Calls `$body` with `$m` bound to the family model inside `$self`, re-wrapping the result
/// in the same variant when `$wrap` is given.
macro_rules! dispatch {
    ($self:expr, $m:ident => $body:expr) => {
        match $self {
            AnyModel::ResNet($m) => $body,
        }
    };
    (wrap $self:expr, $m:ident => $body:expr) => {
        match $self {
            AnyModel::ResNet($m) => AnyModel::ResNet($body),
        }
    };
}

impl Module for AnyModel {
    fn collect_devices(&self, devices: Devices) -> Devices {
        dispatch!(self, m => m.collect_devices(devices))
    }
    fn fork(self, device: &Device) -> Self {
        dispatch!(wrap self, m => m.fork(device))
    }
    fn to_device(self, device: &Device) -> Self {
        dispatch!(wrap self, m => m.to_device(device))
    }
    fn train(self) -> Self {
        dispatch!(wrap self, m => m.train())
    }
    fn valid(&self) -> Self {
        dispatch!(wrap self, m => m.valid())
    }
    fn materialize(self) -> Self {
        dispatch!(wrap self, m => m.materialize())
    }
    fn visit<Visitor: ModuleVisitor>(&self, visitor: &mut Visitor) {
        dispatch!(self, m => m.visit(visitor))
    }
    fn map<Mapper: ModuleMapper>(self, mapper: &mut Mapper) -> Self {
        dispatch!(wrap self, m => m.map(mapper))
    }
}

impl ModuleDisplayDefault for AnyModel {
    fn content(&self, content: Content) -> Option<Content> {
        dispatch!(self, m => m.content(content))
    }
    fn num_params(&self) -> usize {
        dispatch!(self, m => ModuleDisplayDefault::num_params(m))
    }
}

impl ModuleDisplay for AnyModel {
    fn format(&self, settings: DisplaySettings) -> String {
        dispatch!(self, m => m.format(settings))
    }
}

impl std::fmt::Display for AnyModel {
    /// The family model's module tree, as Burn displays modules.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        dispatch!(self, m => std::fmt::Display::fmt(m, f))
    }
}

/// The inference form of an [`AnyModel`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyInference {
    /// A ResNet with BatchNorm folded.
    ResNet(FusedResNet),
}

impl InferenceModel for AnyInference {
    fn forward_pre_logits(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            AnyInference::ResNet(m) => m.forward_pre_logits(images),
        }
    }
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            AnyInference::ResNet(m) => InferenceModel::forward(m, images),
        }
    }
}

/// Unpooled features of an [`AnyModel`]: feature maps for CNNs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum AnyFeatures {
    /// Feature maps `[B, C, h, w]`.
    Maps(Tensor<4>),
}

impl ModelConfig for AnyConfig {
    type Model = AnyModel;

    fn family(&self) -> &'static str {
        match self {
            AnyConfig::ResNet(c) => c.family(),
        }
    }

    fn from_saved(family: &str, config: serde_json::Value) -> std::result::Result<Self, String> {
        match family {
            "resnet" => ResNetConfig::from_saved(family, config).map(AnyConfig::ResNet),
            other => Err(format!(
                "it holds a '{other}' model, which this build of finetune does not know (known families: resnet); upgrade finetune"
            )),
        }
    }

    fn to_saved(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            AnyConfig::ResNet(c) => c.to_saved(),
        }
    }

    fn validate(&self) -> Result<()> {
        match self {
            AnyConfig::ResNet(c) => ModelConfig::validate(c),
        }
    }

    fn num_stored_values(&self) -> u64 {
        match self {
            AnyConfig::ResNet(c) => ModelConfig::num_stored_values(c),
        }
    }

    fn try_init(&self, device: &Device) -> Result<AnyModel> {
        match self {
            AnyConfig::ResNet(c) => ModelConfig::try_init(c, device).map(AnyModel::ResNet),
        }
    }

    fn describe(&self) -> String {
        match self {
            AnyConfig::ResNet(c) => c.describe(),
        }
    }

    fn as_any(&self) -> Option<AnyConfig> {
        Some(self.clone())
    }
}

super::contract::inherent_freezing!(AnyModel);

impl VisionModel for AnyModel {
    type Config = AnyConfig;
    type Features = AnyFeatures;
    type Inference = AnyInference;

    fn config(&self) -> AnyConfig {
        match self {
            AnyModel::ResNet(m) => AnyConfig::ResNet(m.config()),
        }
    }

    fn arch(&self) -> String {
        dispatch!(self, m => m.arch())
    }
    fn stages(&self) -> Stages {
        dispatch!(self, m => m.stages())
    }
    fn normalization(&self) -> Normalize {
        dispatch!(self, m => m.normalization())
    }
    fn forward_features(&self, images: Tensor<4>) -> AnyFeatures {
        match self {
            AnyModel::ResNet(m) => AnyFeatures::Maps(m.forward_features(images)),
        }
    }
    fn forward_head(&self, features: AnyFeatures, pre_logits: bool) -> Tensor<2> {
        match (self, features) {
            (AnyModel::ResNet(m), AnyFeatures::Maps(x)) => m.forward_head(x, pre_logits),
        }
    }
    fn forward_classifier(&self, pre_logits: Tensor<2>) -> Tensor<2> {
        dispatch!(self, m => m.forward_classifier(pre_logits))
    }
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        dispatch!(self, m => m.forward(images))
    }
    fn forward_pre_logits(&self, images: Tensor<4>) -> Tensor<2> {
        dispatch!(self, m => m.forward_pre_logits(images))
    }
    fn num_features(&self) -> usize {
        dispatch!(self, m => m.num_features())
    }
    fn num_classes(&self) -> usize {
        dispatch!(self, m => m.num_classes())
    }
    fn in_channels(&self) -> usize {
        dispatch!(self, m => m.in_channels())
    }
    fn reset_classifier(self, num_classes: usize) -> Result<Self> {
        match self {
            AnyModel::ResNet(m) => m.reset_classifier(num_classes).map(AnyModel::ResNet),
        }
    }
    fn device(&self) -> Device {
        dispatch!(self, m => m.device())
    }
    fn check_input(&self, dims: [usize; 4]) -> Result<()> {
        dispatch!(self, m => m.check_input(dims))
    }
    fn check_training_batch(&self, dims: [usize; 4]) -> Result<()> {
        dispatch!(self, m => m.check_training_batch(dims))
    }
    fn for_inference(&self) -> AnyInference {
        match self {
            AnyModel::ResNet(m) => AnyInference::ResNet(VisionModel::for_inference(m)),
        }
    }
    fn key_map(&self) -> KeyMap {
        dispatch!(self, m => m.key_map())
    }
    fn load_state_dict(
        &mut self,
        file: &mut WeightsFile,
        options: &LoadOptions,
    ) -> Result<LoadReport> {
        dispatch!(self, m => m.load_state_dict(file, options))
    }
    fn freeze_state(&self) -> &FreezeState {
        dispatch!(self, m => m.freeze_state())
    }
    fn set_freeze_state(&mut self, state: FreezeState) {
        dispatch!(self, m => m.set_freeze_state(state))
    }
}
