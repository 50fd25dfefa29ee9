//! The whole PyTorch "Transfer Learning for Computer Vision" tutorial (Chilamkurthy, PyTorch
//! tutorials) as one call, run on CIFAR-10: load the data (the official archive, an extracted
//! directory, the user's image folders, or the bundled sample), split the test set 50/50 into
//! validation and test, start from torchvision's ImageNet ResNet, replace the head, fine-tune
//! everything or train only the head on a frozen backbone, then report test accuracy and
//! pictures. The `finetune` and `feature_extractor` examples are thin command lines over
//! [`run`].

use crate::model::VisionModel;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::data::dataset::Dataset;
use burn::tensor::Device;
use serde::Serialize;

use crate::DeviceChoice;
use crate::data::{
    Cifar10, DataError, ImageFolder, ImageFolderOptions, ImageItem, ImageLoader, LoaderConfig,
    Normalize, Pipeline, Subset, random_split,
};
use crate::error::{Error, Result};
use crate::model::{BnPolicy, ResNet, ResNetConfig};
use crate::train::{
    Evaluation, FitEvent, FitSink, History, Learner, LearnerConfig, OptimizerConfig, Schedule,
    ScheduleUnit, evaluate,
};
use crate::weights::ResNetWeights;
use crate::weights::import::describe;

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
    /// itself: [`TutorialOptions::holdout`] of it is split off, half for validation and half
    /// for test.
    ImageFolder(PathBuf),
    /// The CIFAR-10 sample shipped with the crate (1,000 train and 200 test images).
    Sample,
}

/// Which weights the backbone starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsChoice {
    /// The architecture's torchvision ImageNet weights, downloaded and cached; random
    /// initialisation when they can be neither found nor downloaded.
    Auto,
    /// These registry weights (an error when unavailable).
    Named(ResNetWeights),
    /// A `.pth` / `.safetensors` state_dict (an error when it does not load strictly).
    File(PathBuf),
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
    /// Epochs (tutorial: 25; our default 5).
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Learning rate (SGD, momentum 0.9, StepLR 7/0.1 per epoch).
    pub lr: f64,
    /// Use at most this many training images.
    pub train_limit: Option<usize>,
    /// Use at most this many validation (and test) images.
    pub val_limit: Option<usize>,
    /// Device.
    pub device: DeviceChoice,
    /// Run directory (default: `runs/<mode>-<unix time>`).
    pub out: Option<PathBuf>,
    /// Continue the run in `out` from its checkpoint.
    pub resume: bool,
    /// Seed of the split, the order and the augmentation.
    pub seed: u64,
    /// Resize images to this square size (224 for ImageNet weights at their native
    /// resolution).
    pub upsample: Option<u32>,
    /// Feature extractor only: compute the frozen backbone's features once (the training
    /// transform then has no random flip).
    pub cache_features: bool,
    /// Feature extractor only: the frozen backbone's BatchNorm policy. `None`: the tutorial's
    /// [`BnPolicy::TrainMode`] (its backbone has `requires_grad = False` but stays in train
    /// mode), or [`BnPolicy::Frozen`] with `cache_features` (cached features need fixed
    /// statistics; asking for both `TrainMode` and `cache_features` is an error).
    pub bn_policy: Option<BnPolicy>,
    /// A weights file holding several state_dicts (`{"model": .., "ema": ..}`): the key of
    /// the one to load ([`LoadOptions::key`](crate::weights::LoadOptions::key)).
    pub weights_key: Option<String>,
    /// Batch-preparation threads (default: all cores).
    pub workers: Option<usize>,
    /// Image folders: the square size images are resized to at load.
    pub image_size: u32,
    /// Image folders without `train/`: the fraction held out for validation and test.
    pub holdout: f64,
}

