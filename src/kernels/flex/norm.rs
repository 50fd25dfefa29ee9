//! Training-mode BatchNorm (Ioffe and Szegedy, 2015) for Burn's flex CPU backend: batch
//! statistics, normalisation and the closed-form backward pass
//! (`dx = γ/σ · (dy - mean(dy) - x̂ · mean(dy · x̂))`) in a few parallel, vectorised passes over
//! the NCHW activation (the ReLU that follows is applied, and its gradient mask read, inside
//! them), registered as a Burn backend extension with its own autodiff step.
//!
//! Why: Burn 0.22's generic `batch_norm_train` (flex does not override it) transposes the
//! activation to channels-first twice in the forward pass and twice more in the backward pass,
//! and runs a dozen separate element-wise operations; on a fine-tuning step that cost as much as
//! the convolutions' arithmetic. The semantics are PyTorch's `BatchNorm2d`: the biased batch
//! variance normalises, and the running variance is updated with the unbiased one
//! (`n / (n - 1)`, `n = B·H·W`; see
//! [`update_running_statistics`](super::super::norm::update_running_statistics)).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::BatchNorm;
use burn::tensor::{DType, Shape, Tensor};
use rayon::prelude::*;

use super::tensor::{dense, f32s, par_build, tensor};

/// Training-mode batch normalisation on flex tensors (see the module docs).
#[backend_extension(Flex, Autodiff)]
pub(crate) trait FlexBatchNorm: Backend {
    /// `x [B, C, H, W]`, `gamma`, `beta [C]` → (output, batch mean, biased batch variance);
    /// with `relu`, the output is `max(0, bn(x))`.
    fn host_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// [`host_batch_norm_train`](FlexBatchNorm::host_batch_norm_train) with the output
    /// `max(0, bn(x) + residual)` (the end of a residual block).
    fn host_batch_norm_add_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// `[B, C, H·W]` of an NCHW shape.
fn dims(shape: &Shape) -> (usize, usize, usize) {
    let hw = (2..shape.num_dims()).map(|d| shape[d]).product();
    (shape[0], shape[1], hw)
}

/// Partial sums per SIMD lane: f32 addition is not associative, so a plain `.sum()` stays
/// scalar; 16 independent accumulators let the loop vectorise.
const LANES: usize = 16;

/// `(Σ f(a, b, c).0, Σ f(a, b, c).1)` over three slices of equal length, vectorised.
#[inline(always)]
fn sums2(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> (f32, f32)) -> (f32, f32) {
    debug_assert!(a.len() == b.len() && a.len() == c.len());
    let (mut s0, mut s1) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (ac, bc, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let (mut t0, mut t1) = (0.0f32, 0.0f32);
    for ((&x, &y), &z) in ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .zip(cc.remainder())
    {
        let (u, v) = f(x, y, z);
        t0 += u;
        t1 += v;
    }
    for ((a, b), c) in ac.zip(bc).zip(cc) {
        for l in 0..LANES {
            let (u, v) = f(a[l], b[l], c[l]);
            s0[l] += u;
            s1[l] += v;
        }
    }
    (t0 + s0.iter().sum::<f32>(), t1 + s1.iter().sum::<f32>())
}

/// `(Σ f(a, b, c).0, Σ f(a, b, c).1)` over the `B` planes of channel `ch`, with f32 partial
/// sums per plane and f64 totals (`b` and `c` may be empty: `a` stands in for them).
fn channel_sums(
    (a, b, c): (&[f32], &[f32], &[f32]),
    (n, channels, hw): (usize, usize, usize),
    ch: usize,
    f: impl Fn(f32, f32, f32) -> (f32, f32) + Copy,
) -> (f64, f64) {
    let (mut t0, mut t1) = (0.0f64, 0.0f64);
    for bb in 0..n {
        let start = (bb * channels + ch) * hw;
        let pa = &a[start..start + hw];
        let pb = if b.is_empty() {
            pa
        } else {
            &b[start..start + hw]
        };
        let pc = if c.is_empty() {
            pa
        } else {
            &c[start..start + hw]
        };
        let (u, v) = sums2(pa, pb, pc, f);
        t0 += u as f64;
        t1 += v as f64;
    }
    (t0, t1)
}

/// Per-channel `(mean, biased variance)`, two passes (the second one mostly from cache).
fn statistics(x: &[f32], d: (usize, usize, usize)) -> Vec<(f32, f32)> {
    let n = (d.0 * d.2).max(1) as f64;
    (0..d.1)
        .into_par_iter()
        .map(|ch| {
            let mean = channel_sums((x, &[], &[]), d, ch, |v, _, _| (v, 0.0)).0 / n;
            let m = mean as f32;
            let var = channel_sums((x, &[], &[]), d, ch, |v, _, _| ((v - m) * (v - m), 0.0)).0 / n;
            (m, var as f32)
        })
        .collect()
}

/// `out[b, c, :] = x[b, c, :] · scale[c] + shift[c] (+ residual[b, c, :])`, then `max(0, ·)`
/// with `relu` (NaN stays NaN, so a diverging run is still detected).
fn affine(
    x: &[f32],
    (c, hw): (usize, usize),
    (scale, shift): (&[f32], &[f32]),
    residual: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let hw = hw.max(1);
    let act = move |v: f32| if relu && v < 0.0 { 0.0 } else { v };
    match residual {
        Some(r) => par_build(x.len(), hw, |q| {
            let (a, s) = (scale[q % c], shift[q % c]);
            let xs = x[q * hw..][..hw].iter().zip(&r[q * hw..][..hw]);
            xs.map(move |(&v, &r)| act(v * a + s + r))
        }),
        None => par_build(x.len(), hw, |q| {
            let (a, s) = (scale[q % c], shift[q % c]);
            x[q * hw..][..hw].iter().map(move |&v| act(v * a + s))
        }),
    }
}

fn forward(
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    residual: Option<&[f32]>,
    relu: bool,
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
    let out = affine(x, (d.1, d.2), (&scale, &shift), residual, relu);
    let (mean, var) = stats.into_iter().unzip();
    (out, mean, var)
}

/// `dy` where the ReLU output `y` is positive, 0 elsewhere (NaN included).
#[inline(always)]
fn masked(g: f32, y: f32) -> f32 {
    if y > 0.0 { g } else { 0.0 }
}

/// The gradients of the forward pass.
struct NormGrads {
    dx: Option<Vec<f32>>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
    /// The gradient at the BatchNorm output after the ReLU mask, when asked for.
    dz: Option<Vec<f32>>,
}

/// Gradients of the forward pass from the output gradient `dy`; with `relu_y` (the output of
/// the ReLU that followed), `dy` is masked on the fly where `relu_y ≤ 0`. Two passes: the
/// per-channel sums, then `dx` (and `dz` with `need_dz`).
#[allow(clippy::too_many_arguments)]
fn backward(
    x: &[f32],
    dy: &[f32],
    relu_y: Option<&[f32]>,
    (gamma, mean, inv_std): (&[f32], &[f32], &[f32]),
    d: (usize, usize, usize),
    need_dx: bool,
    need_dz: bool,
) -> NormGrads {
    let n = (d.0 * d.2).max(1) as f64;
    let y = relu_y.unwrap_or(&[]);
    let relu = relu_y.is_some();
    // dbeta = Σ dz, dgamma = Σ dz · x̂ with x̂ = (x - mean) · inv_std.
    let sums: Vec<(f32, f32)> = (0..d.1)
        .into_par_iter()
        .map(|ch| {
            let m = mean[ch];
            let (dbeta, dgamma) = channel_sums((dy, x, y), d, ch, |g, v, y| {
                let g = if relu { masked(g, y) } else { g };
                (g, g * (v - m))
            });
            ((dgamma * inv_std[ch] as f64) as f32, dbeta as f32)
        })
        .collect();
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = sums.iter().copied().unzip();
    let hw = d.2.max(1);
    let dx = need_dx.then(|| {
        par_build(x.len(), hw, |q| {
            let ch = q % d.1;
            let (m, s) = (mean[ch], inv_std[ch]);
            let k = gamma[ch] * s;
            let mean_dy = (dbeta[ch] as f64 / n) as f32;
            let c = s * (dgamma[ch] as f64 / n) as f32;
            let (dy, x) = (&dy[q * hw..][..hw], &x[q * hw..][..hw]);
            let y = if relu { &y[q * hw..][..hw] } else { dy };
            dy.iter().zip(x).zip(y).map(move |((&g, &v), &y)| {
                let g = if relu { masked(g, y) } else { g };
                k * (g - mean_dy - (v - m) * c)
            })
        })
    });
    let dz = (need_dz && relu).then(|| {
        par_build(dy.len(), 1 << 14, |i| {
            let (dy, y) = (&dy[i << 14..], &y[i << 14..]);
            dy.iter().zip(y).take(1 << 14).map(|(&g, &y)| masked(g, y))
        })
    });
    NormGrads {
        dx,
        dgamma,
        dbeta,
        dz,
    }
}

/// The forward pass on flex tensors: `(output, mean, variance)`.
fn forward_flex(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    residual: Option<&FlexTensor>,
    relu: bool,
    epsilon: f64,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let shape = x.shape();
    let d = dims(&shape);
    let (out, mean, var) = forward(
        f32s(x),
        (f32s(gamma), f32s(beta)),
        residual.map(f32s),
        relu,
        d,
        epsilon,
    );
    (
        tensor(out, shape),
        tensor(mean, Shape::from(vec![d.1])),
        tensor(var, Shape::from(vec![d.1])),
    )
}

impl FlexBatchNorm for Flex {
    fn host_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        relu: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (x, gamma, beta) = (dense(x), dense(gamma), dense(beta));
        forward_flex(&x, &gamma, &beta, None, relu, epsilon)
    }

    fn host_batch_norm_add_relu_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        residual: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (x, gamma, beta, residual) = (dense(x), dense(gamma), dense(beta), dense(residual));
        forward_flex(&x, &gamma, &beta, Some(&residual), true, epsilon)
    }
}

