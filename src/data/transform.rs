//! Image transforms with the names and semantics of `torchvision.transforms` (v1, PIL path):
//! [`RandomHorizontalFlip`], [`RandomCrop`], [`RandomResizedCrop`], [`Resize`] (bilinear or
//! bicubic), [`CenterCrop`], [`ColorJitter`], [`TrivialAugmentWide`], [`RandAugment`],
//! [`Normalize`] and [`RandomErasing`], composed into a [`Pipeline`] (torchvision's
//! `Compose([..., ToTensor(), Normalize(...), RandomErasing(...)])`).
//!
//! Geometric and colour transforms run on `u8` RGB images exactly like torchvision on PIL images
//! (see [`functional`](super::functional)); the pipeline then converts to `f32` CHW in `[0, 1]`
//! (`ToTensor`) and normalises, in one pass through a per-channel lookup table that computes the
//! same `f32` operations as torchvision.
//!
//! Randomness comes from a [`SeededRng`] per image, so an image's augmentation depends only on
//! its seed — never on the thread or batch it is processed in.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::autoaugment::{RandAugment, TrivialAugmentWide};
use super::erasing::RandomErasing;
use super::error::DataError;
pub use super::functional::Interpolation;
use super::functional::{
    ResizePlan, adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, center_crop,
    crop, hflip, shorter_side_size,
};
use super::rng::SeededRng;

/// The largest side, in pixels, a transform may set (a `Resize`, a crop): 16,384, so that no
/// size a user types makes one image take more than about 800 MB.
pub const MAX_SIDE: u32 = 16_384;

/// Per-channel mean of the CIFAR-10 training images (RGB, in `[0, 1]`).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// Per-channel standard deviation of the CIFAR-10 training pixels (RGB).
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
/// Per-channel mean of ImageNet (what torchvision's pretrained weights expect).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel standard deviation of ImageNet.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `RandomHorizontalFlip(p)`: mirrors the image with probability `p`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandomHorizontalFlip {
    /// Probability of flipping.
    pub p: f64,
}

impl RandomHorizontalFlip {
    /// Flips with probability `p`.
    pub fn new(p: f64) -> Self {
        RandomHorizontalFlip { p }
    }
}

impl Default for RandomHorizontalFlip {
    fn default() -> Self {
        RandomHorizontalFlip { p: 0.5 }
    }
}

/// `RandomCrop(size, padding)`: pads every side with `padding` black pixels, then crops a
/// `size x size` square at a uniformly random position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RandomCrop {
    /// Side of the crop.
    pub size: u32,
    /// Black border added on each side first.
    pub padding: u32,
}

impl RandomCrop {
    /// A `size x size` crop after `padding` pixels of zero padding.
    pub fn new(size: u32, padding: u32) -> Self {
        RandomCrop { size, padding }
    }
}

/// The size [`Resize`] produces (torchvision's `size` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResizeTo {
    /// `size=int`: the shorter side becomes this, the aspect ratio is kept.
    Shorter(u32),
    /// `size=(h, w)`: exactly this size.
    Exact {
        /// Output height.
        height: u32,
        /// Output width.
        width: u32,
    },
}

/// `Resize(size, interpolation)`: Pillow's resampling (with antialiasing when shrinking),
/// bilinear by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    /// The output size.
    pub size: ResizeTo,
    /// The resampling filter.
    #[serde(default)]
    pub interpolation: Interpolation,
}

impl Resize {
    /// `Resize(size)`: the shorter side becomes `size` (a square image becomes `size x size`).
    pub fn new(size: u32) -> Self {
        Resize {
            size: ResizeTo::Shorter(size),
            interpolation: Interpolation::Bilinear,
        }
    }

    /// `Resize((height, width))`.
    pub fn exact(height: u32, width: u32) -> Self {
        Resize {
            size: ResizeTo::Exact { height, width },
            interpolation: Interpolation::Bilinear,
        }
    }

    /// The same resize with `interpolation` (`Resize(size, interpolation=BICUBIC)`).
    pub fn with_interpolation(mut self, interpolation: Interpolation) -> Self {
        self.interpolation = interpolation;
        self
    }

    /// `(width, height)` of the output for an input of `width x height`.
    pub fn output_size(&self, width: u32, height: u32) -> (u32, u32) {
        match self.size {
            ResizeTo::Shorter(size) => shorter_side_size(width, height, size),
            ResizeTo::Exact { height, width } => (width, height),
        }
    }
}

