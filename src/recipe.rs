//! The whole PyTorch "Transfer Learning for Computer Vision" tutorial (Chilamkurthy, PyTorch
//! tutorials), run on CIFAR-10, as a few documented steps and as one call ([`run`]):
//!
//! 1. [`load_data`]: the images — the official CIFAR-10 archive (downloaded and cached), an
//!    extracted directory, the user's image folders or the bundled sample (also the fallback
//!    when CIFAR-10 can be neither found nor downloaded) — split with a seed into train /
//!    validation / test ([`Splits`]; the CIFAR test set is split 50/50 into validation and
//!    test);
//! 2. [`load_backbone`]: a backbone with torchvision's ImageNet weights by name, a weights
//!    file, or random initialisation ([`Backbone`]); when the default ImageNet weights can be
//!    neither found nor downloaded, the small backbone the crate ships, pretrained without
//!    labels (`finetune_mini.rotation`);
//! 3. a new head for the data's classes ([`VisionModel::reset_classifier`]), and for the fixed
//!    feature extractor a frozen backbone;
//! 4. [`Splits::loaders`]: the train and eval pipelines in batch loaders;
//! 5. [`TutorialOptions::learner_config`]: SGD (momentum 0.9) and StepLR(7, 0.1) per epoch;
//! 6. [`Learner::fit`]: the best validation epoch kept, checkpoints, history and pictures
//!    (`curves.png`, `confusion.png`, `predictions.png`) in the run directory;
//! 7. [`evaluate`]: the best model on the test split.
//!
//! `examples/finetune.rs` walks through these steps one by one; [`run`] composes the same
//! steps (the `feature_extractor` example is a command line over it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::data::dataset::Dataset;
use burn::tensor::Device;
use serde::Serialize;

use crate::data::{
    CenterCrop, Cifar10, DataError, ImageFolder, ImageFolderOptions, ImageItem, ImageLoader,
    LoaderConfig, Normalize, Pipeline, RandAugment, RandomErasing, RandomHorizontalFlip,
    RandomResizedCrop, Resize, Subset, TrivialAugmentWide, random_split,
};
use crate::error::{Error, Result};
use crate::model::{AnyConfig, AnyModel, BnPolicy, VisionModel, create_model};
use crate::train::{
    Evaluation, FitEvent, FitSink, History, Learner, LearnerConfig, LrFind, LrFindConfig,
    OptimizerConfig, Schedule, ScheduleUnit, evaluate, evaluate_tta,
};
use crate::weights::{HubWeights, LoadOptions, Weights, load_hub};
use crate::{DeviceChoice, Precision};

/// Fine-tune everything, or train only a new head on a frozen backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every parameter trains (the tutorial's "finetuning the ConvNet").
    FineTune,
    /// The backbone is frozen, BatchNorm included (the tutorial's "ConvNet as fixed feature
    /// extractor").
    FeatureExtractor,
}

/// Where the images come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataChoice {
    /// CIFAR-10 from the cache, downloading it if needed; the bundled sample when it can be
    /// neither found nor downloaded.
    Auto,
    /// An extracted `cifar-10-batches-bin` directory.
    CifarDir(PathBuf),
    /// The user's own images: `DIR/train/<class>/*` and `DIR/val/<class>/*` (and optionally
    /// `DIR/test/<class>/*`; without it the validation folder is split 50/50 into validation
    /// and test, like the CIFAR test set). A `DIR` without `train/` holds the class folders
    /// itself: [`DataOptions::holdout`] of it is split off, half for validation and half
    /// for test.
    ImageFolder(PathBuf),
    /// The CIFAR-10 sample shipped with the crate (1,000 train and 200 test images).
    Sample,
}

/// Which weights the backbone starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsChoice {
    /// The architecture's torchvision ImageNet weights, downloaded and cached. When they can
    /// be neither found nor downloaded: the bundled `finetune_mini.rotation` backbone if no
    /// architecture was asked for (ResNet-18's weights were the default), random
    /// initialisation of the asked-for architecture otherwise.
    Auto,
    /// These registry weights (an error when unavailable).
    Named(Weights),
    /// A `.pth` / `.safetensors` state_dict (an error when it does not load strictly).
    File(PathBuf),
    /// A model repository on the Hugging Face Hub (`hf-hub:timm/resnet50.a1_in1k`; see
    /// [`crate::weights::hub`]), fetched into the Hub's cache.
    Hub(HubWeights),
    /// Random initialisation.
    None,
}

/// Everything the tutorial run can be told.
#[derive(Clone, Debug)]
pub struct TutorialOptions {
    /// Fine-tune or fixed feature extractor.
    pub mode: Mode,
    /// Images.
    pub data: DataChoice,
    /// Starting weights.
    pub weights: WeightsChoice,
    /// Architecture name (`resnet18`, ...). `None`: the architecture of the weights (file or
    /// registry name), ResNet-18 for `Auto` and `None` weights. Given together with weights of
    /// another architecture, it is an error (never silently ignored).
    pub arch: Option<String>,
    /// Epochs (tutorial: 25). `None`: [`Hyperparameters::for_mode`]'s (5; 15 on a
    /// small dataset such as the bundled sample).
    pub epochs: Option<usize>,
    /// Batch size. `None`: [`Hyperparameters::for_mode`]'s (128; 32 on a small
    /// dataset).
    pub batch_size: Option<usize>,
    /// Learning rate (SGD, momentum 0.9, StepLR 7/0.1 per epoch). `None`:
    /// [`Hyperparameters::for_mode`]'s (0.001; on a small dataset 0.01, or 0.1 for the
    /// feature extractor's head).
    pub lr: Option<f64>,
    /// Use at most this many training images.
    pub train_limit: Option<usize>,
    /// Use at most this many validation (and test) images.
    pub val_limit: Option<usize>,
    /// Device.
    pub device: DeviceChoice,
    /// Devices to train data parallel over ([`Learner::data_parallel`]; the model lives on
    /// the first, and `device` is then unused); empty: `device` alone.
    pub devices: Vec<DeviceChoice>,
    /// The float type of the parameters and activations ([`Precision::configure`]; f32 by
    /// default).
    pub precision: Precision,
    /// Run directory (default: `runs/<mode>-<unix time>`).
    pub out: Option<PathBuf>,
    /// Continue the run in `out` from its checkpoint.
    pub resume: bool,
    /// Seed of the split, the order and the augmentation.
    pub seed: u64,
    /// CIFAR and the bundled sample: resize the 32x32 images to this square size (224 for
    /// ImageNet weights at their native resolution). Refused with image folders, which are
    /// cropped to [`image_size`](Self::image_size) instead.
    pub upsample: Option<u32>,
    /// Feature extractor only: compute the frozen backbone's features once (the training
    /// transform is then the evaluation one: no random crop or flip).
    pub cache_features: bool,
    /// Feature extractor only: the frozen backbone's BatchNorm policy. `None`: the tutorial's
    /// [`BnPolicy::TrainMode`] (its backbone has `requires_grad = False` but stays in train
    /// mode), or [`BnPolicy::Frozen`] with `cache_features` (cached features need fixed
    /// statistics; asking for both `TrainMode` and `cache_features` is an error) and on a
    /// small dataset ([`bn_policy_for`](Self::bn_policy_for)).
    pub bn_policy: Option<BnPolicy>,
    /// A weights file holding several state_dicts (`{"model": .., "ema": ..}`): the key of
    /// the one to load ([`LoadOptions::key`]).
    pub weights_key: Option<String>,
    /// Batch-preparation threads (default: all cores).
    pub workers: Option<usize>,
    /// Image folders: the side of the square crops the network sees
    /// ([`DataOptions::image_size`]).
    pub image_size: u32,
    /// Image folders without `train/`: the fraction held out for validation and test.
    pub holdout: f64,
    /// Label smoothing of the training loss ([`LearnerConfig::label_smoothing`]; `None`: off).
    pub label_smoothing: Option<f64>,
    /// MixUp's alpha ([`LearnerConfig::mixup_alpha`]; `None`: off).
    pub mixup_alpha: Option<f64>,
    /// CutMix's alpha ([`LearnerConfig::cutmix_alpha`]; `None`: off).
    pub cutmix_alpha: Option<f64>,
    /// Batches per optimizer step ([`LearnerConfig::grad_accum_steps`]; `None`: 1).
    pub grad_accum_steps: Option<usize>,
    /// Gradient clipping by norm ([`LearnerConfig::clip_grad_norm`]; `None`: off).
    pub clip_grad_norm: Option<f64>,
    /// Model EMA decay ([`LearnerConfig::ema_decay`]; `None`: off). The recipe turns timm's
    /// warm-up on with it, so that runs of a few hundred steps average sensibly.
    pub ema_decay: Option<f64>,
    /// Fine-tuning only: fastai's `fine_tune(epochs, freeze_epochs)`, this many head-only
    /// epochs first ([`LearnerConfig::freeze_epochs`]; `None`: off).
    pub freeze_epochs: Option<usize>,
    /// Evaluate the test split with flip test-time augmentation too ([`evaluate_tta`]).
    pub tta: bool,
    /// The training augmentations added to the tutorial's ([`TrainAugment`]; none by
    /// default).
    pub augment: TrainAugment,
}

