//! Depthwise convolution (one `kh x kw` filter per channel, `groups = channels`: MobileNet's,
//! EfficientNet's and ConvNeXt's spatial convolutions) for Burn's flex CPU backend, forward and
//! backward, registered as a Burn backend extension with its own autodiff step.
//!
//! Why: Burn 0.22's flex runs a grouped convolution as a generic loop and differentiates it
//! through `conv_transpose`; in an EfficientNet-B0 fine-tuning step its depthwise forward, weight
//! gradient and input gradient (`conv_transpose3d`) took a quarter of the time, and ConvNeXt-T's
//! 7x7 depthwise convolutions 16% of its inference.
//!
//! How: each `H x W` plane is copied once into a zero-padded buffer whose rows are split into
//! `stride` phases (column `t·sw + p` of a padded row goes to phase `p`, position `t`), so that
//! for every kernel tap the inputs of a run of consecutive outputs are consecutive in memory,
//! whatever the stride. The output is computed in register tiles of 4 rows x 8 columns that stay
//! in registers across all `kh·kw` taps (one broadcast weight, one load and one multiply-add per
//! row and tap). The input gradient is the same computation in gather form (each padded input
//! position sums the output gradients of the taps that read it) into a padded buffer that is then
//! cropped; the weight gradient is one dot product per tap between the output gradient and the
//! padded input, summed over the batch in a fixed order (deterministic). On x86 the loops are
//! compiled a second time for AVX2 + FMA and chosen at run time, as in `activation.rs`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::super::geometry::{Geometry, valid_outputs};
use super::tensor::{dense, f32s, tensor};

/// Output columns per register tile (one 256-bit vector of f32).
const TW: usize = 8;
/// Output rows per register tile.
const TH: usize = 4;

/// A depthwise convolution on flex tensors with a hand-written backward pass (module docs).
#[backend_extension(Flex, Autodiff)]
pub(crate) trait FlexDepthwiseConv2d: Backend {
    /// `x [B, C, H, W]`, `weight [C, 1, kh, kw]`, no bias, no dilation, `C` groups.
    #[allow(clippy::too_many_arguments)]
    fn host_depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride_h: usize,
        stride_w: usize,
        pad_top: usize,
        pad_left: usize,
        pad_bottom: usize,
        pad_right: usize,
    ) -> FloatTensor<Self>;
}

/// The buffers' layout for one geometry.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Output rows rounded up to whole tiles.
    hot: usize,
    /// Output columns rounded up to whole tiles.
    wot: usize,
    /// Rows of the padded (phased) plane: every row a tile of outputs reads, rounded up to
    /// whole tiles (the input gradient is gathered tile by tile over them).
    rows: usize,
    /// Floats per phase of a padded row: every column a tile reads, rounded up to whole tiles.
    len: usize,
    /// The output gradient's left margin of zeros (`(kw - 1) / sw`), so that the gather of the
    /// input gradient never indexes before a row's start.
    margin: usize,
}

impl Layout {
    fn new(g: &Geometry) -> Self {
        let hot = g.ho.next_multiple_of(TH);
        let wot = g.wo.next_multiple_of(TW);
        let margin = (g.kw - 1) / g.sw;
        Self {
            hot,
            wot,
            rows: ((hot - 1) * g.sh + g.kh).next_multiple_of(TH),
            len: (wot + margin).next_multiple_of(TW),
            margin,
        }
    }

    /// Floats of a padded plane.
    fn plane(&self, g: &Geometry) -> usize {
        self.rows * g.sw * self.len
    }

    /// Offset of phase `p` of padded row `r`.
    fn row(&self, g: &Geometry, r: usize, p: usize) -> usize {
        (r * g.sw + p) * self.len
    }

    /// Floats per row of the margin-padded output gradient.
    fn dy_row(&self) -> usize {
        self.margin + self.len
    }

    /// Floats of the margin-padded output gradient of one plane (`hot` rows).
    fn dy_plane(&self) -> usize {
        self.hot * self.dy_row()
    }
}

