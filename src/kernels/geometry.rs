//! The shape of one sliding window (a convolution or a pooling window over a batch of NCHW
//! maps), shared by every kernel: PyTorch's output sizes, explicit padding, the outputs and
//! kernel taps that ever see the image, and when a convolution runs as one dense layer.

use std::ops::Range;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::Shape;

/// Shapes of one convolution or max pooling: input `[b, c, h, w]`, `o` output channels (`c` for
/// pooling), a `kh x kw` window with strides `sh`, `sw`, top and left padding `pt`, `pl`, output
/// maps `ho x wo`. Used by the flex kernels (the NHWC inference path keeps its own per-layer
/// shapes and uses the free functions below).
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    pub(super) b: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) sh: usize,
    pub(super) sw: usize,
    pub(super) pt: usize,
    pub(super) pl: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
}

#[cfg_attr(not(feature = "flex"), allow(dead_code))]
impl Geometry {
    /// A convolution of `x [B, C, H, W]` with `weight [O, C, kh, kw]`, no dilation, one group.
    ///
    /// # Panics
    /// When the shapes do not fit (checked by the callers before dispatch).
    pub(super) fn conv(x: &Shape, weight: &Shape, [sh, sw]: [usize; 2], pads: [usize; 4]) -> Self {
        let (kh, kw) = (weight[2], weight[3]);
        assert!(
            weight[1] == x[1] && Self::fits(x, [kh, kw, sh, sw], pads),
            "host_conv2d: input {x:?} does not fit weight {weight:?}"
        );
        Self::window(x, weight[0], [kh, kw, sh, sw], pads)
    }

    /// A depthwise convolution (groups = channels, one filter per channel) of `x [B, C, H, W]`
    /// with `weight [C, 1, kh, kw]`, no dilation: `o = c`.
    ///
    /// # Panics
    /// When the shapes do not fit (checked by the callers before dispatch).
    pub(super) fn depthwise(
        x: &Shape,
        weight: &Shape,
        [sh, sw]: [usize; 2],
        pads: [usize; 4],
    ) -> Self {
        let (kh, kw) = (weight[2], weight[3]);
        assert!(
            weight[0] == x[1] && weight[1] == 1 && Self::fits(x, [kh, kw, sh, sw], pads),
            "host_depthwise_conv2d: input {x:?} does not fit weight {weight:?}"
        );
        Self::window(x, x[1], [kh, kw, sh, sw], pads)
    }

    /// A max pooling of `x [B, C, H, W]` with a `kh x kw` window, no dilation, floor mode.
    ///
    /// # Panics
    /// When the shapes do not fit (checked by the callers before dispatch).
    pub(super) fn pool(x: &Shape, window: [usize; 4], pads: [usize; 4]) -> Self {
        let [kh, kw, _, _] = window;
        assert!(
            Self::fits(x, window, pads),
            "host_max_pool2d: input {x:?} does not fit kernel {kh}x{kw}"
        );
        Self::window(x, x[1], window, pads)
    }

    /// Whether a `kh x kw` window with strides `sh, sw` fits the padded input at least once.
    pub(super) fn fits(
        x: &Shape,
        [kh, kw, sh, sw]: [usize; 4],
        [pt, pl, pb, pr]: [usize; 4],
    ) -> bool {
        kh > 0 && kw > 0 && sh > 0 && sw > 0 && x[2] + pt + pb >= kh && x[3] + pl + pr >= kw
    }

    /// The geometry of a window sliding over `x` with `o` output channels (checked by
    /// [`fits`](Self::fits)).
    fn window(
        x: &Shape,
        o: usize,
        [kh, kw, sh, sw]: [usize; 4],
        [pt, pl, pb, pr]: [usize; 4],
    ) -> Self {
        let (b, c, h, w) = (x[0], x[1], x[2], x[3]);
        Self {
            b,
            c,
            h,
            w,
            o,
            kh,
            kw,
            sh,
            sw,
            pt,
            pl,
            ho: out_len(h, pt + pb, kh, sh),
            wo: out_len(w, pl + pr, kw, sw),
        }
    }

    /// Input planes (`B·C`).
    pub(super) fn planes(&self) -> usize {
        self.b * self.c
    }

    /// Rows of the im2col matrix (`C·kh·kw`).
    pub(super) fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output pixels per image.
    pub(super) fn p(&self) -> usize {
        self.ho * self.wo
    }

