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

use std::collections::BTreeMap;

use super::config::ResNetConfig;
use super::contract::{Eval, InferenceModel, ModelConfig, VisionModel};
use super::convnext::{ConvNeXt, ConvNeXtConfig};
use super::efficientnet::{EfficientNet, EfficientNetConfig};
use super::freeze::FreezeState;
use super::fused::FusedResNet;
use super::mobilenet_v3::{MobileNetV3, MobileNetV3Config};
use super::resnet::ResNet;
use super::stage::Stages;
use super::vit::{VisionTransformer, VisionTransformerConfig};
use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::weights::keymap::KeyMap;
use crate::weights::{LoadOptions, LoadReport, WeightsFile};

/// The architecture names [`create_model`] accepts (timm / torchvision spelling), in registry
/// order: every family's variants, its first variant first.
pub fn architectures() -> &'static [&'static str] {
    &[
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "finetune_mini",
        "convnext_tiny",
        "convnext_small",
        "convnext_base",
        "convnext_large",
        "efficientnet_b0",
        "efficientnet_b1",
        "efficientnet_b2",
        "efficientnet_b3",
        "efficientnet_b4",
        "efficientnet_b5",
        "efficientnet_b6",
        "efficientnet_b7",
        "efficientnet_v2_s",
        "efficientnet_v2_m",
        "efficientnet_v2_l",
        "mobilenet_v3_large",
        "mobilenet_v3_small",
        "vit_b_16",
        "vit_b_32",
        "vit_l_16",
    ]
}

/// The family tag of a registered architecture name (`convnext_tiny` -> `convnext`).
pub(crate) fn family_of(arch: &str) -> Option<&'static str> {
    if ResNetConfig::from_name(arch, 1).is_ok() {
        Some("resnet")
    } else if ConvNeXtConfig::from_name(arch, 1).is_some() {
        Some("convnext")
    } else if EfficientNetConfig::from_name(arch, 1).is_some() {
        Some("efficientnet")
    } else if MobileNetV3Config::from_name(arch, 1).is_some() {
        Some("mobilenet_v3")
    } else if VisionTransformerConfig::from_name(arch, 1).is_some() {
        Some("vit")
    } else {
        None
    }
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

/// The architecture part of a model or weights name: `resnet50.tv2_in1k` -> `resnet50`,
/// `ConvNeXt-Tiny` -> `convnext_tiny`.
pub(crate) fn arch_of(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase();
    name.split('.').next().unwrap_or_default().replace('-', "_")
}

/// Any registered architecture (see [`create_model`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum AnyModel {
    /// A ResNet (He et al., 2016), torchvision's topology.
    ResNet(ResNet),
    /// A ConvNeXt (Liu et al., 2022).
    ConvNeXt(ConvNeXt),
    /// An EfficientNet or EfficientNetV2 (Tan & Le, 2019 and 2021).
    EfficientNet(EfficientNet),
    /// A MobileNetV3 (Howard et al., 2019).
    MobileNetV3(MobileNetV3),
    /// A Vision Transformer (Dosovitskiy et al., 2021).
    VisionTransformer(VisionTransformer),
}

/// The configuration of an [`AnyModel`]: one variant per family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", content = "config", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AnyConfig {
    /// A ResNet configuration.
    #[serde(rename = "resnet")]
    ResNet(ResNetConfig),
    /// A ConvNeXt configuration.
    #[serde(rename = "convnext")]
    ConvNeXt(ConvNeXtConfig),
    /// An EfficientNet configuration.
    #[serde(rename = "efficientnet")]
    EfficientNet(EfficientNetConfig),
    /// A MobileNetV3 configuration.
    #[serde(rename = "mobilenet_v3")]
    MobileNetV3(MobileNetV3Config),
    /// A Vision Transformer configuration.
    #[serde(rename = "vit")]
    VisionTransformer(VisionTransformerConfig),
}

/// Calls `$body` with `$c` bound to the family configuration inside an [`AnyConfig`].
macro_rules! config_dispatch {
    ($self:expr, $c:ident => $body:expr) => {
        match $self {
            AnyConfig::ResNet($c) => $body,
            AnyConfig::ConvNeXt($c) => $body,
            AnyConfig::EfficientNet($c) => $body,
            AnyConfig::MobileNetV3($c) => $body,
            AnyConfig::VisionTransformer($c) => $body,
        }
    };
}

