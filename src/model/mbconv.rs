//! The inverted residual block of MobileNetV2/V3 (Sandler et al., 2018; Howard et al., 2019)
//! and EfficientNet's MBConv / FusedMBConv (Tan & Le, 2019 and 2021), as torchvision lays them
//! out in `block` (`torchvision.models.mobilenetv3.InvertedResidual`,
//! `torchvision.models.efficientnet.MBConv` / `FusedMBConv`): an optional expansion, a
//! depthwise convolution, optional squeeze-and-excitation and a linear projection, with a
//! residual connection (through stochastic depth) when the shape is kept.

use burn::module::Module;
use burn::tensor::Tensor;

use super::block::{BatchNormInput, push_conv_bn};
use super::layers::{ConvNormAct, SqueezeExcitation, StochasticDepth};
use crate::weights::keymap::KeyPair;

/// One inverted residual block. Which parts exist depends on the kind:
///
/// | kind | `expand` | `depthwise` | `se` | `project` |
/// |---|---|---|---|---|
/// | MBConv / MobileNetV3 | 1x1, when expanded | kxk depthwise | optional | 1x1, no activation |
/// | FusedMBConv, expanded | kxk, strided | - | - | 1x1, no activation |
/// | FusedMBConv, ratio 1 | - | - | - | kxk, strided, with activation |
#[derive(Module, Debug)]
pub struct InvertedResidual {
    /// The expansion convolution (`block.0`).
    pub expand: Option<ConvNormAct>,
    /// The depthwise convolution.
    pub depthwise: Option<ConvNormAct>,
    /// Squeeze-and-excitation.
    pub se: Option<SqueezeExcitation>,
    /// The projection (the last `block` entry).
    pub project: ConvNormAct,
    /// Stochastic depth on the residual branch (probability 0 in MobileNetV3).
    pub stochastic_depth: StochasticDepth,
    /// Whether the input is added back (stride 1 and as many output as input channels).
    #[module(skip)]
    pub residual: bool,
}

impl InvertedResidual {
    /// `[B, C_in, H, W]` -> `[B, C_out, H / stride, W / stride]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = x.clone();
        if let Some(expand) = &self.expand {
            y = expand.forward(y);
        }
        if let Some(dw) = &self.depthwise {
            y = dw.forward(y);
        }
        if let Some(se) = &self.se {
            y = se.forward(y);
        }
        y = self.project.forward(y);
        if self.residual {
            x + self.stochastic_depth.forward(y)
        } else {
            y
        }
    }

    /// The inference form: every BatchNorm folded into its convolution.
    pub(crate) fn folded(&self) -> InvertedResidual {
        InvertedResidual {
            expand: self.expand.as_ref().map(ConvNormAct::folded),
            depthwise: self.depthwise.as_ref().map(ConvNormAct::folded),
            se: self.se.as_ref().map(|se| se.valid()),
            project: self.project.folded(),
            stochastic_depth: self.stochastic_depth.valid(),
            residual: self.residual,
        }
    }

    /// The torchvision names of its layers: `reference.block.i` in order.
    pub(crate) fn key_pairs(&self, ours: &str, reference: &str, out: &mut Vec<KeyPair>) {
        let mut i = 0;
        let mut next = || {
            i += 1;
            format!("{reference}.block.{}", i - 1)
        };
        if let Some(expand) = &self.expand {
            expand.key_pairs(&format!("{ours}.expand"), &next(), out);
        }
        if let Some(dw) = &self.depthwise {
            dw.key_pairs(&format!("{ours}.depthwise"), &next(), out);
        }
        if let Some(se) = &self.se {
            se.key_pairs(&format!("{ours}.se"), &next(), out);
        }
        self.project
            .key_pairs(&format!("{ours}.project"), &next(), out);
    }

    /// Records the input of each of its BatchNorm layers (named `reference.block.i.1`) for
    /// input maps `dims`; returns its output shape.
    pub(crate) fn batch_norm_inputs(
        &self,
        reference: &str,
        dims: [usize; 4],
        out: &mut Vec<BatchNormInput>,
    ) -> [usize; 4] {
        let mut x = dims;
        let mut i = 0;
        let mut push = |layer: &ConvNormAct, i: usize, x: [usize; 4]| {
            push_conv_bn(
                out,
                format!("{reference}.block.{i}.1"),
                (&layer.conv, &layer.bn),
                x,
            )
        };
        if let Some(expand) = &self.expand {
            x = push(expand, i, x);
            i += 1;
        }
        if let Some(dw) = &self.depthwise {
            x = push(dw, i, x);
            i += 1;
        }
        if self.se.is_some() {
            i += 1;
        }
        x = push(&self.project, i, x);
        x
    }
}

/// Every BatchNorm's input, in forward order, of a network laid out as torchvision's
/// EfficientNet and MobileNetV3 are: a `stem` (`features.0`), inverted residual `blocks` with
/// their reference names, and a `head_conv` (`features.{head_index}`), for images `[B, C, H, W]`.
pub(crate) fn batch_norm_inputs<'a>(
    stem: &ConvNormAct,
    blocks: impl Iterator<Item = (String, &'a InvertedResidual)>,
    head_conv: &ConvNormAct,
    head_index: usize,
    images: [usize; 4],
) -> Vec<BatchNormInput> {
    let mut out = Vec::new();
    let mut x = push_conv_bn(
        &mut out,
        "features.0.1".into(),
        (&stem.conv, &stem.bn),
        images,
    );
    for (reference, block) in blocks {
        x = block.batch_norm_inputs(&reference, x, &mut out);
    }
    let name = format!("features.{head_index}.1");
    push_conv_bn(&mut out, name, (&head_conv.conv, &head_conv.bn), x);
    out
}
