//! Classify images with pretrained weights of any registered architecture (ResNet, ConvNeXt,
//! EfficientNet, MobileNetV3, ViT), as torchvision's "Classify an image" recipe does
//! (`weights.transforms()`, `model(batch).softmax(1)`, `weights.meta["categories"]`).
//!
//! ```text
//! cargo run --release --example predict -- --weights auto --image a.jpg [--image b.png ...] [--top 5]
//! cargo run --release --example predict -- --weights resnet50.v2 --image cat.jpg
//! cargo run --release --example predict -- --weights convnext_tiny.tv_in1k --image cat.jpg
//! cargo run --release --example predict -- --weights my-resnet.pth --image a.jpg     # arch read from the file
//! cargo run --release --example predict -- --weights w.safetensors --input-tensor x.safetensors --json
//! ```
//!
//! `--weights` is `auto`, a registry name downloaded into the cache, a timm repository on the
//! Hugging Face Hub (`hf-hub:timm/resnet50.a1_in1k`, with timm's preprocessing), or a `.pth` /
//! `.safetensors` file; `--help` lists every flag. Errors are one line on stderr.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/downloads.rs"]
mod downloads;

use finetune::model::VisionModel;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use finetune::DeviceChoice;
use finetune::data::{Interpolation, read_image};
use finetune::download::Cache;
use finetune::weights::{Classifier, LoadOptions, WeightsSource, read_input_tensor};

/// Classifies images with pretrained weights of any registered architecture (torchvision's
/// "Classify an image" recipe).
#[derive(clap::Parser, Debug)]
#[command(name = "predict", allow_negative_numbers = true)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["images", "input_tensor"])))]
struct Args {
    /// Weights: auto (the default weights of --arch; ResNet-18 when not given), a registry
    /// name (resnet18, resnet50.v2, convnext_tiny.tv_in1k, ResNet50_Weights.IMAGENET1K_V2,
    /// ViT_B_16_Weights.DEFAULT, ...) downloaded into the
    /// cache (FINETUNE_CACHE, FINETUNE_OFFLINE=1), a timm repository on the Hugging Face Hub
    /// (hf-hub:timm/resnet50.a1_in1k; HF_HOME, HF_ENDPOINT), or a .pth / .safetensors file
    #[arg(long, value_name = "auto|NAME|FILE", default_value = "auto")]
    weights: OsString,

    /// An image to classify (repeat the flag for several)
    #[arg(long = "image", value_name = "FILE")]
    images: Vec<PathBuf>,

    /// Instead of images: a safetensors file whose tensor `input` [N, 3, H, W] is already
    /// normalised
    #[arg(long, value_name = "FILE")]
    input_tensor: Option<PathBuf>,

    /// Predictions shown per image
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = cli::positive::<usize>)]
    top: usize,

    /// Print JSON (images: [{"image", "top": [{"class", "name", "probability"}], "logits"}];
    /// with --input-tensor: {"logits": [[...]], "features": [[...]]})
    #[arg(long)]
    json: bool,

    /// Architecture of a weights file: auto (read from the file) or a torchvision name
    /// (resnet50, convnext_tiny, efficientnet_b0, mobilenet_v3_large, vit_b_16, ...)
    /// [default: auto]
    #[arg(long, value_name = "NAME", value_parser = cli::utf8())]
    arch: Option<String>,

    /// Classes of a weights file's head [default: read from the file]
    #[arg(long, value_name = "N", value_parser = cli::positive::<usize>)]
    num_classes: Option<usize>,

    /// A checkpoint holding several state_dicts (model, ema, ... as the error lists them): the
    /// key of the one to load
    #[arg(long, value_name = "KEY", value_parser = cli::utf8())]
    weights_key: Option<String>,

    /// Device: auto (wgpu when built in and a GPU is present, else flex), flex, ndarray or wgpu
    #[arg(long, value_parser = cli::device, default_value = "auto")]
    device: DeviceChoice,

    /// Resize the shorter side to N pixels before the center crop [default: the weights'
    /// preset; for a file, that of its architecture's torchvision weights]
    #[arg(long, value_name = "N", value_parser = cli::positive::<u32>, help_heading = "Preprocessing")]
    resize: Option<u32>,

    /// Side of the center crop, pixels [default: the weights' preset]
    #[arg(long, value_name = "N", value_parser = cli::positive::<u32>, help_heading = "Preprocessing")]
    crop: Option<u32>,

    /// Resampling filter of the resize: bilinear or bicubic [default: the weights' preset]
    #[arg(long, value_name = "MODE", value_parser = interpolation, help_heading = "Preprocessing")]
    interpolation: Option<Interpolation>,
}