/// `RandomResizedCrop(size, scale, ratio, interpolation)`: a crop of random area (a fraction in
/// `scale` of the image's) and aspect ratio (width / height, log-uniform in `ratio`), resized to
/// `height x width` — the ImageNet training crop (Szegedy et al., 2015) and the tutorial's train
/// transform. Crop positions are drawn as torchvision's `get_params` draws them (ten tries, then
/// the centre crop of the nearest allowed ratio); see [`get_params`](Self::get_params).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandomResizedCrop {
    /// Output height.
    pub height: u32,
    /// Output width.
    pub width: u32,
    /// Range of the crop's area, as a fraction of the image's (torchvision: `(0.08, 1.0)`).
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio, width / height (torchvision: `(3/4, 4/3)`).
    pub ratio: (f64, f64),
    /// The resampling filter of the resize.
    pub interpolation: Interpolation,
}

impl RandomResizedCrop {
    /// `RandomResizedCrop(size)`: a `size x size` output, scale `(0.08, 1.0)`, ratio
    /// `(3/4, 4/3)`, bilinear.
    pub fn new(size: u32) -> Self {
        RandomResizedCrop {
            height: size,
            width: size,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            interpolation: Interpolation::Bilinear,
        }
    }

    /// The same transform with the area range `scale`.
    pub fn with_scale(mut self, min: f64, max: f64) -> Self {
        self.scale = (min, max);
        self
    }

    /// The same transform with the aspect-ratio range `ratio`.
    pub fn with_ratio(mut self, min: f64, max: f64) -> Self {
        self.ratio = (min, max);
        self
    }

    /// The same transform with `interpolation`.
    pub fn with_interpolation(mut self, interpolation: Interpolation) -> Self {
        self.interpolation = interpolation;
        self
    }

    /// torchvision's `RandomResizedCrop.get_params`: `(top, left, height, width)` of the crop
    /// in an image of `width x height` (both at least 1). Up to ten tries draw an area
    /// fraction uniformly in `scale` and a ratio log-uniformly in `ratio`, and keep the first
    /// crop that fits (`w = round(sqrt(area * ratio))`, `h = round(sqrt(area / ratio))`,
    /// rounding half to even as Python does), at a uniform position; otherwise the centre
    /// crop with the ratio clamped to the range.
    pub fn get_params(&self, width: u32, height: u32, rng: &mut SeededRng) -> (u32, u32, u32, u32) {
        let area = f64::from(width) * f64::from(height);
        let (log_lo, log_hi) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = area * rng.uniform(self.scale.0, self.scale.1);
            let aspect = rng.uniform(log_lo, log_hi).exp();
            let w = (target_area * aspect).sqrt().round_ties_even();
            let h = (target_area / aspect).sqrt().round_ties_even();
            if w > 0.0 && w <= f64::from(width) && h > 0.0 && h <= f64::from(height) {
                let (w, h) = (w as u32, h as u32);
                let top = rng.int_inclusive(0, height - h);
                let left = rng.int_inclusive(0, width - w);
                return (top, left, h, w);
            }
        }
        let in_ratio = f64::from(width) / f64::from(height);
        let (lo, hi) = (
            self.ratio.0.min(self.ratio.1),
            self.ratio.0.max(self.ratio.1),
        );
        let (w, h) = if in_ratio < lo {
            let h = (f64::from(width) / lo)
                .round_ties_even()
                .clamp(1.0, f64::from(height));
            (width, h as u32)
        } else if in_ratio > hi {
            let w = (f64::from(height) * hi)
                .round_ties_even()
                .clamp(1.0, f64::from(width));
            (w as u32, height)
        } else {
            (width, height)
        };
        ((height - h) / 2, (width - w) / 2, h, w)
    }
}

/// `CenterCrop(size)`: the centre `size x size` square (padded with black if the image is
/// smaller).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CenterCrop {
    /// Side of the crop.
    pub size: u32,
}

impl CenterCrop {
    /// The centre `size x size` square.
    pub fn new(size: u32) -> Self {
        CenterCrop { size }
    }
}

