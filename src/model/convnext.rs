//! ConvNeXt (Liu et al., "A ConvNet for the 2020s", CVPR 2022) with torchvision's topology,
//! initialisation and parameter names (`torchvision.models.convnext`): a 4x4 patchify stem,
//! four stages of ConvNeXt blocks (7x7 depthwise convolution, LayerNorm, 4x MLP with GELU,
//! layer scale, stochastic depth) separated by LayerNorm + 2x2 stride-2 downsampling, and a
//! LayerNorm + Linear head.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Initializer, LayerNorm, Linear};
use burn::tensor::{Device, Tensor};

use super::contract::{Eval, VisionModel, check_num_classes};
use super::freeze::FreezeState;
use super::input::check_image_input;
use super::layers::{
    Activation, ConvInit, ConvSpec, StochasticDepth, layer_norm, layer_norm_2d, linear,
    trunc_normal,
};
use super::stage::{StageSpec, Stages};
use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::kernels::conv2d;
use crate::weights::keymap::{KeyMap, KeyPair};

/// LayerNorm epsilon everywhere in torchvision's ConvNeXt.
const EPS: f64 = 1e-6;
/// torchvision's init standard deviation for every convolution and Linear layer.
const INIT_STD: f64 = 0.02;

/// Configuration of a ConvNeXt (torchvision's `ConvNeXt(block_setting, ...)` with four
/// stages).
///
/// ```
/// use finetune::model::ConvNeXtConfig;
/// let config = ConvNeXtConfig::convnext_tiny(10);
/// assert_eq!((config.depths, config.dims[3]), ([3, 3, 9, 3], 768));
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct ConvNeXtConfig {
    /// Number of blocks in each stage.
    pub depths: [usize; 4],
    /// Channels of each stage.
    pub dims: [usize; 4],
    /// Classes of the head.
    pub num_classes: usize,
    /// Stochastic depth rate of the last block (linearly increasing from 0 over the blocks).
    #[config(default = 0.1)]
    pub stochastic_depth_prob: f64,
    /// Initial value of every layer-scale entry.
    #[config(default = 1e-6)]
    pub layer_scale: f64,
    /// Input channels (3 for RGB).
    #[config(default = 3)]
    pub in_channels: usize,
}

/// The registered ConvNeXt variants: `(name, depths, dims, stochastic depth)`, torchvision's.
const VARIANTS: [(&str, [usize; 4], [usize; 4], f64); 4] = [
    ("convnext_tiny", [3, 3, 9, 3], [96, 192, 384, 768], 0.1),
    ("convnext_small", [3, 3, 27, 3], [96, 192, 384, 768], 0.4),
    ("convnext_base", [3, 3, 27, 3], [128, 256, 512, 1024], 0.5),
    ("convnext_large", [3, 3, 27, 3], [192, 384, 768, 1536], 0.5),
];

impl ConvNeXtConfig {
    /// The registered architecture names.
    pub const NAMES: [&'static str; 4] =
        [VARIANTS[0].0, VARIANTS[1].0, VARIANTS[2].0, VARIANTS[3].0];

    /// ConvNeXt-T: depths 3/3/9/3, dims 96..768, stochastic depth 0.1 (28.6M parameters).
    pub fn convnext_tiny(num_classes: usize) -> Self {
        Self::variant(0, num_classes)
    }
    /// ConvNeXt-S: depths 3/3/27/3, dims 96..768, stochastic depth 0.4.
    pub fn convnext_small(num_classes: usize) -> Self {
        Self::variant(1, num_classes)
    }
    /// ConvNeXt-B: depths 3/3/27/3, dims 128..1024, stochastic depth 0.5.
    pub fn convnext_base(num_classes: usize) -> Self {
        Self::variant(2, num_classes)
    }
    /// ConvNeXt-L: depths 3/3/27/3, dims 192..1536, stochastic depth 0.5.
    pub fn convnext_large(num_classes: usize) -> Self {
        Self::variant(3, num_classes)
    }

    fn variant(i: usize, num_classes: usize) -> Self {
        let (_, depths, dims, sd) = VARIANTS[i];
        Self::new(depths, dims, num_classes).with_stochastic_depth_prob(sd)
    }

    /// The configuration of a registered name (`convnext_tiny`), if it is one.
    pub fn from_name(name: &str, num_classes: usize) -> Option<Self> {
        let i = VARIANTS.iter().position(|v| v.0 == name)?;
        Some(Self::variant(i, num_classes))
    }

    /// The registered name of this shape, if it is one.
    pub fn arch_name(&self) -> Option<&'static str> {
        VARIANTS
            .iter()
            .find(|(_, depths, dims, _)| *depths == self.depths && *dims == self.dims)
            .map(|v| v.0)
    }

