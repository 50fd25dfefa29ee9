//! Max pooling for Burn's flex CPU backend in training, with PyTorch's `max_pool2d` semantics
//! (padding never wins a window, NaN propagates, the first maximum in scan order is the one
//! whose input receives the gradient), registered as a Burn backend extension with its own
//! autodiff step.
//!
//! Why: Burn 0.22's flex `max_pool2d_with_indices` and its backward pass took ~8% of a
//! ResNet-18 fine-tuning step at 32x32 (the stem's 3x3 stride-2 pool), about ten times the
//! time of this one pass over the input that records the winning index per output.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

use super::super::geometry::Geometry;
use super::tensor::{dense, f32s, tensor};

/// Index recorded for a window that holds no input element (only padding): it gets no
/// gradient.
const EMPTY: u32 = u32::MAX;

/// Max pooling on flex tensors with a hand-written backward pass (see the module docs).
#[backend_extension(Flex, Autodiff)]
pub(crate) trait FlexMaxPool2d: Backend {
    /// `x [B, C, H, W]`, no dilation, floor mode.
    #[allow(clippy::too_many_arguments)]
    fn host_max_pool2d(
        x: FloatTensor<Self>,
        kernel_h: usize,
        kernel_w: usize,
        stride_h: usize,
        stride_w: usize,
        pad_top: usize,
        pad_left: usize,
        pad_bottom: usize,
        pad_right: usize,
    ) -> FloatTensor<Self>;
}

/// Output and, per output, the index of the winning input within its plane ([`EMPTY`] for a
/// window of padding only).
fn forward(g: &Geometry, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let (hw, p) = (g.h * g.w, g.ho * g.wo);
    let mut y = vec![f32::NEG_INFINITY; g.planes() * p];
    let mut idx = vec![EMPTY; g.planes() * p];
    y.par_chunks_mut(p)
        .zip(idx.par_chunks_mut(p))
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; p], vec![0u32; p]),
            |(taps, at_tap), (q, (best, at))| {
                let plane = &x[q * hw..][..hw];
                // Taps in the window's scan order (row-major), each gathered across the whole
                // output plane first, so that the comparison runs as one long branch-free,
                // vectorised select (which input wins is data-dependent: a branch on it is
                // mispredicted about every other time).
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let (lo, hi) = g.valid_cols(j);
                        for (oh, (v, t)) in taps
                            .chunks_exact_mut(g.wo)
                            .zip(at_tap.chunks_exact_mut(g.wo))
                            .enumerate()
                        {
                            let r = (oh * g.sh + i).checked_sub(g.pt).filter(|&r| r < g.h);
                            let (lo, hi) = if r.is_some() { (lo, hi) } else { (0, 0) };
                            v[..lo].fill(f32::NEG_INFINITY);
                            t[..lo].fill(EMPTY);
                            v[hi..].fill(f32::NEG_INFINITY);
                            t[hi..].fill(EMPTY);
                            if let Some(r) = r.filter(|_| lo < hi) {
                                let first = r * g.w + lo * g.sw + j - g.pl;
                                for ((v, t), at) in v[lo..hi]
                                    .iter_mut()
                                    .zip(&mut t[lo..hi])
                                    .zip((first..).step_by(g.sw))
                                {
                                    *v = plane[at];
                                    *t = at as u32;
                                }
                            }
                        }
                        take_max(best, at, taps, at_tap);
                    }
                }
            },
        );
    (y, idx)
}

/// `best[n], at[n] = v[n], i[n]` where PyTorch's rule lets the new value take the window (it is
/// larger, or NaN, or the window had no value yet), unless `i[n]` is [`EMPTY`] (the tap falls
/// on padding). Bitwise selects, no branches.
#[inline(always)]
fn take_max(best: &mut [f32], at: &mut [u32], v: &[f32], i: &[u32]) {
    for (((b, a), &v), &i) in best.iter_mut().zip(at.iter_mut()).zip(v).zip(i) {
        let take = (i != EMPTY) & ((v > *b) | v.is_nan() | (*a == EMPTY));
        let m = (take as u32).wrapping_neg();
        *b = f32::from_bits((v.to_bits() & m) | (b.to_bits() & !m));
        *a = (i & m) | (*a & !m);
    }
}

