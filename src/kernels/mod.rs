//! The kernel layer: the convolution, BatchNorm and max-pooling entry points every model layer
//! goes through, the choice of kernels behind them ([`ConvImpl`]), and this crate's hand-written
//! CPU kernels. The models need nothing from here but the default [`ConvImpl::Auto`]; the module
//! is public for benchmarks and debugging ([`set_conv_impl`] and the `*_with` functions pick a
//! strategy explicitly), and for people writing their own layers (the dispatchers [`conv2d`],
//! [`batch_norm`], [`batch_norm_relu`], [`batch_norm_add_relu`] and [`max_pool2d`] take Burn's
//! modules and run on any device).
//!
//! On Burn's flex CPU backend the training path uses this crate's host kernels
//! (`flex/conv.rs`, `flex/norm.rs`, `flex/pool.rs`: NCHW im2col + one GEMM per chunk of images
//! with hand-written backward passes, one-pass BatchNorm with fused ReLU and residual addition,
//! a one-pass max pool that records each window's winner), because Burn 0.22's flex convolution
//! runs one small GEMM per image and per 512-pixel tile, its generic BatchNorm transposes the
//! activation several times, and its max pool took ~8% of a 32x32 fine-tuning step. On
//! ndarray, `conv.rs`'s own lowering applies: im2col + matmul written with Burn tensor
//! operations (Chellapilla et al., 2006), which autodiff differentiates. On GPUs the backend's
//! own kernels stay in use.
//!
//! # What lives where
//!
//! One file per operation family, each a small dispatcher over one function per strategy:
//!
//! - `conv.rs`: [`conv2d`] / [`conv2d_with`] and the batched GEMM lowering written with Burn
//!   tensor operations.
//! - `norm.rs`: [`batch_norm`], [`batch_norm_relu`], [`batch_norm_add_relu`] (and their
//!   `*_with` forms) with PyTorch's `BatchNorm2d` semantics, including its running-statistics
//!   update.
//! - `pool.rs`: [`max_pool2d`] / [`max_pool2d_with`].
//! - `geometry.rs`: the shape of one sliding window (convolution or pooling) shared by all
//!   kernels: PyTorch's output sizes, explicit padding, which kernel taps ever see the image,
//!   and when a convolution runs as one dense layer.
//! - `gemm.rs`: the one call into the `gemm` crate (the matrix-multiply kernels Burn's flex
//!   backend uses itself).
//! - `nhwc.rs`: the NHWC inference engine for BatchNorm-folded ResNets
//!   ([`FusedResNet`](crate::model::FusedResNet) on CPU devices).
//! - `flex/` (feature `flex` only): the training kernels for Burn's flex backend, registered as
//!   Burn backend extensions with their own autodiff steps: `conv.rs`, `norm.rs`, `pool.rs`,
//!   the fused SGD step `sgd.rs` (used by [`FusedSgd`](crate::train::FusedSgd)), and
//!   `tensor.rs` (raw f32 access to flex tensors).
//!
//! # How a strategy is chosen
//!
//! Every dispatcher reads the process-wide [`ConvImpl`] ([`set_conv_impl`]; the `*_with`
//! functions take it as an argument) and the input's device:
//!
//! - `Auto`: on flex, the host kernels; on ndarray, the GEMM lowering for convolutions whose
//!   output has fewer than [`GEMM_MAX_PIXELS`] pixels per image and Burn's own operations
//!   otherwise; on GPUs, Burn's own operations.
//! - `Host`: the host kernels on flex, Burn's own operations elsewhere.
//! - `Gemm`: the GEMM lowering for every convolution (any device); Burn's own BatchNorm and
//!   max pooling.
//! - `Backend`: Burn's own operations everywhere.
//!
//! Shapes a kernel does not handle (grouped or dilated convolutions, "same" padding, non-f32
//! tensors, inference-mode BatchNorm for the host BatchNorm) fall back to Burn's own operation.
//! [`VisionModel::for_inference`](crate::model::VisionModel::for_inference) runs the folded backbone on
//! `nhwc.rs` on CPU devices under `Auto`, always under `Gemm` and `Host`, never under
//! `Backend`.

use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::Device;

mod activation;
mod conv;
pub(crate) mod flex;
mod gemm;
mod geometry;
pub(crate) mod nhwc;
mod norm;
mod pool;

pub use activation::{HostActivation, activation};
pub use conv::{conv2d, conv2d_with};
pub(crate) use geometry::{conv_output_size, pool_output_size};
pub(crate) use norm::uses_batch_statistics;
pub use norm::{
    batch_norm, batch_norm_add_relu, batch_norm_relu, batch_norm_relu_with, batch_norm_with,
};
pub use pool::{max_pool2d, max_pool2d_with};

/// Which convolution implementation the models use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvImpl {
    /// On flex: [`ConvImpl::Host`] for f32 tensors. On ndarray: the batched GEMM lowering for
    /// layers whose output has fewer than [`GEMM_MAX_PIXELS`] pixels per image (where the
    /// backend's per-image tiles are too small), the backend's convolution otherwise. Inference
    /// through [`FusedResNet`] on CPU runs on its own host GEMM path. Elsewhere (GPUs): the
    /// backend's own kernels.
    ///
    /// [`FusedResNet`]: crate::model::FusedResNet
    #[default]
    Auto,
    /// Always the backend's own convolution.
    Backend,
    /// Always the batched GEMM lowering written with Burn tensor operations (any device;
    /// autodiff differentiates it).
    Gemm,
    /// The flex-only convolution with a hand-written backward pass (NCHW im2col + one GEMM per
    /// chunk of images, forward and backward), and the flex host BatchNorm and max pool. Falls
    /// back to [`ConvImpl::Backend`] on other devices, for non-f32 tensors, and when the crate
    /// is built without the `flex` feature.
    Host,
}

/// Output pixels per image below which [`ConvImpl::Auto`] lowers a CPU convolution to one
/// batched GEMM (Burn's flex convolution tiles 512 pixels of one image per GEMM).
pub const GEMM_MAX_PIXELS: usize = 512;

static CONV_IMPL: AtomicU8 = AtomicU8::new(0);

/// Selects the convolution implementation for every model in the process (for benchmarks and
/// debugging; the default [`ConvImpl::Auto`] is the fast choice).
pub fn set_conv_impl(choice: ConvImpl) {
    let v = match choice {
        ConvImpl::Auto => 0,
        ConvImpl::Backend => 1,
        ConvImpl::Gemm => 2,
        ConvImpl::Host => 3,
    };
    CONV_IMPL.store(v, Ordering::Relaxed);
}

/// The implementation selected by [`set_conv_impl`].
pub fn conv_impl() -> ConvImpl {
    match CONV_IMPL.load(Ordering::Relaxed) {
        1 => ConvImpl::Backend,
        2 => ConvImpl::Gemm,
        3 => ConvImpl::Host,
        _ => ConvImpl::Auto,
    }
}

/// Whether `device` is a CPU device (flex or ndarray, with or without autodiff).
pub(crate) fn is_cpu(device: &Device) -> bool {
    #[allow(unused_mut)]
    let mut cpu = flex::is_flex(device);
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    {
        cpu |= *device == Device::ndarray();
    }
    let _ = device;
    cpu
}