    /// Size of the pre-logits embedding: the last stage's channels.
    pub fn num_features(&self) -> usize {
        self.dims[3]
    }

    /// `(parameters, buffers)` from the topology alone ([`validate`](Self::validate) bounds every
    /// size first, so nothing overflows).
    fn count_values(&self) -> (u64, u64) {
        let n = |v: usize| v.min(1 << 24) as u64;
        let [d0, ..] = self.dims.map(n);
        let mut params = n(self.in_channels) * d0 * 16 + d0 + 2 * d0; // stem conv + LN
        for (i, (&depth, &dim)) in self.depths.iter().zip(&self.dims).enumerate() {
            let c = n(dim);
            if i > 0 {
                let prev = n(self.dims[i - 1]);
                params += 2 * prev + prev * c * 4 + c; // LN + 2x2 conv
            }
            // dwconv 7x7 + bias, LN, Linear c->4c, Linear 4c->c, layer scale
            let block = c * 49 + c + 2 * c + (c * 4 * c + 4 * c) + (4 * c * c + c) + c;
            params = params.saturating_add(block.saturating_mul(n(depth)));
        }
        let f = n(self.num_features());
        params += 2 * f + f * n(self.num_classes) + n(self.num_classes);
        (params, 0)
    }

    /// Checks every size before anything is allocated.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the value out of range.
    pub fn validate(&self) -> Result<()> {
        check_num_classes(self.num_classes)?;
        if !(1..=1 << 14).contains(&self.in_channels)
            || self.num_classes > 1 << 24
            || self.dims.iter().any(|d| !(1..=1 << 16).contains(d))
            || self.depths.iter().any(|d| !(1..=1 << 12).contains(d))
        {
            return Err(Error::InvalidConfig(format!(
                "ConvNeXt needs 1 to 16384 input channels, at most 2^24 classes, 1 to 4096 blocks and 1 to 65536 channels per stage (in_channels {}, num_classes {}, depths {:?}, dims {:?})",
                self.in_channels, self.num_classes, self.depths, self.dims
            )));
        }
        if !(0.0..1.0).contains(&self.stochastic_depth_prob) {
            return Err(Error::InvalidConfig(format!(
                "stochastic_depth_prob must be in [0, 1), not {}",
                self.stochastic_depth_prob
            )));
        }
        let params = self.count_values().0;
        if params > super::MAX_PARAMS {
            return Err(Error::InvalidConfig(format!(
                "the configuration describes {params} parameters (depths {:?}, dims {:?}), more than the {} this crate builds",
                self.depths,
                self.dims,
                super::MAX_PARAMS
            )));
        }
        Ok(())
    }

    /// Builds the model, initialised as torchvision does (`trunc_normal_(std=0.02)` for every
    /// convolution and Linear weight, zero biases, LayerNorm 1/0, layer scale filled with
    /// [`layer_scale`](Self::layer_scale)).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when [`validate`](Self::validate) fails.
    pub fn try_init(&self, device: &Device) -> Result<ConvNeXt> {
        self.validate()?;
        Ok(ConvNeXt::from_config(self, device))
    }
}

/// One ConvNeXt block (torchvision's `CNBlock`): `x + drop_path(gamma * MLP(LN(dwconv(x))))`.
#[derive(Module, Debug)]
pub struct CNBlock {
    /// 7x7 depthwise convolution with bias (`block.0`).
    pub dwconv: Conv2d,
    /// LayerNorm over channels (`block.2`).
    pub norm: LayerNorm,
    /// Linear `C -> 4C` (`block.3`).
    pub pwconv1: Linear,
    /// Linear `4C -> C` (`block.5`).
    pub pwconv2: Linear,
    /// Per-channel scale `[C, 1, 1]` (`layer_scale`).
    pub layer_scale: Param<Tensor<3>>,
    /// Stochastic depth on the residual branch.
    pub stochastic_depth: StochasticDepth,
}

impl CNBlock {
    fn new(dim: usize, layer_scale: f64, sd_prob: f64, device: &Device) -> Self {
        let lin = |i, o| linear(i, o, trunc_normal(INIT_STD), Initializer::Zeros, device);
        CNBlock {
            dwconv: ConvSpec::new(dim, dim, 7)
                .depthwise()
                .bias()
                .init(ConvInit::TruncNormal(INIT_STD), device),
            norm: layer_norm(dim, EPS, device),
            pwconv1: lin(dim, 4 * dim),
            pwconv2: lin(4 * dim, dim),
            layer_scale: Initializer::Constant { value: layer_scale }.init([dim, 1, 1], device),
            stochastic_depth: StochasticDepth::new(sd_prob),
        }
    }

