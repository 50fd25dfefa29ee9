//! The flags the tutorial examples (`finetune`, `feature_extractor`) share, parsed by clap
//! (`#[path]`-included, with `cli.rs`), and the flags that stand for the library's options in
//! its error messages.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{OsStringValueParser, TypedValueParser};
use finetune::data::{RandAugment, RandomErasing};
use finetune::recipe::{
    DataChoice, DataOptions, Mode, TrainAugment, TutorialOptions, WeightsChoice,
};
use finetune::weights::Weights;
use finetune::{DeviceChoice, Precision};

use crate::cli;

/// The library's defaults (`TutorialOptions::new`), shown by `--help`.
fn defaults() -> TutorialOptions {
    TutorialOptions::new(Mode::FineTune)
}

/// The tutorial's command line.
#[derive(clap::Args, Debug)]
pub struct TutorialArgs {
    /// An extracted cifar-10-batches-bin directory [default: CIFAR-10, downloaded and cached;
    /// the bundled sample when it can be neither found nor downloaded]
    #[arg(long, value_name = "DIR", help_heading = "Data")]
    pub data_dir: Option<PathBuf>,

    /// Your own images: DIR/train/<class>/* and DIR/val/<class>/* (and DIR/test/<class>/*), or
    /// DIR/<class>/* split by --holdout
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "data_dir",
        help_heading = "Data"
    )]
    pub image_folder: Option<PathBuf>,

    /// The bundled 1,000-image CIFAR-10 sample
    #[arg(long, conflicts_with_all = ["data_dir", "image_folder"], help_heading = "Data")]
    pub sample: bool,

    /// Image folders: the NxN crops the network sees (the tutorial's transforms: training
    /// RandomResizedCrop(N) + flip, evaluation Resize(N*8/7) + CenterCrop(N); images are held
    /// with their shorter side at N*8/7)
    #[arg(long, value_name = "N", default_value_t = defaults().image_size, help_heading = "Data")]
    pub image_size: u32,

    /// Image folders without train/: the fraction held out for validation and test
    #[arg(long, value_name = "F", default_value_t = defaults().holdout, help_heading = "Data")]
    pub holdout: f64,

    /// Starting weights: auto (the architecture's ImageNet weights, downloaded and cached;
    /// the bundled finetune_mini.rotation backbone when unavailable, or random initialisation
    /// of an --arch asked for), none (random initialisation), a registry name
    /// such as resnet50.v2, a timm repository on the Hugging Face Hub such as
    /// hf-hub:timm/resnet50.a1_in1k, or a .pth / .safetensors file
    #[arg(
        long,
        value_name = "auto|none|NAME|FILE",
        default_value = "auto",
        value_parser = OsStringValueParser::new().try_map(weights_choice),
        help_heading = "Model"
    )]
    pub weights: WeightsChoice,

    /// A checkpoint holding several state_dicts: the key of the one to load (e.g. model)
    #[arg(long, value_name = "KEY", value_parser = cli::utf8(), help_heading = "Model")]
    pub weights_key: Option<String>,

    /// Architecture by its torchvision name: resnet18..resnet152, convnext_tiny..convnext_large,
    /// efficientnet_b0..b7, efficientnet_v2_s/m/l, mobilenet_v3_small/large, vit_b_16,
    /// vit_b_32, vit_l_16 [default: the weights' own; resnet18]
    #[arg(long, value_name = "NAME", value_parser = cli::utf8(), help_heading = "Model")]
    pub arch: Option<String>,

    /// Epochs [default: 5; 15 with fewer than 4000 training images, as the bundled sample]
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub epochs: Option<usize>,

    /// Images per batch [default: 128; 32 with fewer than 4000 training images]
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub batch_size: Option<usize>,

    /// Learning rate (SGD with momentum 0.9; StepLR divides it by 10 every 7 epochs) [default:
    /// 0.001; with fewer than 4000 training images 0.01, or 0.1 for the feature extractor's head]
    #[arg(long, value_name = "X", help_heading = "Training")]
    pub lr: Option<f64>,

    /// Seed of the split, the order and the augmentation
    #[arg(long, value_name = "N", default_value_t = defaults().seed, help_heading = "Training")]
    pub seed: u64,

    /// Use at most N training images [default: all]
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub train_limit: Option<usize>,

    /// Use at most N validation and N test images [default: all]
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub val_limit: Option<usize>,

    /// CIFAR and the sample: resize the 32x32 images to NxN pixels (224 matches ImageNet
    /// weights) [default: native size; image folders take --image-size]
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub upsample: Option<u32>,

    /// Device: auto (wgpu when built in and a GPU is present, else flex), flex, ndarray, wgpu,
    /// wgpu:N (the N-th discrete GPU) or cuda[:N]
    #[arg(long, value_parser = cli::device, default_value = "auto", help_heading = "Training")]
    pub device: DeviceChoice,

    /// Train data parallel over these devices, comma-separated, e.g. cuda:0,cuda:1 (flex,flex:
    /// two replicas on the CPU); the model lives on the first [default: --device alone]
    #[arg(
        long,
        value_name = "LIST",
        value_parser = cli::device,
        value_delimiter = ',',
        conflicts_with = "device",
        help_heading = "Training"
    )]
    pub devices: Vec<DeviceChoice>,

    /// Float type of the weights and activations: f32, bf16 or f16 (pure half precision, not
    /// PyTorch's autocast: Burn keeps no f32 master weights)
    #[arg(long, value_name = "T", value_parser = cli::precision, default_value = "f32", help_heading = "Training")]
    pub dtype: Precision,

    /// Batch-preparation threads [default: all cores]
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub workers: Option<usize>,

    /// Run directory: checkpoint, history, pictures, best model [default:
    /// runs/<example>-<unix time>]
    #[arg(long, value_name = "DIR", help_heading = "Training")]
    pub out: Option<PathBuf>,

    /// Continue the run in --out from its checkpoint
    #[arg(long, requires = "out", help_heading = "Training")]
    pub resume: bool,

    /// Label smoothing of the training loss, in [0, 1) (torchvision's recipes: 0.1)
    /// [default: 0, off]
    #[arg(long, value_name = "E", help_heading = "Regularisation")]
    pub label_smoothing: Option<f64>,

    /// MixUp with Beta(A, A) ratios (torchvision's recipes: 0.2) [default: off]
    #[arg(long, value_name = "A", help_heading = "Regularisation")]
    pub mixup: Option<f64>,

    /// CutMix with Beta(A, A) ratios (torchvision's recipes: 1.0); with --mixup, each batch
    /// takes one of the two [default: off]
    #[arg(long, value_name = "A", help_heading = "Regularisation")]
    pub cutmix: Option<f64>,

    /// CIFAR and the sample: train on RandomResizedCrop(32, or --upsample) + flip instead of
    /// the flip alone (image folders always do)
    #[arg(long, help_heading = "Augmentation")]
    pub rrc: bool,

    /// TrivialAugmentWide after the flip (torchvision's recipes)
    #[arg(long, conflicts_with = "randaugment", help_heading = "Augmentation")]
    pub trivial_augment: bool,

    /// RandAugment with N operations of magnitude M (of 31 bins) after the flip, e.g. 2,9
    #[arg(long, value_name = "N,M", value_parser = randaugment, help_heading = "Augmentation")]
    pub randaugment: Option<RandAugment>,

    /// RandomErasing with probability P on the normalised tensor (torchvision's recipes:
    /// 0.25)
    #[arg(long, value_name = "P", help_heading = "Augmentation")]
    pub random_erasing: Option<f64>,

    /// Step the optimizer every N batches on their mean gradient (timm's --grad-accum-steps)
    /// [default: 1]
    #[arg(long, value_name = "N", help_heading = "Training features")]
    pub grad_accum: Option<usize>,

    /// Clip each parameter's gradient to this L2 norm (Burn's GradientClippingConfig::Norm)
    /// [default: off]
    #[arg(long, value_name = "X", help_heading = "Training features")]
    pub clip_grad_norm: Option<f64>,

    /// Keep an exponential moving average of the weights with this decay (timm's ModelEmaV3,
    /// with warm-up; e.g. 0.999), validated, selected and saved instead of the raw weights
    /// [default: off]
    #[arg(long, value_name = "DECAY", help_heading = "Training features")]
    pub ema: Option<f64>,

    /// fastai's fine_tune: N head-only epochs first, then --epochs epochs with everything
    /// unfrozen at half the learning rate (finetune only) [default: off]
    #[arg(long, value_name = "N", help_heading = "Training features")]
    pub freeze_epochs: Option<usize>,

    /// Also evaluate the test split with flip test-time augmentation
    #[arg(long, help_heading = "Training features")]
    pub tta: bool,

    /// Run fastai's learning-rate finder instead of training: writes lr_find.png into the run
    /// directory, prints the suggested rates and exits
    #[arg(long, conflicts_with = "resume", help_heading = "Training features")]
    pub lr_find: bool,
}

