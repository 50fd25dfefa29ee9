//! EfficientNet (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
//! Networks", ICML 2019) and EfficientNetV2 (Tan & Le, ICML 2021) with torchvision's topology,
//! initialisation and parameter names (`torchvision.models.efficientnet`): a 3x3 stride-2
//! stem, stages of MBConv / FusedMBConv blocks ([`InvertedResidual`]) with squeeze-and-excitation
//! and stochastic depth, a 1x1 head convolution, and a dropout + Linear classifier.

use burn::config::Config;
use burn::module::Module;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::block::{BatchNormInput, check_batch_norm_inputs};
use super::contract::{Eval, VisionModel, check_num_classes};
use super::freeze::FreezeState;
use super::input::check_image_input;
use super::layers::{
    Activation, ConvNormAct, ConvSpec, SqueezeExcitation, StochasticDepth, linear, make_divisible,
};
use super::mbconv::InvertedResidual;
use super::stage::{StageSpec, Stages};
use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::weights::keymap::{KeyMap, KeyPair};

/// The block of an EfficientNet stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MBConvKind {
    /// 1x1 expansion, depthwise kxk, squeeze-and-excitation, 1x1 projection (EfficientNet).
    MBConv,
    /// kxk expansion, 1x1 projection, no SE (EfficientNetV2's early stages).
    FusedMBConv,
}

/// One stage of an EfficientNet (torchvision's `MBConvConfig` / `FusedMBConvConfig`, with
/// the width and depth multipliers already applied).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MBConvSetting {
    /// The block kind.
    pub block: MBConvKind,
    /// Expanded channels are `make_divisible(input_channels * expand_ratio, 8)`.
    pub expand_ratio: f64,
    /// Kernel of the depthwise (MBConv) or expansion (FusedMBConv) convolution.
    pub kernel: usize,
    /// Stride of the stage's first block.
    pub stride: usize,
    /// Input channels of the stage's first block.
    pub input_channels: usize,
    /// Output channels of every block.
    pub out_channels: usize,
    /// Number of blocks.
    pub num_layers: usize,
}

/// Configuration of an EfficientNet (torchvision's `EfficientNet(inverted_residual_setting,
/// dropout, stochastic_depth_prob, num_classes, norm_layer, last_channel)`).
///
/// ```
/// use finetune::model::EfficientNetConfig;
/// let b0 = EfficientNetConfig::from_name("efficientnet_b0", 10).unwrap();
/// assert_eq!(b0.num_features(), 1280);
/// assert_eq!(b0.setting.len(), 7);
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct EfficientNetConfig {
    /// The stages, in order.
    pub setting: Vec<MBConvSetting>,
    /// Classes of the head.
    pub num_classes: usize,
    /// Dropout before the classifier.
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Stochastic depth rate, reached at the last block (`p * block_id / total_blocks`).
    #[config(default = 0.2)]
    pub stochastic_depth_prob: f64,
    /// Channels of the head convolution (`None`: 4x the last stage's, EfficientNet V1).
    #[config(default = "None")]
    pub last_channel: Option<usize>,
    /// BatchNorm epsilon (1e-5; 1e-3 for B5-B7 and V2).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// BatchNorm momentum, PyTorch's convention (0.1; 0.01 for B5-B7).
    #[config(default = 0.1)]
    pub norm_momentum: f64,
    /// Input channels (3 for RGB).
    #[config(default = 3)]
    pub in_channels: usize,
}

/// `(name, width multiplier, depth multiplier, dropout)` of EfficientNet B0-B7.
const V1: [(&str, f64, f64, f64); 8] = [
    ("efficientnet_b0", 1.0, 1.0, 0.2),
    ("efficientnet_b1", 1.0, 1.1, 0.2),
    ("efficientnet_b2", 1.1, 1.2, 0.3),
    ("efficientnet_b3", 1.2, 1.4, 0.3),
    ("efficientnet_b4", 1.4, 1.8, 0.4),
    ("efficientnet_b5", 1.6, 2.2, 0.4),
    ("efficientnet_b6", 1.8, 2.6, 0.5),
    ("efficientnet_b7", 2.0, 3.1, 0.5),
];

