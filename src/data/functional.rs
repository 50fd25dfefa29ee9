//! Pixel operations on `u8` RGB images with the semantics of `torchvision.transforms.functional`
//! on PIL images (Pillow's `Image.resize(BILINEAR)`, `ImageEnhance`, HSV conversion, the
//! nearest-neighbour `Image.transform(AFFINE)` and `Image.rotate`, `ImageOps`' posterize,
//! solarize, autocontrast and equalize), so that a pipeline written here gives the same pixels
//! as its torchvision counterpart.
//!
//! Resizing follows Pillow's `Resample.c` (Pillow 13): a separable triangle (bilinear) or Keys
//! cubic (bicubic, `a = -0.5`) filter whose support widens with the reduction factor
//! (antialiasing when shrinking), coefficients in 22-bit fixed
//! point, two passes each rounded to `u8` — horizontal first, unless the height shrinks by more
//! than twice as many pixels as the width (Pillow 13's rule; Pillow 12 and older always start
//! horizontally, which can change such downscales by one level on a few pixels).

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Fixed-point precision of Pillow's 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The resampling filter of a resize (torchvision's `InterpolationMode`, as Pillow implements
/// it: `Resample.c`'s filters, their support widened by the reduction factor when shrinking —
/// torchvision's antialiasing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Interpolation {
    /// `InterpolationMode.BILINEAR`: the triangle filter, support 1.
    #[default]
    Bilinear,
    /// `InterpolationMode.BICUBIC`: Keys' cubic convolution with `a = -0.5`, support 2
    /// (EfficientNet B0-B7 and V2-L, ViT's SWAG weights, timm's recipes).
    Bicubic,
}

impl Interpolation {
    /// torchvision's name (`bilinear`, `bicubic`).
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        }
    }

    /// Parses torchvision's name, in any letter case.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "bilinear" => Some(Interpolation::Bilinear),
            "bicubic" => Some(Interpolation::Bicubic),
            _ => None,
        }
    }

    /// Support of the filter at scale 1, in input pixels.
    fn support(self) -> f64 {
        match self {
            Interpolation::Bilinear => 1.0,
            Interpolation::Bicubic => 2.0,
        }
    }

    /// Pillow's `bilinear_filter` / `bicubic_filter`.
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Interpolation::Bilinear => (1.0 - x).max(0.0),
            Interpolation::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

impl std::fmt::Display for Interpolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Resampling coefficients for one axis.
#[derive(Clone, Debug, PartialEq)]
struct AxisPlan {
    /// First input index of each output index.
    start: Vec<usize>,
    /// Coefficients of each output index (`taps` per output, zero-padded).
    coeffs: Vec<i32>,
    /// Number of used coefficients of each output index.
    len: Vec<usize>,
    taps: usize,
}

impl AxisPlan {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `filter`.
    fn new(in_size: usize, out_size: usize, filter: Interpolation) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let taps = support.ceil() as usize * 2 + 1;
        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut coeffs = vec![0i32; out_size * taps];
        let mut k = vec![0f64; taps];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) casts truncate toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(taps);
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = filter.weight(((x + xmin) as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            for x in 0..n {
                let w = if ww != 0.0 { k[x] / ww } else { k[x] };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                coeffs[xx * taps + x] = if w < 0.0 {
                    (-0.5 + fixed) as i32
                } else {
                    (0.5 + fixed) as i32
                };
            }
            start.push(xmin);
            len.push(n);
        }
        AxisPlan {
            start,
            coeffs,
            len,
            taps,
        }
    }

    fn coeffs(&self, out: usize) -> (usize, &[i32]) {
        let c = &self.coeffs[out * self.taps..out * self.taps + self.len[out]];
        (self.start[out], c)
    }
}

#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A precomputed resize from one size to another (Pillow's `Image.resize` with `BILINEAR` or
/// `BICUBIC`, which torchvision's `Resize` calls on PIL images). Reuse it for every image of
/// the same size.
#[derive(Clone, Debug, PartialEq)]
pub struct ResizePlan {
    in_w: u32,
    in_h: u32,
    out_w: u32,
    out_h: u32,
    filter: Interpolation,
    horizontal: Option<AxisPlan>,
    vertical: Option<AxisPlan>,
}