impl TutorialOptions {
    /// The device the model lives on: the first of `devices`, or `device`.
    pub fn main_device(&self) -> DeviceChoice {
        self.devices.first().copied().unwrap_or(self.device)
    }

    /// The training devices in words (`flex`, or `cuda:0 + cuda:1 (data parallel)`).
    pub fn describe_devices(&self) -> String {
        if self.devices.len() > 1 {
            let names: Vec<String> = self
                .devices
                .iter()
                .map(|d| d.resolve().to_string())
                .collect();
            format!("{} (data parallel)", names.join(" + "))
        } else {
            self.main_device().resolve().to_string()
        }
    }

    /// The tutorial's settings for `mode`: CIFAR-10 (auto), ImageNet ResNet-18 weights (auto),
    /// SGD with momentum 0.9 and StepLR 7/0.1, epochs, batch size and learning rate chosen by
    /// the data's size ([`Hyperparameters::for_train_size`]: 5 epochs, batch 128, lr 0.001 on
    /// CIFAR-10), seed 42, 32x32 images.
    pub fn new(mode: Mode) -> Self {
        TutorialOptions {
            mode,
            data: DataChoice::Auto,
            weights: WeightsChoice::Auto,
            arch: None,
            epochs: None,
            batch_size: None,
            lr: None,
            train_limit: None,
            val_limit: None,
            device: DeviceChoice::Auto,
            devices: Vec::new(),
            precision: Precision::F32,
            out: None,
            resume: false,
            seed: 42,
            upsample: None,
            cache_features: false,
            bn_policy: None,
            weights_key: None,
            workers: None,
            image_size: 224,
            holdout: 0.1,
            label_smoothing: None,
            mixup_alpha: None,
            cutmix_alpha: None,
            grad_accum_steps: None,
            clip_grad_norm: None,
            ema_decay: None,
            freeze_epochs: None,
            tta: false,
            augment: TrainAugment::default(),
        }
    }

    /// How [`load_data`] loads and splits the images: [`seed`](Self::seed),
    /// [`image_size`](Self::image_size), [`holdout`](Self::holdout).
    pub fn data_options(&self) -> DataOptions {
        DataOptions {
            seed: self.seed,
            image_size: self.image_size,
            holdout: self.holdout,
        }
    }

    /// The epochs, batch size and learning rate of a run on `train_images` training images:
    /// those set here, [`Hyperparameters::for_mode`]'s for the others.
    pub fn hyperparameters(&self, train_images: usize) -> Hyperparameters {
        Hyperparameters::for_mode(self.mode, train_images).with(
            self.epochs,
            self.batch_size,
            self.lr,
        )
    }

    /// The frozen backbone's BatchNorm policy on `train_images` training images (feature
    /// extractor only): [`bn_policy`](Self::bn_policy) when set; otherwise
    /// [`BnPolicy::Frozen`] with [`cache_features`](Self::cache_features) or on a small
    /// dataset (fewer than [`Hyperparameters::SMALL_DATA_MAX_IMAGES`] images: batch statistics
    /// of a few hundred images re-estimated on the fly cost accuracy there, see
    /// [`Hyperparameters::SMALL_DATA_HEAD`]), the tutorial's [`BnPolicy::TrainMode`] otherwise.
    pub fn bn_policy_for(&self, train_images: usize) -> BnPolicy {
        match self.bn_policy {
            Some(policy) => policy,
            None if self.cache_features
                || train_images < Hyperparameters::SMALL_DATA_MAX_IMAGES =>
            {
                BnPolicy::Frozen
            }
            None => BnPolicy::TrainMode,
        }
    }

    /// The tutorial's optimizer and schedule: SGD with `hyper`'s learning rate and momentum
    /// 0.9, StepLR(step 7, gamma 0.1) stepped per epoch, `hyper`'s epochs,
    /// [`seed`](Self::seed), and the training features set here (label smoothing, MixUp,
    /// CutMix, gradient accumulation and clipping, EMA with warm-up, `freeze_epochs`).
    pub fn learner_config(&self, hyper: &Hyperparameters) -> LearnerConfig {
        LearnerConfig::default()
            .with_epochs(hyper.epochs)
            .with_lr(hyper.lr)
            .with_seed(self.seed)
            .with_optimizer(OptimizerConfig::sgd(0.9))
            .with_schedule(Schedule::Step {
                step_size: 7,
                gamma: 0.1,
            })
            .with_schedule_unit(ScheduleUnit::Epoch)
            .with_label_smoothing(self.label_smoothing)
            .with_mixup_alpha(self.mixup_alpha)
            .with_cutmix_alpha(self.cutmix_alpha)
            .with_grad_accum_steps(self.grad_accum_steps)
            .with_clip_grad_norm(self.clip_grad_norm)
            .with_ema_decay(self.ema_decay)
            .with_ema_warmup(self.ema_decay.map(|_| true))
            .with_freeze_epochs(self.freeze_epochs)
    }
}

/// A run's epochs, batch size and learning rate. The tutorial trains 25 epochs with batches of
/// 4 at lr 0.001 on 244 images; on CIFAR-10's 45,000 training images this crate's default is 5
/// epochs of batch 128 at the same rate ([`TUTORIAL`](Self::TUTORIAL)). On a small dataset
/// (fewer than [`SMALL_DATA_MAX_IMAGES`](Self::SMALL_DATA_MAX_IMAGES) training images, such
/// as the bundled sample's 800) that would be 7 optimizer steps an epoch, too few for any
/// model to learn anything; there [`SMALL_DATA`](Self::SMALL_DATA) takes batches of 32 at
/// the tutorial's rate scaled linearly with the batch (0.001 x 32/4, rounded to 0.01; Goyal
/// et al., 2017) for 15 epochs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Hyperparameters {
    /// Epochs.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Learning rate (SGD, momentum 0.9).
    pub lr: f64,
}

impl Hyperparameters {
    /// CIFAR-10-sized data: 5 epochs, batch 128, lr 0.001.
    pub const TUTORIAL: Self = Hyperparameters {
        epochs: 5,
        batch_size: 128,
        lr: 0.001,
    };
    /// Small data: 15 epochs, batch 32, lr 0.01.
    pub const SMALL_DATA: Self = Hyperparameters {
        epochs: 15,
        batch_size: 32,
        lr: 0.01,
    };
    /// Small data, head only (the feature extractor): 15 epochs, batch 32, lr 0.1. A linear
    /// head on frozen features trains at rates ten times and more those of a whole network
    /// (the linear-evaluation protocols of self-supervised learning: frozen features, BatchNorm
    /// in eval mode, a large rate; He et al., MoCo, 2020). Chosen on the bundled sample's
    /// validation split from the bundled backbone: val accuracy 0.42 / 0.43 (seeds 42 / 43) at
    /// 0.1 with frozen BatchNorm, 0.28 / 0.25 at 0.01, 0.36 / 0.31 at 0.1 with the tutorial's
    /// train-mode BatchNorm.
    pub const SMALL_DATA_HEAD: Self = Hyperparameters {
        epochs: 15,
        batch_size: 32,
        lr: 0.1,
    };
    /// Training sets with fewer images than this get [`SMALL_DATA`](Self::SMALL_DATA).
    pub const SMALL_DATA_MAX_IMAGES: usize = 4000;