impl TutorialOptions {
    /// The tutorial's settings for `mode`: CIFAR-10 (auto), ImageNet ResNet-18 weights (auto),
    /// 5 epochs, batch 128, SGD lr 0.001 momentum 0.9, StepLR 7/0.1, seed 42, 32x32 images.
    pub fn new(mode: Mode) -> Self {
        TutorialOptions {
            mode,
            data: DataChoice::Auto,
            weights: WeightsChoice::Auto,
            arch: None,
            epochs: 5,
            batch_size: 128,
            lr: 0.001,
            train_limit: None,
            val_limit: None,
            device: DeviceChoice::Auto,
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
        }
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
    /// Mean test loss.
    pub test_loss: f64,
    /// Median training throughput over the epochs, images/second.
    pub train_images_per_sec: f64,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
    /// Per-epoch history.
    pub history: History,
}

struct Data {
    train: Arc<dyn Dataset<ImageItem>>,
    val: Arc<dyn Dataset<ImageItem>>,
    test: Arc<dyn Dataset<ImageItem>>,
    classes: Vec<String>,
    description: String,
    is_cifar: bool,
}

/// A shared image dataset.
type Images = Arc<dyn Dataset<ImageItem>>;

fn limit(ds: Arc<dyn Dataset<ImageItem>>, n: Option<usize>) -> Arc<dyn Dataset<ImageItem>> {
    match n {
        Some(n) if n < ds.len() => Arc::new(Subset::range(ds, 0..n)),
        _ => ds,
    }
}

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

fn cifar_data(cifar: Cifar10, what: String, seed: u64) -> Result<Data> {
    let (val, test) = split_half(cifar.test(), seed)?;
    Ok(Data {
        train: Arc::new(cifar.train()),
        val,
        test,
        classes: cifar.classes().to_vec(),
        description: what,
        is_cifar: true,
    })
}

/// Loads an image folder, saying in one line what was ignored.
fn folder(dir: &Path, size: u32, say: &dyn Fn(&str)) -> Result<ImageFolder> {
    if size == 0 {
        return Err(DataError::Transform {
            transform: "Resize",
            reason: "image folders are resized to 0x0 pixels: set TutorialOptions::image_size \
                     (--image-size) to at least 1 (224 for ImageNet weights)"
                .into(),
        }
        .into());
    }
    let folder = ImageFolder::open_with(dir, ImageFolderOptions::default().resize(size))?;
    if let Some(line) = folder.load_summary() {
        say(&line);
    }
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

fn load_data(opts: &TutorialOptions, say: &dyn Fn(&str)) -> Result<Data> {
    match &opts.data {
        DataChoice::Sample => cifar_data(
            Cifar10::sample()?,
            "the bundled CIFAR-10 sample".into(),
            opts.seed,
        ),
        DataChoice::CifarDir(dir) => cifar_data(
            Cifar10::from_dir(dir)?,
            format!("CIFAR-10 from {}", dir.display()),
            opts.seed,
        ),
        DataChoice::Auto => match Cifar10::download() {
            Ok(cifar) => {
                let what = format!("CIFAR-10 ({})", cifar.dir().display());
                cifar_data(cifar, what, opts.seed)
            }
            Err(e) => {
                let sample = Cifar10::sample()?;
                say(&format!(
                    "CIFAR-10 could not be found or downloaded ({}); running on the bundled sample ({} train / {} test images)",
                    first_line(&e.to_string()),
                    sample.train().len(),
                    sample.test().len()
                ));
                cifar_data(sample, "the bundled CIFAR-10 sample".into(), opts.seed)
            }
        },
        DataChoice::ImageFolder(root) if !root.join("train").is_dir() => {
            if !(opts.holdout > 0.0 && opts.holdout < 1.0) {
                return Err(Error::InvalidConfig(format!(
                    "holdout must be between 0 and 1 (got {})",
                    opts.holdout
                )));
            }
            let all = folder(root, opts.image_size, say)?;
            let classes = all.classes().to_vec();
            let n = all.len();
            check_splittable(
                root,
                n,
                "train / validation / test",
                3,
                ", or give it train/ and val/ sub-folders of their own",
            )?;
            let held = ((n as f64 * opts.holdout).round() as usize).clamp(2, n.saturating_sub(1));
            let val_n = held / 2;
            let mut parts =
                random_split(all.dataset(), [n - held, val_n, held - val_n], opts.seed)?;
            let (test, val, train) = match (parts.pop(), parts.pop(), parts.pop()) {
                (Some(t), Some(v), Some(tr)) => (t, v, tr),
                _ => {
                    return Err(Error::InvalidConfig(
                        "the hold-out split produced no parts".into(),
                    ));
                }
            };
            Ok(Data {
                train: Arc::new(train),
                val: Arc::new(val),
                test: Arc::new(test),
                classes,
                description: format!(
                    "image folder {} ({:.0}% held out for validation and test)",
                    root.display(),
                    opts.holdout * 100.0
                ),
                is_cifar: false,
            })
        }
        DataChoice::ImageFolder(root) => {
            let train = folder(&root.join("train"), opts.image_size, say)?;
            let val = folder(&root.join("val"), opts.image_size, say)?;
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
                let test = folder(&root.join("test"), opts.image_size, say)?;
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
                split_half(val.dataset(), opts.seed)?
            };
            Ok(Data {
                train: Arc::new(train.dataset()),
                val,
                test,
                classes,
                description: format!("image folders in {}", root.display()),
                is_cifar: false,
            })
        }
    }
}

/// Every split has an image, and the training set holds at least one batch (its last partial
/// batch is dropped).
fn check_sizes(opts: &TutorialOptions, sizes: [usize; 3]) -> Result<()> {
    for (n, what, option) in [
        (sizes[0], "training", "train_limit (--train-limit)"),
        (sizes[1], "validation", "val_limit (--val-limit)"),
        (sizes[2], "test", "val_limit (--val-limit)"),
    ] {
        if n == 0 {
            return Err(Error::InvalidConfig(format!(
                "the {what} set is empty: raise TutorialOptions::{option} or add images"
            )));
        }
    }
    if opts.batch_size == 0 {
        return Err(Error::InvalidConfig(
            "the batch size is 0: set TutorialOptions::batch_size (--batch-size) to at least 1"
                .into(),
        ));
    }
    if sizes[0] < opts.batch_size {
        return Err(DataError::BatchLargerThanData {
            batch_size: opts.batch_size,
            items: sizes[0],
            what: "training set",
            fix: format!(
                "lower the batch size to at most {} (TutorialOptions::batch_size, --batch-size), \
                 or add training images",
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

/// The model with the requested starting weights and the normalisation to use with it; the
/// weights must be of [`TutorialOptions::arch`] when it is given.
fn build_model(
    opts: &TutorialOptions,
    num_classes: usize,
    is_cifar: bool,
    device: &Device,
    say: &dyn Fn(&str),
) -> Result<(ResNet, Normalize, String)> {
    let built = build_model_unchecked(opts, num_classes, is_cifar, device, say)?;
    if let Some(arch) = &opts.arch {
        let asked = ResNetConfig::from_name(arch, num_classes)?;
        let got = built.0.config();
        if (asked.layers, asked.block) != (got.layers, got.block) {
            return Err(Error::InvalidConfig(format!(
                "the starting weights are a {}, not a {arch}: leave the architecture unset (TutorialOptions::arch, --arch) to use the weights' own, or choose weights of {arch}",
                got.arch_name()
                    .map_or_else(|| describe(&got), str::to_string)
            )));
        }
    }
    Ok(built)
}

fn build_model_unchecked(
    opts: &TutorialOptions,
    num_classes: usize,
    is_cifar: bool,
    device: &Device,
    say: &dyn Fn(&str),
) -> Result<(ResNet, Normalize, String)> {
    let random = |why: Option<String>| -> Result<(ResNet, Normalize, String)> {
        if let Some(why) = why {
            say(&format!(
                "ImageNet weights could not be found or downloaded ({why}); starting from random initialisation"
            ));
        }
        let arch = opts.arch.as_deref().unwrap_or("resnet18");
        let model = ResNetConfig::from_name(arch, num_classes)?.try_init(device)?;
        let normalize = if is_cifar {
            Normalize::cifar10()
        } else {
            Normalize::imagenet()
        };
        Ok((model, normalize, "random initialisation".into()))
    };
    let pretrained = |weights: ResNetWeights| -> Result<(ResNet, Normalize, String)> {
        let model = ResNet::pretrained(weights, device)?.reset_classifier(num_classes)?;
        let p = weights.preprocess();
        Ok((model, Normalize::new(p.mean, p.std), weights.name()))
    };
    match &opts.weights {
        WeightsChoice::None => random(None),
        WeightsChoice::Named(w) => pretrained(*w),
        WeightsChoice::Auto => {
            let weights = ResNetWeights::default_for(opts.arch.as_deref().unwrap_or("resnet18"))?;
            match pretrained(weights) {
                Ok(found) => Ok(found),
                Err(e) => random(Some(first_line(&e.to_string()).to_string())),
            }
        }
        WeightsChoice::File(path) => {
            let options = match &opts.weights_key {
                Some(key) => crate::weights::LoadOptions::strict().key(key),
                None => crate::weights::LoadOptions::strict(),
            };
            let (model, report) = ResNet::from_weights_file_with(path, &options, device)?;
            let model = model.reset_classifier(num_classes)?;
            Ok((
                model,
                Normalize::imagenet(),
                format!("weights from {} ({report})", path.display()),
            ))
        }
    }
}

fn default_run_dir(mode: Mode) -> PathBuf {
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

/// Runs the tutorial, reporting nothing ([`run_with_sink`] reports its progress). The outputs
/// go to the run directory: `checkpoint/`, `history.json`, `history.csv`, `config.json`,
/// `best_model.bpk`, `curves.png`, `confusion.png`, `predictions.png` and `summary.json`.
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
/// data, model and device it uses, what it fell back to, the test result) as
/// [`FitEvent::Note`]s. The examples pass a console sink that prints them.
pub fn run_with_sink(opts: &TutorialOptions, sink: Arc<dyn FitSink>) -> Result<TutorialReport> {
    run_reporting(opts, Some(&sink))
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
    if opts.resume && opts.out.is_none() {
        return Err(Error::InvalidConfig(
            "--resume needs the run directory to continue: pass --out DIR".into(),
        ));
    }
    if opts.weights_key.is_some() && !matches!(opts.weights, WeightsChoice::File(_)) {
        return Err(Error::InvalidConfig(
            "weights_key (--weights-key) picks a state_dict inside a weights file: give the file as the weights (--weights FILE), or drop the key".into(),
        ));
    }
    if opts.cache_features && opts.mode != Mode::FeatureExtractor {
        return Err(Error::InvalidConfig(
            "feature caching needs the feature-extractor mode (a frozen backbone)".into(),
        ));
    }
    let bn_policy = match (opts.bn_policy, opts.cache_features) {
        (None, false) => BnPolicy::TrainMode,
        (None, true) => BnPolicy::Frozen,
        (Some(BnPolicy::Frozen), _) => BnPolicy::Frozen,
        (Some(policy), true) => {
            return Err(Error::InvalidConfig(format!(
                "feature caching needs BatchNorm policy frozen, not {policy} (bn_policy, --bn): the backbone's statistics would change every batch; drop cache_features (--cache-features) or use the frozen policy"
            )));
        }
        (Some(policy), false) => policy,
    };
    let device = opts.device.device()?;
    let data = load_data(opts, &say)?;
    let train = limit(data.train.clone(), opts.train_limit);
    let val = limit(data.val.clone(), opts.val_limit);
    let test = limit(data.test.clone(), opts.val_limit);
    check_sizes(opts, [train.len(), val.len(), test.len()])?;
    let (mut model, normalize, weights) =
        build_model(opts, data.classes.len(), data.is_cifar, &device, &say)?;
    let arch = model
        .config()
        .arch_name()
        .map_or_else(|| describe(&model.config()), str::to_string);
    if opts.mode == Mode::FeatureExtractor {
        model = model.with_bn_policy(bn_policy).freeze_backbone();
    }

    let mut train_pipeline = if opts.cache_features {
        Pipeline::eval(normalize)
    } else {
        Pipeline::train(normalize)
    };
    let mut eval_pipeline = Pipeline::eval(normalize);
    if let Some(size) = opts.upsample {
        train_pipeline = train_pipeline.upsample(size);
        eval_pipeline = eval_pipeline.upsample(size);
    }
    let workers = opts.workers.unwrap_or_else(crate::data::default_workers);
    let train_loader = ImageLoader::new(
        train.clone(),
        train_pipeline,
        LoaderConfig::train(opts.batch_size, opts.seed).with_workers(workers),
        device.clone(),
    );
    let eval_loader = |ds: Arc<dyn Dataset<ImageItem>>| {
        ImageLoader::new(
            ds,
            eval_pipeline.clone(),
            LoaderConfig::eval(opts.batch_size).with_workers(workers),
            device.clone(),
        )
    };
    let (val_loader, test_loader) = (eval_loader(val.clone()), eval_loader(test.clone()));
    for loader in [&train_loader, &val_loader, &test_loader] {
        loader.check()?;
    }

    let run_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| default_run_dir(opts.mode));
    let resolved = opts.device.resolve();
    say(&format!(
        "{} {} on {}: {} | {} | train {} / val {} / test {} images | {} | run dir {}",
        match opts.mode {
            Mode::FineTune => "fine-tuning".to_string(),
            Mode::FeatureExtractor => format!(
                "training the head of (frozen backbone; BatchNorm {bn_policy}: {})",
                bn_policy.describe()
            ),
        },
        arch,
        resolved,
        data.description,
        weights,
        train.len(),
        val.len(),
        test.len(),
        match opts.upsample {
            Some(s) => format!("{s}x{s}"),
            None => "native size".into(),
        },
        run_dir.display()
    ));
    if opts.cache_features {
        say("caching features: the training transform has no random flip");
    }

    let config = LearnerConfig::default()
        .with_epochs(opts.epochs)
        .with_lr(opts.lr)
        .with_seed(opts.seed)
        .with_optimizer(OptimizerConfig::sgd(0.9))
        .with_schedule(Schedule::Step {
            step_size: 7,
            gamma: 0.1,
        })
        .with_schedule_unit(ScheduleUnit::Epoch);
    let mut learner = Learner::new(config);
    if let Some(sink) = sink {
        learner = learner.sink(sink.clone());
    }
    let outcome = learner
        .run_dir(&run_dir)
        .resume(opts.resume)
        .cache_features(opts.cache_features)
        .class_names(data.classes.clone())
        .fit(model, &train_loader, &val_loader)
        .map_err(Error::from)?;
    // The run directory again, while the test results and the summary are written: a run
    // started into it since `fit` released it makes this one fail rather than both write.
    let _run_lock = crate::train::lock_run_dir(&run_dir)?;
    let test_eval: Evaluation = evaluate(&outcome.model, &test_loader)?;
    let mut speeds: Vec<f64> = outcome
        .history
        .epochs
        .iter()
        .map(|e| e.images_per_sec)
        .collect();
    speeds.sort_by(f64::total_cmp);
    let report = TutorialReport {
        run_dir: run_dir.clone(),
        mode: opts.mode,
        data: data.description,
        arch,
        weights,
        device: resolved.to_string(),
        sizes: [train.len(), val.len(), test.len()],
        best_epoch: outcome.best_epoch,
        best_val_acc: outcome.history.best_val_acc,
        test_acc: test_eval.accuracy,
        test_loss: test_eval.loss,
        train_images_per_sec: speeds.get(speeds.len() / 2).copied().unwrap_or(0.0),
        seconds: started.elapsed().as_secs_f64(),
        history: outcome.history,
    };
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| Error::InvalidConfig(format!("serialising the summary: {e}")))?;
    let summary = run_dir.join("summary.json");
    crate::fsutil::write_atomic(&summary, &json).map_err(|e| Error::io("writing", &summary, e))?;
    say(&format!(
        "test accuracy {:.4} (loss {:.4}) with the best epoch ({}, val acc {:.4}); {:.0} s; outputs in {}",
        report.test_acc,
        report.test_loss,
        report.best_epoch,
        report.best_val_acc,
        report.seconds,
        run_dir.display()
    ));
    Ok(report)
}