    /// `[B, C, H, W]` -> `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = conv2d(&self.dwconv, x.clone()).permute([0, 2, 3, 1]);
        let y = self.norm.forward(y);
        let y = self
            .pwconv2
            .forward(Activation::GELU.forward(self.pwconv1.forward(y)));
        let y = y.permute([0, 3, 1, 2]) * self.layer_scale.val().unsqueeze::<4>();
        x + self.stochastic_depth.forward(y)
    }
}

/// The LayerNorm + 2x2 stride-2 convolution between two stages.
#[derive(Module, Debug)]
pub struct ConvNeXtDownsample {
    /// LayerNorm over channels (`features.2k.0`).
    pub norm: LayerNorm,
    /// 2x2 stride-2 convolution with bias (`features.2k.1`).
    pub conv: Conv2d,
}

/// One stage: its downsampling (none in the first) and its blocks.
#[derive(Module, Debug)]
pub struct ConvNeXtStage {
    /// Downsampling from the previous stage (stages 2-4).
    pub downsample: Option<ConvNeXtDownsample>,
    /// The blocks.
    pub blocks: Vec<CNBlock>,
}

/// A ConvNeXt; build it with [`ConvNeXtConfig`].
///
/// ```
/// use burn::tensor::{Device, Distribution, Tensor};
/// use finetune::model::{ConvNeXtConfig, VisionModel};
///
/// let device = Device::flex();
/// let model = ConvNeXtConfig::new([1, 1, 1, 1], [8, 16, 24, 32], 10).try_init(&device)?;
/// let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
/// assert_eq!(model.forward_features(images.clone()).dims(), [2, 32, 1, 1]);
/// assert_eq!(model.forward(images).dims(), [2, 10]);
/// # Ok::<(), finetune::Error>(())
/// ```
#[derive(Module, Debug)]
pub struct ConvNeXt {
    /// 4x4 stride-4 patchify convolution with bias (`features.0.0`).
    pub stem_conv: Conv2d,
    /// LayerNorm after the stem (`features.0.1`).
    pub stem_norm: LayerNorm,
    /// The four stages (`features.1` to `features.7`).
    pub stages: Vec<ConvNeXtStage>,
    /// Global average pool.
    pub pool: AdaptiveAvgPool2d,
    /// LayerNorm on the pooled features (`classifier.0`).
    pub head_norm: LayerNorm,
    /// The classifier (`classifier.2`).
    pub head: Linear,
    #[module(skip)]
    pub(crate) config: ConvNeXtConfig,
    #[module(skip)]
    pub(crate) freeze: FreezeState,
}

impl ConvNeXt {
    fn from_config(config: &ConvNeXtConfig, device: &Device) -> Self {
        let dims = config.dims;
        let total: usize = config.depths.iter().sum();
        let mut block_id = 0usize;
        let mut stages = Vec::with_capacity(4);
        for (i, (&depth, &dim)) in config.depths.iter().zip(&dims).enumerate() {
            let downsample = (i > 0).then(|| ConvNeXtDownsample {
                norm: layer_norm(dims[i - 1], EPS, device),
                conv: ConvSpec::new(dims[i - 1], dim, 2)
                    .stride(2)
                    .bias()
                    .init_padded(0, ConvInit::TruncNormal(INIT_STD), device),
            });
            let blocks = (0..depth)
                .map(|_| {
                    // torchvision: p * block_id / (total_blocks - 1).
                    let sd = config.stochastic_depth_prob * block_id as f64
                        / (total.saturating_sub(1)).max(1) as f64;
                    block_id += 1;
                    CNBlock::new(dim, config.layer_scale, sd, device)
                })
                .collect();
            stages.push(ConvNeXtStage { downsample, blocks });
        }
        ConvNeXt {
            stem_conv: ConvSpec::new(config.in_channels, dims[0], 4)
                .stride(4)
                .bias()
                .init_padded(0, ConvInit::TruncNormal(INIT_STD), device),
            stem_norm: layer_norm(dims[0], EPS, device),
            stages,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head_norm: layer_norm(dims[3], EPS, device),
            head: Self::new_head(dims[3], config.num_classes, device),
            config: config.clone(),
            freeze: FreezeState::default(),
        }
    }

    fn new_head(features: usize, classes: usize, device: &Device) -> Linear {
        linear(
            features,
            classes,
            trunc_normal(INIT_STD),
            Initializer::Zeros,
            device,
        )
    }

    /// Pooled, normalised features `[B, C]` from maps `[B, C, h, w]`.
    fn pool_norm(&self, maps: Tensor<4>) -> Tensor<2> {
        layer_norm_2d(&self.head_norm, self.pool.forward(maps)).flatten(1, 3)
    }
}

super::contract::inherent_freezing!(ConvNeXt);