impl AnyConfig {
    /// The configuration of a registered architecture name with a `num_classes`-way head.
    ///
    /// # Errors
    /// [`Error::UnknownModel`] listing [`architectures`].
    pub fn from_name(name: &str, num_classes: usize) -> Result<Self> {
        let arch = arch_of(name);
        super::contract::check_num_classes(num_classes)?;
        let found = match family_of(&arch) {
            Some("resnet") => ResNetConfig::from_name(&arch, num_classes)
                .ok()
                .map(AnyConfig::ResNet),
            Some("convnext") => ConvNeXtConfig::from_name(&arch, num_classes).map(Into::into),
            Some("efficientnet") => {
                EfficientNetConfig::from_name(&arch, num_classes).map(Into::into)
            }
            Some("mobilenet_v3") => {
                MobileNetV3Config::from_name(&arch, num_classes).map(Into::into)
            }
            Some("vit") => VisionTransformerConfig::from_name(&arch, num_classes).map(Into::into),
            _ => None,
        };
        if let Some(config) = found {
            return Ok(config);
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
            AnyConfig::ResNet(c) => c.arch_name().map(str::to_string),
            AnyConfig::ConvNeXt(c) => c.arch_name().map(str::to_string),
            AnyConfig::EfficientNet(c) => c.arch_name().map(str::to_string),
            AnyConfig::MobileNetV3(c) => c.arch_name().map(str::to_string),
            AnyConfig::VisionTransformer(c) => c.arch_name().map(str::to_string),
        }
    }

    /// The architecture for messages: its name (`resnet34`), or its shape when custom.
    pub fn label(&self) -> String {
        match self {
            AnyConfig::ResNet(c) => crate::weights::import::describe(c),
            AnyConfig::VisionTransformer(c) if c.image_size != 224 => match c.arch_name() {
                Some(name) => format!("{name} ({}x{} images)", c.image_size, c.image_size),
                None => c.describe(),
            },
            other => other.arch_name().unwrap_or_else(|| other.describe()),
        }
    }

    /// The same network with a `num_classes`-way head.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for 0 classes.
    pub fn with_num_classes(mut self, num_classes: usize) -> Result<Self> {
        super::contract::check_num_classes(num_classes)?;
        config_dispatch!(&mut self, c => c.num_classes = num_classes);
        Ok(self)
    }

    /// The same network for images of `in_channels` channels (the stem's input).
    pub fn with_in_channels(mut self, in_channels: usize) -> Self {
        config_dispatch!(&mut self, c => c.in_channels = in_channels);
        self
    }

    /// The number of classes of the head.
    pub fn num_classes(&self) -> usize {
        config_dispatch!(self, c => c.num_classes)
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
            (AnyConfig::ConvNeXt(a), AnyConfig::ConvNeXt(b)) => {
                (a.depths, a.dims, a.in_channels) == (b.depths, b.dims, b.in_channels)
            }
            (AnyConfig::EfficientNet(a), AnyConfig::EfficientNet(b)) => {
                (&a.setting, a.last_channel, a.in_channels)
                    == (&b.setting, b.last_channel, b.in_channels)
            }
            (AnyConfig::MobileNetV3(a), AnyConfig::MobileNetV3(b)) => {
                (&a.setting, a.last_channel, a.in_channels)
                    == (&b.setting, b.last_channel, b.in_channels)
            }
            (AnyConfig::VisionTransformer(a), AnyConfig::VisionTransformer(b)) => {
                let b = VisionTransformerConfig {
                    num_classes: a.num_classes,
                    dropout: a.dropout,
                    ..b.clone()
                };
                *a == b
            }
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
    let unknown = |reason: String| -> Error {
        crate::weights::WeightsError::UnknownArchitecture {
            path: file.path().to_path_buf(),
            reason,
        }
        .into()
    };
    let family = file
        .family()
        .ok_or_else(|| unknown("no known family's tensor names".into()))?;
    if family == "resnet" {
        return file.infer_config().map(AnyConfig::ResNet);
    }
    let head = match family {
        "convnext" => "classifier.2.weight",
        "efficientnet" => "classifier.1.weight",
        "mobilenet_v3" => "classifier.3.weight",
        _ => "heads.head.weight",
    };
    // A headless file (timm's `num_classes=0`) is matched without its head, with ImageNet's
    // 1000 classes.
    let classes = file.shape(head).and_then(|s| s.first().copied());
    let headless = classes.is_none();
    let classes = classes.unwrap_or(1000);
    let device = Device::flex();
    for arch in architectures() {
        if family_of(arch) != Some(family) {
            continue;
        }
        let mut config = AnyConfig::from_name(arch, classes.max(1))?;
        // The stem's input channels (1 for grayscale weights).
        let stem = if family == "vit" {
            "conv_proj.weight"
        } else {
            "features.0.0.weight"
        };
        if let Some(&[_, channels, ..]) = file.shape(stem) {
            config = config.with_in_channels(channels);
        }
        if let (AnyConfig::VisionTransformer(c), Some(&[_, seq, _])) =
            (&mut config, file.shape("encoder.pos_embedding"))
        {
            // The image size the position embeddings were made for.
            let grid = ((seq.saturating_sub(1)) as f64).sqrt().round() as usize;
            c.image_size = grid * c.patch_size;
        }
        // Parameters are initialised lazily: building a model to list its tensors is cheap.
        let Ok(model) = config.try_init(&device) else {
            continue;
        };
        let key_map = model.key_map();
        let head_modules = model
            .stages()
            .head()
            .map(|h| h.modules.clone())
            .unwrap_or_default();
        let ours: BTreeMap<String, Vec<usize>> = model
            .tensor_paths()
            .into_iter()
            .filter(|(p, _)| !(headless && head_modules.iter().any(|h| super::under(p, h))))
            .map(|(p, s)| key_map.to_reference(&p, s))
            .collect();
        let theirs: BTreeMap<String, Vec<usize>> = file
            .tensors()
            .into_iter()
            .filter(|(k, _)| !k.ends_with(crate::weights::keymap::IGNORED_SUFFIX))
            // torchvision's published ViT files use the MLP's version-1 names.
            .map(|(k, s)| {
                let k = k
                    .replace(".mlp.linear_1.", ".mlp.0.")
                    .replace(".mlp.linear_2.", ".mlp.3.");
                (k, s)
            })
            .collect();
        if ours == theirs {
            return Ok(config);
        }
    }
    Err(unknown(format!(
        "a {family} state_dict that matches none of the registered {family} architectures"
    )))
}

impl AnyModel {
    /// Builds the model a weights file describes ([`infer_architecture`]) and loads it with
    /// `options`; a headless file (no classifier tensors) loads backbone only, its head left as
    /// initialised for 1000 classes (replace it with
    /// [`reset_classifier`](VisionModel::reset_classifier)).
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
        let options = if file.has_head(&model) {
            options.clone()
        } else {
            match options.state_dict_key() {
                Some(key) => LoadOptions::backbone_only().key(key),
                None => LoadOptions::backbone_only(),
            }
        };
        let report = file.load_into(&mut model, &options)?;
        Ok((model, report))
    }
}