/// `ColorJitter(brightness, contrast, saturation, hue)`: factors drawn uniformly from
/// `[max(0, 1 - b), 1 + b]` (same for contrast and saturation) and `[-hue, hue]`, applied in a
/// random order. A zero disables the adjustment.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColorJitter {
    /// Brightness jitter (>= 0).
    pub brightness: f32,
    /// Contrast jitter (>= 0).
    pub contrast: f32,
    /// Saturation jitter (>= 0).
    pub saturation: f32,
    /// Hue jitter, in `[0, 0.5]`.
    pub hue: f32,
}

impl ColorJitter {
    /// `ColorJitter(brightness, contrast, saturation, hue)`.
    pub fn new(brightness: f32, contrast: f32, saturation: f32, hue: f32) -> Self {
        ColorJitter {
            brightness,
            contrast,
            saturation,
            hue,
        }
    }
}

/// `Normalize(mean, std)` applied after `ToTensor` (pixels divided by 255).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Per-channel mean (RGB).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB).
    pub std: [f32; 3],
}

impl Normalize {
    /// `Normalize(mean, std)`.
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Self {
        Normalize { mean, std }
    }

    /// CIFAR-10 statistics ([`CIFAR10_MEAN`], [`CIFAR10_STD`]).
    pub fn cifar10() -> Self {
        Normalize::new(CIFAR10_MEAN, CIFAR10_STD)
    }

    /// ImageNet statistics ([`IMAGENET_MEAN`], [`IMAGENET_STD`]), for pretrained weights.
    pub fn imagenet() -> Self {
        Normalize::new(IMAGENET_MEAN, IMAGENET_STD)
    }

    /// The normalised value of every byte, per channel: `(v / 255 - mean) / std` in `f32`.
    pub fn lut(&self) -> [[f32; 256]; 3] {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        lut
    }

    /// Inverts the normalisation of one CHW image back to `u8` pixels (for pictures; the
    /// tutorial's `imshow` does `inp * std + mean`).
    pub fn denormalize(&self, chw: &[f32], width: u32, height: u32) -> RgbImage {
        let plane = width as usize * height as usize;
        let mut img = RgbImage::new(width, height);
        for (i, p) in img.pixels_mut().enumerate() {
            for c in 0..3 {
                let x = chw.get(c * plane + i).copied().unwrap_or(0.0);
                p[c] = ((x * self.std[c] + self.mean[c]) * 255.0)
                    .round()
                    .clamp(0.0, 255.0) as u8;
            }
        }
        img
    }
}

/// One `u8` image transform of a [`Pipeline`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Transform {
    /// See [`RandomHorizontalFlip`].
    RandomHorizontalFlip(RandomHorizontalFlip),
    /// See [`RandomCrop`].
    RandomCrop(RandomCrop),
    /// See [`Resize`].
    Resize(Resize),
    /// See [`CenterCrop`].
    CenterCrop(CenterCrop),
    /// See [`ColorJitter`].
    ColorJitter(ColorJitter),
    /// See [`RandomResizedCrop`].
    RandomResizedCrop(RandomResizedCrop),
    /// See [`TrivialAugmentWide`].
    TrivialAugmentWide(TrivialAugmentWide),
    /// See [`RandAugment`].
    RandAugment(RandAugment),
}

impl From<RandomHorizontalFlip> for Transform {
    fn from(t: RandomHorizontalFlip) -> Self {
        Transform::RandomHorizontalFlip(t)
    }
}
impl From<RandomCrop> for Transform {
    fn from(t: RandomCrop) -> Self {
        Transform::RandomCrop(t)
    }
}
impl From<Resize> for Transform {
    fn from(t: Resize) -> Self {
        Transform::Resize(t)
    }
}
impl From<CenterCrop> for Transform {
    fn from(t: CenterCrop) -> Self {
        Transform::CenterCrop(t)
    }
}
impl From<ColorJitter> for Transform {
    fn from(t: ColorJitter) -> Self {
        Transform::ColorJitter(t)
    }
}
impl From<RandomResizedCrop> for Transform {
    fn from(t: RandomResizedCrop) -> Self {
        Transform::RandomResizedCrop(t)
    }
}
impl From<TrivialAugmentWide> for Transform {
    fn from(t: TrivialAugmentWide) -> Self {
        Transform::TrivialAugmentWide(t)
    }
}
impl From<RandAugment> for Transform {
    fn from(t: RandAugment) -> Self {
        Transform::RandAugment(t)
    }
}

