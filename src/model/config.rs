//! ResNet configuration, after He et al., "Deep Residual Learning for Image Recognition"
//! (CVPR 2016) and torchvision's `torchvision.models.resnet` (which puts the stride of a
//! bottleneck on its 3x3 convolution, "ResNet v1.5").
//!
//! One [`ResNetConfig`] serves every depth; [`ResNetConfig::resnet18`] and friends are one-line
//! builders over it, like timm's `resnet18()`.

use burn::config::Config;
use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::model::ResNet;
use crate::model::contract::ModelConfig;

/// The residual block family.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34). Expansion 1.
    Basic,
    /// 1x1 -> 3x3 -> 1x1 convolutions (ResNet-50/101/152). Expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Ratio between a block's output channels and its stage width.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The network's input stem.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Stem {
    /// torchvision's stem: 7x7 stride-2 convolution, BatchNorm, ReLU, 3x3 stride-2 max-pool.
    /// Required for ImageNet weights.
    ImageNet,
    /// 3x3 stride-1 convolution, BatchNorm, ReLU and no max-pool: keeps 32x32 inputs at full
    /// resolution when training from scratch on CIFAR-sized images.
    Cifar,
}

/// The stage widths of [`ResNetConfig::finetune_mini`].
pub const FINETUNE_MINI_WIDTHS: [usize; 4] = [16, 32, 64, 128];

/// The largest model [`ResNetConfig::validate`] accepts: 2^31 parameters (8 GiB of `f32`),
/// 35x ResNet-152.
pub const MAX_PARAMS: u64 = 1 << 31;

/// Configuration of a ResNet of any depth.
///
/// ```
/// use finetune::model::ResNetConfig;
/// let config = ResNetConfig::resnet50(10);
/// assert_eq!(config.num_features(), 2048);
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct ResNetConfig {
    /// Number of blocks in each of the four stages (`layer1..layer4`).
    pub layers: [usize; 4],
    /// Block family.
    pub block: BlockKind,
    /// Number of output classes of the `fc` head.
    pub num_classes: usize,
    /// Input stem.
    #[config(default = "Stem::ImageNet")]
    pub stem: Stem,
    /// Width (planes) of each stage; the stem has `widths[0]` channels. torchvision: 64/128/256/512.
    #[config(default = "[64, 128, 256, 512]")]
    pub widths: [usize; 4],
    /// Zero-initialise the last BatchNorm of every residual branch (torchvision's
    /// `zero_init_residual`), so each block starts as the identity.
    #[config(default = false)]
    pub zero_init_residual: bool,
    /// Number of input channels (3 for RGB).
    #[config(default = 3)]
    pub in_channels: usize,
}

impl ResNetConfig {
    /// ResNet-18: BasicBlock, [2, 2, 2, 2].
    pub fn resnet18(num_classes: usize) -> Self {
        Self::new([2, 2, 2, 2], BlockKind::Basic, num_classes)
    }
    /// ResNet-34: BasicBlock, [3, 4, 6, 3].
    pub fn resnet34(num_classes: usize) -> Self {
        Self::new([3, 4, 6, 3], BlockKind::Basic, num_classes)
    }
    /// ResNet-50: Bottleneck, [3, 4, 6, 3].
    pub fn resnet50(num_classes: usize) -> Self {
        Self::new([3, 4, 6, 3], BlockKind::Bottleneck, num_classes)
    }
    /// ResNet-101: Bottleneck, [3, 4, 23, 3].
    pub fn resnet101(num_classes: usize) -> Self {
        Self::new([3, 4, 23, 3], BlockKind::Bottleneck, num_classes)
    }
    /// ResNet-152: Bottleneck, [3, 8, 36, 3].
    pub fn resnet152(num_classes: usize) -> Self {
        Self::new([3, 8, 36, 3], BlockKind::Bottleneck, num_classes)
    }

    /// `finetune_mini`: ResNet-18's topology (BasicBlock, [2, 2, 2, 2]) at a quarter of its
    /// widths (16/32/64/128) with the CIFAR stem, 0.7 M parameters: the small backbone the
    /// crate ships pretrained ([`FINETUNE_MINI_WIDTHS`]; weights `finetune_mini.rotation`).
    pub fn finetune_mini(num_classes: usize) -> Self {
        Self::resnet18(num_classes)
            .with_widths(FINETUNE_MINI_WIDTHS)
            .with_stem(Stem::Cifar)
    }