/// Copies input plane `x [H, W]` into `pad` (zero padding, rows split into phases).
fn pad_plane(g: &Geometry, l: &Layout, x: &[f32], pad: &mut [f32]) {
    for r in 0..l.rows {
        let input_row = r.checked_sub(g.pt).filter(|&v| v < g.h);
        for p in 0..g.sw {
            let dst = &mut pad[l.row(g, r, p)..][..l.len];
            let Some(ir) = input_row else {
                dst.fill(0.0);
                continue;
            };
            let src = &x[ir * g.w..][..g.w];
            // Positions `t` whose column `t·sw + p - pl` lies inside the row.
            let (lo, hi) = valid_outputs(p, g.pl, g.sw, g.w, l.len);
            dst[..lo].fill(0.0);
            dst[hi..].fill(0.0);
            if lo < hi {
                let first = lo * g.sw + p - g.pl;
                if g.sw == 1 {
                    dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                } else {
                    for (d, s) in dst[lo..hi]
                        .iter_mut()
                        .zip(src[first..].iter().step_by(g.sw))
                    {
                        *d = *s;
                    }
                }
            }
        }
    }
}

/// The input-gradient plane `dx [H, W]` cropped out of the padded, phased gradient `dpad`.
fn crop_plane(g: &Geometry, l: &Layout, dpad: &[f32], dx: &mut [f32]) {
    for (ir, dst) in dx.chunks_exact_mut(g.w).enumerate() {
        let r = ir + g.pt;
        if r >= l.rows {
            // No output window reaches this row.
            dst.fill(0.0);
            continue;
        }
        for (ic, d) in dst.iter_mut().enumerate() {
            let col = ic + g.pl;
            let t = col / g.sw;
            *d = if t < l.len {
                dpad[l.row(g, r, col % g.sw) + t]
            } else {
                0.0
            };
        }
    }
}

/// Copies the output gradient plane `dy [Ho, Wo]` into `dyp` (`hot` rows of
/// [`Layout::dy_row`] floats: `margin` zeros, the row, zeros).
fn pad_output_grad(g: &Geometry, l: &Layout, dy: &[f32], dyp: &mut [f32]) {
    let width = l.dy_row();
    for (oh, dst) in dyp.chunks_exact_mut(width).enumerate() {
        if oh < g.ho {
            dst[..l.margin].fill(0.0);
            dst[l.margin..l.margin + g.wo].copy_from_slice(&dy[oh * g.wo..][..g.wo]);
            dst[l.margin + g.wo..].fill(0.0);
        } else {
            dst.fill(0.0);
        }
    }
}

/// Per tap `i·kw + j`: its offset in the padded plane from the position that output `(0, 0)`
/// reads first (`(i·sw + j mod sw)·len + ⌊j / sw⌋`).
fn tap_offsets(g: &Geometry, l: &Layout) -> Vec<usize> {
    (0..g.kh)
        .flat_map(|i| (0..g.kw).map(move |j| (i, j)))
        .map(|(i, j)| l.row(g, i, j % g.sw) + j / g.sw)
        .collect()
}

/// Floats of the padded plane between the first reads of two consecutive output rows.
fn row_step(g: &Geometry, l: &Layout) -> usize {
    g.sh * g.sw * l.len
}

/// The portable loops (any CPU; the compiler vectorises what it can).
mod portable {
    use super::{Geometry, Layout};

    /// One output plane `y [Ho, Wo]` from the padded input plane and the channel's weights.
    pub(super) fn forward(
        g: &Geometry,
        l: &Layout,
        offs: &[usize],
        pad: &[f32],
        w: &[f32],
        y: &mut [f32],
    ) {
        let rs = super::row_step(g, l);
        for (oh, row) in y.chunks_exact_mut(g.wo).enumerate() {
            for (ow, out) in row.iter_mut().enumerate() {
                let base = oh * rs + ow;
                *out = offs
                    .iter()
                    .zip(w)
                    .map(|(&off, &wv)| wv * pad[base + off])
                    .sum();
            }
        }
    }