/// EfficientNet-B0's stages before scaling: `(expand, kernel, stride, in, out, layers)`.
const V1_BASE: [(f64, usize, usize, usize, usize, usize); 7] = [
    (1.0, 3, 1, 32, 16, 1),
    (6.0, 3, 2, 16, 24, 2),
    (6.0, 5, 2, 24, 40, 2),
    (6.0, 3, 2, 40, 80, 3),
    (6.0, 5, 1, 80, 112, 3),
    (6.0, 5, 2, 112, 192, 4),
    (6.0, 3, 1, 192, 320, 1),
];

type V2Stage = (MBConvKind, f64, usize, usize, usize, usize, usize);
const F: MBConvKind = MBConvKind::FusedMBConv;
const M: MBConvKind = MBConvKind::MBConv;

/// EfficientNetV2 S/M/L: `(name, dropout, stages)`.
const V2: [(&str, f64, &[V2Stage]); 3] = [
    (
        "efficientnet_v2_s",
        0.2,
        &[
            (F, 1.0, 3, 1, 24, 24, 2),
            (F, 4.0, 3, 2, 24, 48, 4),
            (F, 4.0, 3, 2, 48, 64, 4),
            (M, 4.0, 3, 2, 64, 128, 6),
            (M, 6.0, 3, 1, 128, 160, 9),
            (M, 6.0, 3, 2, 160, 256, 15),
        ],
    ),
    (
        "efficientnet_v2_m",
        0.3,
        &[
            (F, 1.0, 3, 1, 24, 24, 3),
            (F, 4.0, 3, 2, 24, 48, 5),
            (F, 4.0, 3, 2, 48, 80, 5),
            (M, 4.0, 3, 2, 80, 160, 7),
            (M, 6.0, 3, 1, 160, 176, 14),
            (M, 6.0, 3, 2, 176, 304, 18),
            (M, 6.0, 3, 1, 304, 512, 5),
        ],
    ),
    (
        "efficientnet_v2_l",
        0.4,
        &[
            (F, 1.0, 3, 1, 32, 32, 4),
            (F, 4.0, 3, 2, 32, 64, 7),
            (F, 4.0, 3, 2, 64, 96, 7),
            (M, 4.0, 3, 2, 96, 192, 10),
            (M, 6.0, 3, 1, 192, 224, 19),
            (M, 6.0, 3, 2, 224, 384, 25),
            (M, 6.0, 3, 1, 384, 640, 7),
        ],
    ),
];

impl EfficientNetConfig {
    /// The registered architecture names.
    pub const NAMES: [&'static str; 11] = [
        V1[0].0, V1[1].0, V1[2].0, V1[3].0, V1[4].0, V1[5].0, V1[6].0, V1[7].0, V2[0].0, V2[1].0,
        V2[2].0,
    ];

    /// The configuration of a registered name (`efficientnet_b0` .. `_b7`,
    /// `efficientnet_v2_s` / `_m` / `_l`), built as torchvision's `_efficientnet_conf` does.
    pub fn from_name(name: &str, num_classes: usize) -> Option<Self> {
        if let Some(i) = V1.iter().position(|v| v.0 == name) {
            let (_, width, depth, dropout) = V1[i];
            let ch = |c: usize| make_divisible(c as f64 * width, 8);
            let setting = V1_BASE
                .iter()
                .map(|&(e, k, s, i, o, n)| MBConvSetting {
                    block: MBConvKind::MBConv,
                    expand_ratio: e,
                    kernel: k,
                    stride: s,
                    input_channels: ch(i),
                    out_channels: ch(o),
                    num_layers: (n as f64 * depth).ceil() as usize,
                })
                .collect();
            // B5-B7 use TensorFlow's BatchNorm constants (their weights were ported).
            let (eps, momentum) = if i >= 5 { (1e-3, 0.01) } else { (1e-5, 0.1) };
            return Some(
                Self::new(setting, num_classes)
                    .with_dropout(dropout)
                    .with_norm_eps(eps)
                    .with_norm_momentum(momentum),
            );
        }
        let (_, dropout, stages) = V2.iter().find(|v| v.0 == name)?;
        let setting = stages
            .iter()
            .map(|&(block, e, k, s, i, o, n)| MBConvSetting {
                block,
                expand_ratio: e,
                kernel: k,
                stride: s,
                input_channels: i,
                out_channels: o,
                num_layers: n,
            })
            .collect();
        Some(
            Self::new(setting, num_classes)
                .with_dropout(*dropout)
                .with_last_channel(Some(1280))
                .with_norm_eps(1e-3),
        )
    }

