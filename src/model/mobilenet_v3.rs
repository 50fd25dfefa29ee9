//! MobileNetV3 (Howard et al., "Searching for MobileNetV3", ICCV 2019) with torchvision's
//! topology, initialisation and parameter names (`torchvision.models.mobilenetv3`): a 3x3
//! stride-2 hard-swish stem, inverted residual blocks ([`InvertedResidual`]) with ReLU or
//! hard-swish and hard-sigmoid squeeze-and-excitation, a 1x1 head convolution, and a
//! Linear + hard-swish + dropout + Linear classifier.

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

/// BatchNorm constants of torchvision's MobileNetV3 (TensorFlow's): eps 0.001, momentum 0.01.
const NORM: (f64, f64) = (1e-3, 0.01);

/// One block of a MobileNetV3 (torchvision's `InvertedResidualConfig`, width multiplier
/// applied).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvertedResidualSetting {
    /// Input channels.
    pub input_channels: usize,
    /// Depthwise kernel.
    pub kernel: usize,
    /// Channels after the expansion.
    pub expanded_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Whether the block has squeeze-and-excitation.
    pub use_se: bool,
    /// Hard-swish (`true`, torchvision's `"HS"`) or ReLU (`"RE"`).
    pub use_hs: bool,
    /// Stride (1 when dilated).
    pub stride: usize,
    /// Dilation of the depthwise convolution.
    pub dilation: usize,
}

/// Configuration of a MobileNetV3 (torchvision's `MobileNetV3(inverted_residual_setting,
/// last_channel, num_classes, dropout=0.2)`).
///
/// ```
/// use finetune::model::MobileNetV3Config;
/// let large = MobileNetV3Config::from_name("mobilenet_v3_large", 10).unwrap();
/// assert_eq!((large.setting.len(), large.num_features()), (15, 1280));
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct MobileNetV3Config {
    /// The blocks, in order.
    pub setting: Vec<InvertedResidualSetting>,
    /// Width of the classifier's hidden layer: the pre-logits embedding size.
    pub last_channel: usize,
    /// Classes of the head.
    pub num_classes: usize,
    /// Dropout before the last Linear.
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Input channels (3 for RGB).
    #[config(default = 3)]
    pub in_channels: usize,
}

/// `(in, kernel, expanded, out, se, hard-swish, stride)` rows of torchvision's
/// `_mobilenet_v3_conf` (dilation 1, width 1.0).
type Row = (usize, usize, usize, usize, bool, bool, usize);

const LARGE: [Row; 15] = [
    (16, 3, 16, 16, false, false, 1),
    (16, 3, 64, 24, false, false, 2),
    (24, 3, 72, 24, false, false, 1),
    (24, 5, 72, 40, true, false, 2),
    (40, 5, 120, 40, true, false, 1),
    (40, 5, 120, 40, true, false, 1),
    (40, 3, 240, 80, false, true, 2),
    (80, 3, 200, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 184, 80, false, true, 1),
    (80, 3, 480, 112, true, true, 1),
    (112, 3, 672, 112, true, true, 1),
    (112, 5, 672, 160, true, true, 2),
    (160, 5, 960, 160, true, true, 1),
    (160, 5, 960, 160, true, true, 1),
];

const SMALL: [Row; 11] = [
    (16, 3, 16, 16, true, false, 2),
    (16, 3, 72, 24, false, false, 2),
    (24, 3, 88, 24, false, false, 1),
    (24, 5, 96, 40, true, true, 2),
    (40, 5, 240, 40, true, true, 1),
    (40, 5, 240, 40, true, true, 1),
    (40, 5, 120, 48, true, true, 1),
    (48, 5, 144, 48, true, true, 1),
    (48, 5, 288, 96, true, true, 2),
    (96, 5, 576, 96, true, true, 1),
    (96, 5, 576, 96, true, true, 1),
];

