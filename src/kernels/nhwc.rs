//! A CPU inference path for BatchNorm-folded ResNets: NHWC activations, im2col over the whole
//! batch and one `gemm` call per convolution (the `gemm` crate that Burn's flex backend uses
//! itself), with the bias, the residual addition and the ReLU fused into the product's
//! accumulator. This is the lowering oneDNN-style CPU inference engines use; it exists because
//! Burn 0.22's flex convolution runs one small GEMM per image and per 512-pixel tile, which on
//! CIFAR-sized inputs turns the late stages into matrix-vector products (see the crate's
//! benchmark notes). Used by [`FusedResNet`](crate::model::FusedResNet) on CPU devices; outputs
//! match the Burn path to float rounding (tested).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use super::gemm::gemm;
use super::geometry::{linking_tap, live, out_len, runs_as_dense_layer};

/// NHWC activations of a batch.
struct Act {
    data: Vec<f32>,
    b: usize,
    h: usize,
    w: usize,
    c: usize,
}

/// A convolution with its (folded) bias, weights laid out as `[kh·kw·Cin, Cout]`.
pub(crate) struct NhwcConv {
    weight: Vec<f32>,
    bias: Vec<f32>,
    c_in: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    pad: [usize; 2],
    /// The weight unrolled for the last input size that ran as a dense layer
    /// ([`NhwcConv::unrolled`]), with that size.
    unrolled: Mutex<Option<Unrolled>>,
}

/// An input size and the weight unrolled for it.
type Unrolled = ((usize, usize), Arc<Vec<f32>>);

fn read_f32<const D: usize>(t: Tensor<D>) -> Option<Vec<f32>> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().ok()
}

impl NhwcConv {
    /// `None` when the convolution is not one this path handles (groups, dilation,
    /// asymmetric or computed padding).
    pub(crate) fn new(conv: &Conv2d) -> Option<Self> {
        if conv.groups != 1 || conv.dilation != [1, 1] {
            return None;
        }
        let pad = match conv.padding {
            PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r => [t, l],
            PaddingConfig2d::Valid => [0, 0],
            _ => return None,
        };
        let [c_out, c_in, kh, kw] = conv.weight.dims();
        // [Cout, Cin, kh, kw] -> [kh, kw, Cin, Cout], transposed by the backend.
        let weight = read_f32(conv.weight.val().permute([2, 3, 1, 0]))?;
        let bias = match &conv.bias {
            Some(b) => read_f32(b.val())?,
            None => vec![0f32; c_out],
        };
        Some(NhwcConv {
            weight,
            bias,
            c_in,
            c_out,
            kh,
            kw,
            stride: conv.stride,
            pad,
            unrolled: Mutex::new(None),
        })
    }

    /// For `h x w` input maps with no more pixels than the kernel has live taps (`taps`):
    /// the weight as the dense matrix `U[(q, c), (p, o)]` that maps a whole NHWC input map to a
    /// whole NHWC output map, `U = weight[t, c, o]` for the tap `t` linking output pixel `p` to
    /// input pixel `q`, zero where none does. Multiplying every output pixel with every input
    /// pixel then costs no more than im2col's products and needs no im2col (on the 2x2 maps of
    /// ResNet's third stage at 32x32 input each output pixel sees 4 of the 9 taps: 2.25x fewer
    /// multiply-adds). Built once per input size and kept.
    fn unrolled(
        &self,
        (h, w): (usize, usize),
        (ho, wo): (usize, usize),
        taps: usize,
    ) -> Option<Arc<Vec<f32>>> {
        let (hw, p) = (h * w, ho * wo);
        if !runs_as_dense_layer(hw, p, taps, self.c_in, self.c_out) {
            return None;
        }
        let mut cache = self.unrolled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((size, u)) = cache.as_ref()
            && *size == (h, w)
        {
            return Some(Arc::clone(u));
        }
        let block = self.c_in * self.c_out;
        let row = p * self.c_out;
        let mut u = vec![0f32; hw * self.c_in * row];
        u.par_chunks_mut(self.c_in * row)
            .enumerate()
            .for_each(|(q, rows)| {
                let (ih, iw) = (q / w, q % w);
                for pp in 0..p {
                    let (oh, ow) = (pp / wo, pp % wo);
                    let (Some(i), Some(j)) = (
                        linking_tap(oh, ih, self.stride[0], self.pad[0], self.kh),
                        linking_tap(ow, iw, self.stride[1], self.pad[1], self.kw),
                    ) else {
                        continue;
                    };
                    let kernel = &self.weight[(i * self.kw + j) * block..][..block];
                    for (c, src) in kernel.chunks_exact(self.c_out).enumerate() {
                        rows[c * row + pp * self.c_out..][..self.c_out].copy_from_slice(src);
                    }
                }
            });
        let u = Arc::new(u);
        *cache = Some(((h, w), Arc::clone(&u)));
        Some(u)
    }

    fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        (
            out_len(h, 2 * self.pad[0], self.kh, self.stride[0]),
            out_len(w, 2 * self.pad[1], self.kw, self.stride[1]),
        )
    }

    /// `relu?(conv(x) + bias + residual?)`.
    fn forward(&self, x: &Act, residual: Option<&Act>, relu: bool) -> Act {
        let (ho, wo) = self.out_size(x.h, x.w);
        let n = x.b * ho * wo;
        // Only the kernel taps that ever see the image (on a 1x1 map, the centre of a 3x3
        // kernel): the others multiply padding.
        let (rows, taps) = (
            live(self.kh, ho, self.stride[0], self.pad[0], x.h),
            live(self.kw, wo, self.stride[1], self.pad[1], x.w),
        );
        let k = rows.len() * taps.len() * self.c_in;
        let block = self.c_in * self.c_out;
        let live_weight = || -> Cow<'_, [f32]> {
            if rows.len() == self.kh && taps.len() == self.kw {
                Cow::Borrowed(&self.weight)
            } else {
                let mut w = Vec::with_capacity(k * self.c_out);
                for i in rows.clone() {
                    let first = (i * self.kw + taps.start) * block;
                    w.extend_from_slice(&self.weight[first..first + taps.len() * block]);
                }
                Cow::Owned(w)
            }
        };
        // A single live tap reading the input in place: the input is the im2col matrix.
        let direct = rows.len() == 1
            && taps.len() == 1
            && self.stride == [1, 1]
            && rows.start == self.pad[0]
            && taps.start == self.pad[1]
            && (ho, wo) == (x.h, x.w);
        // The accumulator starts as bias (+ residual), the product is added to it, then the
        // ReLU: one tile of output rows at a time, so that each pass over a tile finds it in
        // cache (whole-output passes read and wrote 25-100 MB per layer at 224x224).
        let c_out = self.c_out;
        let start = |dst: &mut [f32], r0: usize| {
            dst.par_chunks_mut(c_out * 64)
                .enumerate()
                .for_each(|(chunk, rows)| {
                    for (r, row) in rows.chunks_mut(c_out).enumerate() {
                        row.copy_from_slice(&self.bias);
                        if let Some(res) = residual {
                            let at = (r0 + chunk * 64 + r) * c_out;
                            for (o, v) in row.iter_mut().zip(&res.data[at..at + c_out]) {
                                *o += v;
                            }
                        }
                    }
                });
        };
        let finish = |dst: &mut [f32]| {
            if relu {
                dst.par_chunks_mut(1 << 14).for_each(|chunk| {
                    for v in chunk {
                        *v = v.max(0.0);
                    }
                });
            }
        };
        let mut out = vec![0f32; n * c_out];
        let unrolled = if direct {
            None
        } else {
            self.unrolled((x.h, x.w), (ho, wo), rows.len() * taps.len())
        };
        if direct {
            // Tiles of about 4 MB of output.
            let weight = live_weight();
            let tile = ((1 << 20) / c_out).max(256).min(n);
            let mut r0 = 0;
            while r0 < n {
                let rows = tile.min(n - r0);
                let dst = &mut out[r0 * c_out..(r0 + rows) * c_out];
                start(dst, r0);
                gemm_acc(
                    dst,
                    &x.data[r0 * k..(r0 + rows) * k],
                    &weight,
                    rows,
                    k,
                    c_out,
                );
                finish(dst);
                r0 += rows;
            }
        } else if let Some(u) = unrolled {
            // out[B, P·O] += x[B, H·W·C] · U (maps of a few pixels: one tile).
            start(&mut out, 0);
            let n_in = x.h * x.w * self.c_in;
            gemm_acc(&mut out, &x.data, &u, x.b, n_in, ho * wo * c_out);
            finish(&mut out);
        } else {
            // im2col in row tiles of about 8 MB, reusing one buffer: large images never
            // materialise their whole patch matrix.
            let weight = live_weight();
            let tile = ((8 << 20) / (4 * k)).max(256).min(n);
            let mut cols = vec![0f32; tile * k];
            let rows_live = rows.clone();
            let mut r0 = 0;
            while r0 < n {
                let rows = tile.min(n - r0);
                let cols = &mut cols[..rows * k];
                self.im2col(x, (ho, wo), r0, cols, (&rows_live, &taps));
                let dst = &mut out[r0 * c_out..(r0 + rows) * c_out];
                start(dst, r0);
                gemm_acc(dst, cols, &weight, rows, k, c_out);
                finish(dst);
                r0 += rows;
            }
        }
        Act {
            data: out,
            b: x.b,
            h: ho,
            w: wo,
            c: self.c_out,
        }
    }

    /// Patch rows `first..first + cols.len() / k` of the `[B·Ho·Wo, taps·Cin]` im2col matrix
    /// over the live kernel taps `rows x taps`, zero-padded, into `cols`.
    fn im2col(
        &self,
        x: &Act,
        (ho, wo): (usize, usize),
        first: usize,
        cols: &mut [f32],
        (rows, taps): (&Range<usize>, &Range<usize>),
    ) {
        let c = x.c;
        let k = rows.len() * taps.len() * c;
        let (sh, sw) = (self.stride[0], self.stride[1]);
        let (ph, pw) = (self.pad[0] as isize, self.pad[1] as isize);
        let (j0, j1) = (taps.start as isize, taps.end as isize);
        let run = taps.len() * c;
        cols.par_chunks_mut(k).enumerate().for_each(|(r, row)| {
            let p = first + r;
            let b = p / (ho * wo);
            let oy = (p / wo) % ho;
            let ox = p % wo;
            // Input column of tap j: base + j. The taps inside the image form one run, which
            // is contiguous in both the NHWC input row and the im2col row.
            let base = (ox * sw) as isize - pw;
            let lo = j0.max(-base);
            let hi = j1.min(x.w as isize - base);
            for (n, i) in rows.clone().enumerate() {
                let dst = &mut row[n * run..][..run];
                let y = (oy * sh) as isize + i as isize - ph;
                if y < 0 || y >= x.h as isize || lo >= hi {
                    dst.fill(0.0);
                    continue;
                }
                let (a, e) = ((lo - j0) as usize * c, (hi - j0) as usize * c);
                dst[..a].fill(0.0);
                dst[e..].fill(0.0);
                let src = ((b * x.h + y as usize) * x.w + (base + lo) as usize) * c;
                dst[a..e].copy_from_slice(&x.data[src..src + e - a]);
            }
        });
    }
}

