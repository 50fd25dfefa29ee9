//! Classify images with pretrained ResNet weights, as torchvision's "Classify an image" recipe does
//! (`weights.transforms()`, `model(batch).softmax(1)`, `weights.meta["categories"]`).
//!
//! ```text
//! cargo run --release --example predict -- --weights auto --image a.jpg [--image b.png ...] [--top 5]
//! cargo run --release --example predict -- --weights resnet50.v2 --image cat.jpg
//! cargo run --release --example predict -- --weights my-resnet.pth --image a.jpg     # arch read from the file
//! cargo run --release --example predict -- --weights w.safetensors --input-tensor x.safetensors --json
//! ```
//!
//! `--weights` is `auto` (the default weights of `--arch`, ResNet-18 when not given), a registry
//! name (`resnet18`, `resnet50.v2`, `ResNet50_Weights.IMAGENET1K_V2`, ...) downloaded into the
//! cache (`FINETUNE_CACHE`, `FINETUNE_OFFLINE=1`), or a `.pth` / `.safetensors` file.
//! `--input-tensor FILE` reads a safetensors tensor named `input` `[N, 3, H, W]`, already
//! normalised; with `--json` it prints `{"logits": [[...]], "features": [[...]]}`.
//! `--arch` (`auto` reads it from the file) and `--num-classes` choose the architecture of a
//! file; `--weights-key KEY` picks the state_dict of a checkpoint holding several (`model`,
//! `ema`, as the error lists them); `--device` is `auto`, `flex`, `ndarray` or `wgpu`. Errors
//! are one line on stderr.

#[allow(unused_imports)]
use finetune::model::VisionModel;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use finetune::DeviceChoice;
use finetune::data::read_image;
use finetune::download::Cache;
use finetune::weights::{Classifier, LoadOptions, WeightsSource, read_input_tensor};

const USAGE: &str = "usage: predict --weights <auto|NAME|FILE> (--image FILE [--image FILE ...] | --input-tensor FILE.safetensors) [--top K] [--json] [--arch auto|resnet18|resnet34|resnet50|resnet101|resnet152] [--num-classes N] [--weights-key KEY] [--device auto|flex|ndarray|wgpu]";

#[derive(Debug, Default)]
struct Args {
    weights: Option<OsString>,
    images: Vec<PathBuf>,
    input_tensor: Option<PathBuf>,
    top: usize,
    json: bool,
    arch: Option<String>,
    num_classes: Option<usize>,
    weights_key: Option<String>,
    device: DeviceChoice,
}

/// Arguments as given: paths (`--image`, `--input-tensor`, `--weights`) need not be UTF-8; every other
/// value must be.
fn parse_args(args: impl Iterator<Item = OsString>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        top: 5,
        ..Args::default()
    };
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        let flag = flag.to_string_lossy().into_owned();
        let mut raw_value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value (see --help)"))
        };
        if flag == "--image" {
            parsed.images.push(raw_value("--image")?.into());
            continue;
        }
        if flag == "--weights" {
            parsed.weights = Some(raw_value("--weights")?);
            continue;
        }
        if flag == "--input-tensor" {
            parsed.input_tensor = Some(raw_value("--input-tensor")?.into());
            continue;
        }
        let mut value = |name: &str| {
            raw_value(name)?
                .into_string()
                .map_err(|v| format!("{name}: '{}' is not valid UTF-8", v.to_string_lossy()))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--top" => {
                let v = value("--top")?;
                parsed.top = v
                    .parse()
                    .ok()
                    .filter(|&k| k > 0)
                    .ok_or_else(|| format!("--top expects a positive integer, got '{v}'"))?;
            }
            "--json" => parsed.json = true,
            "--arch" => parsed.arch = Some(value("--arch")?),
            "--weights-key" => parsed.weights_key = Some(value("--weights-key")?),
            "--num-classes" => {
                let v = value("--num-classes")?;
                parsed.num_classes = Some(v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    format!("--num-classes expects a positive integer, got '{v}'")
                })?);
            }
            "--device" => {
                parsed.device = value("--device")?
                    .parse()
                    .map_err(|e: finetune::Error| e.to_string())?;
            }
            other => return Err(format!("unknown argument '{other}' (see --help)")),
        }
    }
    if parsed.images.is_empty() == parsed.input_tensor.is_none() {
        return Err("give either --image (one or more) or --input-tensor (see --help)".into());
    }
    Ok(Some(parsed))
}

fn run(args: Args) -> finetune::Result<()> {
    let device = args.device.device()?;
    let source = WeightsSource::parse_os(
        args.weights.as_deref().unwrap_or("auto".as_ref()),
        args.arch.as_deref(),
    )?;
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
    eprintln!("weights: {}", classifier.description);
    eprintln!("loaded: {}", classifier.report);

    if let Some(path) = &args.input_tensor {
        let input = read_input_tensor(path, classifier.model.config().in_channels, &device)?;
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
    let predictions = classifier.classify(&images, args.top)?;
    if args.json {
        let out: Vec<_> = args
            .images
            .iter()
            .zip(&predictions)
            .map(|(path, top)| {
                serde_json::json!({
                    "image": path.display().to_string(),
                    "top": top.iter().map(|p| serde_json::json!({
                        "class": p.class, "name": p.name, "probability": p.probability
                    })).collect::<Vec<_>>(),
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
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