impl MobileNetV3Config {
    /// The registered architecture names.
    pub const NAMES: [&'static str; 2] = ["mobilenet_v3_small", "mobilenet_v3_large"];

    /// The configuration of `mobilenet_v3_small` or `mobilenet_v3_large`.
    pub fn from_name(name: &str, num_classes: usize) -> Option<Self> {
        let (rows, last): (&[Row], usize) = match name {
            "mobilenet_v3_large" => (&LARGE, 1280),
            "mobilenet_v3_small" => (&SMALL, 1024),
            _ => return None,
        };
        let setting = rows
            .iter()
            .map(|&(i, k, e, o, se, hs, s)| InvertedResidualSetting {
                input_channels: i,
                kernel: k,
                expanded_channels: e,
                out_channels: o,
                use_se: se,
                use_hs: hs,
                stride: s,
                dilation: 1,
            })
            .collect();
        Some(Self::new(setting, last, num_classes))
    }

    /// The registered name of this shape, if it is one.
    pub fn arch_name(&self) -> Option<&'static str> {
        Self::NAMES.into_iter().find(|name| {
            Self::from_name(name, self.num_classes)
                .is_some_and(|c| c.setting == self.setting && c.last_channel == self.last_channel)
        })
    }

    /// The pre-logits embedding size ([`last_channel`](Self::last_channel)).
    pub fn num_features(&self) -> usize {
        self.last_channel
    }

    /// Channels of the head convolution: 6x the last block's output.
    fn head_channels(&self) -> usize {
        6 * self.setting.last().map_or(0, |s| s.out_channels)
    }

    /// `(parameters, BatchNorm running statistics)` from the topology alone.
    fn count_values(&self) -> (u64, u64) {
        let (mut params, mut bn) = (0u64, 0u64);
        let mut conv_bn = |cin: usize, cout: usize, k: usize, groups: usize| {
            let (cin, cout, k, g) = (cin as u64, cout as u64, k as u64, groups.max(1) as u64);
            params = params.saturating_add((cin / g).saturating_mul(cout).saturating_mul(k * k));
            params = params.saturating_add(2 * cout);
            bn = bn.saturating_add(2 * cout);
        };
        let first = self.setting.first().map_or(0, |s| s.input_channels);
        conv_bn(self.in_channels, first, 3, 1);
        let mut se = 0u64;
        for s in &self.setting {
            let e = s.expanded_channels;
            if e != s.input_channels {
                conv_bn(s.input_channels, e, 1, 1);
            }
            conv_bn(e, e, s.kernel, e);
            if s.use_se {
                let sq = make_divisible((e / 4) as f64, 8) as u64;
                let e = e as u64;
                se = se.saturating_add(2 * e * sq + sq + e);
            }
            conv_bn(e, s.out_channels, 1, 1);
        }
        let last = self.setting.last().map_or(0, |s| s.out_channels);
        conv_bn(last, self.head_channels(), 1, 1);
        let (h, f, c) = (
            self.head_channels() as u64,
            self.last_channel as u64,
            self.num_classes as u64,
        );
        let classifier = (h * f + f).saturating_add(f.saturating_mul(c) + c);
        (params.saturating_add(se).saturating_add(classifier), bn)
    }

    /// Checks every size before anything is allocated.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the value out of range.
    pub fn validate(&self) -> Result<()> {
        check_num_classes(self.num_classes)?;
        let bad = |what: String| Err(Error::InvalidConfig(what));
        if self.setting.is_empty()
            || self.setting.len() > 256
            || !(1..=1 << 14).contains(&self.in_channels)
            || self.num_classes > 1 << 24
        {
            return bad(format!(
                "a MobileNetV3 needs 1 to 256 blocks, 1 to 16384 input channels and at most 2^24 classes (blocks {}, in_channels {}, num_classes {})",
                self.setting.len(),
                self.in_channels,
                self.num_classes
            ));
        }
        let stride_2 = self.setting.iter().filter(|s| s.stride > 1).count();
        if stride_2 > 15 {
            return bad(format!(
                "a MobileNetV3 is grouped into a stage per stride-2 block, at most 16 stages: this one has {stride_2} stride-2 blocks"
            ));
        }
        let sane = |v: usize| (1..=1 << 14).contains(&v);
        for (i, s) in self.setting.iter().enumerate() {
            if !(sane(s.input_channels)
                && sane(s.expanded_channels)
                && sane(s.out_channels)
                && (1..=15).contains(&s.kernel)
                && s.kernel % 2 == 1
                && (1..=8).contains(&s.stride)
                && (1..=8).contains(&s.dilation))
            {
                return bad(format!(
                    "block {} of the MobileNetV3 is out of range (channels 1 to 16384, an odd kernel up to 15, stride and dilation 1 to 8): {s:?}",
                    i + 1
                ));
            }
        }
        if !sane(self.last_channel) || !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "last_channel {} and dropout {} must be in 1..=16384 and [0, 1)",
                self.last_channel, self.dropout
            ));
        }
        if self.count_values().0 > super::MAX_PARAMS {
            return bad(
                "the configuration describes more parameters than this crate builds".into(),
            );
        }
        Ok(())
    }

    /// Builds the model, initialised as torchvision does (convolutions
    /// `kaiming_normal_(mode="fan_out")`, BatchNorm 1/0, Linear `normal_(0, 0.01)`, zero
    /// biases).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when [`validate`](Self::validate) fails.
    pub fn try_init(&self, device: &Device) -> Result<MobileNetV3> {
        self.validate()?;
        Ok(MobileNetV3::from_config(self, device))
    }
}