    /// Adds one plane's weight gradient to `dw [kh·kw]`.
    pub(super) fn weight_grad(
        g: &Geometry,
        l: &Layout,
        offs: &[usize],
        pad: &[f32],
        dyp: &[f32],
        dw: &mut [f32],
    ) {
        let (rs, width) = (super::row_step(g, l), l.dy_row());
        for (d, &off) in dw.iter_mut().zip(offs) {
            let mut sum = 0.0f32;
            for oh in 0..g.ho {
                let dy = &dyp[oh * width + l.margin..][..g.wo];
                let x = &pad[oh * rs + off..][..g.wo];
                sum += dy.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
            }
            *d += sum;
        }
    }

    /// The padded, phased input gradient `dpad` of one plane from its margin-padded output
    /// gradient, in gather form (each position sums `w · dy` over the taps that read it): the
    /// strided case.
    pub(super) fn gather_input_grad(
        g: &Geometry,
        l: &Layout,
        dyp: &[f32],
        w: &[f32],
        dpad: &mut [f32],
    ) {
        let width = l.dy_row();
        for r in 0..l.rows {
            for p in 0..g.sw {
                let dst = &mut dpad[l.row(g, r, p)..][..l.len];
                dst.fill(0.0);
                // Tap rows `i` reading padded row `r`: `r - i = oh·sh` for an output row `oh`.
                for i in (r % g.sh..g.kh.min(r + 1)).step_by(g.sh) {
                    let oh = (r - i) / g.sh;
                    if oh >= g.ho {
                        continue;
                    }
                    for j in (p..g.kw).step_by(g.sw) {
                        let wv = w[i * g.kw + j];
                        let src = &dyp[oh * width + l.margin - j / g.sw..][..l.len];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d += wv * s;
                        }
                    }
                }
            }
        }
    }
}