/// `out[m, n] += lhs[m, k] · rhs[k, n]`, all row-major.
fn gemm_acc(out: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) {
    assert!(out.len() == m * n && lhs.len() == m * k && rhs.len() == k * n);
    let parallel = m * n * k >= 64 * 64 * 64;
    gemm((m, n, k), parallel, out, true, lhs, (k, 1), rhs, (n, 1));
}

/// 3x3 stride-2 padding-1 max-pool (torchvision's stem pool).
fn max_pool(x: &Act) -> Act {
    let (ho, wo) = (out_len(x.h, 2, 3, 2), out_len(x.w, 2, 3, 2));
    let c = x.c;
    let mut out = vec![f32::NEG_INFINITY; x.b * ho * wo * c];
    out.par_chunks_mut(c).enumerate().for_each(|(p, dst)| {
        let b = p / (ho * wo);
        let oy = (p / wo) % ho;
        let ox = p % wo;
        for i in 0..3 {
            let y = (oy * 2 + i) as isize - 1;
            if y < 0 || y >= x.h as isize {
                continue;
            }
            for j in 0..3 {
                let xx = (ox * 2 + j) as isize - 1;
                if xx < 0 || xx >= x.w as isize {
                    continue;
                }
                let src = ((b * x.h + y as usize) * x.w + xx as usize) * c;
                for (d, s) in dst.iter_mut().zip(&x.data[src..src + c]) {
                    *d = d.max(*s);
                }
            }
        }
    });
    Act {
        data: out,
        b: x.b,
        h: ho,
        w: wo,
        c,
    }
}