/// A MobileNetV3; build it with [`MobileNetV3Config`].
#[derive(Module, Debug)]
pub struct MobileNetV3 {
    /// 3x3 stride-2 convolution, BatchNorm, hard-swish (`features.0`).
    pub stem: ConvNormAct,
    /// The inverted residual blocks (`features.1` ..).
    pub blocks: Vec<InvertedResidual>,
    /// 1x1 convolution to 6x the last block's channels, BatchNorm, hard-swish (`features.N`).
    pub head_conv: ConvNormAct,
    /// Global average pool.
    pub pool: AdaptiveAvgPool2d,
    /// Linear to `last_channel` (`classifier.0`), followed by hard-swish.
    pub pre_head: Linear,
    /// Dropout (`classifier.2`).
    pub dropout: Dropout,
    /// The classifier (`classifier.3`).
    pub head: Linear,
    #[module(skip)]
    pub(crate) config: MobileNetV3Config,
    #[module(skip)]
    pub(crate) freeze: FreezeState,
}

impl MobileNetV3 {
    fn from_config(config: &MobileNetV3Config, device: &Device) -> Self {
        let cna = |spec: ConvSpec, act| ConvNormAct::new(spec, NORM, act, device);
        let first = config.setting[0].input_channels;
        let stem = cna(
            ConvSpec::new(config.in_channels, first, 3).stride(2),
            Activation::Hardswish,
        );
        let blocks = config
            .setting
            .iter()
            .map(|s| {
                let act = if s.use_hs {
                    Activation::Hardswish
                } else {
                    Activation::ReLU
                };
                let (i, e, o) = (s.input_channels, s.expanded_channels, s.out_channels);
                let stride = if s.dilation > 1 { 1 } else { s.stride };
                InvertedResidual {
                    expand: (e != i).then(|| cna(ConvSpec::new(i, e, 1), act)),
                    depthwise: Some(cna(
                        ConvSpec::new(e, e, s.kernel)
                            .stride(stride)
                            .dilation(s.dilation)
                            .depthwise(),
                        act,
                    )),
                    se: s.use_se.then(|| {
                        SqueezeExcitation::new(
                            e,
                            make_divisible((e / 4) as f64, 8),
                            Activation::ReLU,
                            Activation::Hardsigmoid,
                            device,
                        )
                    }),
                    project: cna(ConvSpec::new(e, o, 1), Activation::Identity),
                    stochastic_depth: StochasticDepth::new(0.0),
                    residual: s.stride == 1 && i == o,
                }
            })
            .collect();
        let last = config.setting.last().map_or(first, |s| s.out_channels);
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.01,
        };
        MobileNetV3 {
            stem,
            blocks,
            head_conv: cna(
                ConvSpec::new(last, config.head_channels(), 1),
                Activation::Hardswish,
            ),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            pre_head: linear(
                config.head_channels(),
                config.last_channel,
                normal,
                Initializer::Zeros,
                device,
            ),
            dropout: DropoutConfig::new(config.dropout).init(),
            head: Self::new_head(config.last_channel, config.num_classes, device),
            config: config.clone(),
            freeze: FreezeState::default(),
        }
    }

    fn new_head(features: usize, classes: usize, device: &Device) -> Linear {
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.01,
        };
        linear(features, classes, normal, Initializer::Zeros, device)
    }

    /// Every BatchNorm's input for images `[B, C, H, W]`, in forward order, named as
    /// torchvision names the layer.
    pub fn batch_norm_inputs(&self, images: [usize; 4]) -> Vec<BatchNormInput> {
        let blocks = self
            .blocks
            .iter()
            .enumerate()
            .map(|(i, block)| (format!("features.{}", i + 1), block));
        super::mbconv::batch_norm_inputs(
            &self.stem,
            blocks,
            &self.head_conv,
            self.blocks.len() + 1,
            images,
        )
    }
}

