//! Training convolution for Burn's flex CPU backend: batched im2col + one GEMM per chunk of
//! images (Chellapilla, Puri and Simard, 2006, "High Performance Convolutional Neural Networks
//! for Document Processing"), with the backward pass written the same way (`dW = dY · colsᵀ`,
//! `dX = col2im(Wᵀ · dY)`), registered as a Burn backend extension with its own autodiff step.
//!
//! Why: Burn 0.22's flex convolution converts NCHW to NHWC and back around every call and runs
//! one small GEMM per image and 512-pixel tile, forward and backward; on a fine-tuning step the
//! copies cost as much as the arithmetic. Here the layout stays NCHW, the batch is folded into
//! the GEMM's N dimension (so late ResNet stages with 1-16 pixels per image still get large
//! products), transposed operands are passed to `gemm` as strides instead of being copied, and
//! nothing is differentiated that does not need it (no `dX` for the input images, no `dW` for
//! frozen weights).
//!
//! Convolutions on maps with no more pixels than live kernel taps (2x2 and 1x1 maps at 32x32
//! input) skip im2col altogether: the weight is unrolled into the dense matrix that maps a whole
//! input map to a whole output map, and the convolution is one fully connected layer.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::super::gemm::gemm;
use super::super::geometry::Geometry;
use super::tensor::{dense, f32s, par_build, tensor};
use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Floats of im2col buffer per chunk of images (8 MiB): large enough for big GEMMs, small
/// enough not to multiply the activation memory.
const COLS_BUDGET: usize = 1 << 21;

/// Largest im2col matrix (floats, 32 MiB) a training convolution keeps from its forward pass
/// for its weight gradient instead of rebuilding it in the backward pass.
const KEEP_COLS_MAX: usize = 1 << 23;

/// Largest total (floats, 256 MiB) of im2col matrices kept at once by all convolutions.
const KEEP_COLS_TOTAL: usize = 1 << 26;

static KEPT_FLOATS: AtomicUsize = AtomicUsize::new(0);

/// Buffers of dropped [`KeptCols`], reused by the next forward passes (a training step keeps the
/// same matrices every time; fresh allocations of this size would be zeroed and page-faulted
/// in again on every step).
static KEPT_POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// An im2col matrix kept for the backward pass, counted against [`KEEP_COLS_TOTAL`]: the
/// matrices of the forward pass's chunks of images, one after another.
#[derive(Debug)]
struct KeptCols(Vec<f32>);

impl KeptCols {
    /// A matrix of `n` floats (unspecified contents: im2col overwrites them all), if the budget
    /// allows.
    fn new(n: usize) -> Option<Self> {
        let reserved = n <= KEEP_COLS_MAX
            && KEPT_FLOATS
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |kept| {
                    (kept + n <= KEEP_COLS_TOTAL).then_some(kept + n)
                })
                .is_ok();
        if !reserved {
            return None;
        }
        let mut v = {
            let mut pool = KEPT_POOL.lock().unwrap_or_else(|e| e.into_inner());
            // The smallest pooled buffer that is large enough, else the largest.
            let best = (0..pool.len())
                .filter(|&i| pool[i].len() >= n)
                .min_by_key(|&i| pool[i].len())
                .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
            best.map(|i| pool.swap_remove(i)).unwrap_or_default()
        };
        v.resize(n, 0.0);
        Some(KeptCols(v))
    }
}

impl Drop for KeptCols {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        KEPT_FLOATS.fetch_sub(v.len(), Ordering::AcqRel);
        let mut pool = KEPT_POOL.lock().unwrap_or_else(|e| e.into_inner());
        let pooled: usize = pool.iter().map(Vec::capacity).sum();
        if pooled + v.capacity() <= KEEP_COLS_TOTAL {
            pool.push(v);
        }
    }
}

/// Reduction length (images x pixels in a chunk) from which the weight-gradient GEMM is split
/// across threads instead of parallelised inside `gemm`.
const SPLIT_REDUCTION: usize = 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A reusable per-thread work buffer of at least `n` floats whose contents are unspecified:
/// every user overwrites what it later reads. Saves zeroing and page-faulting megabytes of
/// fresh memory on every convolution.
struct Scratch(Vec<f32>);

