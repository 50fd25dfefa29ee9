//! The weights this crate ships in its package (`data/weights/`), registered and verified like
//! the downloadable ones: `finetune_mini.rotation`, the small backbone the tutorial examples
//! start from when torchvision's ImageNet weights cannot be downloaded.

use std::path::PathBuf;

use super::preprocess::{Interpolation, Preprocess};
use crate::data::{CIFAR10_MEAN, CIFAR10_STD};

/// One set of weights shipped inside the crate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BundledWeights {
    /// Enum-style name, after torchvision's: `FinetuneMini_Weights.ROTATION_CIFAR10`.
    pub enum_name: &'static str,
    /// The architecture ([`crate::model::create_model`]'s name): `finetune_mini`.
    pub arch: &'static str,
    /// timm-style tag: `rotation`.
    pub tag: &'static str,
    /// The file, relative to the crate's root directory.
    pub file: &'static str,
    /// The file's full SHA-256 (hex).
    pub sha256: &'static str,
    /// Parameters (`sum(p.numel())`, the head included).
    pub num_params: u64,
    /// The head's classes, in index order.
    pub categories: &'static [&'static str],
    /// Top-1 accuracy (%) on the pretraining task's held-out images.
    pub top1: f64,
    /// The inference preprocessing (CIFAR-sized images, CIFAR-10 statistics).
    pub preprocess: Preprocess,
    /// How the weights were made, in one line.
    pub recipe: &'static str,
}

impl BundledWeights {
    /// The file's path in this crate's package (found through `CARGO_MANIFEST_DIR`, as the
    /// bundled CIFAR-10 sample is).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(self.file)
    }
}

/// The rotation classes of [`FINETUNE_MINI_ROTATION`]'s head: degrees, counter-clockwise
/// (`torch.rot90`).
pub const ROTATION_CLASSES: [&str; 4] = ["0", "90", "180", "270"];

/// `finetune_mini` ([`ResNetConfig::finetune_mini`](crate::model::ResNetConfig::finetune_mini):
/// ResNet-18's topology at a quarter of its widths, CIFAR stem) pretrained without labels on
/// self-supervised rotation prediction (Gidaris, Singh & Komodakis, ICLR 2018: which of 0, 90,
/// 180, 270 degrees an image is turned by) over the CIFAR-10 training images **except** every
/// image of the bundled sample, by this crate's Learner on CPU (`examples/pretrain_rotation.rs`;
/// the run's log is in the README). Its head predicts the rotation; replace it with
/// [`VisionModel::reset_classifier`](crate::model::VisionModel::reset_classifier).
pub const FINETUNE_MINI_ROTATION: BundledWeights = BundledWeights {
    enum_name: "FinetuneMini_Weights.ROTATION_CIFAR10",
    arch: "finetune_mini",
    tag: "rotation",
    file: "data/weights/finetune_mini_rotation-ac5bf8c1.safetensors",
    sha256: "ac5bf8c19f45499e9d706aba279429bc6794da86b5530ae6136b4be12f2addb1",
    num_params: 700_692,
    categories: &ROTATION_CLASSES,
    top1: 79.10,
    preprocess: Preprocess {
        resize: 32,
        interpolation: Interpolation::Bilinear,
        crop: 32,
        mean: CIFAR10_MEAN,
        std: CIFAR10_STD,
    },
    recipe: "examples/pretrain_rotation.rs: rotation prediction on 48,800 CIFAR-10 training images (the bundled sample's 1,200 left out), 4 epochs, SGD one-cycle",
};

/// Every bundled weights.
pub const BUNDLED: [BundledWeights; 1] = [FINETUNE_MINI_ROTATION];
