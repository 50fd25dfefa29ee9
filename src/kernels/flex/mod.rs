//! Kernels for Burn's flex CPU backend (feature `flex`: the kernels' only module-level gate; the
//! dispatchers' calls into it carry their own `cfg`, with Burn's operations as the fallback),
//! each registered as a Burn backend extension with its own autodiff step where it has a
//! backward pass:
//!
//! - `conv.rs`: training convolution, NCHW im2col + one GEMM per chunk of images, hand-written
//!   backward pass ([`conv::FlexConv2d`]).
//! - `norm.rs`: training-mode BatchNorm with fused ReLU and residual addition
//!   ([`norm::FlexBatchNorm`]).
//! - `pool.rs`: max pooling with PyTorch's semantics ([`pool::FlexMaxPool2d`]).
//! - `sgd.rs`: the fused SGD step of [`FusedSgd`](crate::train::FusedSgd) ([`sgd::FlexSgd`]).
//! - `tensor.rs`: raw f32 access to flex tensors, shared by the others.

pub(super) mod conv;
pub(super) mod norm;
pub(super) mod pool;
pub(crate) mod sgd;
mod tensor;