super::contract::inherent_freezing!(MobileNetV3);

impl VisionModel for MobileNetV3 {
    type Config = MobileNetV3Config;
    /// Feature maps `[B, 6 * C_last, H/32, W/32]` (after the head convolution).
    type Features = Tensor<4>;
    type Inference = Eval<MobileNetV3>;

    super::contract::family_contract!(MobileNetV3Config);

    fn arch(&self) -> String {
        self.config
            .arch_name()
            .unwrap_or("mobilenet_v3(custom)")
            .to_string()
    }

    /// `stem`, `stage1` .. (a new stage at every stride-2 block), `conv_head` (the head
    /// convolution and the classifier's first Linear), `classifier` (its last Linear).
    fn stages(&self) -> Stages {
        let mut specs = vec![StageSpec::new("stem", &["stem"])];
        let mut current: Vec<String> = Vec::new();
        let flush = |current: &mut Vec<String>, specs: &mut Vec<StageSpec>| {
            if !current.is_empty() {
                let name = super::stage::STAGE_NAMES
                    .get(specs.len() - 1)
                    .copied()
                    .unwrap_or("stage16+");
                specs.push(StageSpec {
                    name,
                    modules: std::mem::take(current),
                });
            }
        };
        for (i, s) in self.config.setting.iter().enumerate() {
            if s.stride > 1 {
                flush(&mut current, &mut specs);
            }
            current.push(format!("blocks.{i}"));
        }
        flush(&mut current, &mut specs);
        specs.push(StageSpec::new("conv_head", &["head_conv", "pre_head"]));
        specs.push(StageSpec::new("classifier", &["dropout", "head"]));
        Stages::new(specs)
    }

    fn normalization(&self) -> Normalize {
        Normalize::imagenet()
    }

    fn forward_features(&self, images: Tensor<4>) -> Tensor<4> {
        let mut x = self.stem.forward(images);
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.head_conv.forward(x)
    }

    /// Average pool, Linear, hard-swish and dropout (the pre-logits, torchvision's
    /// `classifier[:3]`), then the last Linear.
    fn forward_head(&self, features: Tensor<4>, pre_logits: bool) -> Tensor<2> {
        let x = self.pool.forward(features).flatten(1, 3);
        let x = Activation::Hardswish.forward(self.pre_head.forward(x));
        let x = self.dropout.forward(x);
        if pre_logits { x } else { self.head.forward(x) }
    }

    fn forward_classifier(&self, pre_logits: Tensor<2>) -> Tensor<2> {
        self.head.forward(pre_logits)
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
        for (i, block) in self.blocks.iter().enumerate() {
            block.key_pairs(
                &format!("blocks.{i}"),
                &format!("features.{}", i + 1),
                &mut pairs,
            );
        }
        let last = format!("features.{}", self.blocks.len() + 1);
        self.head_conv.key_pairs("head_conv", &last, &mut pairs);
        pairs.push(KeyPair::linear("pre_head", "classifier.0"));
        pairs.push(KeyPair::linear("head", "classifier.3"));
        KeyMap::Modules(pairs)
    }

    /// Without autodiff, every BatchNorm folded into its convolution (as torchvision's
    /// `fuse_modules` would), activations in one host pass each on CPU.
    fn for_inference(&self) -> Eval<MobileNetV3> {
        let mut m = self.valid();
        m.stem = self.stem.folded();
        m.blocks = self.blocks.iter().map(InvertedResidual::folded).collect();
        m.head_conv = self.head_conv.folded();
        Eval(m)
    }
}

super::contract::family_config!(
    MobileNetV3Config,
    MobileNetV3,
    "mobilenet_v3",
    "a MobileNetV3",
    MobileNetV3
);

impl MobileNetV3Config {
    /// The architecture and its shape, for messages.
    fn describe_shape(&self) -> String {
        format!(
            "{}: {} blocks, {} features, {} classes",
            self.arch_name().unwrap_or("mobilenet_v3(custom)"),
            self.setting.len(),
            self.num_features(),
            self.num_classes
        )
    }
}