impl Transform {
    /// torchvision's class name.
    pub fn name(&self) -> &'static str {
        match self {
            Transform::RandomHorizontalFlip(_) => "RandomHorizontalFlip",
            Transform::RandomCrop(_) => "RandomCrop",
            Transform::Resize(_) => "Resize",
            Transform::CenterCrop(_) => "CenterCrop",
            Transform::ColorJitter(_) => "ColorJitter",
            Transform::RandomResizedCrop(_) => "RandomResizedCrop",
            Transform::TrivialAugmentWide(_) => "TrivialAugmentWide",
            Transform::RandAugment(_) => "RandAugment",
        }
    }

    /// Whether the transform draws random numbers.
    pub fn is_random(&self) -> bool {
        match self {
            Transform::RandomHorizontalFlip(t) => t.p > 0.0 && t.p < 1.0,
            Transform::RandomCrop(_) | Transform::RandomResizedCrop(_) => true,
            Transform::Resize(_) | Transform::CenterCrop(_) => false,
            Transform::ColorJitter(t) => {
                t.brightness > 0.0 || t.contrast > 0.0 || t.saturation > 0.0 || t.hue > 0.0
            }
            Transform::TrivialAugmentWide(_) => true,
            Transform::RandAugment(t) => t.num_ops > 0,
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> DataError {
        DataError::Transform {
            transform: self.name(),
            reason: reason.into(),
        }
    }

    /// The output sides the transform sets (none for flips and colour jitter).
    fn sizes(&self) -> Vec<u32> {
        match self {
            Transform::RandomCrop(t) => vec![t.size],
            Transform::CenterCrop(t) => vec![t.size],
            Transform::RandomResizedCrop(t) => vec![t.height, t.width],
            Transform::Resize(r) => match r.size {
                ResizeTo::Shorter(s) => vec![s],
                ResizeTo::Exact { height, width } => vec![height, width],
            },
            Transform::RandomHorizontalFlip(_)
            | Transform::ColorJitter(_)
            | Transform::TrivialAugmentWide(_)
            | Transform::RandAugment(_) => Vec::new(),
        }
    }

    /// Checks the parameters: probabilities, ranges, and sizes between 1 and [`MAX_SIDE`].
    pub fn validate(&self) -> Result<(), DataError> {
        if let Some(side) = self.sizes().into_iter().find(|&s| s > MAX_SIDE) {
            return Err(self.invalid(format!(
                "a side of {side} pixels is larger than the {MAX_SIDE} a transform produces (one such image would take gigabytes); give a smaller size"
            )));
        }
        match self {
            Transform::RandomHorizontalFlip(t) if !(0.0..=1.0).contains(&t.p) => {
                Err(self.invalid(format!("p = {} is not a probability in [0, 1]", t.p)))
            }
            Transform::RandomCrop(t) if t.size == 0 => Err(self.invalid(
                "size must be positive: a crop of 0 pixels holds nothing; give a size of at least 1",
            )),
            Transform::CenterCrop(t) if t.size == 0 => Err(self.invalid(
                "size must be positive: a crop of 0 pixels holds nothing; give a size of at least 1",
            )),
            Transform::RandomResizedCrop(t) if t.height == 0 || t.width == 0 => Err(self.invalid(
                "size must be positive: images cannot be resized to 0 pixels; give a size of at least 1",
            )),
            Transform::RandomResizedCrop(t) => {
                let (s, r) = (t.scale, t.ratio);
                if !(s.0 > 0.0 && s.0 <= s.1 && s.1.is_finite()) {
                    return Err(self.invalid(format!(
                        "scale = ({}, {}) must be a range (min, max) of area fractions with 0 < min <= max (torchvision: (0.08, 1.0))",
                        s.0, s.1
                    )));
                }
                if !(r.0 > 0.0 && r.0 <= r.1 && r.1.is_finite()) {
                    return Err(self.invalid(format!(
                        "ratio = ({}, {}) must be a range (min, max) of aspect ratios with 0 < min <= max (torchvision: (3/4, 4/3))",
                        r.0, r.1
                    )));
                }
                Ok(())
            }
            Transform::Resize(Resize {
                size: ResizeTo::Shorter(0) | ResizeTo::Exact { height: 0, .. } | ResizeTo::Exact { width: 0, .. },
                ..
            }) => Err(self.invalid(
                "size must be positive: images cannot be resized to 0 pixels; give a size of at least 1 (Resize::new, Pipeline::upsample, TutorialOptions::upsample)",
            )),
            Transform::ColorJitter(t) => {
                for (name, v) in [
                    ("brightness", t.brightness),
                    ("contrast", t.contrast),
                    ("saturation", t.saturation),
                ] {
                    if !(v >= 0.0 && v.is_finite()) {
                        return Err(self.invalid(format!("{name} = {v} must be >= 0")));
                    }
                }
                if !(0.0..=0.5).contains(&t.hue) {
                    return Err(self.invalid(format!("hue = {} must be in [0, 0.5]", t.hue)));
                }
                Ok(())
            }
            Transform::TrivialAugmentWide(t) => t.validate().map_err(|reason| self.invalid(reason)),
            Transform::RandAugment(t) => t.validate().map_err(|reason| self.invalid(reason)),
            _ => Ok(()),
        }
    }

    /// `(width, height)` of the output for an input of `width x height`, or why the transform
    /// cannot apply.
    pub fn output_size(&self, width: u32, height: u32) -> Result<(u32, u32), DataError> {
        self.validate()?;
        match self {
            Transform::RandomCrop(t) => {
                let (pw, ph) = (width + 2 * t.padding, height + 2 * t.padding);
                if pw < t.size || ph < t.size {
                    return Err(self.invalid(format!(
                        "required crop size {0}x{0} is larger than the padded input image \
                         {pw}x{ph}: lower the size, add padding or resize first",
                        t.size
                    )));
                }
                Ok((t.size, t.size))
            }
            Transform::Resize(r) => Ok(r.output_size(width, height)),
            Transform::CenterCrop(t) => Ok((t.size, t.size)),
            Transform::RandomResizedCrop(t) => Ok((t.width, t.height)),
            Transform::RandomHorizontalFlip(_)
            | Transform::ColorJitter(_)
            | Transform::TrivialAugmentWide(_)
            | Transform::RandAugment(_) => Ok((width, height)),
        }
    }
}

/// Reusable state of a pipeline (cached resize coefficients); one per worker thread.
#[derive(Debug, Default)]
pub struct TransformCache {
    plans: Vec<ResizePlan>,
}

impl TransformCache {
    /// `image` resized to `size` (`(width, height)`) with `filter` through a cached plan;
    /// the image itself when it already has that size.
    fn resize(&mut self, image: RgbImage, size: (u32, u32), filter: Interpolation) -> RgbImage {
        if image.dimensions() == size {
            image
        } else {
            self.plan(image.dimensions(), size, filter).apply(&image)
        }
    }

    fn plan(
        &mut self,
        (in_w, in_h): (u32, u32),
        (out_w, out_h): (u32, u32),
        filter: Interpolation,
    ) -> &ResizePlan {
        let pos = self
            .plans
            .iter()
            .position(|p| p.matches(in_w, in_h, out_w, out_h, filter));
        let i = match pos {
            Some(i) => i,
            None => {
                if self.plans.len() >= 16 {
                    self.plans.remove(0);
                }
                self.plans
                    .push(ResizePlan::with_filter(in_w, in_h, out_w, out_h, filter));
                self.plans.len() - 1
            }
        };
        &self.plans[i]
    }
}

/// A composition of transforms (torchvision's `Compose`), ending with `ToTensor`, an optional
/// [`Normalize`] and an optional [`RandomErasing`] (which torchvision places after them, on the
/// normalised tensor).
///
/// ```
/// use finetune::data::{Normalize, Pipeline, RandomCrop, RandomHorizontalFlip, Resize};
///
/// // The tutorial's train and eval transforms, upsampled for ImageNet weights.
/// let train = Pipeline::new()
///     .then(Resize::new(224))
///     .then(RandomHorizontalFlip::new(0.5))
///     .normalize(Normalize::imagenet());
/// let eval = Pipeline::new().then(Resize::new(224)).normalize(Normalize::imagenet());
/// assert!(train.is_random() && !eval.is_random());
/// assert_eq!(train.output_size(32, 32).unwrap(), (224, 224));
/// // The classic CIFAR augmentation.
/// let cifar = Pipeline::new()
///     .then(RandomCrop::new(32, 4))
///     .then(RandomHorizontalFlip::new(0.5))
///     .normalize(Normalize::cifar10());
/// assert_eq!(cifar, Pipeline::cifar_train());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// The `u8` transforms, applied in order.
    pub transforms: Vec<Transform>,
    /// The normalisation after `ToTensor`; `None` leaves values in `[0, 1]`.
    pub normalize: Option<Normalize>,
    /// Random erasing of the normalised `f32` image, after `normalize` (`None`: none). Applied
    /// by [`erase`](Self::erase), which the batcher calls after [`to_chw`] with the image's
    /// generator, once the `u8` transforms have drawn from it.
    #[serde(default)]
    pub erasing: Option<RandomErasing>,
}

