//! Automatic augmentation policies with the names and semantics of torchvision's
//! `transforms/autoaugment.py` (v1, PIL path, `interpolation=NEAREST`, `fill=None`):
//! [`TrivialAugmentWide`] (Müller and Hutter, "TrivialAugment: Tuning-free Yet State-of-the-Art
//! Data Augmentation", ICCV 2021) and [`RandAugment`] (Cubuk, Zoph, Shlens and Le, "RandAugment:
//! Practical automated data augmentation with a reduced search space", CVPR Workshops 2020),
//! over the fourteen operations of [`AugmentOp`], applied by [`apply_op`] (torchvision's
//! `_apply_op`).
//!
//! For fixed parameters the pixels are those of torchvision on a PIL image: the geometric
//! operations follow Pillow's nearest-neighbour `Image.transform(AFFINE)` / `Image.rotate`
//! (`libImaging/Geometry.c`), the colour ones `ImageEnhance`, the histogram ones `ImageOps`
//! (see [`functional`](super::functional)). The magnitude tables are torchvision's
//! `_augmentation_space`: `torch.linspace` values in `f32`, computed as torch computes them on
//! an x86-64 CPU with AVX2 or AVX-512 (`start + step * i` for the first half and
//! `end - step * (steps - 1 - i)` for the second, each a fused multiply-add; torch's
//! non-vectorised build rounds twice and can differ in the last bit). Random draws come from the
//! image's [`SeededRng`] in torchvision's order (the op, then the magnitude bin for
//! TrivialAugment, then the sign for signed ops), not from torch's generator.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::functional::{
    adjust_brightness, adjust_contrast, adjust_saturation, adjust_sharpness, affine, autocontrast,
    equalize, posterize, rotate, solarize,
};
use super::rng::SeededRng;

/// The most magnitude bins a policy may have (torchvision's default is 31): the tables are
/// built per image.
pub const MAX_BINS: u32 = 1024;

/// The most operations [`RandAugment`] applies to one image.
pub const MAX_OPS: u32 = 64;

/// Degrees per radian, as CPython's `math.degrees` multiplies (`180 / pi`).
const DEG_PER_RAD: f64 = 180.0 / std::f64::consts::PI;

/// One operation of TrivialAugment and RandAugment, with torchvision's name (the keys of
/// `_augmentation_space`, in its order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AugmentOp {
    /// The image unchanged.
    Identity,
    /// Horizontal shear by `magnitude` (the `x` offset per row), about the top-left corner.
    ShearX,
    /// Vertical shear by `magnitude`, about the top-left corner.
    ShearY,
    /// Horizontal translation by `int(magnitude)` pixels.
    TranslateX,
    /// Vertical translation by `int(magnitude)` pixels.
    TranslateY,
    /// Rotation by `magnitude` degrees, counter-clockwise, about the centre.
    Rotate,
    /// `adjust_brightness(1 + magnitude)`.
    Brightness,
    /// `adjust_saturation(1 + magnitude)`.
    Color,
    /// `adjust_contrast(1 + magnitude)`.
    Contrast,
    /// `adjust_sharpness(1 + magnitude)`.
    Sharpness,
    /// `posterize(int(magnitude))` bits.
    Posterize,
    /// `solarize(magnitude)`: values at or above the threshold inverted.
    Solarize,
    /// `autocontrast`, per channel.
    AutoContrast,
    /// `equalize`, per channel.
    Equalize,
}

impl AugmentOp {
    /// Every operation, in torchvision's order (the index TrivialAugment and RandAugment draw).
    pub const ALL: [AugmentOp; 14] = [
        AugmentOp::Identity,
        AugmentOp::ShearX,
        AugmentOp::ShearY,
        AugmentOp::TranslateX,
        AugmentOp::TranslateY,
        AugmentOp::Rotate,
        AugmentOp::Brightness,
        AugmentOp::Color,
        AugmentOp::Contrast,
        AugmentOp::Sharpness,
        AugmentOp::Posterize,
        AugmentOp::Solarize,
        AugmentOp::AutoContrast,
        AugmentOp::Equalize,
    ];