impl ResizePlan {
    /// The bilinear plan for `in_w x in_h -> out_w x out_h` (all sizes at least 1).
    pub fn new(in_w: u32, in_h: u32, out_w: u32, out_h: u32) -> Self {
        Self::with_filter(in_w, in_h, out_w, out_h, Interpolation::Bilinear)
    }

    /// The plan for `in_w x in_h -> out_w x out_h` with `filter`.
    pub fn with_filter(
        in_w: u32,
        in_h: u32,
        out_w: u32,
        out_h: u32,
        filter: Interpolation,
    ) -> Self {
        let horizontal =
            (in_w != out_w).then(|| AxisPlan::new(in_w as usize, out_w.max(1) as usize, filter));
        let vertical =
            (in_h != out_h).then(|| AxisPlan::new(in_h as usize, out_h.max(1) as usize, filter));
        ResizePlan {
            in_w,
            in_h,
            out_w,
            out_h,
            filter,
            horizontal,
            vertical,
        }
    }

    /// Whether this plan resizes images of `in_w x in_h` to `out_w x out_h` with `filter`.
    pub fn matches(
        &self,
        in_w: u32,
        in_h: u32,
        out_w: u32,
        out_h: u32,
        filter: Interpolation,
    ) -> bool {
        (self.in_w, self.in_h, self.out_w, self.out_h, self.filter)
            == (in_w, in_h, out_w, out_h, filter)
    }

    /// Resizes `img` (which must be `in_w x in_h`; other sizes get a fresh plan).
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        if img.dimensions() != (self.in_w, self.in_h) {
            return ResizePlan::with_filter(
                img.width(),
                img.height(),
                self.out_w,
                self.out_h,
                self.filter,
            )
            .apply(img);
        }
        if self.out_w == 0 || self.out_h == 0 || self.in_w == 0 || self.in_h == 0 {
            // Nothing to sample from, or nothing to produce: an empty or black image, never a
            // panic (the transforms and image folders reject a size of 0 before this).
            return RgbImage::new(self.out_w, self.out_h);
        }
        let (in_w, in_h) = (self.in_w as usize, self.in_h as usize);
        let (out_w, out_h) = (self.out_w as usize, self.out_h as usize);
        let src = img.as_raw();
        // Pillow >= 13 runs the vertical pass first when the height shrinks by more than twice
        // as many pixels as the width (older Pillow always starts with the horizontal pass).
        let dh = in_h as i64 - out_h as i64;
        let horizontal_first = !(dh > 0 && dh > (in_w as i64 - out_w as i64) * 2);
        let out = match (&self.horizontal, &self.vertical) {
            (None, None) => src.to_vec(),
            (Some(h), None) => horizontal_pass(src, in_w, 0, in_h, h, out_w),
            (None, Some(v)) => vertical_pass(src, in_w, 0, v, out_h),
            (Some(h), Some(v)) if horizontal_first => {
                // Only the rows the vertical pass reads.
                let first = v.start[0];
                let last = v.start[out_h - 1] + v.len[out_h - 1];
                let mid = horizontal_pass(src, in_w, first, last - first, h, out_w);
                vertical_pass(&mid, out_w, first, v, out_h)
            }
            (Some(h), Some(v)) => {
                let mid = vertical_pass(src, in_w, 0, v, out_h);
                horizontal_pass(&mid, in_w, 0, out_h, h, out_w)
            }
        };
        RgbImage::from_raw(self.out_w, self.out_h, out)
            .unwrap_or_else(|| RgbImage::new(self.out_w, self.out_h))
    }
}

/// Pillow's horizontal pass over `rows` rows of `src` (width `in_w`) starting at `row0`.
fn horizontal_pass(
    src: &[u8],
    in_w: usize,
    row0: usize,
    rows: usize,
    plan: &AxisPlan,
    out_w: usize,
) -> Vec<u8> {
    let mut buf = vec![0u8; rows * out_w * 3];
    for (r, out_row) in buf.chunks_exact_mut(out_w * 3).enumerate() {
        let in_row = &src[(row0 + r) * in_w * 3..(row0 + r + 1) * in_w * 3];
        for (xx, px) in out_row.chunks_exact_mut(3).enumerate() {
            let (x0, k) = plan.coeffs(xx);
            let mut s = [1i32 << (PRECISION_BITS - 1); 3];
            for (&w, p) in k.iter().zip(in_row[x0 * 3..].chunks_exact(3)) {
                s[0] += i32::from(p[0]) * w;
                s[1] += i32::from(p[1]) * w;
                s[2] += i32::from(p[2]) * w;
            }
            px[0] = clip8(s[0]);
            px[1] = clip8(s[1]);
            px[2] = clip8(s[2]);
        }
    }
    buf
}