fn interpolation(value: &str) -> Result<Interpolation, String> {
    Interpolation::parse(value).ok_or_else(|| "expected bilinear or bicubic".into())
}

/// The library options its errors name, and their flags.
const FLAGS: &[(&str, &str)] = &[
    ("LoadOptions::key", "--weights-key"),
    ("`arch` of `Classifier::load`", "--arch"),
    ("`num_classes` of `Classifier::load`", "--num-classes"),
    ("AnyModel::from_weights_file", "--arch auto"),
];

fn run(args: Args) -> finetune::Result<()> {
    let device = args.device.device()?;
    let source = WeightsSource::parse_os(&args.weights, args.arch.as_deref())?;
    let cache = Cache::from_env()?;
    let options = match &args.weights_key {
        Some(key) => LoadOptions::strict().key(key),
        None => LoadOptions::strict(),
    };
    let classifier = Classifier::load_with(
        &source,
        args.arch.as_deref(),
        args.num_classes,
        &options,
        &cache,
        &device,
    )?;
    let mut classifier = classifier;
    classifier.preprocess = classifier
        .preprocess
        .with(args.resize, args.crop, args.interpolation);
    eprintln!("weights: {}", classifier.description);
    eprintln!("loaded: {}", classifier.report);

    if let Some(path) = &args.input_tensor {
        let input = read_input_tensor(path, classifier.model.in_channels(), &device)?;
        if args.json {
            println!("{}", classifier.logits_and_features_json(input)?);
        } else {
            let top = classifier.top_k(classifier.model.forward(input), args.top);
            for (i, predictions) in top.iter().enumerate() {
                println!("{}[{i}]", path.display());
                print_predictions(predictions);
            }
        }
        return Ok(());
    }

    // Truncated files are errors here too (`read_image`), never images filled with grey.
    let images = args
        .images
        .iter()
        .map(|p| read_image(p).map(image::DynamicImage::ImageRgb8))
        .collect::<Result<Vec<_>, _>>()?;
    let p = classifier.preprocess;
    eprintln!(
        "preprocessing: resize {} ({}), center crop {}, mean {:?}, std {:?}",
        p.resize, p.interpolation, p.crop, p.mean, p.std
    );
    let logits = classifier.logits(&images)?;
    let classes = logits.dims()[1];
    let values = logits
        .to_data()
        .try_to_vec::<f32>()
        .map_err(|e| finetune::Error::InvalidConfig(format!("reading the logits back: {e:?}")))?;
    let predictions = classifier.top_k(logits, args.top);
    if args.json {
        let out: Vec<_> = args
            .images
            .iter()
            .zip(&predictions)
            .zip(values.chunks(classes.max(1)))
            .map(|((path, top), logits)| {
                serde_json::json!({
                    "image": path.display().to_string(),
                    "top": top.iter().map(|p| serde_json::json!({
                        "class": p.class, "name": p.name, "probability": p.probability
                    })).collect::<Vec<_>>(),
                    "logits": logits,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(out));
    } else {
        for (path, top) in args.images.iter().zip(&predictions) {
            println!("{}", path.display());
            print_predictions(top);
        }
    }
    Ok(())
}

fn print_predictions(predictions: &[finetune::weights::Prediction]) {
    for (rank, p) in predictions.iter().enumerate() {
        println!(
            "  {:>2}. {:>6.2}%  {} ({})",
            rank + 1,
            100.0 * p.probability,
            p.name,
            p.class
        );
    }
}

fn main() -> ExitCode {
    cli::quiet_broken_pipe();
    downloads::report_on_console();
    let args = match cli::parse::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::with_flags(e.to_string(), FLAGS));
            ExitCode::FAILURE
        }
    }
}