/// A residual block on the host.
pub(crate) struct NhwcBlock {
    pub(crate) conv1: NhwcConv,
    pub(crate) conv2: NhwcConv,
    pub(crate) conv3: Option<NhwcConv>,
    pub(crate) downsample: Option<NhwcConv>,
}

/// A folded ResNet's backbone on the host.
pub(crate) struct NhwcBackbone {
    pub(crate) stem: NhwcConv,
    pub(crate) max_pool: bool,
    pub(crate) blocks: Vec<NhwcBlock>,
}

impl fmt::Debug for NhwcBackbone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NhwcBackbone")
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

impl NhwcBackbone {
    /// Pooled features `[B, C]` of images `[B, Cin, H, W]`; `None` when the input cannot be
    /// read back or its channel count differs from the stem's.
    pub(crate) fn forward_features(&self, images: Tensor<4>) -> Option<Tensor<2>> {
        let device = images.device();
        let [b, c, h, w] = images.dims();
        if c != self.stem.c_in {
            return None;
        }
        let nchw = read_f32(images)?;
        let mut data = vec![0f32; nchw.len()];
        data.par_chunks_mut(w * c)
            .enumerate()
            .for_each(|(row, dst)| {
                let (bi, y) = (row / h, row % h);
                for x in 0..w {
                    for ch in 0..c {
                        dst[x * c + ch] = nchw[((bi * c + ch) * h + y) * w + x];
                    }
                }
            });
        let mut x = self.stem.forward(&Act { data, b, h, w, c }, None, true);
        if self.max_pool {
            x = max_pool(&x);
        }
        for block in &self.blocks {
            let identity = block
                .downsample
                .as_ref()
                .map(|d| d.forward(&x, None, false));
            let y = block.conv1.forward(&x, None, true);
            x = match &block.conv3 {
                Some(conv3) => {
                    let y = block.conv2.forward(&y, None, true);
                    conv3.forward(&y, Some(identity.as_ref().unwrap_or(&x)), true)
                }
                None => block
                    .conv2
                    .forward(&y, Some(identity.as_ref().unwrap_or(&x)), true),
            };
        }
        // Global average pool.
        let (hw, c) = (x.h * x.w, x.c);
        let mut pooled = vec![0f32; x.b * c];
        pooled.par_chunks_mut(c).enumerate().for_each(|(bi, dst)| {
            for p in 0..hw {
                let src = (bi * hw + p) * c;
                for (d, s) in dst.iter_mut().zip(&x.data[src..src + c]) {
                    *d += s;
                }
            }
            for d in dst.iter_mut() {
                *d /= hw as f32;
            }
        });
        Some(Tensor::from_data(
            TensorData::new(pooled, [x.b, c]),
            &device,
        ))
    }
}