/// `From` conversions from each family's model and configuration.
macro_rules! family_conversions {
    ($($variant:ident($model:ty, $config:ty)),* $(,)?) => {
        $(
            impl From<$model> for AnyModel {
                fn from(model: $model) -> Self {
                    AnyModel::$variant(model)
                }
            }
            impl From<$config> for AnyConfig {
                fn from(config: $config) -> Self {
                    AnyConfig::$variant(config)
                }
            }
        )*
    };
}

family_conversions!(
    ResNet(ResNet, ResNetConfig),
    ConvNeXt(ConvNeXt, ConvNeXtConfig),
    EfficientNet(EfficientNet, EfficientNetConfig),
    MobileNetV3(MobileNetV3, MobileNetV3Config),
    VisionTransformer(VisionTransformer, VisionTransformerConfig),
);

impl AnyModel {
    /// The ResNet inside, if this is one.
    pub fn as_resnet(&self) -> Option<&ResNet> {
        match self {
            AnyModel::ResNet(m) => Some(m),
            _ => None,
        }
    }

    /// The ResNet inside, if this is one.
    pub fn into_resnet(self) -> Option<ResNet> {
        match self {
            AnyModel::ResNet(m) => Some(m),
            _ => None,
        }
    }
}

/// Calls `$body` with `$m` bound to the family model inside `$self`, re-wrapping the result
/// in the same variant when `$wrap` is given.
macro_rules! dispatch {
    ($self:expr, $m:ident => $body:expr) => {
        match $self {
            AnyModel::ResNet($m) => $body,
            AnyModel::ConvNeXt($m) => $body,
            AnyModel::EfficientNet($m) => $body,
            AnyModel::MobileNetV3($m) => $body,
            AnyModel::VisionTransformer($m) => $body,
        }
    };
    (wrap $self:expr, $m:ident => $body:expr) => {
        match $self {
            AnyModel::ResNet($m) => AnyModel::ResNet($body),
            AnyModel::ConvNeXt($m) => AnyModel::ConvNeXt($body),
            AnyModel::EfficientNet($m) => AnyModel::EfficientNet($body),
            AnyModel::MobileNetV3($m) => AnyModel::MobileNetV3($body),
            AnyModel::VisionTransformer($m) => AnyModel::VisionTransformer($body),
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
    /// A ConvNeXt without autodiff.
    ConvNeXt(Eval<ConvNeXt>),
    /// An EfficientNet without autodiff.
    EfficientNet(Eval<EfficientNet>),
    /// A MobileNetV3 without autodiff.
    MobileNetV3(Eval<MobileNetV3>),
    /// A Vision Transformer without autodiff.
    VisionTransformer(Eval<VisionTransformer>),
}

macro_rules! inference_dispatch {
    ($self:expr, $m:ident => $body:expr) => {
        match $self {
            AnyInference::ResNet($m) => $body,
            AnyInference::ConvNeXt($m) => $body,
            AnyInference::EfficientNet($m) => $body,
            AnyInference::MobileNetV3($m) => $body,
            AnyInference::VisionTransformer($m) => $body,
        }
    };
}

impl InferenceModel for AnyInference {
    fn forward_pre_logits(&self, images: Tensor<4>) -> Tensor<2> {
        inference_dispatch!(self, m => InferenceModel::forward_pre_logits(m, images))
    }
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        inference_dispatch!(self, m => InferenceModel::forward(m, images))
    }
}

/// Unpooled features of an [`AnyModel`]: feature maps for CNNs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum AnyFeatures {
    /// Feature maps `[B, C, h, w]` (CNNs).
    Maps(Tensor<4>),
    /// Tokens `[B, N, D]` (transformers; the class token first).
    Tokens(Tensor<3>),
}