/// What the backward pass needs: input, gamma, batch mean, batch 1/σ, and the output when a
/// ReLU follows (its sign masks the gradient).
#[derive(Clone, Debug)]
struct NormState {
    x: FlexTensor,
    gamma: FlexTensor,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    relu_output: Option<FlexTensor>,
}

impl NormState {
    fn new(
        x: FlexTensor,
        gamma: FlexTensor,
        mean: &FlexTensor,
        var: &FlexTensor,
        eps: f64,
    ) -> Self {
        let inv_std = f32s(var)
            .iter()
            .map(|&v| 1.0 / (v as f64 + eps).sqrt() as f32)
            .collect();
        Self {
            x,
            gamma,
            mean: f32s(mean).to_vec(),
            inv_std,
            relu_output: None,
        }
    }

    /// The backward pass from the output gradient `dy`: registers the gradients of the input,
    /// gamma and beta for the nodes that need them, and returns `dz`, the gradient at the
    /// BatchNorm output after the ReLU mask, when `need_dz` (the residual's gradient).
    fn backward(
        &self,
        dy: FlexTensor,
        [x, gamma, beta]: [Option<NodeId>; 3],
        grads: &mut Gradients,
        need_dz: bool,
    ) -> Option<FlexTensor> {
        let shape = self.x.shape();
        let d = dims(&shape);
        let g = backward(
            f32s(&self.x),
            f32s(&dy),
            self.relu_output.as_ref().map(f32s),
            (f32s(&self.gamma), &self.mean, &self.inv_std),
            d,
            x.is_some(),
            need_dz,
        );
        if let (Some(node), Some(dx)) = (x, g.dx) {
            grads.register::<Flex>(node, tensor(dx, shape.clone()));
        }
        if let Some(node) = gamma {
            grads.register::<Flex>(node, tensor(g.dgamma, [d.1]));
        }
        if let Some(node) = beta {
            grads.register::<Flex>(node, tensor(g.dbeta, [d.1]));
        }
        match (need_dz, g.dz) {
            (false, _) => None,
            (true, Some(dz)) => Some(tensor(dz, shape)),
            (true, None) => Some(dy),
        }
    }
}