    /// torchvision's name (`"ShearX"`, `"AutoContrast"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            AugmentOp::Identity => "Identity",
            AugmentOp::ShearX => "ShearX",
            AugmentOp::ShearY => "ShearY",
            AugmentOp::TranslateX => "TranslateX",
            AugmentOp::TranslateY => "TranslateY",
            AugmentOp::Rotate => "Rotate",
            AugmentOp::Brightness => "Brightness",
            AugmentOp::Color => "Color",
            AugmentOp::Contrast => "Contrast",
            AugmentOp::Sharpness => "Sharpness",
            AugmentOp::Posterize => "Posterize",
            AugmentOp::Solarize => "Solarize",
            AugmentOp::AutoContrast => "AutoContrast",
            AugmentOp::Equalize => "Equalize",
        }
    }

    /// Parses torchvision's name, in any letter case.
    pub fn parse(name: &str) -> Option<Self> {
        AugmentOp::ALL
            .into_iter()
            .find(|op| op.name().eq_ignore_ascii_case(name))
    }

    /// Whether the policies draw a random sign for the magnitude (the geometric and colour
    /// operations).
    pub fn is_signed(self) -> bool {
        matches!(
            self,
            AugmentOp::ShearX
                | AugmentOp::ShearY
                | AugmentOp::TranslateX
                | AugmentOp::TranslateY
                | AugmentOp::Rotate
                | AugmentOp::Brightness
                | AugmentOp::Color
                | AugmentOp::Contrast
                | AugmentOp::Sharpness
        )
    }

    /// Whether the operation has a magnitude table (all but `Identity`, `AutoContrast` and
    /// `Equalize`, whose magnitude is 0).
    pub fn has_magnitude(self) -> bool {
        !matches!(
            self,
            AugmentOp::Identity | AugmentOp::AutoContrast | AugmentOp::Equalize
        )
    }
}

impl std::fmt::Display for AugmentOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// torchvision's `_apply_op(img, op, magnitude, InterpolationMode.NEAREST, fill=None)` on a PIL
/// RGB image: the operation at a signed magnitude, pixel for pixel as torchvision computes it.
///
/// * `ShearX`: `affine(angle=0, translate=[0, 0], scale=1, shear=[degrees(atan(magnitude)), 0],
///   center=[0, 0])`, `ShearY` the same with `shear=[0, degrees(atan(magnitude))]`;
/// * `TranslateX`: `affine(translate=[int(magnitude), 0])` about the image centre, `TranslateY`
///   with `translate=[0, int(magnitude)]`;
/// * `Rotate`: Pillow's `rotate(magnitude)`;
/// * `Brightness`, `Color`, `Contrast`, `Sharpness`: the enhancement with factor
///   `1 + magnitude`;
/// * `Posterize`: `int(magnitude)` bits, clamped to 0..=8 (torchvision raises outside);
/// * `Solarize`: threshold `magnitude`;
/// * `AutoContrast`, `Equalize`, `Identity`: no magnitude.
///
/// Areas that the geometric operations uncover are black.
pub fn apply_op(img: &RgbImage, op: AugmentOp, magnitude: f64) -> RgbImage {
    match op {
        AugmentOp::Identity => img.clone(),
        AugmentOp::ShearX => affine(
            img,
            0.0,
            (0.0, 0.0),
            1.0,
            (magnitude.atan() * DEG_PER_RAD, 0.0),
            Some((0.0, 0.0)),
        ),
        AugmentOp::ShearY => affine(
            img,
            0.0,
            (0.0, 0.0),
            1.0,
            (0.0, magnitude.atan() * DEG_PER_RAD),
            Some((0.0, 0.0)),
        ),
        AugmentOp::TranslateX => affine(img, 0.0, (magnitude.trunc(), 0.0), 1.0, (0.0, 0.0), None),
        AugmentOp::TranslateY => affine(img, 0.0, (0.0, magnitude.trunc()), 1.0, (0.0, 0.0), None),
        AugmentOp::Rotate => rotate(img, magnitude),
        AugmentOp::Brightness => enhanced(img, |i| adjust_brightness(i, (1.0 + magnitude) as f32)),
        AugmentOp::Color => enhanced(img, |i| adjust_saturation(i, (1.0 + magnitude) as f32)),
        AugmentOp::Contrast => enhanced(img, |i| adjust_contrast(i, (1.0 + magnitude) as f32)),
        AugmentOp::Sharpness => enhanced(img, |i| adjust_sharpness(i, (1.0 + magnitude) as f32)),
        AugmentOp::Posterize => {
            let bits = magnitude.trunc().clamp(0.0, 8.0) as u8;
            enhanced(img, |i| posterize(i, bits))
        }
        AugmentOp::Solarize => enhanced(img, |i| solarize(i, magnitude)),
        AugmentOp::AutoContrast => enhanced(img, autocontrast),
        AugmentOp::Equalize => enhanced(img, equalize),
    }
}

