//! The kernel layer: the convolution, BatchNorm and max-pooling entry points every model layer
//! goes through and the CPU kernels behind them (for benchmarks and debugging).

pub(crate) mod conv;
#[cfg(feature = "flex")]
mod flex;
mod gemm;
pub(crate) mod nhwc;

pub use conv::{
    ConvImpl, GEMM_MAX_PIXELS, batch_norm, batch_norm_add_relu, batch_norm_relu,
    batch_norm_relu_with, batch_norm_with, conv_impl, conv2d, conv2d_with, max_pool2d,
    max_pool2d_with, set_conv_impl,
};