impl ModelConfig for AnyConfig {
    type Model = AnyModel;

    fn family(&self) -> &'static str {
        config_dispatch!(self, c => c.family())
    }

    fn from_saved(family: &str, config: serde_json::Value) -> std::result::Result<Self, String> {
        match family {
            "resnet" => ResNetConfig::from_saved(family, config).map(AnyConfig::ResNet),
            "convnext" => ConvNeXtConfig::from_saved(family, config).map(Into::into),
            "efficientnet" => EfficientNetConfig::from_saved(family, config).map(Into::into),
            "mobilenet_v3" => MobileNetV3Config::from_saved(family, config).map(Into::into),
            "vit" => VisionTransformerConfig::from_saved(family, config).map(Into::into),
            other => Err(format!(
                "it holds a '{other}' model, which this build of finetune does not know (known families: resnet, convnext, efficientnet, mobilenet_v3, vit); upgrade finetune"
            )),
        }
    }

    fn to_saved(&self) -> serde_json::Result<serde_json::Value> {
        config_dispatch!(self, c => c.to_saved())
    }

    fn validate(&self) -> Result<()> {
        config_dispatch!(self, c => ModelConfig::validate(c))
    }

    fn num_stored_values(&self) -> u64 {
        config_dispatch!(self, c => ModelConfig::num_stored_values(c))
    }

    fn try_init(&self, device: &Device) -> Result<AnyModel> {
        config_dispatch!(self, c => ModelConfig::try_init(c, device).map(AnyModel::from))
    }

    fn describe(&self) -> String {
        config_dispatch!(self, c => c.describe())
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
        dispatch!(self, m => m.config().into())
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
            AnyModel::ConvNeXt(m) => AnyFeatures::Maps(m.forward_features(images)),
            AnyModel::EfficientNet(m) => AnyFeatures::Maps(m.forward_features(images)),
            AnyModel::MobileNetV3(m) => AnyFeatures::Maps(m.forward_features(images)),
            AnyModel::VisionTransformer(m) => AnyFeatures::Tokens(m.forward_features(images)),
        }
    }
    /// # Panics
    /// When `features` are not this family's kind (tokens for a CNN, maps for a ViT): pass
    /// what this model's [`forward_features`](VisionModel::forward_features) returned.
    fn forward_head(&self, features: AnyFeatures, pre_logits: bool) -> Tensor<2> {
        match (self, features) {
            (AnyModel::ResNet(m), AnyFeatures::Maps(x)) => m.forward_head(x, pre_logits),
            (AnyModel::ConvNeXt(m), AnyFeatures::Maps(x)) => m.forward_head(x, pre_logits),
            (AnyModel::EfficientNet(m), AnyFeatures::Maps(x)) => m.forward_head(x, pre_logits),
            (AnyModel::MobileNetV3(m), AnyFeatures::Maps(x)) => m.forward_head(x, pre_logits),
            (AnyModel::VisionTransformer(m), AnyFeatures::Tokens(x)) => {
                m.forward_head(x, pre_logits)
            }
            (m, _) => panic!(
                "forward_head on a {} was given another family's features",
                m.arch()
            ),
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
        dispatch!(self, m => m.reset_classifier(num_classes).map(AnyModel::from))
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
            AnyModel::ConvNeXt(m) => AnyInference::ConvNeXt(VisionModel::for_inference(m)),
            AnyModel::EfficientNet(m) => AnyInference::EfficientNet(VisionModel::for_inference(m)),
            AnyModel::MobileNetV3(m) => AnyInference::MobileNetV3(VisionModel::for_inference(m)),
            AnyModel::VisionTransformer(m) => {
                AnyInference::VisionTransformer(VisionModel::for_inference(m))
            }
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