/// A copy of `img` changed in place by `f`.
fn enhanced(img: &RgbImage, f: impl FnOnce(&mut RgbImage)) -> RgbImage {
    let mut out = img.clone();
    f(&mut out);
    out
}

/// `torch.linspace(start, end, steps)[i]` in `f32` (the bounds converted to `f32` first), as
/// torch's CPU kernel computes it with fused multiply-adds: `start + step * i` below
/// `steps / 2`, `end - step * (steps - 1 - i)` from there, `step = (end - start) / (steps - 1)`.
fn linspace(start: f64, end: f64, steps: u32, i: u32) -> f64 {
    let (start, end) = (start as f32, end as f32);
    if steps <= 1 {
        return f64::from(start);
    }
    let step = (end - start) / (steps - 1) as f32;
    let value = if i < steps / 2 {
        step.mul_add(i as f32, start)
    } else {
        (-step).mul_add((i64::from(steps) - 1 - i64::from(i)) as f32, end)
    };
    f64::from(value)
}

/// The magnitudes of one operation in an augmentation space.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Space {
    /// No magnitude (always 0).
    Fixed,
    /// `torch.linspace(start, end, bins)`.
    Linear(f64, f64),
    /// `8 - (torch.arange(bins) / ((bins - 1) / range)).round().int()`: posterize bits from 8
    /// down to `8 - range`.
    Posterize(f64),
}

impl Space {
    /// The magnitude of bin `i` of `bins`.
    fn value(self, bins: u32, i: u32) -> f64 {
        match self {
            Space::Fixed => 0.0,
            Space::Linear(start, end) => linspace(start, end, bins, i),
            Space::Posterize(range) => {
                // int64 / float gives float32 in torch; `round` is half to even.
                let divisor = ((f64::from(bins) - 1.0) / range) as f32;
                let bits = (i as f32 / divisor).round_ties_even() as i32;
                f64::from(8i32.saturating_sub(bits))
            }
        }
    }

    /// Every magnitude (empty without a table).
    fn values(self, bins: u32) -> Vec<f64> {
        match self {
            Space::Fixed => Vec::new(),
            _ => (0..bins).map(|i| self.value(bins, i)).collect(),
        }
    }
}

/// The op index, then (for signed ops) the sign: the draws both policies make, around the
/// magnitude `magnitude` picks from the op's table.
fn draw(
    rng: &mut SeededRng,
    magnitude: impl FnOnce(AugmentOp, &mut SeededRng) -> f64,
) -> (AugmentOp, f64) {
    let op = AugmentOp::ALL[rng.below(AugmentOp::ALL.len() as u64) as usize];
    let mut m = magnitude(op, &mut *rng);
    if op.is_signed() && rng.below(2) == 1 {
        m = -m;
    }
    (op, m)
}

/// `TrivialAugmentWide(num_magnitude_bins)`: one operation drawn uniformly from the fourteen,
/// at a magnitude drawn uniformly from its `num_magnitude_bins` bins of torchvision's "wide"
/// ranges, with a random sign for the geometric and colour operations — TrivialAugment (Müller
/// and Hutter, 2021), torchvision's `transforms.TrivialAugmentWide` with nearest-neighbour
/// interpolation and black fill.
///
/// The wide ranges: shears up to 0.99, translations up to 32 pixels, rotations up to 135
/// degrees, enhancement factors `1 ± 0.99`, posterize from 8 down to 2 bits, solarize
/// thresholds from 255 down to 0.
///
/// ```
/// use finetune::data::{Pipeline, TrivialAugmentWide, RandomHorizontalFlip};
///
/// let train = Pipeline::new()
///     .then(RandomHorizontalFlip::default())
///     .then(TrivialAugmentWide::default());
/// assert!(train.is_random());
/// assert_eq!(train.output_size(32, 32).unwrap(), (32, 32));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrivialAugmentWide {
    /// Number of magnitude bins (torchvision: 31); at least 2.
    pub num_magnitude_bins: u32,
}