    /// The registered name of this shape, if it is one.
    pub fn arch_name(&self) -> Option<&'static str> {
        Self::NAMES.into_iter().find(|name| {
            Self::from_name(name, self.num_classes)
                .is_some_and(|c| c.setting == self.setting && c.last_channel == self.last_channel)
        })
    }

    /// Channels of the head convolution: the pre-logits embedding size.
    pub fn num_features(&self) -> usize {
        let last = self.setting.last().map_or(0, |s| s.out_channels);
        self.last_channel.unwrap_or(4 * last)
    }

    /// `(parameters, BatchNorm running statistics)` from the topology alone.
    fn count_values(&self) -> (u64, u64) {
        let mut params = 0u64;
        let mut bn = 0u64;
        let mut conv_bn = |cin: usize, cout: usize, k: usize, groups: usize| {
            let (cin, cout, k, g) = (cin as u64, cout as u64, k as u64, groups.max(1) as u64);
            params = params.saturating_add((cin / g).saturating_mul(cout).saturating_mul(k * k));
            params = params.saturating_add(2 * cout);
            bn = bn.saturating_add(2 * cout);
        };
        let first = self.setting.first().map_or(0, |s| s.input_channels);
        conv_bn(self.in_channels, first, 3, 1);
        let mut se = 0u64;
        for stage in &self.setting {
            for b in 0..stage.num_layers {
                let cin = if b == 0 {
                    stage.input_channels
                } else {
                    stage.out_channels
                };
                let expanded = make_divisible(cin as f64 * stage.expand_ratio, 8);
                match stage.block {
                    MBConvKind::MBConv => {
                        if expanded != cin {
                            conv_bn(cin, expanded, 1, 1);
                        }
                        conv_bn(expanded, expanded, stage.kernel, expanded);
                        let sq = (cin / 4).max(1) as u64;
                        let e = expanded as u64;
                        se = se.saturating_add(2 * e * sq + sq + e);
                        conv_bn(expanded, stage.out_channels, 1, 1);
                    }
                    MBConvKind::FusedMBConv => {
                        if expanded != cin {
                            conv_bn(cin, expanded, stage.kernel, 1);
                            conv_bn(expanded, stage.out_channels, 1, 1);
                        } else {
                            conv_bn(cin, stage.out_channels, stage.kernel, 1);
                        }
                    }
                }
            }
        }
        let last = self.setting.last().map_or(0, |s| s.out_channels);
        conv_bn(last, self.num_features(), 1, 1);
        let (f, c) = (self.num_features() as u64, self.num_classes as u64);
        let head = f.saturating_mul(c).saturating_add(c);
        (params.saturating_add(se).saturating_add(head), bn)
    }

    /// Checks every size before anything is allocated.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the value out of range.
    pub fn validate(&self) -> Result<()> {
        check_num_classes(self.num_classes)?;
        let bad = |what: String| Err(Error::InvalidConfig(what));
        if self.setting.is_empty()
            || !(1..=1 << 14).contains(&self.in_channels)
            || self.num_classes > 1 << 24
            || self.setting.len() > 16
            || self
                .last_channel
                .is_some_and(|c| !(1..=1 << 16).contains(&c))
        {
            return bad(format!(
                "an EfficientNet needs 1 to 16 stages, 1 to 16384 input channels, at most 2^24 classes and a head of 1 to 65536 channels (stages {}, in_channels {}, num_classes {}, last_channel {:?})",
                self.setting.len(),
                self.in_channels,
                self.num_classes,
                self.last_channel
            ));
        }
        let eps_ok = self.norm_eps.is_finite() && self.norm_eps > 0.0;
        if !eps_ok || !(0.0..=1.0).contains(&self.norm_momentum) {
            return bad(format!(
                "BatchNorm needs a finite epsilon above 0 and a momentum in [0, 1] (norm_eps {}, norm_momentum {})",
                self.norm_eps, self.norm_momentum
            ));
        }
        for (i, s) in self.setting.iter().enumerate() {
            let sane = |v: usize| (1..=1 << 14).contains(&v);
            if !(sane(s.input_channels)
                && sane(s.out_channels)
                && sane(s.num_layers)
                && (1..=15).contains(&s.kernel)
                && s.kernel % 2 == 1
                && (1..=8).contains(&s.stride)
                && s.expand_ratio.is_finite()
                && (1.0..=64.0).contains(&s.expand_ratio))
            {
                return bad(format!(
                    "stage {} of the EfficientNet is out of range (channels and layers 1 to 16384, an odd kernel up to 15, stride 1 to 8, expansion 1 to 64): {s:?}",
                    i + 1
                ));
            }
        }
        for p in [self.dropout, self.stochastic_depth_prob] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!(
                    "dropout and stochastic depth must be in [0, 1), not {p}"
                ));
            }
        }
        let params = self.count_values().0;
        if params > super::MAX_PARAMS || self.num_features() > 1 << 16 {
            return bad(format!(
                "the configuration describes {params} parameters, more than the {} this crate builds",
                super::MAX_PARAMS
            ));
        }
        Ok(())
    }

    /// Builds the model, initialised as torchvision does (convolutions
    /// `kaiming_normal_(mode="fan_out")`, BatchNorm 1/0, the classifier uniform on
    /// `±1/sqrt(num_classes)`, zero biases).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when [`validate`](Self::validate) fails.
    pub fn try_init(&self, device: &Device) -> Result<EfficientNet> {
        self.validate()?;
        Ok(EfficientNet::from_config(self, device))
    }
}

