//! SGD with momentum, Nesterov and L2 weight decay with `torch.optim.SGD`'s semantics (dampening
//! 0; Sutskever et al., 2013, for the Nesterov form), as a Burn [`Optimizer`]. On the flex CPU
//! device each parameter is updated in one fused, multi-threaded pass that rewrites the
//! parameter and velocity buffers in place; elsewhere the same arithmetic runs as Burn tensor
//! operations. Burn's own `Sgd` makes five separate single-threaded passes over every parameter,
//! which cost a sixth of a CIFAR fine-tuning step on two cores.

use burn::optim::{LearningRate, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{Device, Tensor};

/// The fused SGD optimizer (see the module docs). Build it through
/// [`OptimizerConfig::Sgd`](super::OptimizerConfig::Sgd).
#[derive(Clone, Debug)]
pub struct FusedSgd {
    /// Momentum factor; 0 disables momentum (no state is kept).
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
}

/// Per-parameter state of [`FusedSgd`]: the momentum buffer.
#[derive(Clone)]
pub struct FusedSgdState<const D: usize> {
    /// `v ← momentum · v + g`.
    pub velocity: Tensor<D>,
}

impl<const D: usize> RecordState for FusedSgdState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(prefix, "velocity", self.velocity.to_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        // Also reads the state of Burn's `Sgd` (`momentum.velocity`), so runs checkpointed with
        // it resume with their momentum.
        let data = src
            .take_tensor(prefix, "velocity")
            .or_else(|| src.take_tensor(&burn::optim::join_path(prefix, "momentum"), "velocity"))?;
        Some(Self {
            velocity: Tensor::from_data(data, &restore_device(device)),
        })
    }
}

/// Where a restored momentum buffer is created. Burn's `ModuleOptimizer::load_record` passes
/// `Device::default()`, which is the GPU whenever `wgpu` is compiled in: creating the tensors
/// there would start the GPU backend while resuming a CPU run (and fail on a machine without a
/// driver). The state moves to its parameter's device on the next step
/// ([`Optimizer::to_device`]), so the host device is as good a place as any.
fn restore_device(given: &Device) -> Device {
    crate::kernels::flex::device().unwrap_or_else(|| given.clone())
}

impl FusedSgd {
    /// `g + weight_decay · θ`, the L2 penalty as PyTorch (and Burn) add it.
    fn decayed<const D: usize>(&self, tensor: &Tensor<D>, grad: Tensor<D>) -> Tensor<D> {
        if self.weight_decay == 0.0 {
            grad
        } else {
            tensor.clone().mul_scalar(self.weight_decay).add(grad)
        }
    }
}

impl Optimizer for FusedSgd {
    type State<const D: usize> = FusedSgdState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let lr = lr as f32;
        if self.momentum == 0.0 {
            let grad = self.decayed(&tensor, grad);
            return (tensor - grad.mul_scalar(lr), None);
        }
        // A zero velocity makes the first step `v = g`, as in PyTorch.
        let velocity = match state {
            Some(state) => state.velocity,
            None => tensor.zeros_like(),
        };
        let (tensor, grad, velocity) = match crate::kernels::flex::sgd_step(
            (lr, self.momentum, self.weight_decay, self.nesterov),
            tensor,
            grad,
            velocity,
        ) {
            Ok((tensor, velocity)) => return (tensor, Some(FusedSgdState { velocity })),
            Err(unchanged) => unchanged,
        };
        let grad = self.decayed(&tensor, grad);
        let velocity = grad.clone().add(velocity.mul_scalar(self.momentum));
        let update = if self.nesterov {
            velocity.clone().mul_scalar(self.momentum).add(grad)
        } else {
            velocity.clone()
        };
        (
            tensor - update.mul_scalar(lr),
            Some(FusedSgdState { velocity }),
        )
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        FusedSgdState {
            velocity: state.velocity.to_device(device),
        }
    }
}
