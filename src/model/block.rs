//! Residual blocks of He et al. (2016) with torchvision's layout and parameter names:
//! `BasicBlock` (`conv1`/`bn1`/`conv2`/`bn2`) and `Bottleneck` (adds `conv3`/`bn3`, stride on the
//! 3x3 convolution as in torchvision), plus the projection shortcut `downsample`.

use crate::kernels::{
    batch_norm, batch_norm_add_relu, batch_norm_relu, conv_output_size, conv2d,
    uses_batch_statistics,
};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::config::BlockKind;

/// torchvision's convolution init: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
pub(crate) fn kaiming_fan_out() -> Initializer {
    Initializer::KaimingNormal {
        gain: std::f64::consts::SQRT_2,
        fan_out_only: true,
    }
}

/// A bias-free convolution with torchvision's init. `padding` is symmetric.
pub(crate) fn conv(
    in_ch: usize,
    out_ch: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([in_ch, out_ch], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_bias(false)
        .with_initializer(kaiming_fan_out())
        .init(device)
}

/// BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1); weight 1 (or 0), bias 0.
pub(crate) fn new_batch_norm(channels: usize, zero_weight: bool, device: &Device) -> BatchNorm {
    let mut bn = BatchNormConfig::new(channels).init(device);
    if zero_weight {
        bn.gamma = Initializer::Zeros.init([channels], device);
    }
    bn
}

/// Where one BatchNorm layer sits in a forward pass, from
/// [`ResNet::batch_norm_inputs`](super::ResNet::batch_norm_inputs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchNormInput {
    /// The layer's module path (`bn1`, `layer4.1.bn2`, `layer2.0.downsample.bn`).
    pub layer: String,
    /// Its input shape `[B, C, H, W]`.
    pub dims: [usize; 4],
    /// Whether it normalises with batch statistics (training flag on, autodiff device).
    pub batch_statistics: bool,
}

impl BatchNormInput {
    /// Values per channel the layer normalises over: `B·H·W`.
    pub fn values_per_channel(&self) -> usize {
        self.dims[0] * self.dims[2] * self.dims[3]
    }
}

/// Records `bn`'s input for `conv`'s output on `[B, C, H, W]` input maps; returns that output
/// shape.
pub(crate) fn push_conv_bn(
    out: &mut Vec<BatchNormInput>,
    layer: String,
    (conv, bn): (&Conv2d, &BatchNorm),
    [b, _, h, w]: [usize; 4],
) -> [usize; 4] {
    let [ho, wo] = conv_output_size(conv, [h, w]);
    let dims = [b, conv.weight.lazy_shape()[0], ho, wo];
    let batch_statistics = uses_batch_statistics(bn, &conv.weight.lazy_device());
    out.push(BatchNormInput {
        layer,
        dims,
        batch_statistics,
    });
    dims
}

/// The first BatchNorm layer among `inputs` (in forward order) that normalises with batch
/// statistics and would see one value per channel, as [`Error::BatchNormSingleValue`] for a
/// batch of shape `images`.
pub(crate) fn check_batch_norm_inputs(
    inputs: Vec<BatchNormInput>,
    images: [usize; 4],
) -> crate::error::Result<()> {
    let bad = inputs
        .into_iter()
        .find(|bn| bn.batch_statistics && bn.values_per_channel() <= 1);
    match bad {
        None => Ok(()),
        Some(bn) => Err(crate::error::Error::BatchNormSingleValue {
            values: bn.values_per_channel(),
            layer: bn.layer,
            input: images,
            batch: bn.dims[0],
            height: bn.dims[2],
            width: bn.dims[3],
        }),
    }
}

/// The projection shortcut: a strided 1x1 convolution followed by BatchNorm. torchvision names
/// these `downsample.0` and `downsample.1`; the weight importer maps them to `conv` and `bn`.
#[derive(Module, Debug)]
pub struct Downsample {
    /// 1x1 convolution (torchvision `downsample.0`).
    pub conv: Conv2d,
    /// BatchNorm (torchvision `downsample.1`).
    pub bn: BatchNorm,
}