/// An EfficientNet (V1 or V2); build it with [`EfficientNetConfig`].
#[derive(Module, Debug)]
pub struct EfficientNet {
    /// 3x3 stride-2 convolution, BatchNorm, SiLU (`features.0`).
    pub stem: ConvNormAct,
    /// The stages (`features.1` ..).
    pub stages: Vec<Vec<InvertedResidual>>,
    /// 1x1 convolution, BatchNorm, SiLU (`features.N`, the last).
    pub head_conv: ConvNormAct,
    /// Global average pool.
    pub pool: AdaptiveAvgPool2d,
    /// Dropout before the classifier (`classifier.0`).
    pub dropout: Dropout,
    /// The classifier (`classifier.1`).
    pub head: Linear,
    #[module(skip)]
    pub(crate) config: EfficientNetConfig,
    #[module(skip)]
    pub(crate) freeze: FreezeState,
}

impl EfficientNet {
    fn from_config(config: &EfficientNetConfig, device: &Device) -> Self {
        let norm = (config.norm_eps, config.norm_momentum);
        let silu = Activation::SiLU;
        let first = config.setting[0].input_channels;
        let stem = ConvNormAct::new(
            ConvSpec::new(config.in_channels, first, 3).stride(2),
            norm,
            silu,
            device,
        );
        let total: usize = config.setting.iter().map(|s| s.num_layers).sum();
        let mut block_id = 0usize;
        let mut stages = Vec::with_capacity(config.setting.len());
        for s in &config.setting {
            let mut stage = Vec::with_capacity(s.num_layers);
            for b in 0..s.num_layers {
                let (cin, stride) = if b == 0 {
                    (s.input_channels, s.stride)
                } else {
                    (s.out_channels, 1)
                };
                let sd = config.stochastic_depth_prob * block_id as f64 / total.max(1) as f64;
                block_id += 1;
                let expanded = make_divisible(cin as f64 * s.expand_ratio, 8);
                let cna = |spec: ConvSpec, act| ConvNormAct::new(spec, norm, act, device);
                let block = match s.block {
                    MBConvKind::MBConv => InvertedResidual {
                        expand: (expanded != cin)
                            .then(|| cna(ConvSpec::new(cin, expanded, 1), silu)),
                        depthwise: Some(cna(
                            ConvSpec::new(expanded, expanded, s.kernel)
                                .stride(stride)
                                .depthwise(),
                            silu,
                        )),
                        se: Some(SqueezeExcitation::new(
                            expanded,
                            (cin / 4).max(1),
                            silu,
                            Activation::Sigmoid,
                            device,
                        )),
                        project: cna(
                            ConvSpec::new(expanded, s.out_channels, 1),
                            Activation::Identity,
                        ),
                        stochastic_depth: StochasticDepth::new(sd),
                        residual: stride == 1 && cin == s.out_channels,
                    },
                    MBConvKind::FusedMBConv => {
                        let (expand, project) = if expanded != cin {
                            (
                                Some(cna(
                                    ConvSpec::new(cin, expanded, s.kernel).stride(stride),
                                    silu,
                                )),
                                cna(
                                    ConvSpec::new(expanded, s.out_channels, 1),
                                    Activation::Identity,
                                ),
                            )
                        } else {
                            (
                                None,
                                cna(
                                    ConvSpec::new(cin, s.out_channels, s.kernel).stride(stride),
                                    silu,
                                ),
                            )
                        };
                        InvertedResidual {
                            expand,
                            depthwise: None,
                            se: None,
                            project,
                            stochastic_depth: StochasticDepth::new(sd),
                            residual: stride == 1 && cin == s.out_channels,
                        }
                    }
                };
                stage.push(block);
            }
            stages.push(stage);
        }
        let last = config.setting.last().map_or(first, |s| s.out_channels);
        EfficientNet {
            stem,
            stages,
            head_conv: ConvNormAct::new(
                ConvSpec::new(last, config.num_features(), 1),
                norm,
                silu,
                device,
            ),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(config.dropout).init(),
            head: Self::new_head(config.num_features(), config.num_classes, device),
            config: config.clone(),
            freeze: FreezeState::default(),
        }
    }