/// The AVX2 + FMA loops: register tiles of `TH` rows x `TW` columns.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Geometry, Layout, TH, TW};
    use std::arch::x86_64::*;

    /// [`portable::forward`](super::portable::forward) in `TH x TW` tiles kept in registers
    /// across all taps.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `pad` must be a whole padded plane of `l`, `y` an
    /// output plane, `w` and `offs` one entry per tap.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward(
        g: &Geometry,
        l: &Layout,
        offs: &[usize],
        pad: &[f32],
        w: &[f32],
        y: &mut [f32],
    ) {
        let rs = super::row_step(g, l);
        let max_off = offs.iter().copied().max().unwrap_or(0);
        debug_assert!((l.hot - 1) * rs + l.wot + max_off <= pad.len());
        debug_assert!(y.len() == g.ho * g.wo && w.len() == offs.len());
        let pp = pad.as_ptr();
        for oh0 in (0..l.hot).step_by(TH) {
            for c0 in (0..l.wot).step_by(TW) {
                let base = oh0 * rs + c0;
                let mut acc = [_mm256_setzero_ps(); TH];
                for (&off, &wv) in offs.iter().zip(w) {
                    let wv = _mm256_set1_ps(wv);
                    // SAFETY: within `pad` (the layout covers every tile's reads, asserted).
                    let src = unsafe { pp.add(base + off) };
                    for (rr, a) in acc.iter_mut().enumerate() {
                        // SAFETY: as above.
                        let x = unsafe { _mm256_loadu_ps(src.add(rr * rs)) };
                        *a = _mm256_fmadd_ps(wv, x, *a);
                    }
                }
                let n = TW.min(g.wo - c0);
                for (rr, a) in acc.iter().enumerate() {
                    let oh = oh0 + rr;
                    if oh >= g.ho {
                        break;
                    }
                    let at = oh * g.wo + c0;
                    if n == TW {
                        // SAFETY: `at + TW <= y.len()` (a whole tile inside the row).
                        unsafe { _mm256_storeu_ps(y.as_mut_ptr().add(at), *a) };
                    } else {
                        let mut tmp = [0.0f32; TW];
                        // SAFETY: `tmp` holds `TW` floats.
                        unsafe { _mm256_storeu_ps(tmp.as_mut_ptr(), *a) };
                        y[at..at + n].copy_from_slice(&tmp[..n]);
                    }
                }
            }
        }
    }

    /// [`portable::weight_grad`](super::portable::weight_grad) with `TH` accumulators per tap.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `pad` and `dyp` must be whole padded planes of `l`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_grad(
        g: &Geometry,
        l: &Layout,
        offs: &[usize],
        pad: &[f32],
        dyp: &[f32],
        dw: &mut [f32],
    ) {
        let (rs, width) = (super::row_step(g, l), l.dy_row());
        let max_off = offs.iter().copied().max().unwrap_or(0);
        debug_assert!((l.hot - 1) * rs + l.wot + max_off <= pad.len());
        debug_assert!(l.hot * width <= dyp.len() && l.margin + l.wot <= width);
        let (pp, dp) = (pad.as_ptr(), dyp.as_ptr());
        for (d, &off) in dw.iter_mut().zip(offs) {
            let mut acc = [_mm256_setzero_ps(); TH];
            for oh0 in (0..l.hot).step_by(TH) {
                for c0 in (0..l.wot).step_by(TW) {
                    for (rr, a) in acc.iter_mut().enumerate() {
                        let oh = oh0 + rr;
                        // SAFETY: within `dyp` and `pad` (asserted above).
                        let (dy, x) = unsafe {
                            (
                                _mm256_loadu_ps(dp.add(oh * width + l.margin + c0)),
                                _mm256_loadu_ps(pp.add(oh * rs + c0 + off)),
                            )
                        };
                        *a = _mm256_fmadd_ps(dy, x, *a);
                    }
                }
            }
            let mut lanes = [0.0f32; TW];
            let mut sum = _mm256_setzero_ps();
            for a in acc {
                sum = _mm256_add_ps(sum, a);
            }
            // SAFETY: `lanes` holds `TW` floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
            *d += lanes.iter().sum::<f32>();
        }
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// One output plane (see [`portable::forward`]) with the fastest loops the CPU has.
fn forward_plane(
    avx2: bool,
    g: &Geometry,
    l: &Layout,
    offs: &[usize],
    pad: &[f32],
    w: &[f32],
    y: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: the CPU has AVX2 and FMA (`has_avx2`); the buffers follow `l`.
        unsafe { avx2::forward(g, l, offs, pad, w, y) };
        return;
    }
    let _ = avx2;
    portable::forward(g, l, offs, pad, w, y);
}

/// One plane's weight gradient (see [`portable::weight_grad`]) with the fastest loops the CPU
/// has.
fn weight_grad_plane(
    avx2: bool,
    g: &Geometry,
    l: &Layout,
    offs: &[usize],
    pad: &[f32],
    dyp: &[f32],
    dw: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: the CPU has AVX2 and FMA (`has_avx2`); the buffers follow `l`.
        unsafe { avx2::weight_grad(g, l, offs, pad, dyp, dw) };
        return;
    }
    let _ = avx2;
    portable::weight_grad(g, l, offs, pad, dyp, dw);
}

/// The output `[B, C, Ho, Wo]` of `x [B, C, H, W]` and `weight [C, 1, kh, kw]`.
/// `avx2`: whether to use the AVX2 + FMA loops (only where [`has_avx2`]).
fn forward(g: &Geometry, x: &[f32], weight: &[f32], avx2: bool) -> Vec<f32> {
    let l = Layout::new(g);
    let offs = tap_offsets(g, &l);
    let (hw, taps) = (g.h * g.w, g.kh * g.kw);
    let mut y = vec![0.0f32; g.planes() * g.p()];
    if y.is_empty() {
        return y;
    }
    y.par_chunks_mut(g.p()).enumerate().for_each_init(
        || vec![0.0f32; l.plane(g)],
        |pad, (plane, y)| {
            let w = &weight[(plane % g.c) * taps..][..taps];
            pad_plane(g, &l, &x[plane * hw..][..hw], pad);
            forward_plane(avx2, g, &l, &offs, pad, w, y);
        },
    );
    y
}

