//! Training-mode BatchNorm (Ioffe and Szegedy, 2015) for Burn's flex CPU backend: batch
//! statistics, normalisation and the closed-form backward pass
//! (`dx = γ/σ · (dy - mean(dy) - x̂ · mean(dy · x̂))`) each in one parallel pass over the NCHW
//! activation, registered as a Burn backend extension with its own autodiff step.
//!
//! Why: Burn 0.22's generic `batch_norm_train` (flex does not override it) transposes the
//! activation to channels-first twice in the forward pass and twice more in the backward pass,
//! and runs a dozen separate element-wise operations; on a fine-tuning step that cost as much as
//! the convolutions' arithmetic. The semantics are Burn's [`BatchNorm`] exactly: biased batch
//! variance for normalisation and for the running-statistics update, the same momentum rule.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::BatchNorm;
use burn::tensor::{Bytes, DType, Shape, Tensor};
use rayon::prelude::*;

/// Training-mode batch normalisation on flex tensors (see the module docs).
#[backend_extension(Flex, Autodiff)]
pub(crate) trait HostBatchNorm: Backend {
    /// `x [B, C, H, W]`, `gamma`, `beta [C]` → (output, batch mean, biased batch variance).
    fn host_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// `[B, C, H·W]` of an NCHW shape.
fn dims(shape: &Shape) -> (usize, usize, usize) {
    let hw = (2..shape.num_dims()).map(|d| shape[d]).product();
    (shape[0], shape[1], hw)
}

fn dense(x: FlexTensor) -> FlexTensor {
    if x.as_slice::<f32>().is_some() {
        x
    } else {
        x.to_contiguous()
    }
}

fn f32s(x: &FlexTensor) -> &[f32] {
    x.as_slice::<f32>()
        .expect("host batch norm works on dense f32 tensors (checked before dispatch)")
}

fn tensor(data: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// `Σ f(a, b)` over the `B` planes of channel `ch` (`b` may be empty: then `f(a, 0)`), with
/// f32 partial sums per plane and an f64 total.
fn channel_sum(
    a: &[f32],
    b: &[f32],
    (n, c, hw): (usize, usize, usize),
    ch: usize,
    f: impl Fn(f32, f32) -> f32,
) -> f64 {
    let mut total = 0.0f64;
    for bb in 0..n {
        let start = (bb * c + ch) * hw;
        let xs = &a[start..start + hw];
        let part: f32 = if b.is_empty() {
            xs.iter().map(|&v| f(v, 0.0)).sum()
        } else {
            xs.iter()
                .zip(&b[start..start + hw])
                .map(|(&v, &w)| f(v, w))
                .sum()
        };
        total += part as f64;
    }
    total
}

/// Per-channel `(mean, biased variance)`, two passes.
fn statistics(x: &[f32], d: (usize, usize, usize)) -> Vec<(f32, f32)> {
    let n = (d.0 * d.2).max(1) as f64;
    (0..d.1)
        .into_par_iter()
        .map(|ch| {
            let mean = channel_sum(x, &[], d, ch, |v, _| v) / n;
            let m = mean as f32;
            let var = channel_sum(x, &[], d, ch, |v, _| (v - m) * (v - m)) / n;
            (m, var as f32)
        })
        .collect()
}

/// `out[b, c, :] = x[b, c, :] · scale[c] + shift[c]`.
fn affine(x: &[f32], c: usize, hw: usize, scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(hw.max(1))
        .zip(x.par_chunks(hw.max(1)))
        .enumerate()
        .for_each(|(q, (o, x))| {
            let (a, s) = (scale[q % c], shift[q % c]);
            for (o, &v) in o.iter_mut().zip(x) {
                *o = v * a + s;
            }
        });
    out
}

fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    d: (usize, usize, usize),
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let stats = statistics(x, d);
    let (mut scale, mut shift) = (Vec::with_capacity(d.1), Vec::with_capacity(d.1));
    for (ch, &(mean, var)) in stats.iter().enumerate() {
        let inv_std = 1.0 / (var as f64 + eps).sqrt() as f32;
        scale.push(gamma[ch] * inv_std);
        shift.push(beta[ch] - mean * gamma[ch] * inv_std);
    }
    let out = affine(x, d.1, d.2, &scale, &shift);
    let (mean, var) = stats.into_iter().unzip();
    (out, mean, var)
}

/// Gradients of the forward pass: `(dx, dgamma, dbeta)`.
fn backward(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    d: (usize, usize, usize),
    need_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let n = (d.0 * d.2).max(1) as f64;
    // dbeta = Σ dy, dgamma = Σ dy · x̂ with x̂ = (x - mean) · inv_std.
    let sums: Vec<(f32, f32)> = (0..d.1)
        .into_par_iter()
        .map(|ch| {
            let (m, s) = (mean[ch], inv_std[ch]);
            let dbeta = channel_sum(dy, &[], d, ch, |g, _| g);
            let dgamma = channel_sum(dy, x, d, ch, |g, v| g * (v - m)) * s as f64;
            (dgamma as f32, dbeta as f32)
        })
        .collect();
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = sums.iter().copied().unzip();
    let dx = need_dx.then(|| {
        let mut dx = vec![0.0f32; x.len()];
        let hw = d.2.max(1);
        dx.par_chunks_mut(hw)
            .zip(dy.par_chunks(hw).zip(x.par_chunks(hw)))
            .enumerate()
            .for_each(|(q, (dx, (dy, x)))| {
                let ch = q % d.1;
                let (m, s) = (mean[ch], inv_std[ch]);
                let k = gamma[ch] * s;
                let mean_dy = (dbeta[ch] as f64 / n) as f32;
                let mean_dy_xhat = (dgamma[ch] as f64 / n) as f32;
                for ((o, &g), &v) in dx.iter_mut().zip(dy).zip(x) {
                    *o = k * (g - mean_dy - (v - m) * s * mean_dy_xhat);
                }
            });
        dx
    });
    (dx, dgamma, dbeta)
}

impl HostBatchNorm for Flex {
    fn host_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let shape = x.shape();
        let d = dims(&shape);
        let (x, gamma, beta) = (dense(x), dense(gamma), dense(beta));
        let (out, mean, var) = forward(f32s(&x), f32s(&gamma), f32s(&beta), d, epsilon);
        (
            tensor(out, shape),
            tensor(mean, Shape::from(vec![d.1])),
            tensor(var, Shape::from(vec![d.1])),
        )
    }
}