    fn new_head(features: usize, classes: usize, device: &Device) -> Linear {
        let range = 1.0 / (classes.max(1) as f64).sqrt();
        linear(
            features,
            classes,
            Initializer::Uniform {
                min: -range,
                max: range,
            },
            Initializer::Zeros,
            device,
        )
    }

    /// Every BatchNorm's input for images `[B, C, H, W]`, in forward order, named as
    /// torchvision names the layer.
    pub fn batch_norm_inputs(&self, images: [usize; 4]) -> Vec<BatchNormInput> {
        let blocks = self.stages.iter().enumerate().flat_map(|(i, stage)| {
            stage
                .iter()
                .enumerate()
                .map(move |(j, block)| (format!("features.{}.{j}", i + 1), block))
        });
        super::mbconv::batch_norm_inputs(
            &self.stem,
            blocks,
            &self.head_conv,
            self.stages.len() + 1,
            images,
        )
    }
}

super::contract::inherent_freezing!(EfficientNet);

impl VisionModel for EfficientNet {
    type Config = EfficientNetConfig;
    /// Feature maps `[B, num_features, H/32, W/32]` (after the head convolution).
    type Features = Tensor<4>;
    type Inference = Eval<EfficientNet>;

    super::contract::family_contract!(EfficientNetConfig);

