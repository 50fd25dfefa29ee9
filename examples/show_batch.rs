//! Writes one augmented training batch as a picture (the tutorial's `imshow` of a batch).
//!
//! ```text
//! cargo run --release --example show_batch -- --data-dir DIR --out batch.png
//! cargo run --release --example show_batch -- --image-folder train/ --size 224 --out batch.png
//! cargo run --release --example show_batch -- --sample --augment cifar
//! ```
//!
//! `DIR` is an extracted `cifar-10-batches-bin`; without `--data-dir` or `--image-folder` the
//! CIFAR-10 sample shipped with the crate is used. The batch goes through the same loader,
//! transforms and normalisation as training, and is de-normalised for display.

#[path = "common/args.rs"]
mod args;

#[allow(unused_imports)]
use finetune::model::VisionModel;
use std::process::ExitCode;
use std::sync::Arc;

use burn::tensor::Device;
use finetune::data::{
    Cifar10, ImageDataset, ImageFolder, ImageFolderOptions, ImageLoader, LoaderConfig, Normalize,
    Pipeline, RandomCrop, RandomHorizontalFlip,
};
use finetune::viz::{GridStyle, save_grid_with};

const USAGE: &str = "usage: show_batch [--data-dir DIR | --image-folder DIR | --sample] \
[--out batch.png] [--count N] [--augment flip|cifar|none] [--size N] [--seed N] [--epoch N]";

const KNOWN: &[&str] = &[
    "data-dir",
    "image-folder",
    "sample",
    "out",
    "count",
    "augment",
    "size",
    "seed",
    "epoch",
];

fn run() -> Result<(), String> {
    let args = args::Args::parse(&["sample"])?;
    if args.flag("help") {
        println!("{USAGE}");
        return Ok(());
    }
    args.reject_unknown(KNOWN)
        .map_err(|e| format!("{e} (see --help)"))?;
    let out = args
        .path("out")
        .unwrap_or_else(|| std::path::PathBuf::from("batch.png"));
    let count: usize = args.or("count", 32)?;
    if count == 0 {
        return Err("--count must be at least 1".into());
    }
    let seed: u64 = args.or("seed", 0)?;
    let epoch: usize = args.or("epoch", 0)?;
    let size: Option<u32> = args.opt("size")?;
    if size == Some(0) {
        return Err("--size must be at least 1 (pixels per side)".into());
    }
    let augment = args.get("augment").unwrap_or("flip");

    let (dataset, classes, normalize): (ImageDataset, Vec<String>, Normalize) =
        if let Some(dir) = args.path("image-folder") {
            let mut options = ImageFolderOptions::default();
            if let Some(s) = size {
                options = options.resize(s);
            }
            let folder = ImageFolder::open_with(&dir, options).map_err(|e| e.to_string())?;
            println!(
                "{}: {} images, classes {:?}",
                dir.display(),
                folder.len(),
                folder.classes()
            );
            if let Some(line) = folder.load_summary() {
                println!("{line}");
            }
            (
                folder.dataset(),
                folder.classes().to_vec(),
                Normalize::imagenet(),
            )
        } else {
            let cifar = match args.path("data-dir") {
                Some(dir) => Cifar10::from_dir(dir),
                None => Cifar10::sample(),
            }
            .map_err(|e| e.to_string())?;
            println!(
                "CIFAR-10 from {}: {} training images",
                cifar.dir().display(),
                cifar.train().len()
            );
            (
                cifar.train(),
                cifar.classes().to_vec(),
                Normalize::cifar10(),
            )
        };

    let mut pipeline = match augment {
        "flip" => Pipeline::new().then(RandomHorizontalFlip::default()),
        "cifar" => Pipeline::new()
            .then(RandomCrop::new(32, 4))
            .then(RandomHorizontalFlip::default()),
        "none" => Pipeline::new(),
        other => return Err(format!("--augment: unknown '{other}' (flip, cifar, none)")),
    }
    .normalize(normalize);
    if let (Some(s), None) = (size, args.get("image-folder")) {
        pipeline = pipeline.upsample(s);
    }

    if dataset.len() < count.max(1) {
        return Err(format!(
            "--count {count} is larger than the {} images of the dataset: lower --count",
            dataset.len()
        ));
    }
    let loader = ImageLoader::new(
        Arc::new(dataset),
        pipeline,
        LoaderConfig::train(count.max(1), seed),
        Device::default(),
    );
    loader.check().map_err(|e| e.to_string())?;
    let batch = loader
        .host_iter(epoch)
        .next()
        .ok_or("the dataset has fewer images than --count")?
        .map_err(|e| e.to_string())?;
    let plane = 3 * batch.width * batch.height;
    let images: Vec<_> = batch
        .images
        .chunks_exact(plane)
        .map(|chw| normalize.denormalize(chw, batch.width as u32, batch.height as u32))
        .collect();
    let labels: Vec<usize> = batch.targets.iter().map(|&t| t as usize).collect();
    let style = GridStyle {
        title: Some(format!(
            "epoch {epoch}, seed {seed}, augment {augment}: {} images",
            images.len()
        )),
        ..GridStyle::default()
    };
    save_grid_with(&out, &images, &classes, &labels, None, &style).map_err(|e| e.to_string())?;
    println!(
        "wrote {} ({} images of {}x{})",
        out.display(),
        images.len(),
        batch.width,
        batch.height
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