/// `dx` with each output's gradient added at its winning input.
fn backward(g: &Geometry, idx: &[u32], dy: &[f32]) -> Vec<f32> {
    let (hw, p) = (g.h * g.w, g.ho * g.wo);
    let mut dx = vec![0.0f32; g.planes() * hw];
    dx.par_chunks_mut(hw).enumerate().for_each(|(q, dx)| {
        for (&at, &d) in idx[q * p..][..p].iter().zip(&dy[q * p..][..p]) {
            if at != EMPTY {
                dx[at as usize] += d;
            }
        }
    });
    dx
}

impl FlexMaxPool2d for Flex {
    fn host_max_pool2d(
        x: FlexTensor,
        kernel_h: usize,
        kernel_w: usize,
        stride_h: usize,
        stride_w: usize,
        pad_top: usize,
        pad_left: usize,
        pad_bottom: usize,
        pad_right: usize,
    ) -> FlexTensor {
        let x = dense(x);
        let g = Geometry::pool(
            &x.shape(),
            [kernel_h, kernel_w, stride_h, stride_w],
            [pad_top, pad_left, pad_bottom, pad_right],
        );
        let (y, _) = forward(&g, f32s(&x));
        tensor(y, [g.b, g.c, g.ho, g.wo])
    }
}

/// What [`FlexMaxPool2dBackward`] keeps from the forward pass.
#[derive(Clone, Debug)]
struct PoolState {
    g: Geometry,
    idx: Arc<Vec<u32>>,
}

#[derive(Debug)]
struct FlexMaxPool2dBackward;

impl Backward<Flex, 1> for FlexMaxPool2dBackward {
    type State = PoolState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let Some(node) = node_x else {
            return;
        };
        let PoolState { g, idx } = ops.state;
        let dy = dense(grad);
        let dx = backward(&g, &idx, f32s(&dy));
        grads.register::<Flex>(node.id, tensor(dx, [g.b, g.c, g.h, g.w]));
    }
}

impl<C: CheckpointStrategy> FlexMaxPool2d for Autodiff<Flex, C> {
    fn host_max_pool2d(
        x: FloatTensor<Self>,
        kernel_h: usize,
        kernel_w: usize,
        stride_h: usize,
        stride_w: usize,
        pad_top: usize,
        pad_left: usize,
        pad_bottom: usize,
        pad_right: usize,
    ) -> FloatTensor<Self> {
        let prep = FlexMaxPool2dBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let x = dense(x.into_primitive());
        let g = Geometry::pool(
            &x.shape(),
            [kernel_h, kernel_w, stride_h, stride_w],
            [pad_top, pad_left, pad_bottom, pad_right],
        );
        let (y, idx) = forward(&g, f32s(&x));
        let y = tensor(y, [g.b, g.c, g.ho, g.wo]);
        match prep {
            OpsKind::Tracked(prep) => prep.finish(
                PoolState {
                    g,
                    idx: Arc::new(idx),
                },
                y,
            ),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// Whether [`max_pool2d_host`] handles this tensor (f32, and planes whose indices fit a `u32`
/// below [`EMPTY`]).
pub(crate) fn supported(x: &Tensor<4>) -> bool {
    let [_, _, h, w] = x.dims();
    x.dtype() == DType::F32 && h.checked_mul(w).is_some_and(|hw| hw <= EMPTY as usize)
}

/// `x [B, C, H, W]` max-pooled, on the flex device.
pub(crate) fn max_pool2d_host(
    x: Tensor<4>,
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    [top, left, bottom, right]: [usize; 4],
) -> Tensor<4> {
    let out = <Dispatch as FlexMaxPool2d>::host_max_pool2d(
        x.into_dispatch(),
        kh,
        kw,
        sh,
        sw,
        top,
        left,
        bottom,
        right,
    );
    Tensor::from_dispatch(out)
}