/// Pillow's vertical pass: `src` (width `width`) holds the input rows from `row0` on.
fn vertical_pass(src: &[u8], width: usize, row0: usize, plan: &AxisPlan, out_h: usize) -> Vec<u8> {
    let stride = width * 3;
    let mut out = vec![0u8; out_h * stride];
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (y0, k) = plan.coeffs(yy);
        let y0 = y0 - row0;
        acc.fill(1i32 << (PRECISION_BITS - 1));
        for (i, &w) in k.iter().enumerate() {
            let in_row = &src[(y0 + i) * stride..(y0 + i + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(in_row) {
                *a += i32::from(p) * w;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Bilinear resize to exactly `width x height` (see [`ResizePlan`]).
pub fn resize(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize_with(img, width, height, Interpolation::Bilinear)
}

/// Resize to exactly `width x height` with `filter` (see [`ResizePlan`]).
pub fn resize_with(img: &RgbImage, width: u32, height: u32, filter: Interpolation) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    ResizePlan::with_filter(img.width(), img.height(), width, height, filter).apply(img)
}

/// torchvision's `resized_crop`: the `height x width` region at `(top, left)` (`region` is
/// `(top, left, height, width)`, in pixels; outside the image is black), resized to `size`
/// (`(height, width)`) with `filter` — [`RandomResizedCrop`](super::RandomResizedCrop) at
/// fixed parameters.
pub fn resized_crop(
    img: &RgbImage,
    region: (u32, u32, u32, u32),
    size: (u32, u32),
    filter: Interpolation,
) -> RgbImage {
    let (top, left, height, width) = region;
    let cropped = if (top, left, height, width) == (0, 0, img.height(), img.width()) {
        img.clone()
    } else {
        crop(img, i64::from(top), i64::from(left), height, width)
    };
    resize_with(&cropped, size.1, size.0, filter)
}

/// The output size of torchvision's `Resize(size)` with an integer size: the shorter side
/// becomes `size`, the longer one keeps the aspect ratio (truncated, like Python's `int()`).
pub fn shorter_side_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (f64::from(size) * f64::from(long) / f64::from(short.max(1))) as u32;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Crops the `width x height` region whose top-left corner is at `(left, top)`; pixels outside
/// the image are black (torchvision's `crop`, which pads with zeros).
pub fn crop(img: &RgbImage, top: i64, left: i64, height: u32, width: u32) -> RgbImage {
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    let mut out = vec![0u8; width as usize * height as usize * 3];
    let src = img.as_raw();
    // Columns of the output that map inside the image.
    let x0 = (-left).clamp(0, i64::from(width));
    let x1 = (iw - left).clamp(x0, i64::from(width));
    if x1 > x0 {
        let n = (x1 - x0) as usize * 3;
        for (y, row) in out.chunks_exact_mut(width as usize * 3).enumerate() {
            let sy = top + y as i64;
            if sy < 0 || sy >= ih {
                continue;
            }
            let s = ((sy * iw + left + x0) * 3) as usize;
            row[x0 as usize * 3..x0 as usize * 3 + n].copy_from_slice(&src[s..s + n]);
        }
    }
    RgbImage::from_raw(width, height, out).unwrap_or_else(|| RgbImage::new(width, height))
}

/// torchvision's `center_crop`: crops the centre `width x height`, padding with black first when
/// the image is smaller. Offsets use Python's `round` (ties to even), like torchvision.
pub fn center_crop(img: &RgbImage, height: u32, width: u32) -> RgbImage {
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    let (cw, ch) = (i64::from(width), i64::from(height));
    // Padding (when the crop is larger) puts floor(d/2) before; cropping then starts at 0.
    let top = if ch > ih {
        -((ch - ih) / 2)
    } else {
        ((ih - ch) as f64 / 2.0).round_ties_even() as i64
    };
    let left = if cw > iw {
        -((cw - iw) / 2)
    } else {
        ((iw - cw) as f64 / 2.0).round_ties_even() as i64
    };
    crop(img, top, left, height, width)
}

/// The image turned by `k` quarter turns counter-clockwise (`torch.rot90(x, k, dims=[-2, -1])`
/// on a CHW tensor; `k` is taken modulo 4): the rotations of Gidaris et al.'s rotation
/// prediction, label `k` for `90 * k` degrees.
pub fn rot90(img: &RgbImage, k: u32) -> RgbImage {
    // `image`'s rotations turn clockwise.
    match k % 4 {
        0 => img.clone(),
        1 => image::imageops::rotate270(img),
        2 => image::imageops::rotate180(img),
        _ => image::imageops::rotate90(img),
    }
}

/// Mirrors the image left to right, in place.
pub fn hflip(img: &mut RgbImage) {
    let w = img.width() as usize;
    for row in img.chunks_exact_mut(w * 3) {
        let (mut i, mut j) = (0, w.saturating_sub(1));
        while i < j {
            for c in 0..3 {
                row.swap(i * 3 + c, j * 3 + c);
            }
            i += 1;
            j -= 1;
        }
    }
}

/// Pillow's `Image.blend(a, b, alpha)` on one byte: `a + alpha * (b - a)` in `f32`, truncated,
/// clamped when extrapolating.
#[inline(always)]
fn blend(a: u8, b: u8, alpha: f32) -> u8 {
    let v = f32::from(a) + alpha * (f32::from(b) - f32::from(a));
    if (0.0..=1.0).contains(&alpha) {
        v as u8
    } else if v <= 0.0 {
        0
    } else if v >= 255.0 {
        255
    } else {
        v as u8
    }
}

/// Pillow's RGB to `L` conversion (ITU-R 601-2 luma in 16-bit fixed point).
#[inline(always)]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// torchvision's `adjust_brightness` on a PIL image: blends with black.
pub fn adjust_brightness(img: &mut RgbImage, factor: f32) {
    for v in img.iter_mut() {
        *v = blend(0, *v, factor);
    }
}

/// torchvision's `adjust_contrast` on a PIL image: blends with the mean grey level (rounded).
pub fn adjust_contrast(img: &mut RgbImage, factor: f32) {
    let n = (img.width() as u64 * img.height() as u64).max(1);
    let sum: u64 = img
        .pixels()
        .map(|p| u64::from(luma(p[0], p[1], p[2])))
        .sum();
    let mean = (sum as f64 / n as f64 + 0.5) as u8;
    for v in img.iter_mut() {
        *v = blend(mean, *v, factor);
    }
}

/// torchvision's `adjust_saturation` on a PIL image: blends with the greyscale image.
pub fn adjust_saturation(img: &mut RgbImage, factor: f32) {
    for p in img.pixels_mut() {
        let l = luma(p[0], p[1], p[2]);
        for c in 0..3 {
            p[c] = blend(l, p[c], factor);
        }
    }
}

/// Pillow's `CLIP8` on an `int`.
fn clip_int(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Pillow's RGB to HSV (`rgb2hsv_row` in `Convert.c`, following `colorsys`): all channels
/// `u8`, hue scaled to 0..=255. The `f32` / `f64` mix reproduces the C expression types.
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> [u8; 3] {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if maxc == minc {
        return [0, 0, maxc];
    }
    let cr = f32::from(maxc - minc);
    let s = cr / f32::from(maxc);
    let rc = f32::from(maxc - r) / cr;
    let gc = f32::from(maxc - g) / cr;
    let bc = f32::from(maxc - b) / cr;
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0 + f64::from(rc) - f64::from(bc)) as f32
    } else {
        (4.0 + f64::from(gc) - f64::from(rc)) as f32
    };
    // Rust's `%` on floats is C's fmod.
    let h = ((f64::from(h) / 6.0 + 1.0) % 1.0) as f32;
    [
        clip_int((f64::from(h) * 255.0) as i32),
        clip_int((f64::from(s) * 255.0) as i32),
        maxc,
    ]
}

/// Pillow's HSV to RGB (`hsv2rgb` in `Convert.c`).
fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    if s == 0 {
        return [v, v, v];
    }
    let h6 = f64::from(h) * 6.0 / 255.0;
    let i = h6.floor() as i32;
    let f = (h6 - f64::from(i as f32)) as f32;
    let fs = (f64::from(s) / 255.0) as f32;
    let vf = f64::from(v);
    // C's round(): halves away from zero, like f64::round.
    let p = clip_int((vf * (1.0 - f64::from(fs))).round() as i32);
    let q = clip_int((vf * (1.0 - f64::from(fs * f))).round() as i32);
    let t = clip_int((vf * (1.0 - f64::from(fs) * (1.0 - f64::from(f)))).round() as i32);
    match i % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// torchvision's `adjust_hue` on a PIL image: shifts the 8-bit hue channel by
/// `trunc(hue_factor * 255)` (wrapping), `hue_factor` in `[-0.5, 0.5]`.
pub fn adjust_hue(img: &mut RgbImage, hue_factor: f32) {
    let shift = (f64::from(hue_factor) * 255.0) as i32 as u8;
    for p in img.pixels_mut() {
        let [h, s, v] = rgb_to_hsv(p[0], p[1], p[2]);
        let [r, g, b] = hsv_to_rgb(h.wrapping_add(shift), s, v);
        p[0] = r;
        p[1] = g;
        p[2] = b;
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry with nearest-neighbour sampling (Pillow's `Image.transform(AFFINE)` and
// `Image.rotate`), and the histogram and filter operations of `ImageOps` / `ImageEnhance` that
// TrivialAugment and RandAugment use.

/// Radians per degree, as CPython's `math.radians` multiplies (`pi / 180`).
const RAD_PER_DEG: f64 = std::f64::consts::PI / 180.0;

/// Pillow's `COORD`: truncation toward zero, every negative value to -1.
#[inline(always)]
fn coord(v: f64) -> i64 {
    if v < 0.0 { -1 } else { v as i64 }
}

/// Pillow's `Image.transform(size, AFFINE, matrix, NEAREST, fillcolor=black)` with the output
/// the size of the input (what torchvision's `affine` on a PIL image calls). `matrix` is the
/// inverse map `(a, b, c, d, e, f)`: output pixel `(x, y)` samples the input at
/// `(a x + b y + c, d x + e y + f)`, pixel centres at `+ 0.5`; pixels that map outside the image
/// are black.
///
/// Follows `ImagingTransformAffine` in Pillow's `libImaging/Geometry.c` path for path, as they
/// round differently: a matrix without rotation or shear (`b == 0 && d == 0`) takes
/// `ImagingScaleAffine` (floating-point positions accumulated along rows and columns, then
/// truncated); any other takes `affine_fixed` (16.16 fixed point, `floor(v * 65536 + 0.5)`,
/// accumulated in integers) when the four corners map within `±32768`, else the floating-point
/// loop.
pub fn affine_nearest(img: &RgbImage, matrix: [f64; 6]) -> RgbImage {
    let (w, h) = img.dimensions();
    let (wu, hu) = (w as usize, h as usize);
    let (wi, hi) = (i64::from(w), i64::from(h));
    let src = img.as_raw();
    let mut buf = vec![0u8; wu * hu * 3];
    if wu == 0 || hu == 0 {
        return RgbImage::from_raw(w, h, buf).unwrap_or_else(|| RgbImage::new(w, h));
    }
    let a = matrix;
    let put = |buf: &mut [u8], x: usize, y: usize, xin: i64, yin: i64| {
        let s = (yin as usize * wu + xin as usize) * 3;
        let d = (y * wu + x) * 3;
        buf[d..d + 3].copy_from_slice(&src[s..s + 3]);
    };
    if a[1] == 0.0 && a[3] == 0.0 {
        // ImagingScaleAffine: one column table, positions accumulated in floating point.
        let mut xo = a[2] + a[0] * 0.5;
        let mut columns = Vec::with_capacity(wu);
        for _ in 0..wu {
            columns.push(coord(xo));
            xo += a[0];
        }
        let mut yo = a[5] + a[4] * 0.5;
        for y in 0..hu {
            let yin = coord(yo);
            yo += a[4];
            if !(0..hi).contains(&yin) {
                continue;
            }
            for (x, &xin) in columns.iter().enumerate() {
                if (0..wi).contains(&xin) {
                    put(&mut buf[..], x, y, xin, yin);
                }
            }
        }
    } else {
        let (fw, fh) = (f64::from(w), f64::from(h));
        let fits = |x: f64, y: f64| {
            (x * a[0] + y * a[1] + a[2]).abs() < 32768.0
                && (x * a[3] + y * a[4] + a[5]).abs() < 32768.0
        };
        if fits(0.0, 0.0) && fits(fw, fh) && fits(0.0, fh) && fits(fw, 0.0) {
            // affine_fixed: 16.16 fixed point (C's int arithmetic, wrapping).
            let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i32;
            let (a0, a1, a3, a4) = (fix(a[0]), fix(a[1]), fix(a[3]), fix(a[4]));
            let mut a2 = fix(a[2] + a[0] * 0.5 + a[1] * 0.5);
            let mut a5 = fix(a[5] + a[3] * 0.5 + a[4] * 0.5);
            for y in 0..hu {
                let (mut xx, mut yy) = (a2, a5);
                for x in 0..wu {
                    let xin = i64::from(xx >> 16);
                    if (0..wi).contains(&xin) {
                        let yin = i64::from(yy >> 16);
                        if (0..hi).contains(&yin) {
                            put(&mut buf[..], x, y, xin, yin);
                        }
                    }
                    xx = xx.wrapping_add(a0);
                    yy = yy.wrapping_add(a3);
                }
                a2 = a2.wrapping_add(a1);
                a5 = a5.wrapping_add(a4);
            }
        } else {
            // The floating-point loop, for matrices beyond the fixed-point range.
            let mut xo = a[2] + a[1] * 0.5 + a[0] * 0.5;
            let mut yo = a[5] + a[4] * 0.5 + a[3] * 0.5;
            for y in 0..hu {
                let (mut xx, mut yy) = (xo, yo);
                for x in 0..wu {
                    let xin = coord(xx);
                    if (0..wi).contains(&xin) {
                        let yin = coord(yy);
                        if (0..hi).contains(&yin) {
                            put(&mut buf[..], x, y, xin, yin);
                        }
                    }
                    xx += a[0];
                    yy += a[3];
                }
                xo += a[1];
                yo += a[4];
            }
        }
    }
    RgbImage::from_raw(w, h, buf).unwrap_or_else(|| RgbImage::new(w, h))
}

/// torchvision's `_get_inverse_affine_matrix(center, angle, translate, scale, shear)`: the
/// matrix Pillow needs (output to input) for a rotation by `angle` degrees (clockwise),
/// `scale`, shears `shear = (sx, sy)` in degrees and a translation, about `center` (pixels).
/// Computed in `f64` with torchvision's formulas and order of operations.
pub fn inverse_affine_matrix(
    center: (f64, f64),
    angle: f64,
    translate: (f64, f64),
    scale: f64,
    shear: (f64, f64),
) -> [f64; 6] {
    let rot = angle * RAD_PER_DEG;
    let sx = shear.0 * RAD_PER_DEG;
    let sy = shear.1 * RAD_PER_DEG;
    let (cx, cy) = center;
    let (tx, ty) = translate;
    // RotateScaleShear without the scale; its inverse has determinant 1.
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [d, -b, 0.0, -c, a, 0.0].map(|v| v / scale);
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
    m
}

/// torchvision's `affine(img, angle, translate, scale, shear, NEAREST, fill=None, center)` on
/// a PIL image: [`inverse_affine_matrix`] about `center` (the image centre `(w / 2, h / 2)`
/// when `None`), then [`affine_nearest`]. Angles and shears in degrees; torchvision's
/// `translate` are integers, pass whole numbers to match it.
pub fn affine(
    img: &RgbImage,
    angle: f64,
    translate: (f64, f64),
    scale: f64,
    shear: (f64, f64),
    center: Option<(f64, f64)>,
) -> RgbImage {
    let center =
        center.unwrap_or_else(|| (f64::from(img.width()) * 0.5, f64::from(img.height()) * 0.5));
    affine_nearest(
        img,
        inverse_affine_matrix(center, angle, translate, scale, shear),
    )
}

/// Python's `round(v, 15)`: the double nearest the decimal rounded to 15 places (both sides
/// round correctly, so formatting and parsing gives the same double).
fn round15(v: f64) -> f64 {
    format!("{v:.15}").parse().unwrap_or(v)
}

/// torchvision's `rotate(img, angle, NEAREST)` on a PIL image, i.e. Pillow's
/// `Image.rotate(angle, NEAREST, expand=False, fillcolor=black)`: counter-clockwise by `angle`
/// degrees about the image centre, same size, corners black.
///
/// Like Pillow: the angle is taken modulo 360 (Python's `%`); 0 copies, 180 flips both axes,
/// 90 and 270 transpose square images exactly; any other angle (and 90 / 270 on a non-square
/// image) builds the matrix from `cos` and `sin` rounded to 15 decimals (`round(x, 15)`) and
/// samples it with [`affine_nearest`] — Pillow's fixed-point path.
pub fn rotate(img: &RgbImage, angle: f64) -> RgbImage {
    let mut angle = angle % 360.0;
    if angle < 0.0 {
        angle += 360.0;
    }
    let (w, h) = img.dimensions();
    if angle == 0.0 {
        return img.clone();
    }
    if angle == 180.0 {
        return image::imageops::rotate180(img);
    }
    if (angle == 90.0 || angle == 270.0) && w == h {
        // `image` turns clockwise, Pillow's ROTATE_90 counter-clockwise.
        return if angle == 90.0 {
            image::imageops::rotate270(img)
        } else {
            image::imageops::rotate90(img)
        };
    }
    let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    let rad = -(angle * RAD_PER_DEG);
    let mut m = [
        round15(rad.cos()),
        round15(rad.sin()),
        0.0,
        round15(-rad.sin()),
        round15(rad.cos()),
        0.0,
    ];
    let (x, y) = (-cx, -cy);
    let c = m[0] * x + m[1] * y + m[2];
    let f = m[3] * x + m[4] * y + m[5];
    m[2] = c + cx;
    m[5] = f + cy;
    affine_nearest(img, m)
}

/// Pillow's `ImageFilter.SMOOTH` (kernel `1 1 1 / 1 5 1 / 1 1 1`, scale 13) on RGB bytes:
/// `f32` sums from `0.5` (row below, row, row above, as `Filter.c` adds them), clamped and
/// truncated; the border rows and columns are copied, and images narrower or lower than 3
/// pixels come back unchanged.
fn smooth(img: &RgbImage) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let mut out = src.clone();
    if w < 3 || h < 3 {
        return out;
    }
    // Pillow divides the kernel by the scale in f32.
    let k1 = 1.0f32 / 13.0;
    let k5 = 5.0f32 / 13.0;
    let at = |y: usize, x: usize, c: usize| f32::from(src[(y * w + x) * 3 + c]);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for c in 0..3 {
                let mut ss = 0.5f32;
                ss += at(y + 1, x - 1, c) * k1 + at(y + 1, x, c) * k1 + at(y + 1, x + 1, c) * k1;
                ss += at(y, x - 1, c) * k1 + at(y, x, c) * k5 + at(y, x + 1, c) * k1;
                ss += at(y - 1, x - 1, c) * k1 + at(y - 1, x, c) * k1 + at(y - 1, x + 1, c) * k1;
                out[(y * w + x) * 3 + c] = ss.clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// torchvision's `adjust_sharpness` on a PIL image (`ImageEnhance.Sharpness`): blends the
/// image with its `ImageFilter.SMOOTH` version (`factor` 0 the smoothed image, 1 the image,
/// above 1 sharper), with [`adjust_brightness`]'s truncating blend.
pub fn adjust_sharpness(img: &mut RgbImage, factor: f32) {
    let smoothed = smooth(img);
    for (v, &s) in img.iter_mut().zip(smoothed.iter()) {
        *v = blend(s, *v, factor);
    }
}

/// The per-channel histograms of an RGB image.
fn histograms(img: &RgbImage) -> [[u64; 256]; 3] {
    let mut hist = [[0u64; 256]; 3];
    for p in img.as_raw().chunks_exact(3) {
        hist[0][usize::from(p[0])] += 1;
        hist[1][usize::from(p[1])] += 1;
        hist[2][usize::from(p[2])] += 1;
    }
    hist
}

/// Maps every byte of channel `c` through `luts[c]` (Pillow's `Image.point`).
fn apply_luts(img: &mut RgbImage, luts: &[[u8; 256]; 3]) {
    for p in img.chunks_exact_mut(3) {
        p[0] = luts[0][usize::from(p[0])];
        p[1] = luts[1][usize::from(p[1])];
        p[2] = luts[2][usize::from(p[2])];
    }
}

/// The identity lookup table.
fn identity_lut() -> [u8; 256] {
    std::array::from_fn(|i| i as u8)
}

/// torchvision's `posterize(img, bits)` on a PIL image (`ImageOps.posterize`): keeps the
/// `bits` high bits of every channel. Pillow accepts 1 to 8 bits; here 0 clears the image
/// (torchvision's tensor behaviour) and more than 8 keeps it.
pub fn posterize(img: &mut RgbImage, bits: u8) {
    let mask = match bits {
        0 => 0u8,
        1..=7 => 0xFFu8 << (8 - bits),
        _ => 0xFF,
    };
    for v in img.iter_mut() {
        *v &= mask;
    }
}

/// torchvision's `solarize(img, threshold)` on a PIL image (`ImageOps.solarize`): inverts
/// every value that is not below `threshold` (`v < threshold` keeps `v`, else `255 - v`; the
/// threshold may be fractional, as RandAugment's are).
pub fn solarize(img: &mut RgbImage, threshold: f64) {
    let lut: [u8; 256] = std::array::from_fn(|i| {
        if (i as f64) < threshold {
            i as u8
        } else {
            255 - i as u8
        }
    });
    apply_luts(img, &[lut; 3]);
}

/// `ImageOps.autocontrast`'s table for one channel's histogram (cutoff 0): the darkest value
/// to 0, the lightest to 255, `int(v * scale + offset)` in between.
fn autocontrast_lut(hist: &[u64; 256]) -> [u8; 256] {
    let lo = hist.iter().position(|&n| n > 0);
    let hi = hist.iter().rposition(|&n| n > 0);
    match (lo, hi) {
        (Some(lo), Some(hi)) if hi > lo => {
            let scale = 255.0 / (hi - lo) as f64;
            let offset = -(lo as f64) * scale;
            std::array::from_fn(|i| ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8)
        }
        _ => identity_lut(),
    }
}

/// torchvision's `autocontrast` on a PIL image (`ImageOps.autocontrast(img)`): stretches each
/// channel separately so that its darkest value becomes 0 and its lightest 255; a constant
/// channel is left as it is.
pub fn autocontrast(img: &mut RgbImage) {
    let hist = histograms(img);
    let luts = [
        autocontrast_lut(&hist[0]),
        autocontrast_lut(&hist[1]),
        autocontrast_lut(&hist[2]),
    ];
    apply_luts(img, &luts);
}

/// `ImageOps.equalize`'s table for one channel's histogram: with `step = (pixels - count of
/// the last non-empty value) // 255`, value `i` maps to `(step // 2 + pixels below i) // step`,
/// clipped to 255 as Pillow's `point` clips; the identity when the channel has a single value
/// or `step` is 0.
fn equalize_lut(hist: &[u64; 256]) -> [u8; 256] {
    let mut used = hist.iter().copied().filter(|&n| n > 0);
    let Some(first) = used.next() else {
        return identity_lut();
    };
    let (mut total, mut last, mut count) = (first, first, 1usize);
    for n in used {
        total += n;
        last = n;
        count += 1;
    }
    if count <= 1 {
        return identity_lut();
    }
    let step = (total - last) / 255;
    if step == 0 {
        return identity_lut();
    }
    let mut lut = [0u8; 256];
    let mut n = step / 2;
    for (out, &k) in lut.iter_mut().zip(hist.iter()) {
        *out = (n / step).min(255) as u8;
        n += k;
    }
    lut
}

/// torchvision's `equalize` on a PIL image (`ImageOps.equalize`): equalises each channel's
/// histogram separately with Pillow's integer table (see `equalize_lut`).
pub fn equalize(img: &mut RgbImage) {
    let hist = histograms(img);
    let luts = [
        equalize_lut(&hist[0]),
        equalize_lut(&hist[1]),
        equalize_lut(&hist[2]),
    ];
    apply_luts(img, &luts);
}
