//! The convolution, BatchNorm and max-pooling entry points every model layer goes through, and
//! the choice of kernels behind them ([`ConvImpl`]).
//!
//! On Burn's flex CPU backend the training path uses this crate's host kernels
//! (`host_conv.rs`, `host_norm.rs`, `host_pool.rs`: NCHW im2col + one GEMM per chunk of images
//! with hand-written backward passes, one-pass BatchNorm with fused ReLU and residual addition,
//! a one-pass max pool that records each window's winner), because Burn 0.22's flex convolution
//! runs one small GEMM per image and per 512-pixel tile, its generic BatchNorm transposes the
//! activation several times, and its max pool took ~8% of a 32x32 fine-tuning step. On
//! ndarray, this file's own lowering applies: im2col + matmul written with Burn tensor
//! operations (Chellapilla et al., 2006), which autodiff differentiates. On GPUs the backend's
//! own kernels stay in use.

use std::sync::atomic::{AtomicU8, Ordering};

use burn::nn::BatchNorm;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Slice, Tensor};

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

/// Whether `device` is the flex CPU device (with or without autodiff).
fn is_flex(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        *device == Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

pub(crate) fn is_cpu(device: &Device) -> bool {
    #[allow(unused_mut)]
    let mut cpu = false;
    #[cfg(feature = "flex")]
    {
        cpu |= *device == Device::flex();
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    {
        cpu |= *device == Device::ndarray();
    }
    let _ = device;
    cpu
}

/// Applies `conv` to `x` `[B, Cin, H, W]` with the selected implementation (what the models
/// use for every convolution).
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    conv2d_with(conv, x, conv_impl())
}

/// [`conv2d`] with an explicit implementation choice.
pub fn conv2d_with(conv: &Conv2d, x: Tensor<4>, choice: ConvImpl) -> Tensor<4> {
    let simple = conv.groups == 1 && conv.dilation == [1, 1];
    let padding = explicit_padding(&conv.padding).filter(|_| simple);
    let host = matches!(choice, ConvImpl::Auto | ConvImpl::Host) && is_flex(&x.device());
    #[cfg(feature = "flex")]
    if host
        && let Some(padding) = padding
        && super::flex::conv::supported(&x, &conv.weight.val())
    {
        let out = super::flex::conv::conv2d_host(x, conv.weight.val(), conv.stride, padding);
        return match &conv.bias {
            Some(bias) => {
                let c_out = bias.dims()[0];
                out + bias.val().reshape([1, c_out, 1, 1])
            }
            None => out,
        };
    }
    let gemm = match choice {
        ConvImpl::Backend | ConvImpl::Host => false,
        ConvImpl::Gemm => true,
        ConvImpl::Auto => {
            let [_, _, h, w] = x.dims();
            let [sh, sw] = conv.stride;
            !host
                && h.div_ceil(sh.max(1)) * w.div_ceil(sw.max(1)) < GEMM_MAX_PIXELS
                && is_cpu(&x.device())
        }
    };
    if gemm && let Some(padding) = padding {
        return conv2d_gemm(conv, x, padding);
    }
    conv.forward(x)
}

/// Applies `bn` to `x` `[B, C, H, W]`, what the models use for every BatchNorm, with
/// PyTorch's `BatchNorm2d` semantics.
///
/// In training (a layer whose training flag is on, on an autodiff device) the output is
/// normalised with the batch mean and the **biased** batch variance, and the running statistics
/// are updated with the module's momentum from the batch mean and the **unbiased** batch
/// variance (`n / (n - 1)` times the biased one, `n = B·H·W` values per channel), as
/// `torch.nn.BatchNorm2d` does. Burn's own [`BatchNorm::forward`] feeds the biased variance to
/// the running variance (14-33% too small after one step at batch 4-8 on 32x32 images), so it
/// is only used for inference here. With one value per channel (`n = 1`), where PyTorch refuses
/// ("Expected more than 1 value per channel when training"), the running variance is left
/// unchanged; [`ResNet::check_training_batch`](crate::model::ResNet::check_training_batch) turns that
/// case into an error before any kernel runs.
///
/// Kernels: on flex (when the selected [`ConvImpl`] is `Auto` or `Host`) host kernels that
/// compute the batch statistics and the backward pass in one pass each; elsewhere (ndarray,
/// wgpu, `Backend`/`Gemm`) Burn's `batch_norm_train` operation.
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    batch_norm_with(bn, x, conv_impl())
}

/// [`batch_norm`] with an explicit kernel choice (`Backend` and `Gemm` mean Burn's own).
pub fn batch_norm_with(bn: &BatchNorm, x: Tensor<4>, choice: ConvImpl) -> Tensor<4> {
    if host_norm(bn, &x, choice) {
        #[cfg(feature = "flex")]
        return super::flex::norm::batch_norm_train(bn, x, None, false);
    }
    batch_norm_backend(bn, x)
}