impl Downsample {
    /// Applies the shortcut projection.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        batch_norm(&self.bn, conv2d(&self.conv, x))
    }
}

/// One residual block. A BasicBlock has no `conv3`/`bn3`; a Bottleneck has them. The field
/// names are torchvision's, so parameter paths read `layer2.0.conv1.weight`.
#[derive(Module, Debug)]
pub struct Block {
    /// First convolution: 3x3 (stride here) for BasicBlock, 1x1 for Bottleneck.
    pub conv1: Conv2d,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm,
    /// Second convolution: 3x3 (stride here for Bottleneck).
    pub conv2: Conv2d,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm,
    /// Bottleneck only: the 1x1 expansion convolution.
    pub conv3: Option<Conv2d>,
    /// Bottleneck only: BatchNorm after `conv3`.
    pub bn3: Option<BatchNorm>,
    /// Projection shortcut, present exactly when `stride != 1 || in != width * expansion`.
    pub downsample: Option<Downsample>,
}

impl Block {
    /// Builds a block the way torchvision's `_make_layer` does.
    pub(crate) fn new(
        kind: BlockKind,
        in_ch: usize,
        width: usize,
        stride: usize,
        zero_init_residual: bool,
        device: &Device,
    ) -> Self {
        let out_ch = width * kind.expansion();
        let downsample = (stride != 1 || in_ch != out_ch).then(|| Downsample {
            conv: conv(in_ch, out_ch, 1, stride, 0, device),
            bn: new_batch_norm(out_ch, false, device),
        });
        match kind {
            BlockKind::Basic => Block {
                conv1: conv(in_ch, width, 3, stride, 1, device),
                bn1: new_batch_norm(width, false, device),
                conv2: conv(width, width, 3, 1, 1, device),
                bn2: new_batch_norm(width, zero_init_residual, device),
                conv3: None,
                bn3: None,
                downsample,
            },
            BlockKind::Bottleneck => Block {
                conv1: conv(in_ch, width, 1, 1, 0, device),
                bn1: new_batch_norm(width, false, device),
                conv2: conv(width, width, 3, stride, 1, device),
                bn2: new_batch_norm(width, false, device),
                conv3: Some(conv(width, out_ch, 1, 1, 0, device)),
                bn3: Some(new_batch_norm(out_ch, zero_init_residual, device)),
                downsample,
            },
        }
    }

    /// Appends the input of each of this block's BatchNorm layers for an input of shape
    /// `dims`, in torchvision's forward order (`{prefix}.bn1`, `bn2`, `bn3`, then
    /// `downsample.bn`, so that the first layer reported is the one PyTorch would fail at);
    /// returns the block's output shape.
    pub(crate) fn batch_norm_inputs(
        &self,
        prefix: &str,
        dims: [usize; 4],
        out: &mut Vec<BatchNormInput>,
    ) -> [usize; 4] {
        let name = |bn: &str| format!("{prefix}.{bn}");
        let x = push_conv_bn(out, name("bn1"), (&self.conv1, &self.bn1), dims);
        let x = push_conv_bn(out, name("bn2"), (&self.conv2, &self.bn2), x);
        let x = match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => push_conv_bn(out, name("bn3"), (conv3, bn3), x),
            _ => x,
        };
        if let Some(ds) = &self.downsample {
            push_conv_bn(out, name("downsample.bn"), (&ds.conv, &ds.bn), dims);
        }
        x
    }

    /// `relu(branch(x) + shortcut(x))`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(ds) => ds.forward(x.clone()),
            None => x.clone(),
        };
        let out = batch_norm_relu(&self.bn1, conv2d(&self.conv1, x));
        match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => {
                let out = batch_norm_relu(&self.bn2, conv2d(&self.conv2, out));
                batch_norm_add_relu(bn3, conv2d(conv3, out), identity)
            }
            _ => batch_norm_add_relu(&self.bn2, conv2d(&self.conv2, out), identity),
        }
    }
}
