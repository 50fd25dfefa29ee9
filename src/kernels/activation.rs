//! Element-wise activations: the dispatcher the models use ([`activation`]) and its strategies,
//! the flex host kernel (`flex/activation.rs`: one pass, vectorised `exp` / `erf`, its own
//! backward) and Burn's tensor operations.

use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, hard_sigmoid, sigmoid, silu};

use super::{ConvImpl, conv_impl};

/// The activations with a host kernel (torchvision's `nn.SiLU`, `nn.Sigmoid`, `nn.Hardswish`,
/// `nn.Hardsigmoid`, `nn.GELU`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostActivation {
    /// `x * sigmoid(x)`.
    SiLU,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `x * relu6(x + 3) / 6`.
    Hardswish,
    /// `relu6(x + 3) / 6`.
    Hardsigmoid,
    /// `x * Phi(x)`, exact (with `erf`).
    Gelu,
}

/// `kind` applied element-wise to `x`: on flex (when the selected [`ConvImpl`] is `Auto` or
/// `Host`) in one vectorised pass with a one-pass backward; elsewhere with Burn's operations.
pub fn activation<const D: usize>(x: Tensor<D>, kind: HostActivation) -> Tensor<D> {
    let x = if matches!(conv_impl(), ConvImpl::Auto | ConvImpl::Host) {
        match super::flex::activation(x, kind) {
            Ok(y) => return y,
            Err(x) => x,
        }
    } else {
        x
    };
    match kind {
        HostActivation::SiLU => silu(x),
        HostActivation::Sigmoid => sigmoid(x),
        HostActivation::Hardswish => x.clone() * hard_sigmoid(x, 1.0 / 6.0, 0.5),
        HostActivation::Hardsigmoid => hard_sigmoid(x, 1.0 / 6.0, 0.5),
        HostActivation::Gelu => gelu(x),
    }
}