#[derive(Debug)]
struct FlexBatchNormBackward;

impl Backward<Flex, 3> for FlexBatchNormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = dense(grads.consume::<Flex>(&ops.node));
        let parents = ops.parents.map(|n| n.map(|n| n.id));
        ops.state.backward(dy, parents, grads, false);
    }
}

#[derive(Debug)]
struct FlexBatchNormAddReluBackward;

impl Backward<Flex, 4> for FlexBatchNormAddReluBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = dense(grads.consume::<Flex>(&ops.node));
        let [x, gamma, beta, residual] = ops.parents.map(|n| n.map(|n| n.id));
        let dz = ops
            .state
            .backward(dy, [x, gamma, beta], grads, residual.is_some());
        if let (Some(node), Some(dz)) = (residual, dz) {
            grads.register::<Flex>(node, dz);
        }
    }
}

/// The forward pass of both autodiff operations: output (tracked with a [`NormState`] when the
/// graph needs it), batch mean and variance.
#[allow(clippy::type_complexity)]
fn forward_tracked<BO, C, const N: usize>(
    prep: OpsKind<BO, Flex, NormState, C, N>,
    (x, gamma, beta): (FlexTensor, FlexTensor, FlexTensor),
    residual: Option<FlexTensor>,
    relu: bool,
    epsilon: f64,
) -> (
    FloatTensor<Autodiff<Flex, C>>,
    FloatTensor<Autodiff<Flex, C>>,
    FloatTensor<Autodiff<Flex, C>>,
)
where
    BO: Backward<Flex, N, State = NormState>,
    C: CheckpointStrategy,
{
    let (x, gamma, beta) = (dense(x), dense(gamma), dense(beta));
    let residual = residual.map(dense);
    let (out, mean, var) = forward_flex(&x, &gamma, &beta, residual.as_ref(), relu, epsilon);
    let output = match prep {
        OpsKind::Tracked(prep) => {
            let mut state = NormState::new(x, gamma, &mean, &var, epsilon);
            state.relu_output = relu.then(|| out.clone());
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    (
        output,
        FloatTensor::<Autodiff<Flex, C>>::new(mean),
        FloatTensor::<Autodiff<Flex, C>>::new(var),
    )
}

impl<C: CheckpointStrategy> FlexBatchNorm for Autodiff<Flex, C> {
    fn host_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let prep = FlexBatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let inputs = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        forward_tracked(prep, inputs, None, relu, epsilon)
    }

    fn host_batch_norm_add_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let prep = FlexBatchNormAddReluBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node(), residual.node()])
            .compute_bound()
            .stateful();
        let inputs = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        forward_tracked(prep, inputs, Some(residual.into_primitive()), true, epsilon)
    }
}

