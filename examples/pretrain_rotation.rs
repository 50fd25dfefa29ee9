//! Pretrains the crate's bundled backbone, `finetune_mini` (ResNet-18's topology at a quarter
//! of its widths, CIFAR stem, 0.7 M parameters), without labels: self-supervised rotation
//! prediction (Gidaris, Singh & Komodakis, "Unsupervised Representation Learning by Predicting
//! Image Rotations", ICLR 2018). Every image is shown at 0, 90, 180 and 270 degrees and the
//! network learns which rotation it sees; the class labels are never read.
//!
//! The images are the CIFAR-10 training images of a folder `DIR/<class>/*.jpg` (the class
//! folders are only where the files are) **minus every image of the bundled sample**: the
//! sample (`data/cifar10-sample`) is made of the first 120 files by name of each class, so those
//! are dropped, and the run checks, image by image, that every bundled sample image is among the
//! dropped ones. The fine-tuning examples' offline default then starts from weights that have
//! never seen the images they are evaluated on.
//!
//! Trained by the crate's own Learner (SGD with Nesterov momentum, weight decay 5e-4, one-cycle
//! schedule per batch, random crop with 4-pixel padding; no flip, which would turn a 90-degree
//! rotation into a 270-degree one), on 2,000 held-out images' rotations for validation.
//!
//! The best epoch's network is written as a PyTorch-compatible `.safetensors` state_dict
//! (`weights::save_safetensors`) with its SHA-256: the registry's `finetune_mini.rotation`.
//!
//! `--extra-blocks N` tries Gidaris et al.'s observation that a rotation network's last block
//! specialises in rotations: it pretrains N more residual blocks in the last stage, drops them
//! with the classifier, and fits a new rotation classifier on the shipped network's frozen
//! features. With 4 epochs it did not help: a linear probe of the pooled features on the
//! bundled sample gave 40.5% with one extra block against 41.5% without (README), so the
//! shipped weights use the default, none.
//!
//! ```text
//! cargo run --release --example pretrain_rotation -- --images ../shared/data/cifar10-jpg/train \
//!     --epochs 4 --out runs/rotation --weights-out finetune_mini_rotation.safetensors
//! ```

#[path = "common/cli.rs"]
mod cli;
#[path = "common/progress.rs"]
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use finetune::data::functional::rot90;
use finetune::data::rng::SeededRng;
use finetune::data::{
    Cifar10, ImageDataset, ImageFolder, ImageFolderOptions, ImageLoader, LoaderConfig, Normalize,
    Pipeline, RandomCrop, default_workers,
};
use finetune::model::{
    AnyConfig, AnyModel, BnPolicy, ModelConfig, ResNetConfig, VisionModel, create_model,
};
use finetune::train::{Learner, LearnerConfig, OptimizerConfig, Schedule, ScheduleUnit, evaluate};
use finetune::weights::LoadOptions;
use image::RgbImage;

use progress::ConsoleProgress;

/// The rotation classes, in label order (degrees, counter-clockwise as `torch.rot90`).
const ROTATIONS: [&str; 4] = ["0", "90", "180", "270"];

