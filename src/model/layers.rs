//! Layers shared by the ConvNeXt, EfficientNet, MobileNetV3 and ViT families, with
//! torchvision's semantics and initialisation (`torchvision.ops.misc` /
//! `torchvision.ops.stochastic_depth`): convolution + BatchNorm + activation
//! (`Conv2dNormActivation`), squeeze-and-excitation, stochastic depth, and the activations.
//! Each layer also lists its tensors' torchvision names ([`KeyPair`]s).

use burn::module::{Flag, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, LayerNorm, Linear, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::kernels::{HostActivation, activation, batch_norm, batch_norm_relu, conv2d};
use crate::weights::keymap::KeyPair;

/// An activation function, by torchvision's module name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// No activation (`nn.Identity`).
    Identity,
    /// `nn.ReLU`.
    ReLU,
    /// `nn.SiLU` (swish): `x * sigmoid(x)`.
    SiLU,
    /// `nn.Hardswish`: `x * relu6(x + 3) / 6`.
    Hardswish,
    /// `nn.Hardsigmoid`: `relu6(x + 3) / 6`.
    Hardsigmoid,
    /// `nn.Sigmoid`.
    Sigmoid,
    /// `nn.GELU` (exact, with `erf`).
    GELU,
}

impl Activation {
    /// Applies the activation element-wise.
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Identity => x,
            Activation::ReLU => relu(x),
            Activation::SiLU => activation(x, HostActivation::SiLU),
            Activation::Hardswish => activation(x, HostActivation::Hardswish),
            Activation::Hardsigmoid => activation(x, HostActivation::Hardsigmoid),
            Activation::Sigmoid => activation(x, HostActivation::Sigmoid),
            Activation::GELU => activation(x, HostActivation::Gelu),
        }
    }
}

/// PyTorch's `kaiming_normal_(mode="fan_out")` for a convolution weight
/// `[out, in / groups, k, k]`: standard deviation `gain / sqrt(out * k * k)` (PyTorch's fan-out
/// does not divide by the groups, Burn's does, which matters for depthwise convolutions).
pub(crate) fn kaiming_fan_out_std(out_channels: usize, kernel: usize) -> f64 {
    std::f64::consts::SQRT_2 / ((out_channels * kernel * kernel).max(1) as f64).sqrt()
}

/// How a convolution's weight is initialised.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ConvInit {
    /// `kaiming_normal_(mode="fan_out")`, bias 0 (EfficientNet, MobileNetV3).
    KaimingFanOut,
    /// `trunc_normal_(std)` on `[-2, 2]`, bias 0 (ConvNeXt: 0.02).
    TruncNormal(f64),
    /// ViT's patch projection: `trunc_normal_(std=sqrt(1 / fan_in))`, bias 0.
    TruncNormalFanIn,
}

/// The geometry of one convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvSpec {
    pub in_ch: usize,
    pub out_ch: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub dilation: usize,
    pub bias: bool,
}

impl ConvSpec {
    /// A `kernel` x `kernel` convolution, stride 1, no groups, no bias.
    pub fn new(in_ch: usize, out_ch: usize, kernel: usize) -> Self {
        ConvSpec {
            in_ch,
            out_ch,
            kernel,
            stride: 1,
            groups: 1,
            dilation: 1,
            bias: false,
        }
    }
    pub fn stride(self, stride: usize) -> Self {
        ConvSpec { stride, ..self }
    }
    pub fn depthwise(self) -> Self {
        ConvSpec {
            groups: self.in_ch,
            ..self
        }
    }
    pub fn dilation(self, dilation: usize) -> Self {
        ConvSpec { dilation, ..self }
    }
    pub fn bias(self) -> Self {
        ConvSpec { bias: true, ..self }
    }

    /// torchvision's `Conv2dNormActivation` padding: `(kernel - 1) / 2 * dilation`.
    fn padding(&self) -> usize {
        (self.kernel - 1) / 2 * self.dilation
    }

    /// Builds the convolution with `init` (padding as [`padding`](Self::padding); use
    /// [`with_padding`](Self::init_padded) for patchify layers).
    pub fn init(self, init: ConvInit, device: &Device) -> Conv2d {
        self.init_padded(self.padding(), init, device)
    }