/// For a stride-1 convolution whose padding is below the kernel size on every side: the input
/// gradient is the forward convolution of the output gradient with the kernel flipped and the
/// padding mirrored (`k - 1 - pad`). The geometry of that convolution.
fn flipped(g: &Geometry) -> Option<Geometry> {
    if g.sh != 1 || g.sw != 1 {
        return None;
    }
    // The padding the forward pass had on each side (bottom and right from the output size).
    let pb = (g.ho + g.kh - 1).checked_sub(g.h + g.pt)?;
    let pr = (g.wo + g.kw - 1).checked_sub(g.w + g.pl)?;
    let mirrored = [
        (g.kh - 1).checked_sub(g.pt)?,
        (g.kw - 1).checked_sub(g.pl)?,
        (g.kh - 1).checked_sub(pb)?,
        (g.kw - 1).checked_sub(pr)?,
    ];
    let shape = |s: [usize; 4]| burn::tensor::Shape::new(s);
    let g2 = Geometry::depthwise(
        &shape([g.b, g.c, g.ho, g.wo]),
        &shape([g.c, 1, g.kh, g.kw]),
        [1, 1],
        mirrored,
    );
    (g2.ho == g.h && g2.wo == g.w).then_some(g2)
}

/// The input gradient `[B, C, H, W]` from the output gradient `dy [B, C, Ho, Wo]`.
fn input_grad(g: &Geometry, weight: &[f32], dy: &[f32], avx2: bool) -> Vec<f32> {
    let (hw, taps, p) = (g.h * g.w, g.kh * g.kw, g.p());
    let mut dx = vec![0.0f32; g.planes() * hw];
    if dx.is_empty() {
        return dx;
    }
    if let Some(g2) = flipped(g) {
        let l2 = Layout::new(&g2);
        let offs = tap_offsets(&g2, &l2);
        let flipped_weight: Vec<f32> = weight
            .chunks_exact(taps)
            .flat_map(|w| w.iter().rev().copied())
            .collect();
        dx.par_chunks_mut(hw).enumerate().for_each_init(
            || vec![0.0f32; l2.plane(&g2)],
            |pad, (plane, dx)| {
                let w = &flipped_weight[(plane % g.c) * taps..][..taps];
                pad_plane(&g2, &l2, &dy[plane * p..][..p], pad);
                forward_plane(avx2, &g2, &l2, &offs, pad, w, dx);
            },
        );
        return dx;
    }
    let l = Layout::new(g);
    dx.par_chunks_mut(hw).enumerate().for_each_init(
        || (vec![0.0f32; l.dy_plane()], vec![0.0f32; l.plane(g)]),
        |(dyp, dpad), (plane, dx)| {
            let w = &weight[(plane % g.c) * taps..][..taps];
            pad_output_grad(g, &l, &dy[plane * p..][..p], dyp);
            portable::gather_input_grad(g, &l, dyp, w, dpad);
            crop_plane(g, &l, dpad, dx);
        },
    );
    dx
}

/// The input gradient `[B, C, H, W]` (when `input_grad`) and the weight gradient
/// `[C, 1, kh, kw]` (when `weight_grad`) from the output gradient `dy [B, C, Ho, Wo]`; `avx2`
/// as for [`forward`].
fn backward(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    (want_input_grad, want_weight_grad): (bool, bool),
    avx2: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let dx = want_input_grad.then(|| input_grad(g, weight, dy, avx2));
    let dw = want_weight_grad.then(|| {
        let l = Layout::new(g);
        let offs = tap_offsets(g, &l);
        let (hw, taps, p) = (g.h * g.w, g.kh * g.kw, g.p());
        let mut dw = vec![0.0f32; g.c * taps];
        if !dw.is_empty() {
            dw.par_chunks_mut(taps).enumerate().for_each_init(
                || (vec![0.0f32; l.dy_plane()], vec![0.0f32; l.plane(g)]),
                |(dyp, pad), (c, dw)| {
                    for b in 0..g.b {
                        let plane = b * g.c + c;
                        pad_output_grad(g, &l, &dy[plane * p..][..p], dyp);
                        pad_plane(g, &l, &x[plane * hw..][..hw], pad);
                        weight_grad_plane(avx2, g, &l, &offs, pad, dyp, dw);
                    }
                },
            );
        }
        dw
    });
    (dx, dw)
}

