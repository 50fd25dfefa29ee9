//! Inference-only ResNet with every BatchNorm folded into the preceding convolution (the
//! standard "conv-BN folding" of inference compilers, e.g. PyTorch's
//! `torch.nn.utils.fuse_conv_bn_eval`): `w' = w·γ/√(σ²+ε)` and `b' = β − μ·γ/√(σ²+ε)` per
//! output channel. Same outputs as the model in inference mode (up to float rounding), without
//! the normalisation passes over every activation.

use std::sync::Arc;

use crate::kernels::nhwc::{NhwcBackbone, NhwcBlock, NhwcConv};
use crate::kernels::{ConvImpl, conv2d, is_cpu};
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AdaptiveAvgPool2d, MaxPool2d};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use super::contract::InferenceModel;
use super::{Block, ResNet};

/// A convolution with its BatchNorm folded in (a biased convolution).
pub(crate) fn fold(conv: &Conv2d, bn: &BatchNorm) -> Conv2d {
    let weight = conv.weight.val();
    let [out_ch, _, _, _] = weight.dims();
    let mean = bn.running_mean.value().without_autodiff();
    let var = bn.running_var.value().without_autodiff();
    let gamma = bn.gamma.val().without_autodiff();
    let beta = bn.beta.val().without_autodiff();
    let scale = gamma.div(var.add_scalar(bn.epsilon).sqrt());
    let mut bias = beta.sub(mean.mul(scale.clone()));
    if let Some(b) = &conv.bias {
        bias = bias.add(b.val().without_autodiff().mul(scale.clone()));
    }
    let weight = weight
        .without_autodiff()
        .mul(scale.reshape([out_ch, 1, 1, 1]));
    Conv2d {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
        stride: conv.stride,
        kernel_size: conv.kernel_size,
        dilation: conv.dilation,
        groups: conv.groups,
        padding: conv.padding.clone(),
    }
}

/// A residual block with folded BatchNorms.
#[derive(Module, Debug)]
pub struct FusedBlock {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Option<Conv2d>,
    downsample: Option<Conv2d>,
}

impl FusedBlock {
    fn new(block: &Block) -> Self {
        FusedBlock {
            conv1: fold(&block.conv1, &block.bn1),
            conv2: fold(&block.conv2, &block.bn2),
            conv3: match (&block.conv3, &block.bn3) {
                (Some(c), Some(b)) => Some(fold(c, b)),
                _ => None,
            },
            downsample: block.downsample.as_ref().map(|d| fold(&d.conv, &d.bn)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(ds) => conv2d(ds, x.clone()),
            None => x.clone(),
        };
        let mut out = conv2d(&self.conv2, relu(conv2d(&self.conv1, x)));
        if let Some(conv3) = &self.conv3 {
            out = conv2d(conv3, relu(out));
        }
        relu(out + identity)
    }
}

/// A [`ResNet`] prepared for inference: BatchNorms folded, no autodiff, same outputs.
/// Build it with [`VisionModel::for_inference`](super::VisionModel::for_inference). On CPU devices the backbone runs on a batched-GEMM
/// host path ([`ConvImpl`](crate::kernels::ConvImpl) `Backend` turns it off).
#[derive(Module, Debug)]
pub struct FusedResNet {
    conv1: Conv2d,
    maxpool: Option<MaxPool2d>,
    layers: Vec<FusedBlock>,
    avgpool: AdaptiveAvgPool2d,
    fc: Linear,
    #[module(skip)]
    host: Option<Arc<NhwcBackbone>>,
}

impl FusedResNet {
    /// Whether the backbone runs on the CPU host path.
    pub fn uses_host_path(&self) -> bool {
        self.host.is_some()
    }

    fn host_backbone(&self) -> Option<NhwcBackbone> {
        let conv = |c: &Conv2d| NhwcConv::new(c);
        let mut blocks = Vec::with_capacity(self.layers.len());
        for b in &self.layers {
            blocks.push(NhwcBlock {
                conv1: conv(&b.conv1)?,
                conv2: conv(&b.conv2)?,
                conv3: match &b.conv3 {
                    Some(c) => Some(conv(c)?),
                    None => None,
                },
                downsample: match &b.downsample {
                    Some(c) => Some(conv(c)?),
                    None => None,
                },
            });
        }
        let pool_ok = match &self.maxpool {
            None => true,
            Some(p) => {
                p.kernel_size == [3, 3]
                    && p.stride == [2, 2]
                    && p.dilation == [1, 1]
                    && !p.ceil_mode
                    && matches!(p.padding, PaddingConfig2d::Explicit(1, 1, 1, 1))
            }
        };
        pool_ok.then_some(())?;
        Some(NhwcBackbone {
            stem: conv(&self.conv1)?,
            max_pool: self.maxpool.is_some(),
            blocks,
        })
    }
}

impl InferenceModel for FusedResNet {
    /// The pooled embedding `[B, num_features]` (the NHWC host engine on CPU when prepared).
    fn forward_pre_logits(&self, images: Tensor<4>) -> Tensor<2> {
        if let Some(host) = &self.host
            && let Some(features) = host.forward_features(images.clone())
        {
            return features;
        }
        let mut x = relu(conv2d(&self.conv1, images));
        if let Some(pool) = &self.maxpool {
            x = pool.forward(x);
        }
        for block in &self.layers {
            x = block.forward(x);
        }
        self.avgpool.forward(x).flatten(1, 3)
    }

    /// Logits `[B, num_classes]`.
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.forward_pre_logits(images))
    }
}

impl ResNet {
    /// [`VisionModel::for_inference`](super::VisionModel::for_inference) with an explicit convolution choice:
    /// [`ConvImpl::Backend`] keeps the backbone on Burn's kernels, [`ConvImpl::Gemm`] forces
    /// the host GEMM path, [`ConvImpl::Auto`] uses the host path on CPU devices.
    pub fn for_inference_with(&self, conv: ConvImpl) -> FusedResNet {
        let model = self.valid();
        let mut fused = FusedResNet {
            conv1: fold(&model.conv1, &model.bn1),
            maxpool: model.maxpool.clone(),
            layers: model
                .layer1
                .iter()
                .chain(&model.layer2)
                .chain(&model.layer3)
                .chain(&model.layer4)
                .map(FusedBlock::new)
                .collect(),
            avgpool: model.avgpool.clone(),
            fc: model.fc.clone(),
            host: None,
        };
        let host_path = match conv {
            ConvImpl::Backend => false,
            ConvImpl::Gemm | ConvImpl::Host => true,
            ConvImpl::Auto => is_cpu(&model.fc.weight.lazy_device()),
        };
        if host_path {
            fused.host = fused.host_backbone().map(Arc::new);
        }
        fused
    }
}
