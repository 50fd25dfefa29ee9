//! Convolution: the dispatcher every model convolution goes through ([`conv2d`]) and its
//! strategies: the flex host kernels (`flex/conv.rs`, and `flex/depthwise.rs` for depthwise
//! convolutions), the batched GEMM lowering written with
//! Burn tensor operations ([`conv2d_gemm`], any device; autodiff differentiates it), and the
//! backend's own convolution.

use burn::nn::conv::Conv2d;
use burn::tensor::{Slice, Tensor};

use super::flex::is_flex;
use super::geometry::{explicit_padding, out_len};
use super::{ConvImpl, GEMM_MAX_PIXELS, conv_impl, is_cpu};

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
    let mut x = x;
    let [_, c_in, _, _] = x.dims();
    let depthwise = conv.groups > 1
        && conv.groups == c_in
        && conv.dilation == [1, 1]
        && conv.weight.shape()[0] == c_in;
    if host
        && depthwise
        && let Some(padding) = explicit_padding(&conv.padding)
    {
        match super::flex::depthwise_conv2d(x, conv.weight.val(), conv.stride, padding) {
            Ok(out) => return add_bias(conv, out),
            Err(unchanged) => x = unchanged,
        }
    }
    if host && let Some(padding) = padding {
        match super::flex::conv2d(x, conv.weight.val(), conv.stride, padding) {
            Ok(out) => return add_bias(conv, out),
            Err(unchanged) => x = unchanged,
        }
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

/// `out` plus `conv`'s bias, if it has one, broadcast over `[B, C_out, H, W]`.
fn add_bias(conv: &Conv2d, out: Tensor<4>) -> Tensor<4> {
    match &conv.bias {
        Some(bias) => {
            let c_out = bias.dims()[0];
            out + bias.val().reshape([1, c_out, 1, 1])
        }
        None => out,
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
    let (ho, wo) = (
        out_len(h, top + bottom, kh, sh),
        out_len(w, left + right, kw, sw),
    );
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