#[derive(Debug)]
struct HostBatchNormBackward;

impl Backward<Flex, 3> for HostBatchNormBackward {
    /// Input, gamma, batch mean, batch 1/σ.
    type State = (FlexTensor, FlexTensor, Vec<f32>, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = dense(grads.consume::<Flex>(&ops.node));
        let (x, gamma, mean, inv_std) = ops.state;
        let shape = x.shape();
        let d = dims(&shape);
        let (dx, dgamma, dbeta) = backward(
            f32s(&x),
            f32s(&grad),
            f32s(&gamma),
            &mean,
            &inv_std,
            d,
            node_x.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, tensor(dx, shape));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, tensor(dgamma, Shape::from(vec![d.1])));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, tensor(dbeta, Shape::from(vec![d.1])));
        }
    }
}

impl<C: CheckpointStrategy> HostBatchNorm for Autodiff<Flex, C> {
    fn host_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let prep = HostBatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (x, gamma) = (dense(x.into_primitive()), dense(gamma.into_primitive()));
        let (out, mean, var) =
            Flex::host_batch_norm_train(x.clone(), gamma.clone(), beta.into_primitive(), epsilon);
        let output = match prep {
            OpsKind::Tracked(prep) => {
                let inv_std = f32s(&var)
                    .iter()
                    .map(|&v| 1.0 / (v as f64 + epsilon).sqrt() as f32)
                    .collect();
                let state = (x, gamma, f32s(&mean).to_vec(), inv_std);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        (
            output,
            FloatTensor::<Self>::new(mean),
            FloatTensor::<Self>::new(var),
        )
    }
}

/// Burn's [`BatchNorm`] training forward pass (batch statistics, running statistics updated
/// with the module's momentum) computed by the host kernels; `x` must be an f32 tensor on the
/// flex autodiff device.
pub(crate) fn batch_norm_train(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    let (out, mean, var) = <Dispatch as HostBatchNorm>::host_batch_norm_train(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
    );
    let (mean, var) = (
        Tensor::<1>::from_dispatch(mean),
        Tensor::<1>::from_dispatch(var),
    );
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    let running_mean = running_mean
        .mul_scalar(1.0 - bn.momentum)
        .add(mean.detach().mul_scalar(bn.momentum));
    let running_var = running_var
        .mul_scalar(1.0 - bn.momentum)
        .add(var.detach().mul_scalar(bn.momentum));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    Tensor::from_dispatch(out)
}

/// Whether [`batch_norm_train`] handles this input and layer.
pub(crate) fn supported(bn: &BatchNorm, x: &Tensor<4>) -> bool {
    x.dtype() == DType::F32 && bn.gamma.val().dtype() == DType::F32
}
