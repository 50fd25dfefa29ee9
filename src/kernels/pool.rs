//! Max pooling: the dispatcher the models use ([`max_pool2d`]) and its strategies, the flex host
//! kernel (`flex/pool.rs`) and Burn's [`MaxPool2d::forward`].

use burn::nn::pool::MaxPool2d;
use burn::tensor::Tensor;

use super::{ConvImpl, conv_impl};

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
    if matches!(choice, ConvImpl::Auto | ConvImpl::Host)
        && pool.dilation == [1, 1]
        && !pool.ceil_mode
        && let Some(padding @ [top, left, bottom, right]) =
            super::geometry::explicit_padding(&pool.padding)
    {
        let [_, _, h, w] = x.dims();
        let [kh, kw] = pool.kernel_size;
        let [sh, sw] = pool.stride;
        // Shapes Burn's own kernel would reject fall through to it, with its error.
        if kh > 0 && kw > 0 && sh > 0 && sw > 0 && h + top + bottom >= kh && w + left + right >= kw
        {
            return match super::flex::max_pool2d(x, pool.kernel_size, pool.stride, padding) {
                Ok(out) => out,
                Err(x) => pool.forward(x),
            };
        }
    }
    pool.forward(x)
}