/// `relu(batch_norm(bn, x))`, fused into one host operation where [`batch_norm`] uses the host
/// kernels.
pub fn batch_norm_relu(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    batch_norm_relu_with(bn, x, None, conv_impl())
}

/// `relu(batch_norm(bn, x) + residual)` (the end of a residual block), fused where
/// [`batch_norm`] uses the host kernels.
pub fn batch_norm_add_relu(bn: &BatchNorm, x: Tensor<4>, residual: Tensor<4>) -> Tensor<4> {
    batch_norm_relu_with(bn, x, Some(residual), conv_impl())
}

/// `relu(batch_norm(bn, x) (+ residual))` with an explicit kernel choice.
pub fn batch_norm_relu_with(
    bn: &BatchNorm,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    choice: ConvImpl,
) -> Tensor<4> {
    if host_norm(bn, &x, choice)
        && residual
            .as_ref()
            .is_none_or(|r| r.dims() == x.dims() && r.dtype() == x.dtype())
    {
        #[cfg(feature = "flex")]
        return super::flex::norm::batch_norm_train(bn, x, residual, true);
    }
    let out = batch_norm_backend(bn, x);
    relu(match residual {
        Some(r) => out + r,
        None => out,
    })
}

/// [`batch_norm`] with the backend's own operations: Burn's `batch_norm_train` in training
/// (followed by PyTorch's running-statistics update), [`BatchNorm::forward`] (running
/// statistics) otherwise.
fn batch_norm_backend(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if !uses_batch_statistics(bn, &x.device()) {
        return bn.forward(x);
    }
    let [b, _, h, w] = x.dims();
    let out = burn::tensor::module::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon);
    update_running_statistics(bn, out.mean, out.variance, b * h * w);
    out.output
}

/// Whether `bn` normalises with batch statistics (and updates its running statistics) on
/// `device`: its training flag is on and the device records gradients, as in Burn's
/// [`BatchNorm::forward`].
pub(crate) fn uses_batch_statistics(bn: &BatchNorm, device: &Device) -> bool {
    bn.training.is_enabled() && device.is_autodiff()
}

/// PyTorch's running-statistics update after a training-mode forward over `values` values per
/// channel: `running_mean ← (1 - m)·running_mean + m·mean` and
/// `running_var ← (1 - m)·running_var + m·var·values/(values - 1)` (the unbiased batch
/// variance, from the biased `var` that normalised the batch), `m` the module's momentum. With
/// a single value per channel the unbiased variance is undefined and the running variance is
/// left unchanged.
pub(crate) fn update_running_statistics(
    bn: &BatchNorm,
    mean: Tensor<1>,
    biased_var: Tensor<1>,
    values: usize,
) {
    let device = mean.device();
    let m = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_mean = running_mean
        .mul_scalar(1.0 - m)
        .add(mean.detach().mul_scalar(m));
    bn.running_mean.update(running_mean.detach());
    if values > 1 {
        let unbiased = biased_var
            .detach()
            .mul_scalar(values as f64 / (values - 1) as f64);
        let running_var = bn.running_var.value_sync().to_device(&device);
        let running_var = running_var.mul_scalar(1.0 - m).add(unbiased.mul_scalar(m));
        bn.running_var.update(running_var.detach());
    }
}

/// `[H, W]` of `conv`'s output for `[H, W]` input maps (0 where the kernel does not fit).
pub(crate) fn conv_output_size(conv: &Conv2d, hw: [usize; 2]) -> [usize; 2] {
    window_output_size(
        hw,
        (conv.kernel_size, conv.stride, conv.dilation),
        &conv.padding,
        false,
    )
}

/// `[H, W]` of `pool`'s output for `[H, W]` input maps (0 where the window does not fit).
pub(crate) fn pool_output_size(pool: &MaxPool2d, hw: [usize; 2]) -> [usize; 2] {
    window_output_size(
        hw,
        (pool.kernel_size, pool.stride, pool.dilation),
        &pool.padding,
        pool.ceil_mode,
    )
}

/// PyTorch's output size of a sliding window: `⌊(H + pads - d·(k - 1) - 1) / s⌋ + 1`
/// (`⌈·⌉` with `ceil_mode`); `⌈H / s⌉` for "same" padding.
fn window_output_size(
    hw: [usize; 2],
    (kernel, stride, dilation): ([usize; 2], [usize; 2], [usize; 2]),
    padding: &PaddingConfig2d,
    ceil_mode: bool,
) -> [usize; 2] {
    let pads = explicit_padding(padding);
    std::array::from_fn(|i| {
        let s = stride[i].max(1);
        let Some(p) = pads else {
            return hw[i].div_ceil(s);
        };
        let padded = hw[i] + p[i] + p[i + 2];
        let span = dilation[i] * kernel[i].saturating_sub(1) + 1;
        match padded.checked_sub(span) {
            Some(room) if ceil_mode => room.div_ceil(s) + 1,
            Some(room) => room / s + 1,
            None => 0,
        }
    })
}