    /// Builds a configuration from an architecture name (`resnet18`, `resnet34`, `resnet50`,
    /// `resnet101`, `resnet152`, `finetune_mini`).
    pub fn from_name(name: &str, num_classes: usize) -> Result<Self> {
        match name.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "resnet18" => Ok(Self::resnet18(num_classes)),
            "resnet34" => Ok(Self::resnet34(num_classes)),
            "resnet50" => Ok(Self::resnet50(num_classes)),
            "resnet101" => Ok(Self::resnet101(num_classes)),
            "resnet152" => Ok(Self::resnet152(num_classes)),
            "finetunemini" => Ok(Self::finetune_mini(num_classes)),
            other => Err(Error::InvalidConfig(format!(
                "unknown architecture '{other}': expected one of resnet18, resnet34, resnet50, resnet101, resnet152, finetune_mini"
            ))),
        }
    }

    /// The registered architecture name of this shape (`resnet18`, ..., `finetune_mini`), or
    /// `None` for a custom shape (other widths, stem or input channels).
    pub fn arch_name(&self) -> Option<&'static str> {
        if self.in_channels != 3 {
            return None;
        }
        let depth = match (self.layers, self.block) {
            ([2, 2, 2, 2], BlockKind::Basic) => "resnet18",
            ([3, 4, 6, 3], BlockKind::Basic) => "resnet34",
            ([3, 4, 6, 3], BlockKind::Bottleneck) => "resnet50",
            ([3, 4, 23, 3], BlockKind::Bottleneck) => "resnet101",
            ([3, 8, 36, 3], BlockKind::Bottleneck) => "resnet152",
            _ => return None,
        };
        match (self.widths, self.stem) {
            ([64, 128, 256, 512], Stem::ImageNet) => Some(depth),
            (FINETUNE_MINI_WIDTHS, Stem::Cifar) if depth == "resnet18" => Some("finetune_mini"),
            _ => None,
        }
    }

    /// Size of the pooled embedding that feeds `fc` (512 for ResNet-18/34, 2048 for ResNet-50+).
    pub fn num_features(&self) -> usize {
        self.widths[3] * self.block.expansion()
    }

    /// Number of trainable parameters, as torchvision counts them (`sum(p.numel() for p in
    /// model.parameters())`: convolution and BatchNorm weights and biases, `fc`), computed from
    /// the configuration alone without building the model. Saturates at `u64::MAX`.
    pub fn num_params(&self) -> u64 {
        self.count_values().0
    }

    /// `(parameters, BatchNorm running statistics)`, from the topology (torchvision's
    /// `_make_layer`: a projection shortcut on a stage's first block when the stride or the
    /// width changes).
    fn count_values(&self) -> (u64, u64) {
        let n = |v: usize| v as u64;
        let mul = |a: u64, b: u64| a.saturating_mul(b);
        let conv = |cin: u64, cout: u64, k: u64| mul(mul(cin, cout), k * k);
        let stem_kernel = match self.stem {
            Stem::ImageNet => 7,
            Stem::Cifar => 3,
        };
        // (convolution and linear values, BatchNorm channels) of one residual block.
        let block = |cin: u64, planes: u64, out: u64| match self.block {
            BlockKind::Basic => (
                conv(cin, planes, 3).saturating_add(conv(planes, planes, 3)),
                mul(planes, 2),
            ),
            BlockKind::Bottleneck => (
                conv(cin, planes, 1)
                    .saturating_add(conv(planes, planes, 3))
                    .saturating_add(conv(planes, out, 1)),
                mul(planes, 2).saturating_add(out),
            ),
        };
        let mut inplanes = n(self.widths[0]);
        let mut weights = conv(n(self.in_channels), inplanes, stem_kernel);
        let mut bn_channels = inplanes;
        for (stage, (&blocks, &width)) in self.layers.iter().zip(&self.widths).enumerate() {
            let planes = n(width);
            let out = mul(planes, n(self.block.expansion()));
            let (first, first_bn) = block(inplanes, planes, out);
            weights = weights.saturating_add(first);
            bn_channels = bn_channels.saturating_add(first_bn);
            if stage > 0 || inplanes != out {
                weights = weights.saturating_add(conv(inplanes, out, 1));
                bn_channels = bn_channels.saturating_add(out);
            }
            let (rest, rest_bn) = block(out, planes, out);
            let others = n(blocks.saturating_sub(1));
            weights = weights.saturating_add(mul(rest, others));
            bn_channels = bn_channels.saturating_add(mul(rest_bn, others));
            inplanes = out;
        }
        let classes = n(self.num_classes);
        let fc = mul(inplanes, classes).saturating_add(classes);
        // BatchNorm: weight and bias are parameters, running mean and variance are buffers.
        let bn = mul(bn_channels, 2);
        (weights.saturating_add(fc).saturating_add(bn), bn)
    }

    /// Number of values a saved model of this configuration holds: [`num_params`](Self::num_params)
    /// plus every BatchNorm's running mean and variance.
    pub(crate) fn num_stored_values(&self) -> u64 {
        let (params, buffers) = self.count_values();
        params.saturating_add(buffers)
    }

    /// Checks that every size is usable and that the model stays under [`MAX_PARAMS`]
    /// parameters (so a configuration read from a file can never ask for an absurd allocation).
    pub fn validate(&self) -> Result<()> {
        let params = self.num_params();
        if params > MAX_PARAMS {
            return Err(Error::InvalidConfig(format!(
                "the configuration describes {params} parameters (layers {:?}, widths {:?}, {} classes, {} input channels), more than the {MAX_PARAMS} this crate builds",
                self.layers, self.widths, self.num_classes, self.in_channels
            )));
        }
        crate::model::contract::check_num_classes(self.num_classes)?;
        if self.in_channels == 0 {
            return Err(Error::InvalidConfig(
                "in_channels must be at least 1".into(),
            ));
        }
        if let Some(i) = self.widths.iter().position(|&w| w == 0) {
            return Err(Error::InvalidConfig(format!(
                "stage width {} (layer{}) must be at least 1",
                self.widths[i],
                i + 1
            )));
        }
        if let Some(i) = self.layers.iter().position(|&n| n == 0) {
            return Err(Error::InvalidConfig(format!(
                "layer{} must have at least one block",
                i + 1
            )));
        }
        Ok(())
    }

    /// Builds the model on `device`, initialised as torchvision does: Kaiming-normal (fan-out,
    /// ReLU gain) convolutions, BatchNorm weight 1 and bias 0, PyTorch's default `Linear` init.
    ///
    /// Fails only when [`validate`](Self::validate) does.
    pub fn try_init(&self, device: &Device) -> Result<ResNet> {
        self.validate()?;
        Ok(ResNet::from_config(self, device))
    }

    /// Like [`try_init`](Self::try_init) for a configuration known to be valid (the builders
    /// above always are, for `num_classes >= 1`).
    ///
    /// # Panics
    /// When the configuration does not pass [`validate`](Self::validate).
    pub fn init(&self, device: &Device) -> ResNet {
        match self.try_init(device) {
            Ok(model) => model,
            Err(e) => panic!("{e}"),
        }
    }
}

impl ModelConfig for ResNetConfig {
    type Model = ResNet;

    fn family(&self) -> &'static str {
        "resnet"
    }

    fn from_saved(family: &str, config: serde_json::Value) -> std::result::Result<Self, String> {
        if family != "resnet" {
            return Err(format!(
                "it holds a '{family}' model, not a ResNet: load it with that family's type (or AnyModel)"
            ));
        }
        serde_json::from_value(config).map_err(|e| format!("unreadable model description: {e}"))
    }

    fn validate(&self) -> Result<()> {
        ResNetConfig::validate(self)
    }

    fn num_stored_values(&self) -> u64 {
        ResNetConfig::num_stored_values(self)
    }

    fn try_init(&self, device: &Device) -> Result<ResNet> {
        ResNetConfig::try_init(self, device)
    }

    fn as_any(&self) -> Option<crate::model::AnyConfig> {
        Some(self.clone().into())
    }

    fn describe(&self) -> String {
        format!(
            "{}: layers {:?}, widths {:?}, {} classes",
            self.arch_name().unwrap_or("resnet(custom)"),
            self.layers,
            self.widths,
            self.num_classes
        )
    }
}