    /// The defaults for `train_images` training images.
    pub fn for_train_size(train_images: usize) -> Self {
        if train_images < Self::SMALL_DATA_MAX_IMAGES {
            Self::SMALL_DATA
        } else {
            Self::TUTORIAL
        }
    }

    /// The defaults of a run in `mode` on `train_images` training images:
    /// [`for_train_size`](Self::for_train_size)'s, with [`SMALL_DATA_HEAD`](Self::SMALL_DATA_HEAD)
    /// for a feature extractor on a small dataset.
    pub fn for_mode(mode: Mode, train_images: usize) -> Self {
        match Self::for_train_size(train_images) {
            h if h == Self::SMALL_DATA && mode == Mode::FeatureExtractor => Self::SMALL_DATA_HEAD,
            h => h,
        }
    }

    /// These, with the values given replacing the defaults.
    pub fn with(self, epochs: Option<usize>, batch_size: Option<usize>, lr: Option<f64>) -> Self {
        Hyperparameters {
            epochs: epochs.unwrap_or(self.epochs),
            batch_size: batch_size.unwrap_or(self.batch_size),
            lr: lr.unwrap_or(self.lr),
        }
    }

    /// `5 epochs, batch 128, lr 0.001`.
    pub fn describe(&self) -> String {
        format!(
            "{} epochs, batch {}, lr {}",
            self.epochs, self.batch_size, self.lr
        )
    }
}

/// What a tutorial run did.
#[derive(Clone, Debug, Serialize)]
pub struct TutorialReport {
    /// The run directory (checkpoints, history, pictures, best model).
    pub run_dir: PathBuf,
    /// Mode.
    pub mode: Mode,
    /// The data used, in words.
    pub data: String,
    /// The architecture trained (`resnet18`, ...; the topology in words for other shapes).
    pub arch: String,
    /// The starting weights, in words.
    pub weights: String,
    /// Device.
    pub device: String,
    /// Images in the train / validation / test splits.
    pub sizes: [usize; 3],
    /// Best epoch (from 1).
    pub best_epoch: usize,
    /// Validation accuracy of the best epoch.
    pub best_val_acc: f64,
    /// Accuracy of the best model on the test split.
    pub test_acc: f64,
    /// Its top-5 accuracy.
    pub test_top5: f64,
    /// Mean test loss.
    pub test_loss: f64,
    /// With [`TutorialOptions::tta`], the test accuracy with flip test-time augmentation.
    pub test_acc_tta: Option<f64>,
    /// Median training throughput over the epochs, images/second.
    pub train_images_per_sec: f64,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
    /// Per-epoch history.
    pub history: History,
}

/// How [`load_data`] loads and splits the images.
#[derive(Clone, Debug, PartialEq)]
pub struct DataOptions {
    /// Seed of the splits: the same seed gives the same split.
    pub seed: u64,
    /// Image folders: the side of the square the network sees, in pixels (at least 1; 224 for
    /// ImageNet weights at their native resolution). Images are held with their shorter side
    /// at [`held_size`] of it (256 for 224) and cropped to it by the tutorial's transforms
    /// ([`tutorial_pipelines`]).
    pub image_size: u32,
    /// Image folders without `train/`: the fraction held out for validation and test, strictly
    /// between 0 and 1.
    pub holdout: f64,
}

impl Default for DataOptions {
    /// Seed 42, 224x224 crops of image folders, 10% held out.
    fn default() -> Self {
        DataOptions {
            seed: 42,
            image_size: 224,
            holdout: 0.1,
        }
    }
}

/// The images of a run, split into train / validation / test ([`load_data`]'s result).
#[derive(Clone)]
pub struct Splits {
    /// The training images.
    pub train: Arc<dyn Dataset<ImageItem>>,
    /// The validation images (the best epoch is chosen on them).
    pub val: Arc<dyn Dataset<ImageItem>>,
    /// The test images (seen once, by the best model).
    pub test: Arc<dyn Dataset<ImageItem>>,
    /// The class names; a label is an index into them.
    pub classes: Vec<String>,
    /// Where the images came from, in words.
    pub description: String,
    /// The data's own normalisation (CIFAR-10's statistics for CIFAR, ImageNet's for image
    /// folders), for a backbone without weights of its own ([`Backbone::normalize`]).
    pub normalize: Normalize,
    /// What to tell the user, one line each: the fallback to the bundled sample and why, the
    /// files an image folder skipped.
    pub notes: Vec<String>,
    /// Image folders: the side of the crops the network sees ([`DataOptions::image_size`]);
    /// the images are held with their shorter side at [`held_size`] of it. `None` for CIFAR
    /// and the bundled sample, whose images all have CIFAR's native 32x32 pixels.
    pub input_size: Option<u32>,
}

impl std::fmt::Debug for Splits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splits")
            .field("sizes", &self.sizes())
            .field("classes", &self.classes)
            .field("description", &self.description)
            .field("normalize", &self.normalize)
            .field("notes", &self.notes)
            .finish()
    }
}

/// The three loaders of a run ([`Splits::loaders`]).
#[derive(Clone, Debug)]
pub struct Loaders {
    /// Shuffled, augmented, last partial batch dropped.
    pub train: ImageLoader,
    /// In order, every image, no augmentation.
    pub val: ImageLoader,
    /// In order, every image, no augmentation.
    pub test: ImageLoader,
}

impl Splits {
    /// At most `train` training images and at most `val` validation and `val` test images
    /// (the first ones of each split; `None`: all of them).
    pub fn limit(mut self, train: Option<usize>, val: Option<usize>) -> Self {
        self.train = limit(self.train, train);
        self.val = limit(self.val, val);
        self.test = limit(self.test, val);
        self
    }

    /// Images in the train / validation / test splits.
    pub fn sizes(&self) -> [usize; 3] {
        [self.train.len(), self.val.len(), self.test.len()]
    }

    /// The loaders of the three splits: `train_pipeline` with `config` (shuffled, as
    /// [`LoaderConfig::train`] sets it) for training; `eval_pipeline` in order, every image, the
    /// same batch size and workers ([`LoaderConfig::eval`]) for validation and test.
    ///
    /// # Errors
    /// A split without images, a batch size of 0 or larger than the training split (its last
    /// partial batch is dropped, so no batch would remain), or a pipeline that does not fit the
    /// images ([`ImageLoader::check`]).
    pub fn loaders(
        &self,
        train_pipeline: Pipeline,
        eval_pipeline: Pipeline,
        config: LoaderConfig,
        device: &Device,
    ) -> Result<Loaders> {
        check_sizes(self.sizes(), config.batch_size)?;
        let eval = |ds: &Arc<dyn Dataset<ImageItem>>| {
            ImageLoader::new(
                ds.clone(),
                eval_pipeline.clone(),
                LoaderConfig::eval(config.batch_size).with_workers(config.num_workers),
                device.clone(),
            )
        };
        let loaders = Loaders {
            val: eval(&self.val),
            test: eval(&self.test),
            train: ImageLoader::new(self.train.clone(), train_pipeline, config, device.clone()),
        };
        for loader in [&loaders.train, &loaders.val, &loaders.test] {
            loader.check()?;
        }
        Ok(loaders)
    }
}

fn limit(ds: Arc<dyn Dataset<ImageItem>>, n: Option<usize>) -> Arc<dyn Dataset<ImageItem>> {
    match n {
        Some(n) if n < ds.len() => Arc::new(Subset::range(ds, 0..n)),
        _ => ds,
    }
}

/// A shared image dataset.
type Images = Arc<dyn Dataset<ImageItem>>;