impl Scratch {
    fn new(n: usize) -> Self {
        let mut v = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
        if v.len() < n {
            v.resize(n, 0.0);
        }
        Scratch(v)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        SCRATCH.with(|s| {
            let mut pool = s.borrow_mut();
            if pool.len() < 4 {
                pool.push(v);
            }
        });
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

/// A convolution on flex tensors with a hand-written backward pass (see the module docs).
#[backend_extension(Flex, Autodiff)]
pub(crate) trait FlexConv2d: Backend {
    /// `x [B, C, H, W]`, `weight [O, C, kh, kw]`, no bias, no dilation, one group.
    #[allow(clippy::too_many_arguments)]
    fn host_conv2d(
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

impl Geometry {
    /// Images per GEMM chunk.
    fn chunk(&self) -> usize {
        (COLS_BUDGET / (self.k() * self.p()).max(1)).clamp(1, self.b.max(1))
    }
}

/// For same-size stride-1 convolutions ([`Geometry::same_shift`]): one mask per kernel column
/// `j` over the `P` output pixels, all ones where the tap's input column lies inside the image
/// and zero where the shifted plane wraps around into the neighbouring row. Applied with a
/// bitwise AND inside the copy loops, it replaces per-row zero fills (two tiny `memset` calls
/// per output row on 8x8 maps).
fn wrap_masks(g: &Geometry) -> Vec<u32> {
    if g.same_shift(0, 0).is_none() {
        return Vec::new();
    }
    let p = g.p();
    let mut masks = vec![0u32; g.kw * p];
    for (j, mask) in masks.chunks_exact_mut(p).enumerate() {
        let (lo, hi) = g.valid_cols(j);
        for row in mask.chunks_exact_mut(g.wo) {
            row[lo..hi].fill(u32::MAX);
        }
    }
    masks
}

/// `dst[n] = src[n] & mask[n]`, bitwise (zero where the mask is zero).
#[inline(always)]
fn copy_masked(dst: &mut [f32], src: &[f32], mask: &[u32]) {
    for ((d, s), m) in dst.iter_mut().zip(src).zip(mask) {
        *d = f32::from_bits(s.to_bits() & m);
    }
}

/// `dst[n] += src[n] & mask[n]`, bitwise (nothing added where the mask is zero).
#[inline(always)]
fn add_masked(dst: &mut [f32], src: &[f32], mask: &[u32]) {
    for ((d, s), m) in dst.iter_mut().zip(src).zip(mask) {
        *d += f32::from_bits(s.to_bits() & m);
    }
}

/// im2col for images `b0..b0 + nb`: `cols[k, bb·P + p]`, `k = (c·kh + i)·kw + j`.
fn im2col(g: &Geometry, x: &[f32], b0: usize, nb: usize, cols: &mut [f32]) {
    let p = g.p();
    let masks = wrap_masks(g);
    cols[..g.k() * nb * p]
        .par_chunks_mut(nb * p)
        .enumerate()
        .for_each(|(k, row)| im2col_row(g, x, &masks, b0, nb, k, row));
}

/// One row `k` of [`im2col`]; `masks` from [`wrap_masks`].
#[inline(never)]
fn im2col_row(
    g: &Geometry,
    x: &[f32],
    masks: &[u32],
    b0: usize,
    nb: usize,
    k: usize,
    row: &mut [f32],
) {
    let (p, hw) = (g.p(), g.h * g.w);
    let (c, i, j) = (k / (g.kh * g.kw), (k / g.kw) % g.kh, k % g.kw);
    if let Some(shift) = g.same_shift(i, j) {
        // Stride 1, output as large as the input: the tap is the plane shifted by `shift`
        // elements, so one masked copy per image (zero where rows wrap around), zeros before
        // and after.
        let first = (-shift).clamp(0, p as isize) as usize;
        let last = (p as isize - shift).clamp(first as isize, p as isize) as usize;
        let from = (first as isize + shift) as usize;
        let mask = &masks[j * p..][first..last];
        for bb in 0..nb {
            let plane = &x[((b0 + bb) * g.c + c) * hw..][..hw];
            let dst = &mut row[bb * p..][..p];
            dst[..first].fill(0.0);
            dst[last..].fill(0.0);
            copy_masked(
                &mut dst[first..last],
                &plane[from..from + last - first],
                mask,
            );
        }
        return;
    }
    let (lo, hi) = g.valid_cols(j);
    for bb in 0..nb {
        let plane = &x[((b0 + bb) * g.c + c) * hw..][..hw];
        for oh in 0..g.ho {
            let dst = &mut row[bb * p + oh * g.wo..][..g.wo];
            let Some(ih) = g.input_row(oh, i) else {
                dst.fill(0.0);
                continue;
            };
            let src = &plane[ih * g.w..][..g.w];
            // Guarded: most rows need neither fill, and each is a `memset` call.
            if lo > 0 {
                dst[..lo].fill(0.0);
            }
            if hi < g.wo {
                dst[hi..].fill(0.0);
            }
            if lo < hi {
                let first = lo * g.sw + j - g.pl;
                if g.sw == 1 {
                    dst[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
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

/// The inverse scatter of [`im2col`]: `dx[b0..b0 + nb] += col2im(dcols)`.
///
/// Parallel over channels: a channel's `kh·kw` rows of `dcols` are read front to back (one
/// contiguous run per tap) while its `nb` gradient planes, small enough to stay in cache, take
/// every tap's contribution in turn. (Plane by plane instead, each tap's row is a separate
/// `P`-float read `nb·P` floats away from the last, which the prefetchers do not follow.)
fn col2im(g: &Geometry, dcols: &[f32], b0: usize, nb: usize, dx: &mut [f32]) {
    let hw = g.h * g.w;
    let masks = wrap_masks(g);
    // planes[c][bb] = dx[b0 + bb, c]
    let mut planes: Vec<Vec<&mut [f32]>> = (0..g.c).map(|_| Vec::with_capacity(nb)).collect();
    for image in dx[b0 * g.c * hw..(b0 + nb) * g.c * hw].chunks_exact_mut(g.c * hw) {
        for (c, plane) in image.chunks_exact_mut(hw).enumerate() {
            planes[c].push(plane);
        }
    }
    planes
        .into_par_iter()
        .enumerate()
        .for_each(|(c, mut planes)| col2im_channel(g, dcols, &masks, nb, c, &mut planes));
}

/// Channel `c` of [`col2im`]: `planes[bb]` is the gradient plane of image `b0 + bb`;
/// `masks` from [`wrap_masks`].
#[inline(never)]
fn col2im_channel(
    g: &Geometry,
    dcols: &[f32],
    masks: &[u32],
    nb: usize,
    c: usize,
    planes: &mut [&mut [f32]],
) {
    let p = g.p();
    for i in 0..g.kh {
        for j in 0..g.kw {
            let k = (c * g.kh + i) * g.kw + j;
            let (lo, hi) = g.valid_cols(j);
            if lo >= hi {
                continue;
            }
            let rows = &dcols[k * nb * p..][..nb * p];
            if let Some(shift) = g.same_shift(i, j) {
                // The plane shifted by `shift`: one contiguous accumulation, masked where the
                // shifted rows wrap around.
                let first = (-shift).clamp(0, p as isize) as usize;
                let last = (p as isize - shift).clamp(first as isize, p as isize) as usize;
                let from = (first as isize + shift) as usize;
                let mask = &masks[j * p..][first..last];
                for (plane, row) in planes.iter_mut().zip(rows.chunks_exact(p)) {
                    add_masked(
                        &mut plane[from..from + last - first],
                        &row[first..last],
                        mask,
                    );
                }
                continue;
            }
            for (plane, row) in planes.iter_mut().zip(rows.chunks_exact(p)) {
                for oh in 0..g.ho {
                    let Some(ih) = g.input_row(oh, i) else {
                        continue;
                    };
                    let src = &row[oh * g.wo + lo..oh * g.wo + hi];
                    let first = ih * g.w + lo * g.sw + j - g.pl;
                    let dst = &mut plane[first..];
                    if g.sw == 1 {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d += *s;
                        }
                    } else {
                        for (d, s) in dst.iter_mut().step_by(g.sw).zip(src) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

/// `y[b0 + bb, o, :] = chunk[o, bb·P..]`.
fn scatter(g: &Geometry, b0: usize, nb: usize, chunk: &[f32], y: &mut [f32]) {
    let p = g.p();
    y[b0 * g.o * p..(b0 + nb) * g.o * p]
        .par_chunks_mut(p)
        .enumerate()
        .for_each(|(q, dst)| {
            let (bb, o) = (q / g.o, q % g.o);
            dst.copy_from_slice(&chunk[o * nb * p + bb * p..][..p]);
        });
}

/// `chunk[o, bb·P + p] = dy[b0 + bb, o, p]`, the inverse of [`scatter`].
fn gather(g: &Geometry, b0: usize, nb: usize, dy: &[f32], chunk: &mut [f32]) {
    let p = g.p();
    let rows = &dy[b0 * g.o * p..(b0 + nb) * g.o * p];
    chunk[..g.o * nb * p]
        .par_chunks_mut(nb * p)
        .enumerate()
        .for_each(|(o, dst)| {
            for bb in 0..nb {
                dst[bb * p..][..p].copy_from_slice(&rows[(bb * g.o + o) * p..][..p]);
            }
        });
}

/// `dst[j, i] = src[i, j]` for a row-major `rows x cols` matrix `src`, in 16x16 tiles.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 16;
    let (src, dst) = (&src[..rows * cols], &mut dst[..rows * cols]);
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                for j in j0..(j0 + TILE).min(cols) {
                    dst[j * rows + i] = src[i * cols + j];
                }
            }
        }
    }
}

/// `weight[:, :, rows, cols]`, dense.
fn crop_weight(g: &Geometry, weight: &[f32], rows: &Range<usize>, cols: &Range<usize>) -> Vec<f32> {
    // Element by element: a `copy_from_slice` per kernel row would be one `memcpy` call per
    // float for kernels trimmed to one tap per row (the 1-row maps of a 1xN input).
    let taps: Vec<usize> = rows
        .clone()
        .flat_map(|i| cols.clone().map(move |j| i * g.kw + j))
        .collect();
    let mut out = Vec::with_capacity(g.o * g.c * taps.len());
    for kernel in weight.chunks_exact(g.kh * g.kw) {
        out.extend(taps.iter().map(|&t| kernel[t]));
    }
    out
}

/// The weight gradient of a trimmed convolution: `live` (the gradient of the cropped weight,
/// `rows x cols` taps per kernel) in place, zero for the dead taps.
fn uncrop_grad(g: &Geometry, live: &[f32], rows: &Range<usize>, cols: &Range<usize>) -> Vec<f32> {
    let (kk, nlive) = (g.kh * g.kw, rows.len() * cols.len());
    // For each tap of the full kernel, its index among the live taps.
    let lookup: Vec<Option<usize>> = (0..kk)
        .map(|t| {
            let (i, j) = (t / g.kw, t % g.kw);
            (rows.contains(&i) && cols.contains(&j))
                .then(|| (i - rows.start) * cols.len() + j - cols.start)
        })
        .collect();
    const KERNELS: usize = 256;
    let kernels = g.o * g.c;
    par_build(kernels * kk, KERNELS * kk, |chunk| {
        let lookup = &lookup;
        let first = chunk * KERNELS;
        (first..(first + KERNELS).min(kernels)).flat_map(move |oc| {
            let src = &live[oc * nlive..][..nlive];
            lookup.iter().map(move |l| l.map_or(0.0, |li| src[li]))
        })
    })
}

/// For every output pixel `p` and input pixel `q`, the kernel tap linking them
/// ([`Geometry::tap`]), at `p·H·W + q`.
fn tap_table(g: &Geometry) -> Vec<Option<usize>> {
    let hw = g.h * g.w;
    (0..g.p() * hw).map(|pq| g.tap(pq / hw, pq % hw)).collect()
}

/// The convolution as a dense matrix `U[O·P, C·H·W]`, `U[(o, p), (c, q)] = weight[o, c, t]`
/// for the tap `t` linking output pixel `p` to input pixel `q` (zero where none does), so
/// that `y[b] = U · x[b]` with both images flattened in NCHW order.
fn unroll_weight(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let (p, hw, kk) = (g.p(), g.h * g.w, g.kh * g.kw);
    let taps = tap_table(g);
    let row = g.c * hw;
    // A few rows of U per task (one row is C·H·W floats).
    let rows_per_chunk = (4096 / row.max(1)).max(1);
    let rows = g.o * p;
    par_build(rows * row, rows_per_chunk * row, |chunk| {
        let (taps, first) = (&taps, chunk * rows_per_chunk);
        (first..(first + rows_per_chunk).min(rows)).flat_map(move |op| {
            let (o, p) = (op / p, op % p);
            let kernels = &weight[o * g.c * kk..][..g.c * kk];
            let taps = &taps[p * hw..][..hw];
            kernels
                .chunks_exact(kk)
                .flat_map(move |kernel| taps.iter().map(move |t| t.map_or(0.0, |t| kernel[t])))
        })
    })
}

/// The weight gradient from the gradient of the unrolled weight ([`unroll_weight`]): each
/// tap's entries summed.
fn fold_grad(g: &Geometry, du: &[f32]) -> Vec<f32> {
    let (p, hw, kk) = (g.p(), g.h * g.w, g.kh * g.kw);
    let taps = tap_table(g);
    let mut dw = vec![0.0f32; g.o * g.c * kk];
    dw.par_chunks_mut(g.c * kk).enumerate().for_each(|(o, dw)| {
        for (pp, taps) in taps.chunks_exact(hw).enumerate() {
            let row = &du[(o * p + pp) * g.c * hw..][..g.c * hw];
            for (dk, dx) in dw.chunks_exact_mut(kk).zip(row.chunks_exact(hw)) {
                for (t, &v) in taps.iter().zip(dx) {
                    if let Some(t) = *t {
                        dk[t] += v;
                    }
                }
            }
        }
    });
    dw
}

/// The forward pass of an unrolled convolution ([`Geometry::unrolls`]): `yᵀ[O·P, B] =
/// U · xᵀ[C·H·W, B]`, with both transposes explicit (`gemm` ran this product 1.4x as fast as
/// with `x` given by strides, and 3.5x as fast as `y = x · Uᵀ` with `Uᵀ` by strides).
fn forward_unrolled(g: &Geometry, x: &[f32], unrolled: &[f32]) -> Vec<f32> {
    let (n_in, n_out) = (g.c * g.h * g.w, g.o * g.p());
    let mut xt = Scratch::new(n_in * g.b);
    transpose(x, g.b, n_in, &mut xt);
    let mut yt = Scratch::new(n_out * g.b);
    gemm(
        (n_out, g.b, n_in),
        true,
        &mut yt,
        false,
        unrolled,
        (n_in, 1),
        &xt,
        (g.b, 1),
    );
    let mut y = vec![0.0f32; g.b * n_out];
    transpose(&yt, n_out, g.b, &mut y);
    y
}

/// The backward pass of an unrolled convolution: `dX[B, C·H·W] = dY[B, O·P] · U` and
/// `dU[O·P, C·H·W] = dYᵀ · X`, folded into the weight gradient.
fn backward_unrolled(
    g: &Geometry,
    x: &[f32],
    unrolled: &[f32],
    dy: &[f32],
    need_dx: bool,
    need_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (n_in, n_out) = (g.c * g.h * g.w, g.o * g.p());
    let dx = need_dx.then(|| {
        let mut dx = vec![0.0f32; g.b * n_in];
        gemm(
            (g.b, n_in, n_out),
            true,
            &mut dx,
            false,
            dy,
            (n_out, 1),
            unrolled,
            (n_in, 1),
        );
        dx
    });
    let dw = need_dw.then(|| {
        let mut du = Scratch::new(n_out * n_in);
        gemm(
            (n_out, n_in, g.b),
            true,
            &mut du,
            false,
            dy,
            (1, n_out),
            x,
            (n_in, 1),
        );
        fold_grad(g, &du)
    });
    (dx, dw)
}

/// The convolution; with `keep`, also the im2col matrix for the backward pass when it fits
/// the budget; and the weight as it was multiplied when that is not the stored one (the
/// backward pass reuses it): unrolled ([`unroll_weight`]), or its live taps when dead ones
/// were trimmed.
fn forward(g: &Geometry, x: &[f32], weight: &[f32], keep: bool) -> Forward {
    if g.pointwise() {
        return (forward_pointwise(g, x, weight), None, None);
    }
    if g.unrolls() {
        let unrolled = unroll_weight(g, weight);
        return (forward_unrolled(g, x, &unrolled), None, Some(unrolled));
    }
    match g.trimmed() {
        Some((t, rows, cols)) => {
            let cropped = crop_weight(g, weight, &rows, &cols);
            let (y, kept) = forward_dense(&t, x, &cropped, keep);
            (y, kept, Some(cropped))
        }
        None => {
            let (y, kept) = forward_dense(g, x, weight, keep);
            (y, kept, None)
        }
    }
}

/// Output pixels per image from which a 1x1 convolution runs image by image straight on its
/// input ([`Geometry::pointwise`]).
const POINTWISE_MIN_PIXELS: usize = 256;

impl Geometry {
    /// Whether this is a 1x1, stride-1, unpadded convolution on maps of at least
    /// [`POINTWISE_MIN_PIXELS`] pixels (the expand and project convolutions of MobileNet and
    /// EfficientNet, ResNet-50's bottlenecks): each image's input plane stack `[C, P]` is
    /// already its im2col matrix and its output `[O, P]` the GEMM's, so every image is one
    /// GEMM without im2col, scatter, gather or col2im (smaller maps are batched as for other
    /// convolutions, where one image's GEMM would be too small).
    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.pt == 0
            && self.pl == 0
            && self.ho == self.h
            && self.wo == self.w
            && self.p() >= POINTWISE_MIN_PIXELS
    }
}

/// [`forward`] for a [`Geometry::pointwise`] convolution: `y[b] = W[O, C] · x[b][C, P]`.
fn forward_pointwise(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    let p = g.p();
    let mut y = vec![0.0f32; g.b * g.o * p];
    for (b, dst) in y.chunks_exact_mut(g.o * p).enumerate() {
        let src = &x[b * g.c * p..][..g.c * p];
        gemm(
            (g.o, p, g.c),
            true,
            dst,
            false,
            weight,
            (g.c, 1),
            src,
            (p, 1),
        );
    }
    y
}

/// [`backward`] for a [`Geometry::pointwise`] convolution: `dx[b] = Wᵀ · dy[b]` and
/// `dW = Σ_b dy[b] · x[b]ᵀ`, the images of the weight gradient split between threads in a fixed
/// assignment (each thread sums its own images; the partial sums are added in a fixed order).
fn backward_pointwise(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    need_dx: bool,
    need_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let p = g.p();
    let dx = need_dx.then(|| {
        let mut dx = vec![0.0f32; g.b * g.c * p];
        for (b, dst) in dx.chunks_exact_mut(g.c * p).enumerate() {
            let src = &dy[b * g.o * p..][..g.o * p];
            // dx[b][C, P] = Wᵀ[C, O] · dy[b][O, P]
            gemm(
                (g.c, p, g.o),
                true,
                dst,
                false,
                weight,
                (1, g.c),
                src,
                (p, 1),
            );
        }
        dx
    });
    let dw = need_dw.then(|| {
        let parts = rayon::current_num_threads().clamp(1, 8).min(g.b.max(1));
        let mut partial: Vec<Vec<f32>> = (0..parts).map(|_| vec![0.0f32; g.c * g.o]).collect();
        partial.par_iter_mut().enumerate().for_each(|(t, part)| {
            for b in (t..g.b).step_by(parts) {
                let (d, xs) = (&dy[b * g.o * p..][..g.o * p], &x[b * g.c * p..][..g.c * p]);
                // dWᵀ[C, O] += x[b][C, P] · dy[b][O, P]ᵀ (the orientation `backward_dense`
                // found fastest for long reductions)
                gemm((g.c, g.o, p), false, part, true, xs, (p, 1), d, (1, p));
            }
        });
        let mut dwt = vec![0.0f32; g.c * g.o];
        for part in &partial {
            for (d, v) in dwt.iter_mut().zip(part) {
                *d += v;
            }
        }
        let mut dw = vec![0.0f32; g.o * g.c];
        transpose(&dwt, g.c, g.o, &mut dw);
        dw
    });
    (dx, dw)
}

/// Output, kept im2col matrix, prepared weight (see [`forward`]).
type Forward = (Vec<f32>, Option<KeptCols>, Option<Vec<f32>>);

fn forward_dense(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    keep: bool,
) -> (Vec<f32>, Option<KeptCols>) {
    let (k, p) = (g.k(), g.p());
    let mut kept = if keep {
        KeptCols::new(k * g.b * p)
    } else {
        None
    };
    let keep = kept.is_some();
    // Chunks of the same size whether the matrix is kept or not (a kept matrix is the chunks'
    // matrices one after another), so that the results never depend on the keep budget, which
    // other models in the process share.
    let nb_max = g.chunk();
    let mut y = vec![0.0f32; g.b * g.o * p];
    let mut scratch = Scratch::new(if keep { 0 } else { k * nb_max * p });
    let mut out = Scratch::new(if nb_max > 1 { g.o * nb_max * p } else { 0 });
    let mut b0 = 0;
    while b0 < g.b {
        let nb = nb_max.min(g.b - b0);
        let cols: &mut [f32] = match kept.as_mut() {
            Some(kept) => &mut kept.0[k * b0 * p..][..k * nb * p],
            None => &mut scratch,
        };
        im2col(g, x, b0, nb, cols);
        let dims = (g.o, nb * p, k);
        if nb == 1 {
            let dst = &mut y[b0 * g.o * p..][..g.o * p];
            gemm(dims, true, dst, false, weight, (k, 1), cols, (p, 1));
        } else {
            gemm(
                dims,
                true,
                &mut out,
                false,
                weight,
                (k, 1),
                cols,
                (nb * p, 1),
            );
            scatter(g, b0, nb, &out, &mut y);
        }
        b0 += nb;
    }
    (y, kept)
}

/// `(dx, dw)`, each only when asked for; `weight` is the weight the forward pass multiplied:
/// the unrolled weight for unrolled convolutions, the live taps [`forward`] cropped when the
/// convolution is trimmed, else the whole weight.
fn backward(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    need_dx: bool,
    need_dw: bool,
    kept: Option<&[f32]>,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    if g.pointwise() {
        return backward_pointwise(g, x, weight, dy, need_dx, need_dw);
    }
    if g.unrolls() {
        return backward_unrolled(g, x, weight, dy, need_dx, need_dw);
    }
    let Some((t, rows, cols)) = g.trimmed() else {
        return backward_dense(g, x, weight, dy, need_dx, need_dw, kept);
    };
    let (dx, dw_live) = backward_dense(&t, x, weight, dy, need_dx, need_dw, kept);
    // Dead taps get zero gradient.
    let dw = dw_live.map(|live| uncrop_grad(g, &live, &rows, &cols));
    (dx, dw)
}

#[allow(clippy::too_many_arguments)]
fn backward_dense(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    need_dx: bool,
    need_dw: bool,
    kept: Option<&[f32]>,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (k, p) = (g.k(), g.p());
    // The chunks of the forward pass (its kept matrix, if any, is theirs one after another).
    let kept = kept.filter(|c| c.len() == k * g.b * p);
    let nb_max = g.chunk();
    let mut dx = need_dx.then(|| vec![0.0f32; g.b * g.c * g.h * g.w]);
    let threads = rayon::current_num_threads().clamp(1, 8);
    let mut dwt_parts: Vec<Vec<f32>> = if need_dw {
        (0..threads).map(|_| vec![0.0f32; k * g.o]).collect()
    } else {
        Vec::new()
    };
    let mut used_parts = 0;
    let mut cols = Scratch::new(k * nb_max * p);
    let mut dy_chunk = Scratch::new(if nb_max > 1 { g.o * nb_max * p } else { 0 });
    let mut b0 = 0;
    while b0 < g.b {
        let nb = nb_max.min(g.b - b0);
        let n = nb * p;
        let dyc: &[f32] = if nb == 1 {
            &dy[b0 * g.o * p..][..g.o * p]
        } else {
            gather(g, b0, nb, dy, &mut dy_chunk);
            &dy_chunk
        };
        if !dwt_parts.is_empty() {
            let cols: &[f32] = match kept {
                Some(kept) => &kept[k * b0 * p..][..k * nb * p],
                None => {
                    im2col(g, x, b0, nb, &mut cols);
                    &cols
                }
            };
            // dWᵀ[K, O] += cols[K, n] · dYᵀ[n, O]. In this orientation (rather than
            // dW = dY · colsᵀ) `gemm` runs 2-6x faster on these long, thin reductions; long
            // ones are also split across threads, each summing its own share of the columns.
            let parts = dwt_parts.len();
            let split = n >= SPLIT_REDUCTION && parts > 1;
            let share = if split { n.div_ceil(parts) } else { n };
            let parts = if split { parts } else { 1 };
            used_parts = used_parts.max(parts);
            dwt_parts[..parts]
                .par_iter_mut()
                .enumerate()
                .for_each(|(t, part)| {
                    let start = (t * share).min(n);
                    let len = share.min(n - start);
                    if len > 0 {
                        gemm(
                            (k, g.o, len),
                            !split,
                            part,
                            true,
                            &cols[start..],
                            (n, 1),
                            &dyc[start..],
                            (1, n),
                        );
                    }
                });
        }
        if let Some(dx) = dx.as_mut() {
            // dcols[K, n] = Wᵀ[K, O] · dY[O, n]
            gemm(
                (k, n, g.o),
                true,
                &mut cols,
                false,
                weight,
                (1, k),
                dyc,
                (n, 1),
            );
            col2im(g, &cols, b0, nb, dx);
        }
        b0 += nb;
    }
    // dW[o, k] = Σ_parts dWᵀ_part[k, o], transposed in blocks of 16 rows of dW so that each
    // read of a part is one contiguous run of 16 floats.
    let dw = need_dw.then(|| {
        const BLOCK: usize = 16;
        let parts = &dwt_parts[..used_parts];
        let mut dw = vec![0.0f32; g.o * k];
        dw.par_chunks_mut(BLOCK * k)
            .enumerate()
            .for_each(|(blk, rows)| {
                let o0 = blk * BLOCK;
                let nrows = rows.len() / k;
                for kk in 0..k {
                    for part in parts {
                        let src = &part[kk * g.o + o0..][..nrows];
                        for (r, &v) in src.iter().enumerate() {
                            rows[r * k + kk] += v;
                        }
                    }
                }
            });
        dw
    });
    (dx, dw)
}

impl FlexConv2d for Flex {
    fn host_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        stride_h: usize,
        stride_w: usize,
        pad_top: usize,
        pad_left: usize,
        pad_bottom: usize,
        pad_right: usize,
    ) -> FlexTensor {
        let g = Geometry::conv(
            &x.shape(),
            &weight.shape(),
            [stride_h, stride_w],
            [pad_top, pad_left, pad_bottom, pad_right],
        );
        let (x, weight) = (dense(x), dense(weight));
        forward_flex(&g, &x, &weight, false).0
    }
}

/// [`forward`] on flex tensors: the output, and what the backward pass reuses.
fn forward_flex(
    g: &Geometry,
    x: &FlexTensor,
    weight: &FlexTensor,
    keep: bool,
) -> (FlexTensor, Option<KeptCols>, Option<Vec<f32>>) {
    let (y, kept, prepared) = forward(g, f32s(x), f32s(weight), keep);
    (tensor(y, [g.b, g.o, g.ho, g.wo]), kept, prepared)
}

/// What [`FlexConv2dBackward`] keeps from the forward pass.
#[derive(Clone, Debug)]
struct ConvState {
    x: FlexTensor,
    weight: FlexTensor,
    g: Geometry,
    /// The forward pass's im2col matrix, when it was kept.
    kept: Option<Arc<KeptCols>>,
    /// The weight as the forward pass multiplied it, when not the stored one: unrolled, or
    /// its live taps when dead ones were trimmed.
    prepared: Option<Arc<Vec<f32>>>,
}

#[derive(Debug)]
struct FlexConv2dBackward;

impl Backward<Flex, 2> for FlexConv2dBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let ConvState {
            x,
            weight,
            g,
            kept,
            prepared,
        } = ops.state;
        let dy = dense(grad);
        let (dx, dw) = backward(
            &g,
            f32s(&x),
            prepared.as_deref().map_or(f32s(&weight), |c| &c[..]),
            f32s(&dy),
            node_x.is_some(),
            node_weight.is_some(),
            kept.as_deref().map(|k| &k.0[..]),
        );
        drop(kept);
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, tensor(dx, [g.b, g.c, g.h, g.w]));
        }
        if let (Some(node), Some(dw)) = (node_weight, dw) {
            grads.register::<Flex>(node.id, tensor(dw, [g.o, g.c, g.kh, g.kw]));
        }
    }
}

impl<C: CheckpointStrategy> FlexConv2d for Autodiff<Flex, C> {
    fn host_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride_h: usize,
        stride_w: usize,
        pad_top: usize,
        pad_left: usize,
        pad_bottom: usize,
        pad_right: usize,
    ) -> FloatTensor<Self> {
        let weight_grad = weight.is_tracked();
        let prep = FlexConv2dBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful();
        let (x, weight) = (dense(x.into_primitive()), dense(weight.into_primitive()));
        let g = Geometry::conv(
            &x.shape(),
            &weight.shape(),
            [stride_h, stride_w],
            [pad_top, pad_left, pad_bottom, pad_right],
        );
        match prep {
            OpsKind::Tracked(prep) => {
                let (y, kept, prepared) = forward_flex(&g, &x, &weight, weight_grad);
                let state = ConvState {
                    x,
                    weight,
                    g,
                    kept: kept.map(Arc::new),
                    prepared: prepared.map(Arc::new),
                };
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward_flex(&g, &x, &weight, false).0),
        }
    }
}

/// Whether [`conv2d_host`] handles tensors on this device with this dtype.
pub(crate) fn supported(x: &Tensor<4>, weight: &Tensor<4>) -> bool {
    x.dtype() == DType::F32 && weight.dtype() == DType::F32
}

/// `x [B, C, H, W]` convolved with `weight [O, C, kh, kw]` (no bias), on the flex device.
pub(crate) fn conv2d_host(
    x: Tensor<4>,
    weight: Tensor<4>,
    [sh, sw]: [usize; 2],
    [top, left, bottom, right]: [usize; 4],
) -> Tensor<4> {
    let out = <Dispatch as FlexConv2d>::host_conv2d(
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

    /// Whether the forward pass could keep its im2col matrix (the budget is shared by every
    /// model in the process) must not change a single bit of the results.
    #[test]
    fn results_do_not_depend_on_the_keep_budget() {
        let (b, c, h, o) = (20, 64, 16, 8);
        let g = Geometry::conv(
            &Shape::new([b, c, h, h]),
            &Shape::new([o, c, 3, 3]),
            [1, 1],
            [1, 1, 1, 1],
        );
        assert!(g.chunk() < g.b, "the case must take more than one chunk");
        let x = values(b * c * h * h, 1);
        let w = values(o * c * 9, 2);
        let dy = values(b * o * h * h, 3);
        let (y1, kept, _) = forward(&g, &x, &w, true);
        let kept = kept.expect("the budget is free in this test");
        let (y2, none, _) = forward(&g, &x, &w, false);
        assert!(none.is_none());
        let differing = |a: &[f32], b: &[f32]| {
            assert_eq!(a.len(), b.len());
            a.iter()
                .zip(b)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count()
        };
        assert_eq!(differing(&y1, &y2), 0, "outputs");
        let (dx1, dw1) = backward(&g, &x, &w, &dy, true, true, Some(&kept.0));
        let (dx2, dw2) = backward(&g, &x, &w, &dy, true, true, None);
        let (dx1, dx2, dw1, dw2) = (dx1.unwrap(), dx2.unwrap(), dw1.unwrap(), dw2.unwrap());
        assert_eq!(differing(&dx1, &dx2), 0, "input gradients");
        assert_eq!(differing(&dw1, &dw2), 0, "weight gradients");
    }
}
