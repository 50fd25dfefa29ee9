//! Kernels for Burn's flex CPU backend, registered as Burn backend extensions.

pub(super) mod conv;
pub(super) mod norm;
pub(super) mod pool;
mod tensor;