/// Pretrains finetune_mini on rotation prediction (Gidaris et al., 2018).
#[derive(clap::Parser, Debug)]
#[command(name = "pretrain_rotation")]
struct Args {
    /// CIFAR-10 training images as DIR/<class>/*.jpg (labels are not used)
    #[arg(
        long,
        value_name = "DIR",
        default_value = "../shared/data/cifar10-jpg/train"
    )]
    images: PathBuf,
    /// Files (by name, per class folder) left out: the bundled sample's source images
    #[arg(long, value_name = "N", default_value_t = 120)]
    exclude_first: usize,
    /// Use at most N images per class after the exclusion (for a quick trial)
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Images (before rotation) held out for validation
    #[arg(long, value_name = "N", default_value_t = 2000)]
    val_images: usize,
    /// Epochs (each shows every training image at all four rotations)
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Peak learning rate of the one-cycle schedule
    #[arg(long, default_value_t = 0.2)]
    lr: f64,
    /// Batch size
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Seed of the split, the shuffles and the augmentation
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run directory (checkpoints, history, curves; `--resume` continues from it)
    #[arg(long, default_value = "runs/pretrain_rotation")]
    out: PathBuf,
    /// Continue an interrupted run from its last checkpoint
    #[arg(long)]
    resume: bool,
    /// Where the pretrained weights go (safetensors, torchvision names)
    #[arg(long, value_name = "FILE")]
    weights_out: Option<PathBuf>,
    /// Residual blocks added to the last stage for pretraining only (dropped afterwards with
    /// the rotation classifier: they absorb the task's specialisation)
    #[arg(long, value_name = "N", default_value_t = 0)]
    extra_blocks: usize,
    /// Epochs fitting the shipped network's rotation classifier on its frozen features
    #[arg(long, value_name = "N", default_value_t = 4)]
    head_epochs: usize,
    /// Learning rate of that classifier (SGD, momentum 0.9, cosine to 0)
    #[arg(long, value_name = "X", default_value_t = 0.01)]
    head_lr: f64,
}