fn geometry(x: &FlexTensor, weight: &FlexTensor, stride: [usize; 2], pads: [usize; 4]) -> Geometry {
    Geometry::depthwise(&x.shape(), &weight.shape(), stride, pads)
}

impl FlexDepthwiseConv2d for Flex {
    fn host_depthwise_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        stride_h: usize,
        stride_w: usize,
        pad_top: usize,
        pad_left: usize,
        pad_bottom: usize,
        pad_right: usize,
    ) -> FlexTensor {
        let (x, weight) = (dense(x), dense(weight));
        let g = geometry(
            &x,
            &weight,
            [stride_h, stride_w],
            [pad_top, pad_left, pad_bottom, pad_right],
        );
        tensor(
            forward(&g, f32s(&x), f32s(&weight), has_avx2()),
            [g.b, g.c, g.ho, g.wo],
        )
    }
}

#[derive(Debug)]
struct FlexDepthwiseBackward;

impl Backward<Flex, 2> for FlexDepthwiseBackward {
    /// The input, the weight and the geometry.
    type State = (FlexTensor, FlexTensor, Geometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, weight, g) = ops.state;
        let dy = dense(grad);
        let (dx, dw) = backward(
            &g,
            f32s(&x),
            f32s(&weight),
            f32s(&dy),
            (node_x.is_some(), node_weight.is_some()),
            has_avx2(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, tensor(dx, [g.b, g.c, g.h, g.w]));
        }
        if let (Some(node), Some(dw)) = (node_weight, dw) {
            grads.register::<Flex>(node.id, tensor(dw, [g.c, 1, g.kh, g.kw]));
        }
    }
}

impl<C: CheckpointStrategy> FlexDepthwiseConv2d for Autodiff<Flex, C> {
    fn host_depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride_h: usize,
        stride_w: usize,
        pad_top: usize,
        pad_left: usize,
        pad_bottom: usize,
        pad_right: usize,
    ) -> FloatTensor<Self> {
        let prep = FlexDepthwiseBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful();
        let (x, weight) = (dense(x.into_primitive()), dense(weight.into_primitive()));
        let g = geometry(
            &x,
            &weight,
            [stride_h, stride_w],
            [pad_top, pad_left, pad_bottom, pad_right],
        );
        let y = tensor(
            forward(&g, f32s(&x), f32s(&weight), has_avx2()),
            [g.b, g.c, g.ho, g.wo],
        );
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, weight, g), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// Whether [`depthwise_conv2d_host`] handles `x` and `weight`: f32, `weight [C, 1, kh, kw]` for
/// `C` input channels, and a window that fits the padded input.
pub(crate) fn supported(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    [sh, sw]: [usize; 2],
    pads: [usize; 4],
) -> bool {
    let (xs, ws) = (x.shape(), weight.shape());
    x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && ws[0] == xs[1]
        && ws[1] == 1
        && Geometry::fits(&xs, [ws[2], ws[3], sh, sw], pads)
}