impl Pipeline {
    /// An empty pipeline: `ToTensor` only.
    pub fn new() -> Self {
        Pipeline::default()
    }

    /// Appends a transform.
    pub fn then(mut self, transform: impl Into<Transform>) -> Self {
        self.transforms.push(transform.into());
        self
    }

    /// Sets the final normalisation.
    pub fn normalize(mut self, normalize: Normalize) -> Self {
        self.normalize = Some(normalize);
        self
    }

    /// Sets the random erasing applied to the normalised tensor (torchvision's
    /// `RandomErasing` after `Normalize`).
    pub fn random_erasing(mut self, erasing: RandomErasing) -> Self {
        self.erasing = Some(erasing);
        self
    }

    /// Inserts `Resize(size)` before every other transform (e.g. 32 -> 224 for ImageNet
    /// weights).
    pub fn upsample(mut self, size: u32) -> Self {
        self.transforms.insert(0, Resize::new(size).into());
        self
    }

    /// The tutorial's train transform: `RandomHorizontalFlip()` then `normalize`.
    pub fn train(normalize: Normalize) -> Self {
        Pipeline::new()
            .then(RandomHorizontalFlip::default())
            .normalize(normalize)
    }

    /// The tutorial's eval transform: `normalize` only.
    pub fn eval(normalize: Normalize) -> Self {
        Pipeline::new().normalize(normalize)
    }

