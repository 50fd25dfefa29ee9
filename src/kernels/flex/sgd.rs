//! The fused SGD step of [`FusedSgd`](crate::train::FusedSgd) on flex tensors (`torch.optim.SGD`'s
//! update with momentum, Nesterov and L2 weight decay, dampening 0), as a Burn backend
//! extension: one multi-threaded pass that rewrites the parameter and velocity buffers in place.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Device, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 1 << 15;

/// The fused SGD step on flex tensors (see the module docs).
#[backend_extension(Flex)]
pub(crate) trait FlexSgd: Backend {
    /// `(param, velocity)` after one step.
    #[allow(clippy::too_many_arguments)]
    fn host_sgd_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        nesterov: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// `t` with a dense, uniquely owned buffer (copied only when shared or strided).
fn owned(mut t: FlexTensor) -> FlexTensor {
    let dense = t.is_contiguous() && t.layout().start_offset() == 0;
    if dense && t.try_storage_mut::<f32>().is_some() {
        t
    } else {
        FlexTensor::from_data(t.into_data())
    }
}

impl FlexSgd for Flex {
    fn host_sgd_step(
        param: FlexTensor,
        grad: FlexTensor,
        velocity: FlexTensor,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        nesterov: bool,
    ) -> (FlexTensor, FlexTensor) {
        let (mut param, mut velocity) = (owned(param), owned(velocity));
        let grad = if grad.as_slice::<f32>().is_some() {
            grad
        } else {
            grad.to_contiguous()
        };
        let g = grad
            .as_slice::<f32>()
            .expect("host SGD: dense f32 gradient (checked before dispatch)");
        let n = g.len();
        {
            let p = &mut param.storage_mut::<f32>()[..n];
            let v = &mut velocity.storage_mut::<f32>()[..n];
            p.par_chunks_mut(CHUNK)
                .zip(v.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|((p, v), g)| {
                    for ((p, v), &g) in p.iter_mut().zip(v.iter_mut()).zip(g) {
                        let g = if weight_decay != 0.0 {
                            *p * weight_decay + g
                        } else {
                            g
                        };
                        *v = g + *v * momentum;
                        let update = if nesterov { *v * momentum + g } else { *v };
                        *p -= update * lr;
                    }
                });
        }
        (param, velocity)
    }
}

fn is_flex(device: &Device) -> bool {
    *device == Device::flex() && !device.is_autodiff()
}

/// The fused step with `(lr, momentum, weight_decay, nesterov)`, when all three tensors are f32
/// on the flex device with one shape; otherwise the tensors back, untouched.
#[allow(clippy::type_complexity, clippy::result_large_err)]
pub(crate) fn step<const D: usize>(
    (lr, momentum, weight_decay, nesterov): (f32, f32, f32, bool),
    tensor: Tensor<D>,
    grad: Tensor<D>,
    velocity: Tensor<D>,
) -> Result<(Tensor<D>, Tensor<D>), (Tensor<D>, Tensor<D>, Tensor<D>)> {
    let ok = [&tensor, &grad, &velocity]
        .iter()
        .all(|t| t.dtype() == DType::F32 && is_flex(&t.device()))
        && tensor.shape() == grad.shape()
        && tensor.shape() == velocity.shape();
    if !ok {
        return Err((tensor, grad, velocity));
    }
    let (p, v) = <Dispatch as FlexSgd>::host_sgd_step(
        tensor.into_dispatch(),
        grad.into_dispatch(),
        velocity.into_dispatch(),
        lr,
        momentum,
        weight_decay,
        nesterov,
    );
    Ok((Tensor::from_dispatch(p), Tensor::from_dispatch(v)))
}
