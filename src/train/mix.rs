//! Batch-level regularisation of the training phase: MixUp (Zhang et al., ICLR 2018) and
//! CutMix (Yun et al., ICCV 2019) with `torchvision.transforms.v2`'s semantics, and label
//! smoothing (Szegedy et al., CVPR 2016) with `torch.nn.CrossEntropyLoss(label_smoothing)`'s.
//!
//! - **MixUp** (`MixUp(alpha)`): `lam ~ Beta(alpha, alpha)`; every image becomes
//!   `lam * x + (1 - lam) * x_rolled`, where `x_rolled` is the batch rolled by one
//!   (`batch.roll(1, 0)`: image `i` mixes with image `i - 1`), and its target
//!   `lam * onehot(y) + (1 - lam) * onehot(y_rolled)`.
//! - **CutMix** (`CutMix(alpha)`): `lam ~ Beta(alpha, alpha)`; a box centred at a uniform pixel
//!   `(r_x, r_y)` with half-sides `int(0.5 * sqrt(1 - lam) * W)` and `... * H`, clipped to the
//!   image, is pasted from the rolled batch; the target's ratio is the area kept,
//!   `1 - box_area / (H * W)`.
//! - Both given: one of the two per batch, with equal probability (torchvision's reference
//!   scripts: `RandomChoice([mixup, cutmix])`).
//! - **Label smoothing** `eps`: the target becomes `(1 - eps) * t + eps / K`, and the loss is
//!   the cross-entropy with that distribution, `-sum_k t_k log_softmax(z)_k` averaged over the
//!   batch — what PyTorch computes for class-index and for probability targets alike.
//!
//! Each batch draws from its own stream, `(seed, epoch, batch)`, so a resumed run mixes exactly
//! as an uninterrupted one. Training accuracy counts the argmax against the unmixed labels.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

use super::TrainError;
use super::evaluate::read_indices;
use crate::data::rng::SeededRng;

/// Tag of the mixing streams in [`SeededRng::derived`].
const MIX_STREAM: u64 = 0x4d49_5855_5043_5554; // "MIXUPCUT"

/// The batch-level regularisers of a run (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchMix {
    /// MixUp's `alpha` (0: off).
    pub mixup_alpha: f64,
    /// CutMix's `alpha` (0: off).
    pub cutmix_alpha: f64,
    /// Label smoothing `eps` in `[0, 1)` (0: off).
    pub label_smoothing: f64,
}

/// What was done to one batch, for its targets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mixed {
    /// Nothing.
    None,
    /// MixUp with ratio `lam`.
    MixUp {
        /// Weight of the batch's own images and labels.
        lam: f64,
    },
    /// CutMix: the box `[y1, y2) x [x1, x2)` (pixels) came from the rolled batch.
    CutMix {
        /// Top row of the box.
        y1: usize,
        /// Bottom row (exclusive).
        y2: usize,
        /// Left column.
        x1: usize,
        /// Right column (exclusive).
        x2: usize,
        /// Weight of the batch's own labels: the fraction of the image kept.
        lam: f64,
    },
}

impl BatchMix {
    /// Whether any image mixing is on.
    pub fn mixes(&self) -> bool {
        self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0
    }

    /// Whether the loss needs soft targets.
    pub fn soft(&self) -> bool {
        self.mixes() || self.label_smoothing > 0.0
    }