/// The training forward pass of [`BatchNorm`] (batch statistics; running statistics updated
/// with the module's momentum and the unbiased batch variance, as PyTorch) computed by the
/// host kernels, optionally followed by
/// `relu(· + residual)` or `relu(·)`; `x` must be an f32 tensor on the flex autodiff device.
pub(crate) fn batch_norm_train(
    bn: &BatchNorm,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    relu: bool,
) -> Tensor<4> {
    let [b, _, h, w] = x.dims();
    let (gamma, beta) = (
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
    );
    let (out, mean, var) = match residual {
        Some(residual) => <Dispatch as FlexBatchNorm>::host_batch_norm_add_relu_train(
            x.into_dispatch(),
            gamma,
            beta,
            residual.into_dispatch(),
            bn.epsilon,
        ),
        None => <Dispatch as FlexBatchNorm>::host_batch_norm_train(
            x.into_dispatch(),
            gamma,
            beta,
            bn.epsilon,
            relu,
        ),
    };
    let (mean, var) = (
        Tensor::<1>::from_dispatch(mean),
        Tensor::<1>::from_dispatch(var),
    );
    super::super::norm::update_running_statistics(bn, mean, var, b * h * w);
    Tensor::from_dispatch(out)
}

/// Whether [`batch_norm_train`] handles this input and layer.
pub(crate) fn supported(bn: &BatchNorm, x: &Tensor<4>) -> bool {
    x.dtype() == DType::F32
        && bn.gamma.val().dtype() == DType::F32
        && bn.beta.val().dtype() == DType::F32
}