fn split_half(ds: impl Dataset<ImageItem> + 'static, seed: u64) -> Result<(Images, Images)> {
    let mut parts = random_split(ds, [0.5, 0.5], seed)?;
    let test = parts.pop();
    let val = parts.pop();
    match (val, test) {
        (Some(v), Some(t)) => Ok((Arc::new(v), Arc::new(t))),
        _ => Err(Error::InvalidConfig(
            "the 50/50 split produced no parts".into(),
        )),
    }
}

fn cifar_splits(cifar: Cifar10, what: String, seed: u64) -> Result<Splits> {
    let (val, test) = split_half(cifar.test(), seed)?;
    Ok(Splits {
        train: Arc::new(cifar.train()),
        val,
        test,
        classes: cifar.classes().to_vec(),
        description: what,
        normalize: Normalize::cifar10(),
        input_size: None,
        notes: Vec::new(),
    })
}

/// The shorter side image folders are held at for crops of `input_size`: torchvision's
/// `Resize(256)` before `CenterCrop(224)`, i.e. `input_size / 0.875` rounded (256 for 224).
pub fn held_size(input_size: u32) -> u32 {
    (f64::from(input_size) * 8.0 / 7.0).round() as u32
}

/// The training and evaluation transforms of the tutorial recipe, and how to say them.
#[derive(Clone, Debug, PartialEq)]
pub struct TutorialPipelines {
    /// The training transform.
    pub train: Pipeline,
    /// The validation and test transform.
    pub eval: Pipeline,
    /// Both, in words, for the run's first line.
    pub description: String,
}

/// Training augmentations beyond the tutorial's, in torchvision's reference order
/// (`references/classification/presets.py`): the crop, the flip, the policy, then
/// `Normalize` and `RandomErasing` on the tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrainAugment {
    /// CIFAR and the bundled sample: `RandomResizedCrop` to the training size (32, or
    /// `upsample`) instead of the plain flip's full image. Image folders always have it.
    pub rrc: bool,
    /// `TrivialAugmentWide()` after the flip.
    pub trivial_augment: bool,
    /// `RandAugment(num_ops, magnitude)` after the flip (exclusive with `trivial_augment`).
    pub randaugment: Option<RandAugment>,
    /// `RandomErasing(p)` on the normalised tensor.
    pub random_erasing: Option<RandomErasing>,
}

impl TrainAugment {
    /// Whether anything is added to the tutorial's transforms.
    pub fn any(&self) -> bool {
        self.rrc
            || self.trivial_augment
            || self.randaugment.is_some()
            || self.random_erasing.is_some()
    }

    /// Adds the policy and the erasing to `train`; returns it and what was added, in words
    /// (` + TrivialAugmentWide + RandomErasing(0.25)`).
    fn apply(&self, mut train: Pipeline) -> Result<(Pipeline, String)> {
        let mut description = String::new();
        if self.trivial_augment && self.randaugment.is_some() {
            return Err(Error::InvalidConfig(
                "TrainAugment::trivial_augment and TrainAugment::randaugment are two policies for the same step: choose one".into(),
            ));
        }
        if self.trivial_augment {
            train = train.then(TrivialAugmentWide::default());
            description.push_str(" + TrivialAugmentWide");
        }
        if let Some(ra) = self.randaugment {
            train = train.then(ra);
            description.push_str(&format!(" + RandAugment({}, {})", ra.num_ops, ra.magnitude));
        }
        if let Some(erasing) = self.random_erasing {
            train = train.random_erasing(erasing);
            description.push_str(&format!(" + RandomErasing({})", erasing.p));
        }
        train.validate()?;
        Ok((train, description))
    }
}

/// The tutorial's transforms for `data`, normalised with `normalize`.
///
/// - Image folders ([`Splits::input_size`] `Some(n)`): the tutorial's own — training
///   `RandomResizedCrop(n)` (scale 0.08-1, ratio 3/4-4/3, bilinear) and
///   `RandomHorizontalFlip()`, evaluation `Resize(held_size(n))` and `CenterCrop(n)` (the ImageNet
///   weights' preset: 256 / 224). The images are held with their shorter side at
///   `held_size(n)`, so that the random crop is taken from that copy rather than from the
///   original file (the crop's area and ratio are drawn as torchvision draws them; the pixels
///   differ from a crop of the full-size file by the extra resampling), and evaluation is
///   pixel-exact with torchvision's `Resize(256)` + `CenterCrop(224)` of the file.
///   `upsample` is refused here: the crop size is [`DataOptions::image_size`].
/// - CIFAR-10 and the bundled sample (`None`): at the native 32x32, flip and normalise for
///   training, normalise for evaluation; `upsample` resizes both to `upsample x upsample` first.
///
/// With `cache_features`, training takes the evaluation transform (cached features need a
/// transform without randomness).
///
/// # Errors
/// [`Error::InvalidConfig`] for `upsample` with image folders.
pub fn tutorial_pipelines(
    data: &Splits,
    normalize: Normalize,
    upsample: Option<u32>,
    cache_features: bool,
) -> Result<TutorialPipelines> {
    tutorial_pipelines_with(
        data,
        normalize,
        upsample,
        cache_features,
        &TrainAugment::default(),
    )
}

/// Says a pair of pipelines in words, given the training augmentations added (in words).
type Describe = Box<dyn Fn(&str) -> String>;

/// [`tutorial_pipelines`] with the training augmentations of `augment` (none can go with
/// `cache_features`: cached features need a training transform without randomness).
///
/// # Errors
/// As [`tutorial_pipelines`]; [`Error::InvalidConfig`] for augmentations with
/// `cache_features`, both policies at once, or invalid parameters.
pub fn tutorial_pipelines_with(
    data: &Splits,
    normalize: Normalize,
    upsample: Option<u32>,
    cache_features: bool,
    augment: &TrainAugment,
) -> Result<TutorialPipelines> {
    if cache_features && augment.any() {
        return Err(Error::InvalidConfig(
            "training augmentations (TrainAugment: RandomResizedCrop, TrivialAugmentWide, RandAugment, RandomErasing) are random, and cached features need a training transform without randomness: drop cache_features or the augmentations".into(),
        ));
    }
    let (train, eval, describe): (Pipeline, Pipeline, Describe) = match (data.input_size, upsample)
    {
        (Some(_), Some(size)) => {
            return Err(Error::InvalidConfig(format!(
                "upsampling to {size} (TutorialOptions::upsample) resizes CIFAR's 32x32 images; image folders are cropped to their image size instead (TutorialOptions::image_size): set that to {size} and leave upsample unset"
            )));
        }
        (Some(n), None) => {
            let held = held_size(n);
            let train = Pipeline::new()
                .then(RandomResizedCrop::new(n))
                .then(RandomHorizontalFlip::default())
                .normalize(normalize);
            let eval = Pipeline::new()
                .then(Resize::new(held))
                .then(CenterCrop::new(n))
                .normalize(normalize);
            let describe = move |aug: &str| {
                let whose = if aug.is_empty() {
                    " (the tutorial's transforms)"
                } else {
                    ""
                };
                format!(
                    "train RandomResizedCrop({n}) + flip{aug}, eval Resize({held}) + CenterCrop({n}){whose}"
                )
            };
            (train, eval, Box::new(describe))
        }
        (None, size) if augment.rrc => {
            let n = size.unwrap_or(32);
            let train = Pipeline::new()
                .then(RandomResizedCrop::new(n))
                .then(RandomHorizontalFlip::default())
                .normalize(normalize);
            let eval = match size {
                Some(size) => Pipeline::eval(normalize).upsample(size),
                None => Pipeline::eval(normalize),
            };
            let describe =
                move |aug: &str| format!("train RandomResizedCrop({n}) + flip{aug}, eval {n}x{n}");
            (train, eval, Box::new(describe))
        }
        (None, None) => (
            Pipeline::train(normalize),
            Pipeline::eval(normalize),
            Box::new(|aug: &str| format!("native 32x32, train flip{aug}")),
        ),
        (None, Some(size)) => (
            Pipeline::train(normalize).upsample(size),
            Pipeline::eval(normalize).upsample(size),
            Box::new(move |aug: &str| format!("upsampled to {size}x{size}, train flip{aug}")),
        ),
    };
    let (train, added) = augment.apply(train)?;
    let description = describe(&added);
    let (train, description) = if cache_features {
        (
            eval.clone(),
            format!("{description}; no random transform: features cached"),
        )
    } else {
        (train, description)
    };
    Ok(TutorialPipelines {
        train,
        eval,
        description,
    })
}