    /// The output columns `[lo, hi)` whose input column `ow·sw + j - pl` (window column `j`)
    /// lies inside the image.
    pub(super) fn valid_cols(&self, j: usize) -> (usize, usize) {
        valid_outputs(j, self.pl, self.sw, self.w, self.wo)
    }

    /// The kernel taps that ever see the image, `(rows, cols)` as ranges: on small feature maps
    /// (a 3x3 convolution with padding 1 on a 1x1 map) the others only ever multiply padding.
    pub(super) fn live_taps(&self) -> (Range<usize>, Range<usize>) {
        (
            live(self.kh, self.ho, self.sh, self.pt, self.h),
            live(self.kw, self.wo, self.sw, self.pl, self.w),
        )
    }

    /// The same convolution restricted to its [`live_taps`](Self::live_taps), when some are
    /// dead: the kernel window shrinks and the padding with it; outputs are unchanged.
    pub(super) fn trimmed(&self) -> Option<(Self, Range<usize>, Range<usize>)> {
        let (rows, cols) = self.live_taps();
        if rows.len() == self.kh && cols.len() == self.kw {
            return None;
        }
        let g = Self {
            kh: rows.len(),
            kw: cols.len(),
            pt: self.pt - rows.start,
            pl: self.pl - cols.start,
            ..*self
        };
        Some((g, rows, cols))
    }

    /// Whether the convolution runs as one dense layer over whole maps (`unroll_weight` in
    /// `flex/conv.rs`):
    /// when an input map has no more pixels than the kernel has live taps, multiplying every
    /// output pixel with every input pixel costs no more than im2col's products, and needs no
    /// im2col, col2im, scatter or gather, whose per-pixel copies are one to four floats long on
    /// such maps. At 32x32 input this is ResNet's 3x3 convolutions on the 2x2 maps of its third
    /// stage (4 of 9 taps live per output pixel: 2.25x fewer multiply-adds) and on the 1x1 maps
    /// of its last (a 1x1 kernel once the dead taps are left out).
    pub(super) fn unrolls(&self) -> bool {
        let (rows, cols) = self.live_taps();
        let taps = rows.len() * cols.len();
        runs_as_dense_layer(self.h * self.w, self.p(), taps, self.c, self.o)
    }

    /// The kernel tap `i·kw + j` that links output pixel `p` to input pixel `q` (row-major
    /// indices within their maps), if any.
    pub(super) fn tap(&self, p: usize, q: usize) -> Option<usize> {
        let (oh, ow) = (p / self.wo, p % self.wo);
        let (ih, iw) = (q / self.w, q % self.w);
        let i = linking_tap(oh, ih, self.sh, self.pt, self.kh)?;
        let j = linking_tap(ow, iw, self.sw, self.pl, self.kw)?;
        Some(i * self.kw + j)
    }

    /// For a stride-1 convolution whose output is as large as its input: the offset of tap
    /// `(i, j)` in the flattened input plane (`input[n + shift]` feeds output `n`).
    pub(super) fn same_shift(&self, i: usize, j: usize) -> Option<isize> {
        (self.sh == 1 && self.sw == 1 && self.ho == self.h && self.wo == self.w).then(|| {
            (i as isize - self.pt as isize) * self.w as isize + j as isize - self.pl as isize
        })
    }

    /// The input row for output row `oh` and kernel row `i`, if inside the image.
    pub(super) fn input_row(&self, oh: usize, i: usize) -> Option<usize> {
        (oh * self.sh + i)
            .checked_sub(self.pt)
            .filter(|&ih| ih < self.h)
    }
}

/// Output length of a window of `k` sliding with `stride` over `len` inputs padded by `pads`
/// in all (floor mode, no dilation): `⌊(len + pads - k) / stride⌋ + 1`, for a window that fits
/// (the one formula every kernel here uses; [`window_output_size`] is PyTorch's general one).
pub(super) fn out_len(len: usize, pads: usize, k: usize, stride: usize) -> usize {
    (len + pads - k) / stride + 1
}