    /// The regularisers that are on, in words (`label smoothing 0.1, MixUp 0.2`), or `None`.
    pub fn describe(&self) -> Option<String> {
        let parts: Vec<String> = [
            ("label smoothing", self.label_smoothing),
            ("MixUp", self.mixup_alpha),
            ("CutMix", self.cutmix_alpha),
        ]
        .iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(name, v)| format!("{name} {v}"))
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// Checks the ranges: alphas finite and `>= 0`, label smoothing in `[0, 1)`.
    pub fn validate(&self) -> Result<(), TrainError> {
        for (name, alpha) in [
            ("mixup_alpha", self.mixup_alpha),
            ("cutmix_alpha", self.cutmix_alpha),
        ] {
            if !(alpha.is_finite() && alpha >= 0.0) {
                return Err(TrainError::Config(format!(
                    "{name} must be a finite number >= 0, 0 for off (got {alpha}; torchvision's recipes use 0.2 for MixUp and 1.0 for CutMix)"
                )));
            }
        }
        let eps = self.label_smoothing;
        if !(0.0..1.0).contains(&eps) {
            return Err(TrainError::Config(format!(
                "label_smoothing must be in [0, 1), 0 for off (got {eps}; 0.1 is the usual value)"
            )));
        }
        Ok(())
    }

    /// Draws what to do to batch `batch` of `epoch` (images of `height x width`).
    pub fn draw(
        &self,
        seed: u64,
        epoch: usize,
        batch: usize,
        height: usize,
        width: usize,
    ) -> Mixed {
        if !self.mixes() {
            return Mixed::None;
        }
        let mut rng = SeededRng::derived(seed, &[MIX_STREAM, epoch as u64, batch as u64]);
        let cutmix = match (self.mixup_alpha > 0.0, self.cutmix_alpha > 0.0) {
            (true, true) => rng.unit_f64() < 0.5,
            (false, true) => true,
            _ => false,
        };
        if !cutmix {
            let lam = rng.beta(self.mixup_alpha, self.mixup_alpha).unwrap_or(1.0);
            return Mixed::MixUp { lam };
        }
        let lam = rng
            .beta(self.cutmix_alpha, self.cutmix_alpha)
            .unwrap_or(1.0);
        let r_x = rng.below(width as u64) as usize;
        let r_y = rng.below(height as u64) as usize;
        cutmix_box(lam, (r_y, r_x), height, width)
    }
}

/// torchvision's CutMix box around `(r_y, r_x)` for ratio `lam`, with the label ratio adjusted
/// to the area kept.
pub fn cutmix_box(lam: f64, (r_y, r_x): (usize, usize), height: usize, width: usize) -> Mixed {
    if height == 0 || width == 0 {
        return Mixed::None;
    }
    // A centre outside the image (only a caller's) is taken as its last row or column.
    let (r_y, r_x) = (r_y.min(height - 1), r_x.min(width - 1));
    let r = 0.5 * (1.0 - lam).max(0.0).sqrt();
    let half_w = (r * width as f64) as usize;
    let half_h = (r * height as f64) as usize;
    let x1 = r_x.saturating_sub(half_w);
    let y1 = r_y.saturating_sub(half_h);
    let x2 = (r_x + half_w).min(width);
    let y2 = (r_y + half_h).min(height);
    let area = ((x2 - x1) * (y2 - y1)) as f64;
    Mixed::CutMix {
        y1,
        y2,
        x1,
        x2,
        lam: 1.0 - area / (width * height) as f64,
    }
}

/// `[N-1, 0, 1, ..., N-2]`: the rows of `batch.roll(1, 0)`.
fn rolled_rows(n: usize) -> Vec<usize> {
    (0..n).map(|i| (i + n - 1) % n).collect()
}

/// The images of a batch `[N, C, H, W]` after `mixed`.
pub fn mix_images(images: Tensor<4>, mixed: Mixed) -> Tensor<4> {
    let [n, c, _, _] = images.dims();
    let device = images.device();
    let rows: Vec<i64> = rolled_rows(n).into_iter().map(|i| i as i64).collect();
    let roll = || {
        let index = Tensor::<1, Int>::from_data(TensorData::new(rows.clone(), [n]), &device);
        images.clone().select(0, index)
    };
    match mixed {
        Mixed::None => images,
        Mixed::MixUp { lam } => {
            // torchvision: batch_rolled * (1 - lam) + batch * lam, in f32.
            let rolled = roll();
            rolled.mul_scalar((1.0 - lam) as f32) + images.mul_scalar(lam as f32)
        }
        Mixed::CutMix { y1, y2, x1, x2, .. } if y2 > y1 && x2 > x1 => {
            let patch = roll().slice([0..n, 0..c, y1..y2, x1..x2]);
            images.slice_assign([0..n, 0..c, y1..y2, x1..x2], patch)
        }
        Mixed::CutMix { .. } => images,
    }
}

