//! Kernels for Burn's flex CPU backend, each registered as a Burn backend extension with its own
//! autodiff step where it has a backward pass. This file is the crate's one `flex` feature
//! gate: the kernel files below compile only with the feature, and the functions here are the
//! dispatchers' only way in — each returns its input back (`Err`) when the kernel does not
//! apply (another device, dtype or shape, or a build without `flex`), and the dispatcher falls
//! back to Burn's own operation.
//!
//! - `activation.rs`: SiLU, sigmoid, hard-swish, hard-sigmoid and exact GELU in one pass each
//!   (vectorised `exp` / `erf`), with their backward pass ([`activation::FlexActivation`]).
//! - `conv.rs`: training convolution, NCHW im2col + one GEMM per chunk of images, hand-written
//!   backward pass ([`conv::FlexConv2d`]).
//! - `depthwise.rs`: depthwise convolution (one filter per channel), padded phased planes and
//!   4x8 register tiles, hand-written backward pass ([`depthwise::FlexDepthwiseConv2d`]).
//! - `norm.rs`: training-mode BatchNorm with fused ReLU and residual addition
//!   ([`norm::FlexBatchNorm`]).
//! - `pool.rs`: max pooling with PyTorch's semantics ([`pool::FlexMaxPool2d`]).
//! - `sgd.rs`: the fused SGD step of [`FusedSgd`](crate::train::FusedSgd) ([`sgd::FlexSgd`]).
//! - `tensor.rs`: raw f32 access to flex tensors, shared by the others.

#[cfg(feature = "flex")]
pub(super) mod activation;
#[cfg(feature = "flex")]
pub(super) mod conv;
#[cfg(feature = "flex")]
pub(super) mod depthwise;
#[cfg(feature = "flex")]
pub(super) mod norm;
#[cfg(feature = "flex")]
pub(super) mod pool;
#[cfg(feature = "flex")]
mod sgd;
#[cfg(feature = "flex")]
mod tensor;

use burn::nn::BatchNorm;
use burn::tensor::{Device, Tensor};

/// Whether `device` is the flex CPU device (with or without autodiff); always false in a build
/// without the `flex` feature.
pub(crate) fn is_flex(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    return *device == Device::flex();
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// The flex CPU device (without autodiff), when the build has it.
pub(crate) fn device() -> Option<Device> {
    #[cfg(feature = "flex")]
    return Some(Device::flex());
    #[cfg(not(feature = "flex"))]
    None
}

/// The training convolution of `x [B, C, H, W]` with `weight [O, C, kh, kw]` (no bias) on the
/// flex device, `[top, left, bottom, right]` padding; `Err(x)` when it does not apply.
#[allow(clippy::result_large_err)]
pub(super) fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    stride: [usize; 2],
    padding: [usize; 4],
) -> Result<Tensor<4>, Tensor<4>> {
    #[cfg(feature = "flex")]
    if is_flex(&x.device()) && conv::supported(&x, &weight) {
        return Ok(conv::conv2d_host(x, weight, stride, padding));
    }
    let _ = (weight, stride, padding);
    Err(x)
}

/// The depthwise convolution of `x [B, C, H, W]` with `weight [C, 1, kh, kw]` (no bias,
/// `C` groups) on the flex device, `[top, left, bottom, right]` padding; `Err(x)` when it does
/// not apply.
#[allow(clippy::result_large_err)]
pub(super) fn depthwise_conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    stride: [usize; 2],
    padding: [usize; 4],
) -> Result<Tensor<4>, Tensor<4>> {
    #[cfg(feature = "flex")]
    if is_flex(&x.device()) && depthwise::supported(&x, &weight, stride, padding) {
        return Ok(depthwise::depthwise_conv2d_host(x, weight, stride, padding));
    }
    let _ = (weight, stride, padding);
    Err(x)
}

/// The element-wise activation `kind` of `x` on the flex device; `Err(x)` when it does not
/// apply.
#[allow(clippy::result_large_err)]
pub(super) fn activation<const D: usize>(
    x: Tensor<D>,
    kind: super::activation::HostActivation,
) -> Result<Tensor<D>, Tensor<D>> {
    #[cfg(feature = "flex")]
    if is_flex(&x.device()) && activation::supported(&x) {
        use super::activation::HostActivation as H;
        let kind = match kind {
            H::SiLU => activation::Kind::SiLU,
            H::Sigmoid => activation::Kind::Sigmoid,
            H::Hardswish => activation::Kind::Hardswish,
            H::Hardsigmoid => activation::Kind::Hardsigmoid,
            H::Gelu => activation::Kind::Gelu,
        };
        return Ok(activation::activation_host(x, kind));
    }
    let _ = kind;
    Err(x)
}

/// Whether the training-mode BatchNorm kernel handles `x` through `bn` (f32 on the flex
/// autodiff device).
pub(super) fn batch_norm_supported(bn: &BatchNorm, x: &Tensor<4>) -> bool {
    #[cfg(feature = "flex")]
    return x.device().is_autodiff() && is_flex(&x.device()) && norm::supported(bn, x);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (bn, x);
        false
    }
}

/// Training-mode BatchNorm of `x` with batch statistics (running statistics updated),
/// optionally followed by `relu(· + residual)` or `relu(·)`; `Err` gives the inputs back when
/// [`batch_norm_supported`] does not hold.
#[allow(clippy::type_complexity, clippy::result_large_err)]
pub(super) fn batch_norm(
    bn: &BatchNorm,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    relu: bool,
) -> Result<Tensor<4>, (Tensor<4>, Option<Tensor<4>>)> {
    #[cfg(feature = "flex")]
    if batch_norm_supported(bn, &x) {
        return Ok(norm::batch_norm_train(bn, x, residual, relu));
    }
    let _ = (bn, relu);
    Err((x, residual))
}

/// Max pooling of `x [B, C, H, W]` with PyTorch's semantics on the flex device; `Err(x)` when
/// it does not apply.
#[allow(clippy::result_large_err)]
pub(super) fn max_pool2d(
    x: Tensor<4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 4],
) -> Result<Tensor<4>, Tensor<4>> {
    #[cfg(feature = "flex")]
    if is_flex(&x.device()) && pool::supported(&x) {
        return Ok(pool::max_pool2d_host(x, kernel, stride, padding));
    }
    let _ = (kernel, stride, padding);
    Err(x)
}

/// The fused SGD step with `(lr, momentum, weight_decay, nesterov)` when all three tensors are
/// f32 on the flex device with one shape: `(parameter, velocity)`; otherwise the tensors back.
#[allow(clippy::type_complexity, clippy::result_large_err)]
pub(crate) fn sgd_step<const D: usize>(
    hyper: (f32, f32, f32, bool),
    tensor: Tensor<D>,
    grad: Tensor<D>,
    velocity: Tensor<D>,
) -> Result<(Tensor<D>, Tensor<D>), (Tensor<D>, Tensor<D>, Tensor<D>)> {
    #[cfg(feature = "flex")]
    return sgd::step(hyper, tensor, grad, velocity);
    #[cfg(not(feature = "flex"))]
    {
        let _ = hyper;
        Err((tensor, grad, velocity))
    }
}