/// The outputs `[lo, hi)` (of `n_out`) whose input `o·stride + tap - pad` lies inside an
/// input of `n` (one dimension of a convolution or pooling window).
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(super) fn valid_outputs(
    tap: usize,
    pad: usize,
    stride: usize,
    n: usize,
    n_out: usize,
) -> (usize, usize) {
    let lo = pad.saturating_sub(tap).div_ceil(stride);
    let hi = if n + pad > tap {
        ((n + pad - tap - 1) / stride + 1).min(n_out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// The kernel offsets `0..k` (along one axis) that read inside an input of length `len` for
/// some of the `out` output positions (all of `0..k` when none does).
pub(super) fn live(k: usize, out: usize, stride: usize, pad: usize, len: usize) -> Range<usize> {
    let sees =
        |i: usize| (0..out).any(|o| (o * stride + i).checked_sub(pad).is_some_and(|v| v < len));
    match ((0..k).find(|&i| sees(i)), (0..k).rev().find(|&i| sees(i))) {
        (Some(a), Some(b)) => a..b + 1,
        _ => 0..k,
    }
}

/// Largest unrolled weight ([`runs_as_dense_layer`], floats, 64 MiB).
const UNROLLED_MAX: usize = 1 << 24;

/// Whether a convolution from `hw`-pixel input maps to `p`-pixel output maps, whose kernel has
/// `live_taps` taps that ever see the image, runs as one dense layer over whole maps (its
/// weight unrolled into a `c_out·p x c_in·hw` matrix): when an input map has no more pixels than
/// live taps, multiplying every output pixel with every input pixel costs no more than
/// im2col's products and needs no im2col. Shared by the inference and training paths.
pub(super) fn runs_as_dense_layer(
    hw: usize,
    p: usize,
    live_taps: usize,
    c_in: usize,
    c_out: usize,
) -> bool {
    hw > 0 && p > 0 && hw <= live_taps && hw * c_in * p * c_out <= UNROLLED_MAX
}

/// Along one axis: the kernel offset linking output position `o` to input position `i`
/// (`i = o·stride + tap - pad`), if it lies inside the kernel of length `k`.
pub(super) fn linking_tap(
    o: usize,
    i: usize,
    stride: usize,
    pad: usize,
    k: usize,
) -> Option<usize> {
    (i + pad).checked_sub(o * stride).filter(|&t| t < k)
}

/// `[H, W]` of `conv`'s output for `[H, W]` input maps (0 where the kernel does not fit).
pub(crate) fn conv_output_size(conv: &Conv2d, hw: [usize; 2]) -> [usize; 2] {
    window_output_size(
        hw,
        (conv.kernel_size, conv.stride, conv.dilation),
        &conv.padding,
        false,
    )
}

/// `[H, W]` of `pool`'s output for `[H, W]` input maps (0 where the window does not fit).
pub(crate) fn pool_output_size(pool: &MaxPool2d, hw: [usize; 2]) -> [usize; 2] {
    window_output_size(
        hw,
        (pool.kernel_size, pool.stride, pool.dilation),
        &pool.padding,
        pool.ceil_mode,
    )
}

/// PyTorch's output size of a sliding window: `⌊(H + pads - d·(k - 1) - 1) / s⌋ + 1`
/// (`⌈·⌉` with `ceil_mode`); `⌈H / s⌉` for "same" padding.
fn window_output_size(
    hw: [usize; 2],
    (kernel, stride, dilation): ([usize; 2], [usize; 2], [usize; 2]),
    padding: &PaddingConfig2d,
    ceil_mode: bool,
) -> [usize; 2] {
    let pads = explicit_padding(padding);
    std::array::from_fn(|i| {
        let s = stride[i].max(1);
        let Some(p) = pads else {
            return hw[i].div_ceil(s);
        };
        let padded = hw[i] + p[i] + p[i + 2];
        let span = dilation[i] * kernel[i].saturating_sub(1) + 1;
        match padded.checked_sub(span) {
            Some(room) if ceil_mode => room.div_ceil(s) + 1,
            Some(room) => room / s + 1,
            None => 0,
        }
    })
}

/// `(top, left, bottom, right)` for explicit or valid padding.
pub(super) fn explicit_padding(padding: &PaddingConfig2d) -> Option<[usize; 4]> {
    match *padding {
        PaddingConfig2d::Explicit(t, l, b, r) => Some([t, l, b, r]),
        PaddingConfig2d::Valid => Some([0, 0, 0, 0]),
        _ => None,
    }
}