    /// The standard CIFAR augmentation: `RandomCrop(32, padding=4)`, `RandomHorizontalFlip()`,
    /// CIFAR-10 normalisation.
    pub fn cifar_train() -> Self {
        Pipeline::new()
            .then(RandomCrop::new(32, 4))
            .then(RandomHorizontalFlip::default())
            .normalize(Normalize::cifar10())
    }

    /// CIFAR-10 normalisation only.
    pub fn cifar_eval() -> Self {
        Pipeline::eval(Normalize::cifar10())
    }

    /// Whether any transform is random (when not, the pipeline's output for an image never
    /// changes, so features can be cached).
    pub fn is_random(&self) -> bool {
        self.transforms.iter().any(Transform::is_random)
            || self.erasing.as_ref().is_some_and(|e| e.p > 0.0)
    }

    /// Checks every parameter (probabilities, sizes, standard deviations).
    pub fn validate(&self) -> Result<(), DataError> {
        for t in &self.transforms {
            t.validate()?;
        }
        if let Some(n) = &self.normalize
            && let Some(c) = (0..3).find(|&c| !(n.std[c].is_finite() && n.std[c] != 0.0))
        {
            return Err(DataError::Transform {
                transform: "Normalize",
                reason: format!("std[{c}] = {} must be finite and non-zero", n.std[c]),
            });
        }
        if let Some(e) = &self.erasing {
            e.validate().map_err(|reason| DataError::Transform {
                transform: "RandomErasing",
                reason,
            })?;
        }
        Ok(())
    }

    /// `(width, height)` of the output for an input of `width x height`, or why the pipeline
    /// cannot process such images.
    pub fn output_size(&self, width: u32, height: u32) -> Result<(u32, u32), DataError> {
        self.validate()?;
        self.transforms
            .iter()
            .try_fold((width, height), |(w, h), t| t.output_size(w, h))
    }

    /// Applies the `u8` transforms to `image`, drawing randomness from `rng`.
    pub fn apply(&self, image: RgbImage, rng: &mut SeededRng) -> Result<RgbImage, DataError> {
        self.apply_cached(image, rng, &mut TransformCache::default())
    }