/// The soft targets `[N, classes]` of `labels` after `mixed` and label smoothing `eps`, in
/// PyTorch's f32 operations: `rolled * (1 - lam) + onehot * lam`, then `t * (1 - eps) + eps / K`.
pub fn soft_targets(labels: &[usize], classes: usize, mixed: Mixed, eps: f64) -> Vec<f32> {
    let n = labels.len();
    if classes == 0 {
        return Vec::new();
    }
    let lam = match mixed {
        Mixed::None => 1.0,
        Mixed::MixUp { lam } | Mixed::CutMix { lam, .. } => lam,
    };
    let (keep, take) = (lam as f32, (1.0 - lam) as f32);
    let rolled = rolled_rows(n);
    let mut out = vec![0f32; n * classes];
    for (i, row) in out.chunks_exact_mut(classes).enumerate() {
        for (k, t) in row.iter_mut().enumerate() {
            let own = f32::from(u8::from(labels[i] == k));
            let other = f32::from(u8::from(labels[rolled[i]] == k));
            *t = if mixed == Mixed::None {
                own
            } else {
                other * take + own * keep
            };
            if eps > 0.0 {
                *t = *t * (1.0 - eps) as f32 + (eps / classes as f64) as f32;
            }
        }
    }
    out
}

/// The cross-entropy of `logits` `[N, K]` with the probability targets `targets` `[N, K]`,
/// averaged over the batch: `-mean_n sum_k t_nk log_softmax(z)_nk` (`[1]`).
pub fn soft_cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    let log_p = log_softmax(logits, 1);
    (log_p * targets).sum_dim(1).mean().neg()
}

/// The soft targets of a batch's `targets` on their device.
pub(super) fn soft_target_tensor(
    targets: Tensor<1, Int>,
    classes: usize,
    mixed: Mixed,
    eps: f64,
) -> Result<Tensor<2>, TrainError> {
    let device = targets.device();
    let labels = read_indices(targets)?;
    if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
        return Err(TrainError::Data(format!(
            "label {bad} is out of range for a model of {classes} classes"
        )));
    }
    let n = labels.len();
    Ok(Tensor::from_data(
        TensorData::new(soft_targets(&labels, classes, mixed, eps), [n, classes]),
        &device,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_sizes_never_panic() {
        assert_eq!(cutmix_box(0.5, (0, 0), 0, 8), Mixed::None);
        assert!(soft_targets(&[0, 1], 0, Mixed::None, 0.1).is_empty());
        // A centre past the image is clamped to it: a box inside, its ratio in [0, 1].
        match cutmix_box(0.0, (100, 100), 8, 8) {
            Mixed::CutMix { y2, x2, lam, .. } => {
                assert!(y2 <= 8 && x2 <= 8 && (0.0..=1.0).contains(&lam));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rolled_rows_are_torch_roll_by_one() {
        assert_eq!(rolled_rows(4), vec![3, 0, 1, 2]);
        assert_eq!(rolled_rows(1), vec![0]);
    }

    #[test]
    fn the_cutmix_box_is_clipped_and_its_ratio_is_the_area_kept() {
        // lam 0.75: r = 0.25, half-sides 2 on an 8x8 image; centred at (1, 7): clipped.
        assert_eq!(
            cutmix_box(0.75, (1, 7), 8, 8),
            Mixed::CutMix {
                y1: 0,
                y2: 3,
                x1: 5,
                x2: 8,
                lam: 1.0 - 9.0 / 64.0
            }
        );
    }
}
