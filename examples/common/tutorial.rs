//! The command line shared by the `finetune` and `feature_extractor` examples: flags to
//! [`TutorialOptions`], then [`finetune::recipe::run`].

use std::process::ExitCode;
use std::sync::Arc;

use finetune::model::BnPolicy;
use finetune::recipe::{DataChoice, Mode, TutorialOptions, WeightsChoice, run_with_sink};
use finetune::weights::ResNetWeights;

use crate::args::Args;
use crate::progress::ConsoleProgress;

const KNOWN: &[&str] = &[
    "epochs",
    "batch-size",
    "lr",
    "train-limit",
    "val-limit",
    "device",
    "out",
    "resume",
    "seed",
    "upsample",
    "data-dir",
    "image-folder",
    "sample",
    "weights",
    "weights-key",
    "arch",
    "workers",
    "image-size",
    "holdout",
    "cache-features",
    "bn",
    "help",
];

fn usage(example: &str, mode: Mode) -> String {
    format!(
        "usage: cargo run --release --example {example} -- [options]

Reproduces PyTorch's transfer-learning tutorial on CIFAR-10 ({}).

data (default: CIFAR-10, downloaded and cached; the bundled sample when unavailable):
  --data-dir DIR        an extracted cifar-10-batches-bin directory
  --image-folder DIR    your own images: DIR/train/<class>/*, DIR/val/<class>/* [, DIR/test/<class>/*]
  --sample              the bundled 1,000-image CIFAR-10 sample
  --image-size N        image folders: resize to NxN at load (default 224)
  --holdout F           image folders without train/: fraction held out for val + test (0.1)
model:
  --weights auto|none|NAME|FILE   ImageNet weights (auto: download and cache; random
                                  initialisation when unavailable), a registry name such as
                                  resnet50.v2, or a .pth/.safetensors file
  --weights-key KEY     a checkpoint holding several state_dicts: the one to load (e.g. model)
  --arch resnet18|resnet34|resnet50|resnet101|resnet152   (default resnet18)
training:
  --epochs N (5) --batch-size N (128) --lr X (0.001) --seed N (42)
  --train-limit N --val-limit N   use fewer images
  --upsample N          resize images to NxN (224 matches ImageNet weights)
  --device auto|flex|ndarray|wgpu
  --workers N           batch-preparation threads (default: all cores){}
  --out DIR             run directory (default runs/{example}-<time>)
  --resume              continue the run in --out from its checkpoint",
        match mode {
            Mode::FineTune => "every layer trains",
            Mode::FeatureExtractor => "frozen backbone, only the new head trains",
        },
        match mode {
            Mode::FeatureExtractor => "\n  --cache-features      compute the backbone's features once (no random flip; BatchNorm frozen)
  --bn train-mode|frozen|trainable   the frozen backbone's BatchNorm: train-mode (default, as the
                        tutorial: batch statistics, running statistics updated, affine fixed),
                        frozen (eval mode, all fixed) or trainable (fastai's train_bn)",
            Mode::FineTune => "",
        }
    )
}

fn options(args: &Args, mode: Mode) -> Result<TutorialOptions, String> {
    let mut o = TutorialOptions::new(mode);
    o.epochs = args.or("epochs", o.epochs)?;
    o.batch_size = args.or("batch-size", o.batch_size)?;
    o.lr = args.or("lr", o.lr)?;
    o.seed = args.or("seed", o.seed)?;
    o.train_limit = args.opt("train-limit")?;
    o.val_limit = args.opt("val-limit")?;
    o.upsample = args.opt("upsample")?;
    o.workers = args.opt("workers")?;
    o.image_size = args.or("image-size", o.image_size)?;
    o.holdout = args.or("holdout", o.holdout)?;
    o.resume = args.flag("resume");
    o.cache_features = args.flag("cache-features");
    if let Some(bn) = args.get("bn") {
        if mode != Mode::FeatureExtractor {
            return Err("--bn applies to the feature extractor (frozen backbone) only".into());
        }
        o.bn_policy = Some(BnPolicy::parse(bn).ok_or_else(|| {
            format!("--bn: '{bn}' is not a BatchNorm policy (train-mode, frozen, trainable)")
        })?);
    }
    if let Some(device) = args.get("device") {
        o.device = device.parse().map_err(|e: finetune::Error| e.to_string())?;
    }
    if let Some(out) = args.path("out") {
        o.out = Some(out);
    }
    if let Some(arch) = args.get("arch") {
        o.arch = Some(arch.to_string());
    }
    let sources = [
        args.get("data-dir").is_some(),
        args.get("image-folder").is_some(),
        args.flag("sample"),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err("choose one of --data-dir, --image-folder and --sample".into());
    }
    if let Some(dir) = args.path("data-dir") {
        o.data = DataChoice::CifarDir(dir);
    } else if let Some(dir) = args.path("image-folder") {
        o.data = DataChoice::ImageFolder(dir);
    } else if args.flag("sample") {
        o.data = DataChoice::Sample;
    }
    o.weights_key = args.get("weights-key").map(str::to_string);
    o.weights = match (args.get("weights"), args.path("weights")) {
        (None, None) | (Some("auto"), _) => WeightsChoice::Auto,
        (Some("none"), _) => WeightsChoice::None,
        (_, Some(path)) if path.exists() => WeightsChoice::File(path),
        (None, Some(path)) => {
            return Err(format!("--weights: '{}' does not exist", path.display()));
        }
        (Some(value), _) => match value.parse::<ResNetWeights>() {
            Ok(w) => WeightsChoice::Named(w),
            Err(_) => {
                return Err(format!(
                    "--weights: '{value}' is neither a file nor a known weights name (auto, none, resnet18, resnet50.v2, ...)"
                ));
            }
        },
    };
    Ok(o)
}

/// Parses the command line and runs the tutorial in `mode`.
pub fn main(example: &str, mode: Mode) -> ExitCode {
    // Keep freed activation buffers in the process between steps (see its docs).
    finetune::tune_allocator();
    let result = Args::parse(&["resume", "sample", "cache-features"]).and_then(|args| {
        if args.flag("help") {
            println!("{}", usage(example, mode));
            return Ok(None);
        }
        args.reject_unknown(KNOWN)?;
        options(&args, mode).map(Some)
    });
    let opts = match result {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e} (see --help)");
            return ExitCode::from(2);
        }
    };
    // The console sink is dropped (its bar cleared) before an error is printed.
    let result = run_with_sink(&opts, Arc::new(ConsoleProgress::new()));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
