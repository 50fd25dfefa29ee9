//! `RandomErasing` (Zhong, Zheng, Kang, Li and Yang, "Random Erasing Data Augmentation", AAAI
//! 2020) with the parameters and semantics of torchvision's `transforms.RandomErasing`: with
//! probability `p`, a rectangle of random area and aspect ratio is overwritten on the
//! normalised `f32` CHW image — torchvision applies it after `ToTensor()` and `Normalize()`, so
//! a [`Pipeline`](super::Pipeline) runs it after its normalisation (see
//! [`Pipeline::random_erasing`](super::Pipeline::random_erasing)).
//!
//! Random draws come from the image's [`SeededRng`] in torchvision's order (the probability,
//! then up to ten area / log-ratio pairs, then the row and the column), not from torch's
//! generator.

use serde::{Deserialize, Serialize};

use super::rng::SeededRng;

/// What an erased rectangle is filled with (torchvision's `value`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum ErasingValue {
    /// `value=0`: zeros (the normalised value of the mean colour).
    #[default]
    Zero,
    /// `value=(r, g, b)`: one value per channel, in normalised units.
    PerChannel([f32; 3]),
    /// `value='random'`: independent standard normal values. They are `N(0, 1)` drawn from
    /// the image's generator by the Box–Muller transform, not torch's `normal_()` stream.
    Random,
}

/// `RandomErasing(p, scale, ratio, value)`: with probability `p`, erases a rectangle whose
/// area is a fraction in `scale` of the image's and whose aspect ratio (height / width) is
/// log-uniform in `ratio`, at a uniformly random position (see
/// [`get_params`](Self::get_params)).
///
/// ```
/// use finetune::data::{ErasingValue, Pipeline, RandomErasing};
///
/// let train = Pipeline::cifar_train().random_erasing(RandomErasing::default());
/// assert!(train.is_random());
/// let noisy = RandomErasing::new(0.25).with_value(ErasingValue::Random);
/// assert!(noisy.validate().is_ok());
/// assert!(RandomErasing::new(0.5).with_scale(0.5, 0.1).validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandomErasing {
    /// Probability of erasing (torchvision: 0.5).
    pub p: f64,
    /// Range of the erased area as a fraction of the image's, `(min, max)` within `[0, 1]`
    /// (torchvision: `(0.02, 0.33)`).
    pub scale: (f64, f64),
    /// Range of the aspect ratio, height / width, `(min, max)` (torchvision: `(0.3, 3.3)`).
    pub ratio: (f64, f64),
    /// The fill.
    #[serde(default)]
    pub value: ErasingValue,
}

impl RandomErasing {
    /// `RandomErasing(p)` with torchvision's other defaults: scale `(0.02, 0.33)`, ratio
    /// `(0.3, 3.3)`, value 0.
    pub fn new(p: f64) -> Self {
        RandomErasing {
            p,
            scale: (0.02, 0.33),
            ratio: (0.3, 3.3),
            value: ErasingValue::Zero,
        }
    }

    /// The same transform with the area range `scale`.
    pub fn with_scale(mut self, min: f64, max: f64) -> Self {
        self.scale = (min, max);
        self
    }

    /// The same transform with the aspect-ratio range `ratio` (height / width).
    pub fn with_ratio(mut self, min: f64, max: f64) -> Self {
        self.ratio = (min, max);
        self
    }

    /// The same transform with the fill `value`.
    pub fn with_value(mut self, value: ErasingValue) -> Self {
        self.value = value;
        self
    }