    /// [`init`](Self::init) with an explicit symmetric padding.
    pub fn init_padded(self, padding: usize, init: ConvInit, device: &Device) -> Conv2d {
        let k = self.kernel;
        let initializer = match init {
            ConvInit::KaimingFanOut => Initializer::Normal {
                mean: 0.0,
                std: kaiming_fan_out_std(self.out_ch, k),
            },
            ConvInit::TruncNormal(std) => trunc_normal(std),
            ConvInit::TruncNormalFanIn => {
                let fan_in = (self.in_ch / self.groups.max(1) * k * k).max(1) as f64;
                trunc_normal((1.0 / fan_in).sqrt())
            }
        };
        let mut conv = Conv2dConfig::new([self.in_ch, self.out_ch], [k, k])
            .with_stride([self.stride, self.stride])
            .with_dilation([self.dilation, self.dilation])
            .with_groups(self.groups)
            .with_padding(PaddingConfig2d::Explicit(
                padding, padding, padding, padding,
            ))
            .with_bias(self.bias)
            .with_initializer(initializer)
            .init(device);
        if let Some(bias) = conv.bias.as_mut() {
            *bias = Initializer::Zeros.init([self.out_ch], device);
        }
        conv
    }
}

/// `trunc_normal_(std=std)`: normal, redrawn outside `[-2, 2]` (absolute, as PyTorch's
/// defaults `a=-2, b=2` are), which for the small standard deviations used here truncates
/// nothing in practice; Burn's normal initializer is used.
pub(crate) fn trunc_normal(std: f64) -> Initializer {
    Initializer::Normal { mean: 0.0, std }
}

/// BatchNorm with `eps` and `momentum` (PyTorch's convention: the weight of the new batch
/// statistics), weight 1 and bias 0.
pub(crate) fn batch_norm_layer(
    channels: usize,
    eps: f64,
    momentum: f64,
    device: &Device,
) -> BatchNorm {
    BatchNormConfig::new(channels)
        .with_epsilon(eps)
        .with_momentum(momentum)
        .init(device)
}

/// `LayerNorm` over the last dimension with `eps`, weight 1 and bias 0.
pub(crate) fn layer_norm(dim: usize, eps: f64, device: &Device) -> LayerNorm {
    burn::nn::LayerNormConfig::new(dim)
        .with_epsilon(eps)
        .init(device)
}

/// torchvision's `LayerNorm2d`: LayerNorm over the channels of `[B, C, H, W]` maps.
pub(crate) fn layer_norm_2d(norm: &LayerNorm, x: Tensor<4>) -> Tensor<4> {
    norm.forward(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
}

/// A `Linear` layer whose weight is drawn from `weight` and whose bias is `bias` (both
/// PyTorch-shaped semantics; Burn stores the weight `[in, out]`).
pub(crate) fn linear(
    d_in: usize,
    d_out: usize,
    weight: Initializer,
    bias: Initializer,
    device: &Device,
) -> Linear {
    let mut layer = burn::nn::LinearConfig::new(d_in, d_out)
        .with_initializer(weight)
        .init(device);
    if let Some(b) = layer.bias.as_mut() {
        *b = bias.init([d_out], device);
    }
    layer
}

/// A replacement classifier: `nn.Linear(features, classes)` with PyTorch's default
/// initialisation (weight and bias uniform on `±1/sqrt(features)`, Burn's `LinearConfig`
/// default), what a new head gets in PyTorch's tutorial and in timm's `reset_classifier`.
pub(crate) fn replacement_head(features: usize, classes: usize, device: &Device) -> Linear {
    burn::nn::LinearConfig::new(features, classes).init(device)
}

/// torchvision's `Conv2dNormActivation`: convolution (no bias), BatchNorm, activation.
/// Reference names: `N.0` (convolution), `N.1` (BatchNorm).
#[derive(Module, Debug)]
pub struct ConvNormAct {
    /// The convolution.
    pub conv: Conv2d,
    /// The BatchNorm after it.
    pub bn: BatchNorm,
    /// The activation after the BatchNorm.
    #[module(skip)]
    pub act: Activation,
    /// Whether the BatchNorm is folded into the convolution (the inference form: `bn` is then
    /// not applied).
    #[module(skip)]
    pub folded: bool,
}

impl ConvNormAct {
    pub(crate) fn new(
        spec: ConvSpec,
        (eps, momentum): (f64, f64),
        act: Activation,
        device: &Device,
    ) -> Self {
        ConvNormAct {
            conv: spec.init(ConvInit::KaimingFanOut, device),
            bn: batch_norm_layer(spec.out_ch, eps, momentum, device),
            act,
            folded: false,
        }
    }

    /// The inference form: the BatchNorm (its running statistics) folded into the
    /// convolution's weight and bias, without autodiff.
    pub fn folded(&self) -> ConvNormAct {
        ConvNormAct {
            conv: super::fused::fold(&self.conv, &self.bn),
            bn: self.bn.valid(),
            act: self.act,
            folded: true,
        }
    }

    /// `[B, C_in, H, W]` -> `[B, C_out, H', W']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = conv2d(&self.conv, x);
        if self.folded {
            return self.act.forward(x);
        }
        match self.act {
            Activation::ReLU => batch_norm_relu(&self.bn, x),
            act => act.forward(batch_norm(&self.bn, x)),
        }
    }

    /// Its tensors' names: `ours.conv` is `reference.0`, `ours.bn` is `reference.1`.
    pub(crate) fn key_pairs(&self, ours: &str, reference: &str, out: &mut Vec<KeyPair>) {
        out.push(KeyPair::new(
            format!("{ours}.conv"),
            format!("{reference}.0"),
        ));
        out.push(KeyPair::new(format!("{ours}.bn"), format!("{reference}.1")));
    }
}