/// Loads an image folder, noting in one line what was ignored.
fn folder(dir: &Path, size: u32, notes: &mut Vec<String>) -> Result<ImageFolder> {
    if size > crate::data::MAX_SIDE {
        return Err(DataError::Transform {
            transform: "Resize",
            reason: format!(
                "image folders are cropped to {size}x{size} pixels, more than the {} a transform produces: set the image size (DataOptions::image_size, TutorialOptions::image_size) lower (224 for ImageNet weights)",
                crate::data::MAX_SIDE
            ),
        }
        .into());
    }
    if size == 0 {
        return Err(DataError::Transform {
            transform: "Resize",
            reason: "image folders are cropped to 0x0 pixels: set the image size \
                     (DataOptions::image_size, TutorialOptions::image_size) to at least 1 (224 \
                     for ImageNet weights)"
                .into(),
        }
        .into());
    }
    let folder = ImageFolder::open_with(
        dir,
        ImageFolderOptions::default().resize_shorter(held_size(size)),
    )?;
    notes.extend(folder.load_summary());
    Ok(folder)
}

/// An error unless `images` can be split into `parts` of at least one image each.
fn check_splittable(
    what: &Path,
    images: usize,
    parts: &'static str,
    needed: usize,
    fix: &str,
) -> Result<()> {
    if images < needed {
        return Err(DataError::TooFewToSplit {
            what: format!("the image folder '{}'", what.display()),
            images,
            parts,
            needed,
            fix: fix.to_string(),
        }
        .into());
    }
    Ok(())
}

/// Step 1, the data: loads `choice` and splits it with `options.seed` into train / validation /
/// test.
///
/// - CIFAR-10 ([`DataChoice::Auto`], [`DataChoice::CifarDir`], [`DataChoice::Sample`]): the
///   50,000 training images train; the 10,000 test images are split 50/50 into validation and
///   test, as the tutorial's validation set is.
/// - [`DataChoice::Auto`] falls back to the bundled sample when CIFAR-10 can be neither found
///   in the cache nor downloaded (offline, `FINETUNE_OFFLINE=1`), saying why in
///   [`Splits::notes`].
/// - [`DataChoice::ImageFolder`]: `train/` and `val/` (and `test/`, or `val/` split 50/50), or
///   a folder of class folders with [`DataOptions::holdout`] of it split off, half for
///   validation and half for test. Images are held with their shorter side at
///   [`held_size`] of [`DataOptions::image_size`] ([`tutorial_pipelines`] crops them).
///
/// ```no_run
/// use finetune::recipe::{DataChoice, DataOptions, load_data};
/// let data = load_data(&DataChoice::Auto, &DataOptions::default())?;
/// for note in &data.notes {
///     println!("{note}");
/// }
/// println!("{}: {:?} images", data.description, data.sizes());
/// # Ok::<(), finetune::Error>(())
/// ```
///
/// # Errors
/// A directory that cannot be read or holds no images ([`DataError`]), image folders too small
/// to split, train and validation folders with different classes, a holdout outside (0, 1).
pub fn load_data(choice: &DataChoice, options: &DataOptions) -> Result<Splits> {
    let seed = options.seed;
    let mut splits = match choice {
        DataChoice::Sample => cifar_splits(
            Cifar10::sample()?,
            "the bundled CIFAR-10 sample".into(),
            seed,
        ),
        DataChoice::CifarDir(dir) => cifar_splits(
            Cifar10::from_dir(dir)?,
            format!("CIFAR-10 from {}", dir.display()),
            seed,
        ),
        DataChoice::Auto => cifar_or_sample(seed),
        DataChoice::ImageFolder(root) if !root.join("train").is_dir() => {
            held_out_folder(root, options)
        }
        DataChoice::ImageFolder(root) => split_folders(root, options),
    }?;
    // The crop size is the image folders'; CIFAR keeps its 32x32 (say so rather than ignore
    // a size asked for).
    if splits.input_size.is_none() && options.image_size != DataOptions::default().image_size {
        splits.notes.push(format!(
            "image_size {} (--image-size) applies to image folders; CIFAR-10's images stay 32x32 (upsample, --upsample, resizes them)",
            options.image_size
        ));
    }
    Ok(splits)
}

/// CIFAR-10 from the cache or downloaded; the bundled sample, with a note saying why, when it
/// is unavailable.
fn cifar_or_sample(seed: u64) -> Result<Splits> {
    match Cifar10::download() {
        Ok(cifar) => {
            let what = format!("CIFAR-10 ({})", cifar.dir().display());
            cifar_splits(cifar, what, seed)
        }
        Err(e) => {
            let sample = Cifar10::sample()?;
            let note = format!(
                "CIFAR-10 could not be found or downloaded ({}); running on the bundled sample ({} train / {} test images)",
                first_line(&e.to_string()),
                sample.train().len(),
                sample.test().len()
            );
            let mut splits = cifar_splits(sample, "the bundled CIFAR-10 sample".into(), seed)?;
            splits.notes.push(note);
            Ok(splits)
        }
    }
}

/// One folder of class folders: [`DataOptions::holdout`] of it held out, half for validation
/// and half for test.
fn held_out_folder(root: &Path, options: &DataOptions) -> Result<Splits> {
    if !(options.holdout > 0.0 && options.holdout < 1.0) {
        return Err(Error::InvalidConfig(format!(
            "the holdout (DataOptions::holdout, TutorialOptions::holdout) must be between 0 and 1 (got {})",
            options.holdout
        )));
    }
    let mut notes = Vec::new();
    let all = folder(root, options.image_size, &mut notes)?;
    let classes = all.classes().to_vec();
    let n = all.len();
    check_splittable(
        root,
        n,
        "train / validation / test",
        3,
        ", or give it train/ and val/ sub-folders of their own",
    )?;
    let held = ((n as f64 * options.holdout).round() as usize).clamp(2, n.saturating_sub(1));
    let val_n = held / 2;
    let mut parts = random_split(all.dataset(), [n - held, val_n, held - val_n], options.seed)?;
    let (Some(test), Some(val), Some(train)) = (parts.pop(), parts.pop(), parts.pop()) else {
        return Err(Error::InvalidConfig(
            "the hold-out split produced no parts".into(),
        ));
    };
    Ok(Splits {
        train: Arc::new(train),
        val: Arc::new(val),
        test: Arc::new(test),
        classes,
        description: format!(
            "image folder {} ({:.0}% held out for validation and test)",
            root.display(),
            options.holdout * 100.0
        ),
        normalize: Normalize::imagenet(),
        notes,
        input_size: Some(options.image_size),
    })
}

/// `train/` and `val/` folders with the same classes, and `test/` (or `val/` split 50/50).
fn split_folders(root: &Path, options: &DataOptions) -> Result<Splits> {
    let mut notes = Vec::new();
    let train = folder(&root.join("train"), options.image_size, &mut notes)?;
    let val = folder(&root.join("val"), options.image_size, &mut notes)?;
    if train.classes() != val.classes() {
        return Err(Error::InvalidConfig(format!(
            "{} and {} have different class folders ({:?} vs {:?})",
            root.join("train").display(),
            root.join("val").display(),
            train.classes(),
            val.classes()
        )));
    }
    let classes = train.classes().to_vec();
    let (val, test): (Images, Images) = if root.join("test").is_dir() {
        let test = folder(&root.join("test"), options.image_size, &mut notes)?;
        if test.classes() != classes.as_slice() {
            return Err(Error::InvalidConfig(format!(
                "{} has different class folders than {}",
                root.join("test").display(),
                root.join("train").display()
            )));
        }
        (Arc::new(val.dataset()), Arc::new(test.dataset()))
    } else {
        check_splittable(
            &root.join("val"),
            val.len(),
            "validation / test",
            2,
            ", or add a test/ folder beside it",
        )?;
        split_half(val.dataset(), options.seed)?
    };
    Ok(Splits {
        train: Arc::new(train.dataset()),
        val,
        test,
        classes,
        description: format!("image folders in {}", root.display()),
        normalize: Normalize::imagenet(),
        notes,
        input_size: Some(options.image_size),
    })
}