    /// Like [`apply`](Self::apply), reusing `cache` (resize coefficients) across images.
    pub fn apply_cached(
        &self,
        mut image: RgbImage,
        rng: &mut SeededRng,
        cache: &mut TransformCache,
    ) -> Result<RgbImage, DataError> {
        for t in &self.transforms {
            let (w, h) = t.output_size(image.width(), image.height())?;
            image = match t {
                Transform::RandomHorizontalFlip(f) => {
                    if rng.unit_f64() < f.p {
                        hflip(&mut image);
                    }
                    image
                }
                Transform::RandomCrop(c) => {
                    let pad = i64::from(c.padding);
                    let (pw, ph) = (
                        image.width() + 2 * c.padding,
                        image.height() + 2 * c.padding,
                    );
                    if pw == c.size && ph == c.size && pad == 0 {
                        image
                    } else {
                        // torchvision draws the row, then the column.
                        let top = i64::from(rng.int_inclusive(0, ph - c.size)) - pad;
                        let left = i64::from(rng.int_inclusive(0, pw - c.size)) - pad;
                        crop(&image, top, left, c.size, c.size)
                    }
                }
                Transform::Resize(r) => cache.resize(image, (w, h), r.interpolation),
                Transform::RandomResizedCrop(c) => {
                    let (top, left, ch, cw) = c.get_params(image.width(), image.height(), rng);
                    // torchvision's `resized_crop`: the crop, then the resize.
                    let cropped = if (ch, cw) == (image.height(), image.width()) {
                        image
                    } else {
                        crop(&image, i64::from(top), i64::from(left), ch, cw)
                    };
                    cache.resize(cropped, (w, h), c.interpolation)
                }
                Transform::CenterCrop(c) => {
                    if image.dimensions() == (c.size, c.size) {
                        image
                    } else {
                        center_crop(&image, c.size, c.size)
                    }
                }
                Transform::ColorJitter(j) => {
                    color_jitter(&mut image, j, rng);
                    image
                }
                Transform::TrivialAugmentWide(t) => t.apply(image, rng),
                Transform::RandAugment(t) => t.apply(image, rng),
            };
        }
        Ok(image)
    }

    /// The random erasing step on one normalised CHW image (`3 * height * width` values, as
    /// [`to_chw`] writes it), drawing from `rng`; nothing without [`erasing`](Self::erasing).
    pub fn erase(&self, chw: &mut [f32], height: u32, width: u32, rng: &mut SeededRng) {
        if let Some(e) = &self.erasing {
            e.apply(chw, height, width, rng);
        }
    }

    /// The lookup table of the final `ToTensor` + `Normalize` step.
    pub fn lut(&self) -> [[f32; 256]; 3] {
        self.normalize
            .unwrap_or(Normalize::new([0.0; 3], [1.0; 3]))
            .lut()
    }
}

/// Writes `image` as normalised `f32` CHW into `out` (`3 * h * w` values) through `lut`.
pub fn to_chw(image: &RgbImage, lut: &[[f32; 256]; 3], out: &mut [f32]) {
    let plane = image.width() as usize * image.height() as usize;
    let (r, gb) = out.split_at_mut(plane);
    let (g, b) = gb.split_at_mut(plane);
    let (lr, lg, lb) = (&lut[0], &lut[1], &lut[2]);
    for (((px, r), g), b) in image
        .as_raw()
        .chunks_exact(3)
        .zip(r.iter_mut())
        .zip(g.iter_mut())
        .zip(b.iter_mut())
    {
        *r = lr[usize::from(px[0])];
        *g = lg[usize::from(px[1])];
        *b = lb[usize::from(px[2])];
    }
}

fn color_jitter(image: &mut RgbImage, j: &ColorJitter, rng: &mut SeededRng) {
    // torchvision: fn_idx = randperm(4), then b, c, s, h factors in this order.
    let order = rng.permutation(4);
    let mut factor = |v: f32| -> Option<f32> {
        (v > 0.0).then(|| rng.uniform(f64::from((1.0 - v).max(0.0)), f64::from(1.0 + v)) as f32)
    };
    let b = factor(j.brightness);
    let c = factor(j.contrast);
    let s = factor(j.saturation);
    let h = (j.hue > 0.0).then(|| rng.uniform(-f64::from(j.hue), f64::from(j.hue)) as f32);
    for op in order {
        match (op, b, c, s, h) {
            (0, Some(b), ..) => adjust_brightness(image, b),
            (1, _, Some(c), ..) => adjust_contrast(image, c),
            (2, _, _, Some(s), _) => adjust_saturation(image, s),
            (3, _, _, _, Some(h)) => adjust_hue(image, h),
            _ => {}
        }
    }
}