impl TrivialAugmentWide {
    /// `TrivialAugmentWide(num_magnitude_bins)`.
    pub fn new(num_magnitude_bins: u32) -> Self {
        TrivialAugmentWide { num_magnitude_bins }
    }

    /// Checks that there are at least 2 magnitude bins (with one, torchvision's posterize
    /// table divides by zero).
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=MAX_BINS).contains(&self.num_magnitude_bins) {
            return Err(format!(
                "num_magnitude_bins = {} must be between 2 and {MAX_BINS} (torchvision: 31)",
                self.num_magnitude_bins
            ));
        }
        Ok(())
    }

    /// torchvision's `_augmentation_space(num_bins)` entry for `op`.
    fn space(op: AugmentOp) -> Space {
        match op {
            AugmentOp::Identity | AugmentOp::AutoContrast | AugmentOp::Equalize => Space::Fixed,
            AugmentOp::ShearX | AugmentOp::ShearY => Space::Linear(0.0, 0.99),
            AugmentOp::TranslateX | AugmentOp::TranslateY => Space::Linear(0.0, 32.0),
            AugmentOp::Rotate => Space::Linear(0.0, 135.0),
            AugmentOp::Brightness
            | AugmentOp::Color
            | AugmentOp::Contrast
            | AugmentOp::Sharpness => Space::Linear(0.0, 0.99),
            AugmentOp::Posterize => Space::Posterize(6.0),
            AugmentOp::Solarize => Space::Linear(255.0, 0.0),
        }
    }

    /// The magnitudes of `op`'s bins (unsigned; empty for `Identity`, `AutoContrast` and
    /// `Equalize`): torchvision's `_augmentation_space(num_magnitude_bins)`, bit for bit.
    pub fn magnitudes(&self, op: AugmentOp) -> Vec<f64> {
        Self::space(op).values(self.num_magnitude_bins)
    }

    /// Draws the operation and its signed magnitude as `forward` does: the op index, then the
    /// magnitude bin (ops with a table only), then the sign (signed ops only).
    pub fn sample(&self, rng: &mut SeededRng) -> (AugmentOp, f64) {
        let bins = self.num_magnitude_bins;
        draw(rng, |op, rng| {
            let space = Self::space(op);
            if matches!(space, Space::Fixed) {
                0.0
            } else {
                space.value(bins, rng.below(u64::from(bins)) as u32)
            }
        })
    }

    /// Applies one random operation (see [`sample`](Self::sample) and [`apply_op`]).
    pub fn apply(&self, img: RgbImage, rng: &mut SeededRng) -> RgbImage {
        let (op, magnitude) = self.sample(rng);
        if op == AugmentOp::Identity {
            return img;
        }
        apply_op(&img, op, magnitude)
    }
}

impl Default for TrivialAugmentWide {
    fn default() -> Self {
        TrivialAugmentWide::new(31)
    }
}

/// `RandAugment(num_ops, magnitude, num_magnitude_bins)`: `num_ops` operations drawn uniformly
/// (with replacement) from the fourteen and applied in turn, all at bin `magnitude` of their
/// `num_magnitude_bins`-bin range, with a random sign for the geometric and colour
/// operations — RandAugment (Cubuk et al., 2020), torchvision's `transforms.RandAugment` with
/// nearest-neighbour interpolation and black fill.
///
/// The ranges: shears up to 0.3, translations up to `150 / 331` of the image's width / height,
/// rotations up to 30 degrees, enhancement factors `1 ± 0.9`, posterize from 8 down to 4 bits,
/// solarize thresholds from 255 down to 0. The defaults (2 ops, magnitude 9 of 31 bins) are
/// torchvision's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RandAugment {
    /// Number of operations applied in sequence (torchvision: 2).
    pub num_ops: u32,
    /// The magnitude bin every operation uses (torchvision: 9), below `num_magnitude_bins`.
    pub magnitude: u32,
    /// Number of magnitude bins (torchvision: 31); at least 2.
    pub num_magnitude_bins: u32,
}