fn main() -> ExitCode {
    cli::quiet_broken_pipe();
    finetune::tune_allocator();
    let args = match cli::parse::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match pretrain(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pretrain(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let device = burn::tensor::Device::flex();

    // 1. The images, minus the bundled sample's.
    let folder = ImageFolder::open_with(&args.images, ImageFolderOptions::default())?;
    let (kept, dropped) = split_off_sample(&folder, args.exclude_first, args.limit);
    check_sample_excluded(&folder, &dropped)?;
    println!(
        "images: {} of {} in {} (the first {} files of each class left out: they hold the bundled sample, all {} of its images found among them); {:.0} s",
        kept.len(),
        folder.len(),
        args.images.display(),
        args.exclude_first,
        sample_len()?,
        started.elapsed().as_secs_f64()
    );

    // 2. Every image at four rotations, labelled by the rotation; validation on held-out
    //    images (all four rotations of an image stay on one side of the split).
    let mut order = kept.clone();
    SeededRng::new(args.seed).shuffle(&mut order);
    let n_val = args.val_images.min(order.len() / 5);
    let (val_base, train_base) = order.split_at(n_val);
    let train = rotations(&folder.dataset(), train_base)?;
    let val = rotations(&folder.dataset(), val_base)?;
    println!(
        "rotation task: train {} / val {} images ({} / {} source images x 4 rotations)",
        train.len(),
        val.len(),
        train_base.len(),
        val_base.len()
    );

    // 3. The network (finetune_mini with `extra_blocks` more in its last stage) and the
    //    Learner.
    let mut net = ResNetConfig::finetune_mini(ROTATIONS.len());
    net.layers[3] += args.extra_blocks;
    let model = AnyConfig::ResNet(net.clone()).try_init(&device)?;
    println!(
        "model: finetune_mini with {} extra block(s) in layer4 for pretraining ({} parameters), {} epochs, batch {}, one-cycle lr {}",
        args.extra_blocks,
        model.param_summary().total(),
        args.epochs,
        args.batch_size,
        args.lr
    );
    let normalize = Normalize::cifar10();
    let train_pipeline = Pipeline::new()
        .then(RandomCrop::new(32, 4))
        .normalize(normalize);
    let workers = default_workers();
    let train_loader = ImageLoader::new(
        Arc::new(train),
        train_pipeline,
        LoaderConfig::train(args.batch_size, args.seed).with_workers(workers),
        device.clone(),
    );
    let val_loader = ImageLoader::new(
        Arc::new(val),
        Pipeline::eval(normalize),
        LoaderConfig::eval(256).with_workers(workers),
        device.clone(),
    );
    let config = LearnerConfig::default()
        .with_epochs(args.epochs)
        .with_lr(args.lr)
        .with_seed(args.seed)
        .with_optimizer(OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
        })
        .with_schedule(Schedule::one_cycle())
        .with_schedule_unit(ScheduleUnit::Batch);
    let outcome = Learner::new(config)
        .sink(Arc::new(ConsoleProgress::new()))
        .run_dir(&args.out)
        .resume(args.resume)
        .class_names(ROTATIONS.iter().map(|r| r.to_string()).collect())
        .fit(model, &train_loader, &val_loader)?;
    let val_eval = evaluate(&outcome.model, &val_loader)?;
    println!(
        "pretrained network: rotation accuracy {:.4} on the {} held-out rotated images (best epoch {}); {:.0} s",
        val_eval.accuracy,
        val_loader.num_items(),
        outcome.best_epoch,
        started.elapsed().as_secs_f64()
    );

    // 4. The shipped network: the pretrained one without its extra blocks, and a rotation
    //    classifier fitted on its frozen features (computed once).
    let shipped = if args.extra_blocks == 0 {
        outcome.model
    } else {
        let backbone = truncate(&outcome.model, &net, &args.out)?;
        let frozen = backbone.with_bn_policy(BnPolicy::Frozen).freeze_backbone();
        let head_config = LearnerConfig::default()
            .with_epochs(args.head_epochs)
            .with_lr(args.head_lr)
            .with_seed(args.seed)
            .with_optimizer(OptimizerConfig::sgd(0.9))
            .with_schedule(Schedule::Cosine { min_lr: 0.0 })
            .with_schedule_unit(ScheduleUnit::Batch);
        let plain = train_loader.with_pipeline(Pipeline::eval(normalize));
        let fitted = Learner::new(head_config)
            .sink(Arc::new(ConsoleProgress::new()))
            .run_dir(args.out.join("head"))
            .resume(args.resume)
            .cache_features(true)
            .class_names(ROTATIONS.iter().map(|r| r.to_string()).collect())
            .fit(frozen, &plain, &val_loader)?;
        VisionModel::unfreeze(fitted.model)
    };
    let val_eval = evaluate(&shipped, &val_loader)?;
    println!(
        "shipped {} ({} parameters): rotation accuracy {:.4} on the {} held-out rotated images; {:.0} s in all",
        shipped.arch(),
        shipped.param_summary().total(),
        val_eval.accuracy,
        val_loader.num_items(),
        started.elapsed().as_secs_f64()
    );

    // 5. The weights, as a state_dict with torchvision's names, and their checksum.
    if let Some(path) = &args.weights_out {
        let accuracy = format!("{:.4}", val_eval.accuracy);
        finetune::weights::save_safetensors(
            &shipped,
            path,
            [
                ("arch", "finetune_mini"),
                (
                    "task",
                    "rotation prediction (Gidaris et al., 2018), 4 classes: 0/90/180/270",
                ),
                ("rotation_val_accuracy", accuracy.as_str()),
            ],
        )?;
        let bytes = std::fs::read(path)?;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        println!(
            "weights: {} ({} bytes) sha256 {hex}",
            path.display(),
            bytes.len()
        );
    }
    Ok(())
}

/// `finetune_mini` with the pretrained network's weights but for the blocks past `layer4.1`
/// and the classifier (a new, untrained one): through a state_dict file in `dir` without those
/// tensors, loaded strictly but for the head.
fn truncate(
    pretrained: &AnyModel,
    config: &ResNetConfig,
    dir: &std::path::Path,
) -> Result<AnyModel, Box<dyn std::error::Error>> {
    let full = dir.join("pretrained-full.safetensors");
    finetune::weights::save_safetensors(pretrained, &full, [])?;
    let bytes = std::fs::read(&full)?;
    let file = safetensors::SafeTensors::deserialize(&bytes)?;
    let extra: Vec<String> = (2..config.layers[3])
        .map(|b| format!("layer4.{b}."))
        .collect();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| !extra.iter().any(|e| name.starts_with(e)))
        .collect();
    let trimmed = dir.join("pretrained-backbone.safetensors");
    std::fs::write(&trimmed, safetensors::serialize(kept, None)?)?;
    let mut mini = create_model("finetune_mini", ROTATIONS.len(), &pretrained.device())?;
    mini.load_weights(&trimmed, &LoadOptions::backbone_only())?;
    Ok(mini)
}