    fn arch(&self) -> String {
        self.config
            .arch_name()
            .unwrap_or("efficientnet(custom)")
            .to_string()
    }

    /// `stem`, `stage1` .. `stageN` (torchvision's `features.1` ..), `conv_head`,
    /// `classifier`.
    fn stages(&self) -> Stages {
        let mut specs = vec![StageSpec::new("stem", &["stem"])];
        for (i, _) in self.stages.iter().enumerate() {
            let name = super::stage::STAGE_NAMES
                .get(i)
                .copied()
                .unwrap_or("stage16+");
            specs.push(StageSpec {
                name,
                modules: vec![format!("stages.{i}")],
            });
        }
        specs.push(StageSpec::new("conv_head", &["head_conv"]));
        specs.push(StageSpec::new("classifier", &["dropout", "head"]));
        Stages::new(specs)
    }

    /// ImageNet's mean and standard deviation (EfficientNetV2-L's weights use 0.5 / 0.5: see
    /// their preset).
    fn normalization(&self) -> Normalize {
        Normalize::imagenet()
    }

    fn forward_features(&self, images: Tensor<4>) -> Tensor<4> {
        let mut x = self.stem.forward(images);
        for block in self.stages.iter().flatten() {
            x = block.forward(x);
        }
        self.head_conv.forward(x)
    }

    /// Average pool and flatten (the pre-logits), then dropout and the Linear classifier.
    fn forward_head(&self, features: Tensor<4>, pre_logits: bool) -> Tensor<2> {
        let x = self.pool.forward(features).flatten(1, 3);
        if pre_logits {
            x
        } else {
            self.forward_classifier(x)
        }
    }

    /// Dropout (in training) and the Linear classifier.
    fn forward_classifier(&self, pre_logits: Tensor<2>) -> Tensor<2> {
        self.head.forward(self.dropout.forward(pre_logits))
    }

    fn check_input(&self, dims: [usize; 4]) -> Result<()> {
        check_image_input(dims, self.config.in_channels, "features.0.0", 1, None)
    }

    fn check_training_batch(&self, dims: [usize; 4]) -> Result<()> {
        check_batch_norm_inputs(self.batch_norm_inputs(dims), dims)
    }

    fn key_map(&self) -> KeyMap {
        let mut pairs = Vec::new();
        self.stem.key_pairs("stem", "features.0", &mut pairs);
        for (i, stage) in self.stages.iter().enumerate() {
            for (j, block) in stage.iter().enumerate() {
                block.key_pairs(
                    &format!("stages.{i}.{j}"),
                    &format!("features.{}.{j}", i + 1),
                    &mut pairs,
                );
            }
        }
        let last = format!("features.{}", self.stages.len() + 1);
        self.head_conv.key_pairs("head_conv", &last, &mut pairs);
        pairs.push(KeyPair::linear("head", "classifier.1"));
        KeyMap::Modules(pairs)
    }

    /// Without autodiff, every BatchNorm folded into its convolution (as torchvision's
    /// `fuse_modules` would), activations in one host pass each on CPU.
    fn for_inference(&self) -> Eval<EfficientNet> {
        let mut m = self.valid();
        m.stem = self.stem.folded();
        m.stages = self
            .stages
            .iter()
            .map(|stage| stage.iter().map(InvertedResidual::folded).collect())
            .collect();
        m.head_conv = self.head_conv.folded();
        Eval(m)
    }
}

super::contract::family_config!(
    EfficientNetConfig,
    EfficientNet,
    "efficientnet",
    "an EfficientNet",
    EfficientNet
);

impl EfficientNetConfig {
    /// The architecture and its shape, for messages.
    fn describe_shape(&self) -> String {
        format!(
            "{}: {} stages, {} features, {} classes",
            self.arch_name().unwrap_or("efficientnet(custom)"),
            self.setting.len(),
            self.num_features(),
            self.num_classes
        )
    }
}