impl RandAugment {
    /// `RandAugment(num_ops, magnitude, num_magnitude_bins)`.
    pub fn new(num_ops: u32, magnitude: u32, num_magnitude_bins: u32) -> Self {
        RandAugment {
            num_ops,
            magnitude,
            num_magnitude_bins,
        }
    }

    /// Checks that there are at least 2 bins and that `magnitude` is one of them.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=MAX_BINS).contains(&self.num_magnitude_bins) {
            return Err(format!(
                "num_magnitude_bins = {} must be between 2 and {MAX_BINS} (torchvision: 31)",
                self.num_magnitude_bins
            ));
        }
        if self.num_ops > MAX_OPS {
            return Err(format!(
                "num_ops = {} is more operations per image than the {MAX_OPS} allowed (Cubuk et al. use 1 to 3; torchvision's default is 2)",
                self.num_ops
            ));
        }
        if self.magnitude >= self.num_magnitude_bins {
            return Err(format!(
                "magnitude = {} must be a bin index below num_magnitude_bins = {} (torchvision: 9 of 31)",
                self.magnitude, self.num_magnitude_bins
            ));
        }
        Ok(())
    }

    /// torchvision's `_augmentation_space(num_bins, (height, width))` entry for `op`.
    fn space(op: AugmentOp, height: u32, width: u32) -> Space {
        match op {
            AugmentOp::Identity | AugmentOp::AutoContrast | AugmentOp::Equalize => Space::Fixed,
            AugmentOp::ShearX | AugmentOp::ShearY => Space::Linear(0.0, 0.3),
            AugmentOp::TranslateX => Space::Linear(0.0, 150.0 / 331.0 * f64::from(width)),
            AugmentOp::TranslateY => Space::Linear(0.0, 150.0 / 331.0 * f64::from(height)),
            AugmentOp::Rotate => Space::Linear(0.0, 30.0),
            AugmentOp::Brightness
            | AugmentOp::Color
            | AugmentOp::Contrast
            | AugmentOp::Sharpness => Space::Linear(0.0, 0.9),
            AugmentOp::Posterize => Space::Posterize(4.0),
            AugmentOp::Solarize => Space::Linear(255.0, 0.0),
        }
    }

    /// The magnitudes of `op`'s bins for a `width x height` image (unsigned; empty for
    /// `Identity`, `AutoContrast` and `Equalize`): torchvision's
    /// `_augmentation_space(num_magnitude_bins, (height, width))`, bit for bit.
    pub fn magnitudes(&self, op: AugmentOp, height: u32, width: u32) -> Vec<f64> {
        Self::space(op, height, width).values(self.num_magnitude_bins)
    }

    /// Draws the `num_ops` operations and their signed magnitudes for a `width x height` image
    /// as `forward` does: for each, the op index, then the sign (signed ops only).
    pub fn sample(&self, height: u32, width: u32, rng: &mut SeededRng) -> Vec<(AugmentOp, f64)> {
        let (bins, bin) = (self.num_magnitude_bins, self.magnitude);
        (0..self.num_ops)
            .map(|_| {
                draw(&mut *rng, |op, _| {
                    Self::space(op, height, width).value(bins, bin)
                })
            })
            .collect()
    }

    /// Applies `num_ops` random operations in turn (see [`sample`](Self::sample) and
    /// [`apply_op`]).
    pub fn apply(&self, img: RgbImage, rng: &mut SeededRng) -> RgbImage {
        let (width, height) = img.dimensions();
        self.sample(height, width, rng)
            .into_iter()
            .fold(img, |img, (op, magnitude)| {
                if op == AugmentOp::Identity {
                    img
                } else {
                    apply_op(&img, op, magnitude)
                }
            })
    }
}

impl Default for RandAugment {
    fn default() -> Self {
        RandAugment::new(2, 9, 31)
    }
}