/// `x [B, C, H, W]` convolved channel by channel with `weight [C, 1, kh, kw]` (no bias), on
/// the flex device.
pub(crate) fn depthwise_conv2d_host(
    x: Tensor<4>,
    weight: Tensor<4>,
    [sh, sw]: [usize; 2],
    [top, left, bottom, right]: [usize; 4],
) -> Tensor<4> {
    let out = <Dispatch as FlexDepthwiseConv2d>::host_depthwise_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        sh,
        sw,
        top,
        left,
        bottom,
        right,
    );
    Tensor::from_dispatch(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::flex::tensor::test_values as values;
    use burn::tensor::Shape;

    /// The definition, in f64: `y[b,c,oh,ow] = Σ w[c,i,j] · x[b,c,oh·sh+i-pt, ow·sw+j-pl]`, and
    /// its gradients for `Σ y · dy`.
    fn reference(g: &Geometry, x: &[f32], w: &[f32], dy: &[f32]) -> [Vec<f64>; 3] {
        let mut y = vec![0.0f64; g.planes() * g.p()];
        let mut dx = vec![0.0f64; x.len()];
        let mut dw = vec![0.0f64; w.len()];
        for plane in 0..g.planes() {
            let c = plane % g.c;
            for oh in 0..g.ho {
                for ow in 0..g.wo {
                    let out = plane * g.p() + oh * g.wo + ow;
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let (Some(ih), Some(iw)) = (
                                (oh * g.sh + i).checked_sub(g.pt).filter(|&v| v < g.h),
                                (ow * g.sw + j).checked_sub(g.pl).filter(|&v| v < g.w),
                            ) else {
                                continue;
                            };
                            let xi = plane * g.h * g.w + ih * g.w + iw;
                            let wi = c * g.kh * g.kw + i * g.kw + j;
                            y[out] += w[wi] as f64 * x[xi] as f64;
                            dx[xi] += w[wi] as f64 * dy[out] as f64;
                            dw[wi] += x[xi] as f64 * dy[out] as f64;
                        }
                    }
                }
            }
        }
        [y, dx, dw]
    }

    #[test]
    fn forward_and_gradients_match_the_definition() {
        // (channels, size (h, w), kernel (kh, kw), stride (sh, sw), padding [t, l, b, r])
        let cases = [
            (3, (9, 9), (3, 3), (1, 1), [1, 1, 1, 1]),
            (2, (11, 13), (5, 5), (2, 2), [2, 2, 2, 2]),
            (2, (7, 7), (7, 7), (1, 1), [3, 3, 3, 3]),
            // Maps smaller than the kernel (ConvNeXt's last stage on small inputs).
            (3, (1, 1), (7, 7), (1, 1), [3, 3, 3, 3]),
            (2, (2, 3), (3, 3), (2, 2), [1, 1, 1, 1]),
            // Asymmetric padding ("same" for an even kernel), unequal strides, wide rows.
            (2, (6, 21), (4, 3), (1, 3), [1, 2, 2, 0]),
            (1, (10, 9), (3, 5), (3, 1), [0, 0, 0, 0]),
            (2, (17, 40), (3, 3), (2, 2), [0, 1, 1, 0]),
            // Stride 1 with padding as large as the kernel (the input gradient by gathering).
            (2, (5, 6), (3, 3), (1, 1), [3, 0, 1, 3]),
            // Many channels (one weight per plane, planes split across threads).
            (19, (12, 12), (5, 5), (1, 1), [2, 2, 2, 2]),
        ];
        for (c, (h, w), (kh, kw), (sh, sw), pads) in cases {
            let b = 2;
            let g = Geometry::depthwise(
                &Shape::new([b, c, h, w]),
                &Shape::new([c, 1, kh, kw]),
                [sh, sw],
                pads,
            );
            let x = values(b * c * h * w, 1);
            let wt = values(c * kh * kw, 2);
            let dy = values(g.planes() * g.p(), 3);
            let [ry, rdx, rdw] = reference(&g, &x, &wt, &dy);
            // The portable loops, and the AVX2 ones where the CPU has them.
            for avx2 in [false, has_avx2()] {
                let y = forward(&g, &x, &wt, avx2);
                let (dx, dw) = backward(&g, &x, &wt, &dy, (true, true), avx2);
                for (name, got, want) in [
                    ("output", y, &ry),
                    ("input grad", dx.unwrap(), &rdx),
                    ("weight grad", dw.unwrap(), &rdw),
                ] {
                    assert_eq!(got.len(), want.len(), "{name}");
                    for (k, (a, e)) in got.iter().zip(want).enumerate() {
                        assert!(
                            (*a as f64 - e).abs() <= 1e-5 * e.abs().max(1.0),
                            "{name}[{k}] {a} vs {e}: c{c} {h}x{w} k{kh}x{kw} s{sh}x{sw} \
                             p{pads:?} avx2 {avx2}"
                        );
                    }
                }
            }
        }
    }
}