/// Every split has an image, and the training set holds at least one batch (its last partial
/// batch is dropped).
fn check_sizes(sizes: [usize; 3], batch_size: usize) -> Result<()> {
    for (n, what, option) in [
        (
            sizes[0],
            "training",
            "the train limit (TutorialOptions::train_limit)",
        ),
        (
            sizes[1],
            "validation",
            "the val limit (TutorialOptions::val_limit)",
        ),
        (
            sizes[2],
            "test",
            "the val limit (TutorialOptions::val_limit)",
        ),
    ] {
        if n == 0 {
            return Err(Error::InvalidConfig(format!(
                "the {what} set is empty: raise {option} or add images"
            )));
        }
    }
    if batch_size == 0 {
        return Err(Error::InvalidConfig(
            "the batch size is 0: set it (LoaderConfig::batch_size, TutorialOptions::batch_size) \
             to at least 1"
                .into(),
        ));
    }
    if sizes[0] < batch_size {
        return Err(DataError::BatchLargerThanData {
            batch_size,
            items: sizes[0],
            what: "training set",
            fix: format!(
                "lower the batch size to at most {} (LoaderConfig::batch_size, \
                 TutorialOptions::batch_size), or add training images",
                sizes[0]
            ),
        }
        .into());
    }
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// A network to fine-tune, with the weights it starts from ([`load_backbone`]'s result).
#[derive(Debug)]
pub struct Backbone {
    /// The network (any registered architecture), with the head of its weights (1000
    /// ImageNet classes for torchvision's); replace it with
    /// [`VisionModel::reset_classifier`].
    pub model: AnyModel,
    /// The normalisation the weights were trained with (`None` for random initialisation:
    /// use the data's own, [`Splits::normalize`]).
    pub normalize: Option<Normalize>,
    /// The starting weights, in words (`ResNet18_Weights.IMAGENET1K_V1`, `random
    /// initialisation`, ...).
    pub description: String,
    /// Why training starts from other weights (the bundled backbone, or random
    /// initialisation) when [`WeightsChoice::Auto`]'s weights
    /// could be neither found nor downloaded (one line for the user).
    pub note: Option<String>,
}

impl Backbone {
    /// The architecture's name (`resnet18`, ...; the topology in words for other shapes).
    pub fn arch(&self) -> String {
        self.model.arch()
    }
}

/// Step 2, the model: the backbone `weights` describe, of architecture `arch` (`resnet18`,
/// `resnet50`, ...).
///
/// - [`WeightsChoice::Auto`]: the architecture's default torchvision ImageNet weights
///   ([`Weights::default_for`], then [`Weights::load`]: downloaded once and
///   cached). When they can be neither found nor downloaded (offline, `FINETUNE_OFFLINE=1`):
///   with `arch: None`, the bundled `finetune_mini.rotation` backbone
///   ([`FINETUNE_MINI_ROTATION`](crate::weights::FINETUNE_MINI_ROTATION), pretrained without
///   labels); with an architecture named, its random initialisation. [`Backbone::note`] says
///   which and why.
/// - [`WeightsChoice::Named`]: these registry weights ([`Weights::load`]).
/// - [`WeightsChoice::File`]: a `.pth` / `.safetensors` state_dict, loaded strictly, its
///   architecture read from the file; `key` picks one state_dict of a checkpoint holding
///   several ([`LoadOptions::key`]).
/// - [`WeightsChoice::Hub`]: a timm repository on the Hugging Face Hub ([`load_hub`]): its
///   architecture and normalisation from its `config.json`.
/// - [`WeightsChoice::None`]: random initialisation.
///
/// `arch: None` means the architecture of the weights (ResNet-18 for `Auto` and `None`).
///
/// ```no_run
/// use burn::tensor::Device;
/// use finetune::recipe::{WeightsChoice, load_backbone};
/// let backbone = load_backbone(&WeightsChoice::Auto, Some("resnet50"), None, &Device::flex())?;
/// use finetune::model::VisionModel;
/// let model = backbone.model.reset_classifier(10)?; // a new head
/// # Ok::<(), finetune::Error>(())
/// ```
///
/// # Errors
/// An unknown architecture; weights of another architecture than `arch` (never silently
/// ignored); a `key` without a weights file; named weights that cannot be downloaded; a file
/// that does not load strictly ([`crate::weights::WeightsError`]).
pub fn load_backbone(
    weights: &WeightsChoice,
    arch: Option<&str>,
    key: Option<&str>,
    device: &Device,
) -> Result<Backbone> {
    check_key(weights, key)?;
    let backbone = backbone_unchecked(weights, arch, key, device)?;
    if let Some(arch) = arch {
        // An unknown name is an error listing the registered architectures.
        AnyConfig::from_name(arch, 1000)?;
        if crate::model::arch_of(arch) != backbone.arch() {
            return Err(Error::InvalidConfig(format!(
                "the starting weights are a {}, not a {arch}: leave the architecture unset (TutorialOptions::arch, the `arch` of load_backbone) to use the weights' own, or choose weights of {arch}",
                backbone.arch()
            )));
        }
    }
    Ok(backbone)
}

/// A weights key only picks a state_dict of a weights file.
fn check_key(weights: &WeightsChoice, key: Option<&str>) -> Result<()> {
    if key.is_some() && !matches!(weights, WeightsChoice::File(_)) {
        return Err(Error::InvalidConfig(
            "a weights key (LoadOptions::key, TutorialOptions::weights_key) picks a state_dict inside a weights file: give the file as the weights (WeightsChoice::File), or drop the key".into(),
        ));
    }
    Ok(())
}

fn backbone_unchecked(
    weights: &WeightsChoice,
    arch: Option<&str>,
    key: Option<&str>,
    device: &Device,
) -> Result<Backbone> {
    let random = |note: Option<String>| -> Result<Backbone> {
        let model = create_model(arch.unwrap_or("resnet18"), 1000, device)?;
        Ok(Backbone {
            model,
            normalize: None,
            description: "random initialisation".into(),
            note,
        })
    };
    let pretrained = |weights: Weights| -> Result<Backbone> {
        let p = weights.preprocess();
        let cache = crate::download::Cache::from_env()?;
        Ok(Backbone {
            model: weights.load(&cache, device)?.0,
            normalize: Some(Normalize::new(p.mean, p.std)),
            description: weights.name(),
            note: None,
        })
    };
    match weights {
        WeightsChoice::None => random(None),
        WeightsChoice::Named(w) => pretrained(*w),
        WeightsChoice::Auto => {
            let name = arch.unwrap_or("resnet18");
            // An unknown architecture is an error, never a silent fallback; a weights tag
            // (`resnet50.tv2_in1k`) picks those weights, a bare name its default ones.
            AnyConfig::from_name(name, 1000)?;
            let weights = Weights::parse(name)?;
            match pretrained(weights) {
                Ok(found) => Ok(found),
                // The default architecture offline: the backbone shipped in the crate, so
                // that the run still starts from pretrained weights (an architecture asked for
                // by name is never swapped for another one).
                Err(e) if arch.is_none() => {
                    let bundled = Weights::Bundled(&crate::weights::FINETUNE_MINI_ROTATION);
                    let mut backbone = pretrained(bundled)?;
                    backbone.note = Some(format!(
                        "ImageNet weights could not be found or downloaded ({}); starting from the bundled {} backbone instead, pretrained without labels on rotation prediction (weights `none` for random initialisation)",
                        first_line(&e.to_string()),
                        bundled.timm_name()
                    ));
                    Ok(backbone)
                }
                Err(e) => random(Some(format!(
                    "ImageNet weights could not be found or downloaded ({}); starting from random initialisation",
                    first_line(&e.to_string())
                ))),
            }
        }
        WeightsChoice::Hub(hub) => {
            let loaded = load_hub(hub, device)?;
            let p = loaded.preprocess;
            Ok(Backbone {
                model: loaded.model,
                normalize: Some(Normalize::new(p.mean, p.std)),
                description: format!("{hub} ({})", loaded.report),
                note: None,
            })
        }
        WeightsChoice::File(path) => {
            let options = match key {
                Some(key) => LoadOptions::strict().key(key),
                None => LoadOptions::strict(),
            };
            let (model, report) = AnyModel::from_weights_file(path, &options, device)?;
            // The normalisation of the architecture's torchvision weights (EfficientNetV2-L's
            // is 0.5 / 0.5), ImageNet's for a custom shape.
            let normalize =
                Weights::for_config(&model.config()).map_or_else(Normalize::imagenet, |w| {
                    let p = w.preprocess();
                    Normalize::new(p.mean, p.std)
                });
            Ok(Backbone {
                model,
                normalize: Some(normalize),
                description: format!("weights from {} ({report})", path.display()),
                note: None,
            })
        }
    }
}

/// The default run directory of `mode`: `runs/<mode>-<unix time>` (`runs/finetune-...`,
/// `runs/feature_extractor-...`).
pub fn default_run_dir(mode: Mode) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = match mode {
        Mode::FineTune => "finetune",
        Mode::FeatureExtractor => "feature_extractor",
    };
    PathBuf::from("runs").join(format!("{name}-{secs}"))
}