/// `--randaugment N,M`.
fn randaugment(value: &str) -> Result<RandAugment, String> {
    let (n, m) = value
        .split_once(',')
        .filter(|(_, m)| !m.contains(','))
        .ok_or_else(|| "expected N,M (operations, magnitude), e.g. 2,9".to_string())?;
    let parse = |v: &str| v.trim().parse::<u32>().map_err(|e| format!("{v:?}: {e}"));
    Ok(RandAugment::new(parse(n)?, parse(m)?, 31))
}

/// `--weights`: `auto`, `none`, an existing file, or a registry name (paths need not be UTF-8).
fn weights_choice(value: OsString) -> Result<WeightsChoice, String> {
    let path = PathBuf::from(&value);
    match value.to_str() {
        Some("auto") => Ok(WeightsChoice::Auto),
        Some("none") => Ok(WeightsChoice::None),
        Some(hub) if hub.starts_with(finetune::weights::HUB_PREFIX) => hub
            .parse()
            .map(WeightsChoice::Hub)
            .map_err(|e: finetune::Error| e.to_string()),
        _ if path.exists() => Ok(WeightsChoice::File(path)),
        None => Err("no such file".into()),
        Some(name) => name
            .parse::<Weights>()
            .map(WeightsChoice::Named)
            .map_err(|_| {
                "neither a file nor a known weights name (auto, none, resnet18, resnet50.v2, convnext_tiny.tv_in1k, ...)"
                    .into()
            }),
    }
}