/// The image indices kept (all but the first `exclude` files of each class folder by name, at
/// most `limit` per class) and those dropped.
fn split_off_sample(
    folder: &ImageFolder,
    exclude: usize,
    limit: Option<usize>,
) -> (Vec<usize>, Vec<usize>) {
    let labels = folder.dataset().labels().to_vec();
    let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); folder.classes().len()];
    for (i, &label) in labels.iter().enumerate() {
        per_class[label].push(i);
    }
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for mut indices in per_class {
        indices.sort_by(|&a, &b| {
            folder.paths()[a]
                .file_name()
                .cmp(&folder.paths()[b].file_name())
        });
        let cut = exclude.min(indices.len());
        dropped.extend_from_slice(&indices[..cut]);
        let rest = &indices[cut..];
        kept.extend_from_slice(&rest[..limit.unwrap_or(rest.len()).min(rest.len())]);
    }
    (kept, dropped)
}

/// Number of images in the bundled sample (train and test parts).
fn sample_len() -> finetune::Result<usize> {
    let sample = Cifar10::sample()?;
    Ok(sample.train().len() + sample.test().len())
}

/// Checks that every image of the bundled sample is one of the `dropped` images: its pixels
/// within JPEG-decoder rounding (mean absolute difference under 1 level) of one of them.
/// (The sample was decoded by Pillow, these by the `image` crate.)
fn check_sample_excluded(
    folder: &ImageFolder,
    dropped: &[usize],
) -> Result<(), Box<dyn std::error::Error>> {
    let sample = Cifar10::sample()?;
    let data = folder.dataset();
    for part in [sample.train(), sample.test()] {
        for i in 0..part.len() {
            let (pixels, _, _) = part.pixels(i).ok_or("sample image out of range")?;
            let best = dropped
                .iter()
                .filter_map(|&j| data.pixels(j))
                .filter(|(p, _, _)| p.len() == pixels.len())
                .map(|(p, _, _)| {
                    let sum: u64 = p
                        .iter()
                        .zip(pixels)
                        .map(|(&a, &b)| u64::from(a.abs_diff(b)))
                        .sum();
                    sum as f64 / pixels.len() as f64
                })
                .fold(f64::INFINITY, f64::min);
            if best >= 1.0 {
                let closest = if best.is_finite() {
                    format!("the closest differs by {best:.2} levels on average")
                } else {
                    "none is 32x32".to_string()
                };
                return Err(format!(
                    "bundled sample image {i} is not among the {} left-out files ({closest}): the pretraining set could contain it; point --images at the CIFAR-10 training images the sample was made from, or check --exclude-first",
                    dropped.len()
                )
                .into());
            }
        }
    }
    Ok(())
}

/// The images at `indices`, each at 0, 90, 180 and 270 degrees counter-clockwise, labelled
/// 0..4 by rotation.
fn rotations(
    data: &ImageDataset,
    indices: &[usize],
) -> Result<ImageDataset, Box<dyn std::error::Error>> {
    let (mut images, mut labels) = (Vec::with_capacity(indices.len() * 4), Vec::new());
    for &i in indices {
        let image: RgbImage = data.item(i).ok_or("image index out of range")?.image;
        for k in 0..4 {
            images.push(rot90(&image, k));
            labels.push(k as usize);
        }
    }
    Ok(ImageDataset::from_images(
        images,
        labels,
        ROTATIONS.iter().map(|r| r.to_string()).collect(),
    )?)
}