/// torchvision's `SqueezeExcitation` (Hu et al., 2018): global average pool, `fc1` (1x1
/// convolution to the squeeze channels), activation, `fc2` (back to the input channels), gate
/// activation, then the input scaled channel-wise by the gate.
#[derive(Module, Debug)]
pub struct SqueezeExcitation {
    /// Squeeze: `[C, S, 1, 1]` with bias.
    pub fc1: Conv2d,
    /// Excite: `[S, C, 1, 1]` with bias.
    pub fc2: Conv2d,
    pool: AdaptiveAvgPool2d,
    /// After `fc1`: ReLU (MobileNetV3) or SiLU (EfficientNet).
    #[module(skip)]
    pub act: Activation,
    /// The gate: Hardsigmoid (MobileNetV3) or Sigmoid (EfficientNet).
    #[module(skip)]
    pub gate: Activation,
}

impl SqueezeExcitation {
    pub(crate) fn new(
        channels: usize,
        squeeze: usize,
        act: Activation,
        gate: Activation,
        device: &Device,
    ) -> Self {
        let fc = |i, o| {
            ConvSpec::new(i, o, 1)
                .bias()
                .init(ConvInit::KaimingFanOut, device)
        };
        SqueezeExcitation {
            fc1: fc(channels, squeeze),
            fc2: fc(squeeze, channels),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            act,
            gate,
        }
    }

    /// `[B, C, H, W]` -> `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s = self.pool.forward(x.clone());
        let s = self.act.forward(self.fc1.forward(s));
        let s = self.gate.forward(self.fc2.forward(s));
        x * s
    }

    pub(crate) fn key_pairs(&self, ours: &str, reference: &str, out: &mut Vec<KeyPair>) {
        for fc in ["fc1", "fc2"] {
            out.push(KeyPair::new(
                format!("{ours}.{fc}"),
                format!("{reference}.{fc}"),
            ));
        }
    }
}

/// torchvision's `StochasticDepth(p, mode="row")` (Huang et al., 2016): in training, each
/// sample's residual branch is dropped with probability `p` and kept ones are scaled by
/// `1 / (1 - p)`; the identity in evaluation. Like Burn's `Dropout`, it is active only when its
/// training flag is set and the input is on an autodiff device.
#[derive(Module, Debug)]
pub struct StochasticDepth {
    /// The probability of dropping a sample's branch.
    pub prob: f64,
    /// Whether to behave as during training (cleared by freezing).
    pub training: Param<Flag>,
}

impl StochasticDepth {
    pub(crate) fn new(prob: f64) -> Self {
        StochasticDepth {
            prob,
            training: Param::from_bool(true),
        }
    }

    /// Scales each sample of `[B, ...]` by 0 or `1 / (1 - p)`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if !self.training.is_enabled() || !x.device().is_autodiff() || self.prob <= 0.0 {
            return x;
        }
        let survival = 1.0 - self.prob;
        if survival <= 0.0 {
            return x.zeros_like();
        }
        let mut shape = [1usize; D];
        shape[0] = x.dims()[0];
        let noise = Tensor::<D>::random(shape, Distribution::Bernoulli(survival), &x.device());
        x * noise.div_scalar(survival)
    }
}

/// torchvision's `_make_divisible(v, divisor)` (from the TensorFlow MobileNet code): `v`
/// rounded to the nearest multiple of `divisor`, not below `min_value` (default `divisor`)
/// and not more than 10% below `v`.
pub(crate) fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = d.max(((v + d / 2.0) / d).floor() * d);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_torchvision() {
        // torchvision: _make_divisible(16 * 1.0, 8) == 16, (240 // 4) -> 64, 72 // 4 -> 24.
        assert_eq!(make_divisible(16.0, 8), 16);
        assert_eq!(make_divisible(60.0, 8), 64);
        assert_eq!(make_divisible(18.0, 8), 24);
        assert_eq!(make_divisible(4.0, 8), 8);
        assert_eq!(make_divisible(32.0 * 1.1, 8), 32);
    }
}