impl TutorialArgs {
    /// Where the images come from.
    pub fn data(&self) -> DataChoice {
        if let Some(dir) = &self.data_dir {
            DataChoice::CifarDir(dir.clone())
        } else if let Some(dir) = &self.image_folder {
            DataChoice::ImageFolder(dir.clone())
        } else if self.sample {
            DataChoice::Sample
        } else {
            DataChoice::Auto
        }
    }

    /// The device the model lives on: the first of --devices, or --device.
    pub fn main_device(&self) -> DeviceChoice {
        self.devices.first().copied().unwrap_or(self.device)
    }

    /// How the images are loaded and split.
    pub fn data_options(&self) -> DataOptions {
        DataOptions {
            seed: self.seed,
            image_size: self.image_size,
            holdout: self.holdout,
        }
    }

    /// The options of `finetune::recipe::run` in `mode`.
    pub fn options(&self, mode: Mode) -> TutorialOptions {
        let mut o = TutorialOptions::new(mode);
        o.data = self.data();
        o.weights = self.weights.clone();
        o.weights_key = self.weights_key.clone();
        o.arch = self.arch.clone();
        o.epochs = self.epochs;
        o.batch_size = self.batch_size;
        o.lr = self.lr;
        o.seed = self.seed;
        o.train_limit = self.train_limit;
        o.val_limit = self.val_limit;
        o.upsample = self.upsample;
        o.device = self.device;
        o.precision = self.dtype;
        o.devices = self.devices.clone();
        o.workers = self.workers;
        o.out = self.out.clone();
        o.resume = self.resume;
        o.image_size = self.image_size;
        o.holdout = self.holdout;
        o.label_smoothing = self.label_smoothing;
        o.mixup_alpha = self.mixup;
        o.cutmix_alpha = self.cutmix;
        o.grad_accum_steps = self.grad_accum;
        o.clip_grad_norm = self.clip_grad_norm;
        o.ema_decay = self.ema;
        o.freeze_epochs = self.freeze_epochs;
        o.tta = self.tta;
        o.augment = self.augment();
        o
    }

    /// The training augmentations asked for.
    pub fn augment(&self) -> TrainAugment {
        TrainAugment {
            rrc: self.rrc,
            trivial_augment: self.trivial_augment,
            randaugment: self.randaugment,
            random_erasing: self.random_erasing.map(RandomErasing::new),
        }
    }
}

/// The library options its errors name, and their flags.
pub const FLAGS: &[(&str, &str)] = &[
    ("label_smoothing", "--label-smoothing"),
    ("mixup_alpha", "--mixup"),
    ("cutmix_alpha", "--cutmix"),
    ("TrivialAugmentWide", "--trivial-augment"),
    ("RandAugment", "--randaugment"),
    ("RandomErasing", "--random-erasing"),
    ("RandomResizedCrop, TrivialAugmentWide", "--rrc"),
    ("grad_accum_steps", "--grad-accum"),
    ("clip_grad_norm", "--clip-grad-norm"),
    ("ema_decay", "--ema"),
    ("freeze_epochs", "--freeze-epochs"),
    ("batch_size", "--batch-size"),
    ("image_size", "--image-size"),
    ("holdout", "--holdout"),
    ("upsample", "--upsample"),
    ("train_limit", "--train-limit"),
    ("val_limit", "--val-limit"),
    ("TutorialOptions::arch", "--arch"),
    ("`arch` of load_backbone", "--arch"),
    ("weights_key", "--weights-key"),
    ("LoadOptions::key", "--weights-key"),
    ("WeightsChoice::File", "--weights FILE"),
    ("TutorialOptions::out", "--out"),
    ("TutorialOptions::resume", "--resume"),
    ("bn_policy", "--bn"),
    ("cache_features", "--cache-features"),
];

/// Prints a library error on one line, naming the flags of the options it names.
pub fn fail(e: finetune::Error) -> ExitCode {
    eprintln!("error: {}", cli::with_flags(e.to_string(), FLAGS));
    ExitCode::FAILURE
}