    /// Checks the parameters: `p` a probability, `scale` a range within `[0, 1]`, `ratio` a
    /// range of positive ratios, finite fill values. (torchvision only warns about a range
    /// given as `(max, min)`; here it is an error.)
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.p) {
            return Err(format!("p = {} is not a probability in [0, 1]", self.p));
        }
        let (s, r) = (self.scale, self.ratio);
        if !(s.0 >= 0.0 && s.0 <= s.1 && s.1 <= 1.0) {
            return Err(format!(
                "scale = ({}, {}) must be a range (min, max) of area fractions with 0 <= min <= max <= 1 (torchvision: (0.02, 0.33))",
                s.0, s.1
            ));
        }
        if !(r.0 > 0.0 && r.0 <= r.1 && r.1.is_finite()) {
            return Err(format!(
                "ratio = ({}, {}) must be a range (min, max) of aspect ratios with 0 < min <= max (torchvision: (0.3, 3.3))",
                r.0, r.1
            ));
        }
        if let ErasingValue::PerChannel(v) = self.value
            && let Some(c) = (0..3).find(|&c| !v[c].is_finite())
        {
            return Err(format!("value[{c}] = {} must be finite", v[c]));
        }
        Ok(())
    }

    /// torchvision's `RandomErasing.get_params`: `(top, left, height, width)` of the rectangle
    /// to erase in a `width x height` image, or `None` when none fits (torchvision then
    /// returns the image unchanged). Up to ten tries draw an area fraction uniformly in
    /// `scale` and a ratio log-uniformly in `ratio`, and keep the first rectangle strictly
    /// smaller than the image (`h = round(sqrt(area * ratio))`, `w = round(sqrt(area /
    /// ratio))`, rounding half to even as Python does), at a uniform position.
    pub fn get_params(
        &self,
        height: u32,
        width: u32,
        rng: &mut SeededRng,
    ) -> Option<(u32, u32, u32, u32)> {
        let area = f64::from(height) * f64::from(width);
        let (log_lo, log_hi) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let erase_area = area * rng.uniform(self.scale.0, self.scale.1);
            let aspect = rng.uniform(log_lo, log_hi).exp();
            let h = (erase_area * aspect).sqrt().round_ties_even();
            let w = (erase_area / aspect).sqrt().round_ties_even();
            if !(h < f64::from(height) && w < f64::from(width)) {
                continue;
            }
            let (h, w) = (h as u32, w as u32);
            let top = rng.int_inclusive(0, height - h);
            let left = rng.int_inclusive(0, width - w);
            return Some((top, left, h, w));
        }
        None
    }

    /// torchvision's `RandomErasing.forward` on one normalised CHW image `chw` (`3 * height *
    /// width` values): erases a rectangle with probability `p` (one `unit_f64` draw, then
    /// [`get_params`](Self::get_params), then the noise for [`ErasingValue::Random`]).
    pub fn apply(&self, chw: &mut [f32], height: u32, width: u32, rng: &mut SeededRng) {
        let erases = rng.unit_f64() < self.p;
        if !erases {
            return;
        }
        let Some(region) = self.get_params(height, width, rng) else {
            return;
        };
        match self.value {
            ErasingValue::Zero => erase(chw, height, width, region, [0.0; 3]),
            ErasingValue::PerChannel(v) => erase(chw, height, width, region, v),
            ErasingValue::Random => {
                let mut spare: Option<f32> = None;
                fill(chw, height, width, region, |_| match spare.take() {
                    Some(z) => z,
                    None => {
                        let (z0, z1) = normal_pair(&mut *rng);
                        spare = Some(z1);
                        z0
                    }
                });
            }
        }
    }
}

impl Default for RandomErasing {
    fn default() -> Self {
        RandomErasing::new(0.5)
    }
}

/// torchvision's `F.erase(img, i, j, h, w, v)` on one CHW image of `3 x height x width` values
/// with a per-channel value: the `h x w` rectangle at row `i`, column `j` (`region = (i, j, h,
/// w)`, clipped to the image) of channel `c` set to `value[c]`.
pub fn erase(
    chw: &mut [f32],
    height: u32,
    width: u32,
    region: (u32, u32, u32, u32),
    value: [f32; 3],
) {
    fill(chw, height, width, region, |c| value[c]);
}

/// Sets the rectangle `region = (top, left, h, w)` (clipped to the image) of every channel,
/// channel by channel and row by row, to `value(channel)`.
fn fill(
    chw: &mut [f32],
    height: u32,
    width: u32,
    region: (u32, u32, u32, u32),
    mut value: impl FnMut(usize) -> f32,
) {
    let (hh, ww) = (height as usize, width as usize);
    let plane = hh * ww;
    let (top, left) = (region.0 as usize, region.1 as usize);
    let h = (region.2 as usize).min(hh.saturating_sub(top));
    let w = (region.3 as usize).min(ww.saturating_sub(left));
    for c in 0..3 {
        for y in top..top + h {
            let start = c * plane + y * ww + left;
            let Some(row) = chw.get_mut(start..start + w) else {
                return;
            };
            for v in row {
                *v = value(c);
            }
        }
    }
}

/// Two independent standard normal values (Box–Muller).
fn normal_pair(rng: &mut SeededRng) -> (f32, f32) {
    // 1 - u is in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.unit_f64();
    let u2 = rng.unit_f64();
    let r = (-2.0 * u1.ln()).sqrt();
    let t = std::f64::consts::TAU * u2;
    ((r * t.cos()) as f32, (r * t.sin()) as f32)
}