/// The checks [`run`] makes before it loads anything.
fn check_options(opts: &TutorialOptions) -> Result<()> {
    if opts.resume && opts.out.is_none() {
        return Err(Error::InvalidConfig(
            "resuming (TutorialOptions::resume) needs the run directory to continue: set TutorialOptions::out".into(),
        ));
    }
    check_key(&opts.weights, opts.weights_key.as_deref())?;
    if opts.upsample == Some(0) {
        return Err(Error::InvalidConfig(
            "images cannot be resized to 0x0 pixels (TutorialOptions::upsample): give a size of at least 1 (224 matches ImageNet weights), or leave it unset for the native size".into(),
        ));
    }
    if opts.freeze_epochs.is_some_and(|n| n > 0) && opts.mode != Mode::FineTune {
        return Err(Error::InvalidConfig(
            "freeze_epochs (fastai's fine_tune: head-only epochs, then everything unfrozen) needs the fine-tuning mode; the feature extractor keeps its backbone frozen throughout".into(),
        ));
    }
    if opts.cache_features && opts.mode != Mode::FeatureExtractor {
        return Err(Error::InvalidConfig(
            "feature caching needs the feature-extractor mode (a frozen backbone)".into(),
        ));
    }
    match (opts.bn_policy, opts.cache_features) {
        (Some(policy), true) if policy != BnPolicy::Frozen => Err(Error::InvalidConfig(format!(
            "feature caching needs BatchNorm policy frozen, not {policy} (TutorialOptions::bn_policy): the backbone's statistics would change every batch; drop TutorialOptions::cache_features or use the frozen policy"
        ))),
        _ => Ok(()),
    }
}

/// Runs the tutorial: the module's steps in order, [`load_data`], [`load_backbone`], a new
/// head (and a frozen backbone in [`Mode::FeatureExtractor`]), [`Splits::loaders`],
/// [`TutorialOptions::learner_config`], [`Learner::fit`] and [`evaluate`] on the test split.
/// Every option is checked before anything is loaded or written. It reports nothing
/// ([`run_with_sink`] reports progress); the outputs go to the run directory: `checkpoint/`,
/// `history.json`, `history.csv`, `config.json`, `best_model.bpk`, `curves.png`, `confusion.png`,
/// `predictions.png` and `summary.json`.
///
/// ```no_run
/// use finetune::recipe::{Mode, TutorialOptions, run};
/// let report = run(&TutorialOptions::new(Mode::FineTune))?;
/// println!("test accuracy {:.4}", report.test_acc);
/// # Ok::<(), finetune::Error>(())
/// ```
pub fn run(opts: &TutorialOptions) -> Result<TutorialReport> {
    run_reporting(opts, None)
}

/// [`run`], reporting to `sink`: the Learner's [`FitEvent`]s, and the recipe's own lines (what
/// data and weights were used, why a fallback happened, the test result) as
/// [`FitEvent::Note`]s. The examples pass a console sink that prints them.
///
/// # Errors
/// As [`run`].
pub fn run_with_sink(opts: &TutorialOptions, sink: Arc<dyn FitSink>) -> Result<TutorialReport> {
    run_reporting(opts, Some(&sink))
}

/// Steps 1 to 4 of [`run`], shared with [`lr_find`]: the data, the model with its new head
/// (frozen for the feature extractor), the loaders, the hyperparameters, the run directory, and
/// the run's first line said.
struct Prepared {
    data: Splits,
    hyper: Hyperparameters,
    arch: String,
    weights: String,
    model: AnyModel,
    loaders: Loaders,
    run_dir: PathBuf,
}

fn prepare(opts: &TutorialOptions, say: &dyn Fn(&str)) -> Result<Prepared> {
    check_options(opts)?;
    let device = opts.main_device().device()?;
    for choice in &opts.devices {
        opts.precision.configure(&choice.device()?)?;
    }
    opts.precision.configure(&device)?;
    // 1. The images, split (the bundled sample when CIFAR-10 is unavailable).
    let data = load_data(&opts.data, &opts.data_options())?.limit(opts.train_limit, opts.val_limit);
    data.notes.iter().for_each(|note| say(note));
    // Sizes against the batch size before any weights are loaded (or downloaded).
    let hyper = opts.hyperparameters(data.sizes()[0]);
    let bn_policy = opts.bn_policy_for(data.sizes()[0]);
    check_sizes(data.sizes(), hyper.batch_size)?;
    // 2. The backbone (random initialisation when `Auto`'s weights are unavailable).
    let backbone = load_backbone(
        &opts.weights,
        opts.arch.as_deref(),
        opts.weights_key.as_deref(),
        &device,
    )?;
    backbone.note.iter().for_each(|note| say(note));
    let (arch, weights) = (backbone.arch(), backbone.description.clone());
    let normalize = backbone.normalize.unwrap_or(data.normalize);
    // 3. A new head; the fixed feature extractor freezes everything else.
    let mut model = backbone.model.reset_classifier(data.classes.len())?;
    if opts.mode == Mode::FeatureExtractor {
        model = model.with_bn_policy(bn_policy).freeze_backbone();
    }
    // 4. The transforms and loaders (cached features need a training transform without
    //    randomness).
    let pipelines = tutorial_pipelines_with(
        &data,
        normalize,
        opts.upsample,
        opts.cache_features,
        &opts.augment,
    )?;
    let loaders = tutorial_loaders(opts, hyper.batch_size, &data, &pipelines, &device)?;
    let run_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| default_run_dir(opts.mode));
    say(&describe_run(
        opts,
        bn_policy,
        &arch,
        &data,
        &weights,
        &hyper,
        &pipelines.description,
        &run_dir,
    ));
    Ok(Prepared {
        data,
        hyper,
        arch,
        weights,
        model,
        loaders,
        run_dir,
    })
}