impl VisionModel for ConvNeXt {
    type Config = ConvNeXtConfig;
    /// Feature maps `[B, C, H/32, W/32]`.
    type Features = Tensor<4>;
    type Inference = Eval<ConvNeXt>;

    super::contract::family_contract!(ConvNeXtConfig);

    fn arch(&self) -> String {
        self.config
            .arch_name()
            .unwrap_or("convnext(custom)")
            .to_string()
    }

    /// `stem`, `stage1` .. `stage4` (each with its downsampling; the last with the head's
    /// LayerNorm), `classifier`.
    fn stages(&self) -> Stages {
        Stages::new(vec![
            StageSpec::new("stem", &["stem_conv", "stem_norm"]),
            StageSpec::new("stage1", &["stages.0"]),
            StageSpec::new("stage2", &["stages.1"]),
            StageSpec::new("stage3", &["stages.2"]),
            StageSpec::new("stage4", &["stages.3", "head_norm"]),
            StageSpec::new("classifier", &["head"]),
        ])
    }

    fn normalization(&self) -> Normalize {
        Normalize::imagenet()
    }

    fn forward_features(&self, images: Tensor<4>) -> Tensor<4> {
        let mut x = conv2d(&self.stem_conv, images);
        x = layer_norm_2d(&self.stem_norm, x);
        for stage in &self.stages {
            if let Some(down) = &stage.downsample {
                x = conv2d(&down.conv, layer_norm_2d(&down.norm, x));
            }
            for block in &stage.blocks {
                x = block.forward(x);
            }
        }
        x
    }

    /// Average pool, LayerNorm, flatten (the pre-logits), then the Linear classifier.
    fn forward_head(&self, features: Tensor<4>, pre_logits: bool) -> Tensor<2> {
        let x = self.pool_norm(features);
        if pre_logits { x } else { self.head.forward(x) }
    }

    fn forward_classifier(&self, pre_logits: Tensor<2>) -> Tensor<2> {
        self.head.forward(pre_logits)
    }

    /// RGB (or `in_channels`) images of at least 32x32: the stem divides by 4 and each
    /// downsampling by 2.
    fn check_input(&self, dims: [usize; 4]) -> Result<()> {
        check_image_input(dims, self.config.in_channels, "features.0.0", 32, None)
    }

    /// ConvNeXt normalises with LayerNorm only: every batch works.
    fn check_training_batch(&self, _dims: [usize; 4]) -> Result<()> {
        Ok(())
    }

    fn key_map(&self) -> KeyMap {
        let mut pairs = vec![
            KeyPair::new("stem_conv", "features.0.0"),
            KeyPair::new("stem_norm", "features.0.1"),
        ];
        for (i, stage) in self.stages.iter().enumerate() {
            let ours = format!("stages.{i}");
            if stage.downsample.is_some() {
                pairs.push(KeyPair::new(
                    format!("{ours}.downsample.norm"),
                    format!("features.{}.0", 2 * i),
                ));
                pairs.push(KeyPair::new(
                    format!("{ours}.downsample.conv"),
                    format!("features.{}.1", 2 * i),
                ));
            }
            for j in 0..stage.blocks.len() {
                let (o, r) = (
                    format!("{ours}.blocks.{j}"),
                    format!("features.{}.{j}", 2 * i + 1),
                );
                pairs.push(KeyPair::new(format!("{o}.dwconv"), format!("{r}.block.0")));
                pairs.push(KeyPair::new(format!("{o}.norm"), format!("{r}.block.2")));
                pairs.push(KeyPair::linear(
                    format!("{o}.pwconv1"),
                    format!("{r}.block.3"),
                ));
                pairs.push(KeyPair::linear(
                    format!("{o}.pwconv2"),
                    format!("{r}.block.5"),
                ));
                pairs.push(KeyPair::new(
                    format!("{o}.layer_scale"),
                    format!("{r}.layer_scale"),
                ));
            }
        }
        pairs.push(KeyPair::new("head_norm", "classifier.0"));
        pairs.push(KeyPair::linear("head", "classifier.2"));
        KeyMap::Modules(pairs)
    }

    /// The model itself without autodiff (ConvNeXt has no BatchNorm to fold).
    fn for_inference(&self) -> Eval<ConvNeXt> {
        Eval(self.valid())
    }
}

super::contract::family_config!(ConvNeXtConfig, ConvNeXt, "convnext", "a ConvNeXt", ConvNeXt);

impl ConvNeXtConfig {
    /// The architecture and its shape, for messages.
    fn describe_shape(&self) -> String {
        format!(
            "{}: depths {:?}, dims {:?}, {} classes",
            self.arch_name().unwrap_or("convnext(custom)"),
            self.depths,
            self.dims,
            self.num_classes
        )
    }
}