/// Applies `pool` to `x`, what the models use for max pooling: on flex (when the selected
/// [`ConvImpl`] is `Auto` or `Host`) with a host kernel that records each window's winner in
/// one pass and scatters the gradient back in another (PyTorch's semantics: padding never
/// wins, NaN propagates, the first maximum gets the gradient); elsewhere
/// [`MaxPool2d::forward`].
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    max_pool2d_with(pool, x, conv_impl())
}

/// [`max_pool2d`] with an explicit kernel choice (`Backend` and `Gemm` mean Burn's own).
pub fn max_pool2d_with(pool: &MaxPool2d, x: Tensor<4>, choice: ConvImpl) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if matches!(choice, ConvImpl::Auto | ConvImpl::Host)
        && is_flex(&x.device())
        && super::flex::pool::supported(&x)
        && pool.dilation == [1, 1]
        && !pool.ceil_mode
        && let Some(padding @ [top, left, bottom, right]) = explicit_padding(&pool.padding)
    {
        let [_, _, h, w] = x.dims();
        let [kh, kw] = pool.kernel_size;
        let [sh, sw] = pool.stride;
        // Shapes Burn's own kernel would reject fall through to it, with its error.
        if kh > 0 && kw > 0 && sh > 0 && sw > 0 && h + top + bottom >= kh && w + left + right >= kw
        {
            return super::flex::pool::max_pool2d_host(x, pool.kernel_size, pool.stride, padding);
        }
    }
    let _ = choice;
    pool.forward(x)
}

/// Whether the host BatchNorm kernels apply: training-mode layer on the flex autodiff device.
fn host_norm(bn: &BatchNorm, x: &Tensor<4>, choice: ConvImpl) -> bool {
    #[cfg(feature = "flex")]
    {
        matches!(choice, ConvImpl::Auto | ConvImpl::Host)
            && bn.training.is_enabled()
            && x.device().is_autodiff()
            && is_flex(&x.device())
            && super::flex::norm::supported(bn, x)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (bn, x, choice);
        false
    }
}

/// `(top, left, bottom, right)` for explicit or valid padding.
fn explicit_padding(padding: &PaddingConfig2d) -> Option<[usize; 4]> {
    match *padding {
        PaddingConfig2d::Explicit(t, l, b, r) => Some([t, l, b, r]),
        PaddingConfig2d::Valid => Some([0, 0, 0, 0]),
        _ => None,
    }
}

/// The strided window `[start, start + (n - 1) * step]` of one dimension.
fn window(start: usize, n: usize, step: usize) -> Slice {
    Slice::new(
        start as isize,
        Some((start + (n - 1) * step + 1) as isize),
        step as isize,
    )
}

/// im2col + one GEMM: `W[Cout, Cin·kh·kw] x cols[Cin·kh·kw, B·Ho·Wo]`.
fn conv2d_gemm(conv: &Conv2d, x: Tensor<4>, [top, left, bottom, right]: [usize; 4]) -> Tensor<4> {
    let weight = conv.weight.val();
    let [c_out, c_in, kh, kw] = weight.dims();
    let [b, _, h, w] = x.dims();
    let [sh, sw] = conv.stride;
    let (hp, wp) = (h + top + bottom, w + left + right);
    let ho = (hp - kh) / sh + 1;
    let wo = (wp - kw) / sw + 1;
    let all = Slice::new(0, None, 1);

    let cols: Tensor<2> = if kh == 1 && kw == 1 && top + left + bottom + right == 0 {
        // 1x1: subsample, then channels first.
        let x = if sh == 1 && sw == 1 {
            x
        } else {
            x.slice([all, all, window(0, ho, sh), window(0, wo, sw)])
        };
        x.swap_dims(0, 1).reshape([c_in, b * ho * wo])
    } else {
        let x = if top + left + bottom + right > 0 {
            x.pad([(0, 0), (0, 0), (top, bottom), (left, right)], 0.0)
        } else {
            x
        };
        let mut taps = Vec::with_capacity(kh * kw);
        for i in 0..kh {
            for j in 0..kw {
                taps.push(
                    x.clone()
                        .slice([all, all, window(i, ho, sh), window(j, wo, sw)]),
                );
            }
        }
        // [B, Cin, kh·kw, Ho, Wo] -> [Cin, kh·kw, B, Ho, Wo] -> [Cin·kh·kw, B·Ho·Wo]
        Tensor::stack::<5>(taps, 2)
            .permute([1, 2, 0, 3, 4])
            .reshape([c_in * kh * kw, b * ho * wo])
    };
    let out = weight.reshape([c_out, c_in * kh * kw]).matmul(cols);
    let mut out = out.reshape([c_out, b, ho, wo]).swap_dims(0, 1);
    if let Some(bias) = &conv.bias {
        out = out + bias.val().reshape([1, c_out, 1, 1]);
    }
    out
}