/// Creates `dir` if needed and checks a file can be created in it, so that a run that would
/// fail to write its outputs fails before it spends any time (the learning-rate finder writes
/// its plot last).
///
/// # Errors
/// [`Error::Io`] naming the directory: it is a file, or cannot be created or written.
pub fn check_writable_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating the output directory", dir, e))?;
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| Error::io("writing into the output directory", dir, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// What [`lr_find`] found, and where its plot is.
#[derive(Clone, Debug)]
pub struct LrFindReport {
    /// The range test's record and suggestions.
    pub found: LrFind,
    /// `lr_find.png` in the run directory.
    pub plot: PathBuf,
}

/// fastai's `lr_find` on the recipe's model and data: steps 1 to 4 of [`run`], then
/// [`crate::train::lr_find`] with the run's training settings (optimizer, backbone multiplier,
/// regularisers) and fastai's defaults (1e-7 to 10 over 100 batches), the plot written as
/// `lr_find.png` in the run directory, and the suggestions said. Nothing is trained: the
/// model is discarded.
///
/// # Errors
/// As [`run`]; [`Error::InvalidConfig`] with `resume` (there is nothing to resume).
pub fn lr_find(opts: &TutorialOptions, sink: Option<Arc<dyn FitSink>>) -> Result<LrFindReport> {
    let say = |line: &str| {
        if let Some(sink) = &sink {
            sink.event(&FitEvent::Note(line));
        }
    };
    if opts.resume {
        return Err(Error::InvalidConfig(
            "the learning-rate finder (recipe::lr_find) trains a throw-away copy: there is nothing to resume; drop TutorialOptions::resume".into(),
        ));
    }
    let prepared = prepare(opts, &say)?;
    check_writable_dir(&prepared.run_dir)?;
    let config = opts.learner_config(&prepared.hyper);
    let finder = LrFindConfig::default();
    say(&format!(
        "learning-rate finder: lr from {:e} to {} over {} batches (fastai's lr_find), nothing is kept",
        finder.start_lr, finder.end_lr, finder.num_it
    ));
    let found = crate::train::lr_find(&prepared.model, &prepared.loaders.train, &config, &finder)
        .map_err(Error::from)?;
    let plot = prepared.run_dir.join("lr_find.png");
    found.save_plot(&plot).map_err(Error::from)?;
    say(&format!("{}; plot {}", found.describe(), plot.display()));
    Ok(LrFindReport { found, plot })
}

fn run_reporting(
    opts: &TutorialOptions,
    sink: Option<&Arc<dyn FitSink>>,
) -> Result<TutorialReport> {
    let started = Instant::now();
    let say = |line: &str| {
        if let Some(sink) = sink {
            sink.event(&FitEvent::Note(line));
        }
    };
    let Prepared {
        data,
        hyper,
        arch,
        weights,
        model,
        loaders,
        run_dir,
    } = prepare(opts, &say)?;
    // 5. SGD with momentum and StepLR; 6. training, the best validation epoch kept.
    let mut learner = Learner::new(opts.learner_config(&hyper)).data_parallel(
        opts.devices
            .iter()
            .map(|d| d.device())
            .collect::<Result<Vec<_>>>()?,
    );
    if let Some(sink) = sink {
        learner = learner.sink(sink.clone());
    }
    let outcome = learner
        .run_dir(&run_dir)
        .resume(opts.resume)
        .cache_features(opts.cache_features)
        .class_names(data.classes.clone())
        .fit(model, &loaders.train, &loaders.val)
        .map_err(Error::from)?;
    // 7. The test split, with the run directory locked again while the test results and the
    // summary are written: a run started into it since `fit` released it makes this one fail
    // rather than both write.
    let _run_lock = crate::train::lock_run_dir(&run_dir)?;
    let test_eval: Evaluation = evaluate(&outcome.model, &loaders.test)?;
    let tta_eval = if opts.tta {
        Some(evaluate_tta(&outcome.model, &loaders.test)?)
    } else {
        None
    };
    let report = TutorialReport {
        run_dir: run_dir.clone(),
        mode: opts.mode,
        data: data.description.clone(),
        arch,
        weights,
        device: opts.describe_devices(),
        sizes: data.sizes(),
        best_epoch: outcome.best_epoch,
        best_val_acc: outcome.history.best_val_acc,
        test_acc: test_eval.accuracy,
        test_top5: test_eval.top5_accuracy,
        test_loss: test_eval.loss,
        test_acc_tta: tta_eval.as_ref().map(|e| e.accuracy),
        train_images_per_sec: median_speed(&outcome.history),
        seconds: started.elapsed().as_secs_f64(),
        history: outcome.history,
    };
    write_summary(&report)?;
    say(&format!(
        "test accuracy {:.4} (top-5 {:.4}, loss {:.4}{}) with the best epoch ({}, val acc {:.4}); {:.0} s; outputs in {}",
        report.test_acc,
        report.test_top5,
        report.test_loss,
        report
            .test_acc_tta
            .map(|a| format!("; with flip TTA {a:.4}"))
            .unwrap_or_default(),
        report.best_epoch,
        report.best_val_acc,
        report.seconds,
        run_dir.display()
    ));
    Ok(report)
}

/// Step 4 of [`run`]: the train and eval pipelines (normalised with `normalize`; no random
/// flip when caching features) in loaders over `data`'s splits.
fn tutorial_loaders(
    opts: &TutorialOptions,
    batch_size: usize,
    data: &Splits,
    pipelines: &TutorialPipelines,
    device: &Device,
) -> Result<Loaders> {
    let workers = opts.workers.unwrap_or_else(crate::data::default_workers);
    data.loaders(
        pipelines.train.clone(),
        pipelines.eval.clone(),
        LoaderConfig::train(batch_size, opts.seed).with_workers(workers),
        device,
    )
}

/// The run's first line: mode, architecture, device, data, weights, sizes, transforms,
/// hyperparameters, run directory.
#[allow(clippy::too_many_arguments)]
fn describe_run(
    opts: &TutorialOptions,
    bn_policy: BnPolicy,
    arch: &str,
    data: &Splits,
    weights: &str,
    hyper: &Hyperparameters,
    transforms: &str,
    run_dir: &Path,
) -> String {
    let [n_train, n_val, n_test] = data.sizes();
    let regularisers = opts
        .learner_config(hyper)
        .describe_features()
        .map(|r| format!(" | {r}"))
        .unwrap_or_default();
    format!(
        "{} {} on {}: {} | {} | train {} / val {} / test {} images | {} | {}{}{} | run dir {}",
        match opts.mode {
            Mode::FineTune => "fine-tuning".to_string(),
            Mode::FeatureExtractor => format!(
                "training the head of (frozen backbone; BatchNorm {bn_policy}: {})",
                bn_policy.describe()
            ),
        },
        arch,
        match opts.precision {
            Precision::F32 => opts.describe_devices(),
            other => format!("{} in {other}", opts.describe_devices()),
        },
        data.description,
        weights,
        n_train,
        n_val,
        n_test,
        transforms,
        hyper.describe(),
        small_data_note(n_train, opts.epochs, opts.batch_size, opts.lr),
        regularisers,
        run_dir.display()
    )
}

/// Why a run on few images uses other defaults, when it does (` (small dataset: ...)`).
pub fn small_data_note(
    train_images: usize,
    epochs: Option<usize>,
    batch_size: Option<usize>,
    lr: Option<f64>,
) -> &'static str {
    let defaulted = epochs.is_none() || batch_size.is_none() || lr.is_none();
    if defaulted && train_images < Hyperparameters::SMALL_DATA_MAX_IMAGES {
        " (the small-dataset defaults: fewer than 4000 training images)"
    } else {
        ""
    }
}

/// The median training speed over the run's epochs, images per second.
fn median_speed(history: &History) -> f64 {
    let mut speeds: Vec<f64> = history.epochs.iter().map(|e| e.images_per_sec).collect();
    speeds.sort_by(f64::total_cmp);
    speeds.get(speeds.len() / 2).copied().unwrap_or(0.0)
}

/// Writes `summary.json` into the report's run directory, atomically.
fn write_summary(report: &TutorialReport) -> Result<()> {
    let json = serde_json::to_vec_pretty(report)
        .map_err(|e| Error::InvalidConfig(format!("serialising the summary: {e}")))?;
    let summary = report.run_dir.join("summary.json");
    crate::fsutil::write_atomic(&summary, &json).map_err(|e| Error::io("writing", &summary, e))
}
