//! Writes one augmented training batch as a picture (the tutorial's `imshow` of a batch).
//!
//! ```text
//! cargo run --release --example show_batch -- --data-dir DIR --out batch.png
//! cargo run --release --example show_batch -- --image-folder train/ --size 224 --out batch.png
//! cargo run --release --example show_batch -- --image-folder train/ --augment tutorial
//! cargo run --release --example show_batch -- --sample --augment cifar
//! ```
//!
//! `DIR` is an extracted `cifar-10-batches-bin`; without `--data-dir` or `--image-folder` the
//! CIFAR-10 sample shipped with the crate is used. The batch goes through the same loader and
//! normalisation as training with the augmentation `--augment` names, and is de-normalised for
//! display. `--augment tutorial` shows what the recipe trains image folders with
//! (`RandomResizedCrop` + flip).

#[path = "common/cli.rs"]
mod cli;
#[path = "common/downloads.rs"]
mod downloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use burn::tensor::Device;
use finetune::data::{
    Cifar10, ImageDataset, ImageFolder, ImageFolderOptions, ImageLoader, LoaderConfig, Normalize,
    Pipeline, RandomCrop, RandomHorizontalFlip, RandomResizedCrop,
};
use finetune::recipe::held_size;
use finetune::viz::{GridStyle, save_grid_with};

/// Writes one augmented training batch as a picture (the tutorial's `imshow` of a batch).
#[derive(clap::Parser, Debug)]
#[command(name = "show_batch", allow_negative_numbers = true)]
struct Args {
    /// An extracted cifar-10-batches-bin directory [default: the bundled CIFAR-10 sample]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// A folder of class folders, DIR/<class>/*
    #[arg(long, value_name = "DIR", conflicts_with = "data_dir")]
    image_folder: Option<PathBuf>,

    /// The bundled CIFAR-10 sample (the default)
    #[arg(long, conflicts_with_all = ["data_dir", "image_folder"])]
    sample: bool,

    /// The picture to write
    #[arg(long, value_name = "FILE", default_value = "batch.png")]
    out: PathBuf,

    /// Images in the batch
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = cli::positive::<usize>)]
    count: usize,

    /// The training augmentation
    #[arg(long, value_enum, default_value_t = Augment::Flip)]
    augment: Augment,

    /// Resize images to NxN pixels (image folders: at load; CIFAR: before the augmentation)
    /// [default: native size]
    #[arg(long, value_name = "N", value_parser = cli::positive::<u32>)]
    size: Option<u32>,

    /// Seed of the order and of the augmentation
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,

    /// The epoch whose first batch is drawn (every epoch has its own order and augmentation)
    #[arg(long, value_name = "N", default_value_t = 0)]
    epoch: usize,
}

/// `--augment`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Augment {
    /// Random horizontal flip (what CIFAR trains with at 32x32)
    Flip,
    /// The tutorial's RandomResizedCrop(N) + random horizontal flip, N = --size (224 by
    /// default): what image folders train with (held with their shorter side at N*8/7)
    Tutorial,
    /// Random 32x32 crop with 4 pixels of padding, then a random horizontal flip
    Cifar,
    /// No augmentation
    None,
}

impl Augment {
    /// The flag's value.
    fn name(self) -> &'static str {
        match self {
            Augment::Flip => "flip",
            Augment::Tutorial => "tutorial",
            Augment::Cifar => "cifar",
            Augment::None => "none",
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let Args {
        data_dir,
        image_folder,
        out,
        count,
        augment,
        size,
        seed,
        epoch,
        sample: _,
    } = args;
    let (dataset, classes, normalize): (ImageDataset, Vec<String>, Normalize) =
        if let Some(dir) = &image_folder {
            let mut options = ImageFolderOptions::default();
            if let Augment::Tutorial = augment {
                options = options.resize_shorter(held_size(size.unwrap_or(224)));
            } else if let Some(s) = size {
                options = options.resize(s);
            }
            let folder = ImageFolder::open_with(dir, options).map_err(|e| e.to_string())?;
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
            let cifar = match &data_dir {
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
        Augment::Flip => Pipeline::new().then(RandomHorizontalFlip::default()),
        Augment::Tutorial => Pipeline::new()
            .then(RandomResizedCrop::new(size.unwrap_or(224)))
            .then(RandomHorizontalFlip::default()),
        Augment::Cifar => Pipeline::new()
            .then(RandomCrop::new(32, 4))
            .then(RandomHorizontalFlip::default()),
        Augment::None => Pipeline::new(),
    }
    .normalize(normalize);
    if let (Some(s), None, false) = (size, &image_folder, matches!(augment, Augment::Tutorial)) {
        pipeline = pipeline.upsample(s);
    }

    if dataset.len() < count {
        return Err(format!(
            "--count {count} is larger than the {} images of the dataset: lower --count",
            dataset.len()
        ));
    }
    let loader = ImageLoader::new(
        Arc::new(dataset),
        pipeline,
        LoaderConfig::train(count, seed),
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
            "epoch {epoch}, seed {seed}, augment {}: {} images",
            augment.name(),
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
    cli::quiet_broken_pipe();
    downloads::report_on_console();
    let args = match cli::parse::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
