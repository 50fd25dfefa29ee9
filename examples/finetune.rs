//! PyTorch's transfer-learning tutorial, "finetuning the ConvNet", on CIFAR-10, step by step:
//! the data split into train / validation / test, ResNet-18 with ImageNet weights, a new
//! 10-class head, every layer trained with SGD (lr 0.001, momentum 0.9) and StepLR(7, 0.1), the
//! best validation epoch kept, then the test accuracy and pictures. Read [`finetune`] top to
//! bottom: each step is a call or two into the library (`finetune::recipe` holds the data and
//! model steps; `recipe::run` composes the same steps into one call, which the
//! `feature_extractor` example uses).
//!
//! Without a network (or with `FINETUNE_OFFLINE=1`) it runs on the bundled 1,000-image
//! CIFAR-10 sample from the bundled `finetune_mini.rotation` backbone (pretrained by the crate
//! without labels, on rotation prediction, over CIFAR-10 images outside the sample), saying so;
//! `--weights none` starts from random initialisation.
//!
//! ```text
//! cargo run --release --example finetune                  # CIFAR-10 (or the bundled sample)
//! cargo run --release --example finetune -- --data-dir ~/data/cifar-10-batches-bin --epochs 5
//! cargo run --release --example finetune -- --image-folder hymenoptera_data  # RandomResizedCrop(224)
//! cargo run --release --example finetune -- --help
//! ```

#[path = "common/cli.rs"]
mod cli;
#[path = "common/downloads.rs"]
mod downloads;
#[path = "common/progress.rs"]
mod progress;
#[path = "common/tutorial.rs"]
mod tutorial;

use std::process::ExitCode;
use std::sync::Arc;

use finetune::data::{LoaderConfig, default_workers};
use finetune::recipe::{self, Mode};
use finetune::train::{
    Learner, LearnerConfig, LrFindConfig, OptimizerConfig, Schedule, ScheduleUnit, evaluate,
    evaluate_tta,
};

use finetune::model::VisionModel;
use progress::ConsoleProgress;
use tutorial::TutorialArgs;

/// Fine-tunes an ImageNet-pretrained backbone (ResNet, ConvNeXt, EfficientNet, MobileNetV3, ViT)
/// on CIFAR-10 or your own images (PyTorch's transfer-learning tutorial): a new head, every
/// layer trained.
#[derive(clap::Parser, Debug)]
#[command(name = "finetune", allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    tutorial: TutorialArgs,
}

fn main() -> ExitCode {
    cli::quiet_broken_pipe();
    downloads::report_on_console();
    // Keep freed activation buffers in the process between steps (see its docs).
    finetune::tune_allocator();
    let args = match cli::parse::<Args>() {
        Ok(args) => args.tutorial,
        Err(code) => return code,
    };
    match finetune(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => tutorial::fail(e),
    }
}

/// The tutorial's steps.
fn finetune(args: &TutorialArgs) -> finetune::Result<()> {
    // (--devices cuda:0,cuda:1: data parallel, the model on the first; --dtype bf16/f16: the
    // devices' float type, set before any tensor exists on them.)
    let device = args.main_device().device()?;
    let replicas = args
        .devices
        .iter()
        .map(|d| d.device())
        .collect::<finetune::Result<Vec<_>>>()?;
    for d in replicas.iter().chain([&device]) {
        args.dtype.configure(d)?;
    }

    // 1. Data: CIFAR-10 (downloaded once and cached), an extracted copy, your image folders or
    //    the bundled sample, split with a seed into train / validation / test (CIFAR's test
    //    set 50/50 into validation and test). Without a network: the bundled sample, and a
    //    note saying why.
    let data = recipe::load_data(&args.data(), &args.data_options())?
        .limit(args.train_limit, args.val_limit);
    for note in &data.notes {
        println!("{note}");
    }
    let [n_train, n_val, n_test] = data.sizes();
    println!(
        "data: {} | train {n_train} / val {n_val} / test {n_test} images | {} classes",
        data.description,
        data.classes.len()
    );
    // The epochs, batch size and learning rate not given: the tutorial's for CIFAR-10's size,
    // more steps of smaller batches on a small dataset such as the sample.
    let hyper = recipe::Hyperparameters::for_train_size(n_train).with(
        args.epochs,
        args.batch_size,
        args.lr,
    );

    // 2. Model: a backbone pretrained on ImageNet, by its timm/torchvision name (`--arch`;
    //    resnet18 by default: `finetune::weights::pretrained(arch)`), or the weights named by
    //    `--weights`. Without a network: the small backbone the crate ships, pretrained
    //    without labels (or, for an `--arch` asked for, its random initialisation), and a
    //    note saying why.
    let backbone = recipe::load_backbone(
        &args.weights,
        args.arch.as_deref(),
        args.weights_key.as_deref(),
        &device,
    )?;
    if let Some(note) = &backbone.note {
        println!("{note}");
    }
    println!("model: {} | {}", backbone.arch(), backbone.description);

    // 3. A new head: the classifier (ResNet's `fc`) replaced by a freshly initialised layer
    //    with one output per class. Every layer stays trainable (`.freeze_backbone()` here
    //    would train the head only; `.freeze_to("layer3")?` anything in between).
    let model = backbone.model.reset_classifier(data.classes.len())?;

    // 4. Pipelines and loaders: images normalised with the statistics the weights were
    //    trained with (the data's own for random weights); for image folders the tutorial's
    //    RandomResizedCrop + flip for training and Resize + CenterCrop for evaluation, for
    //    CIFAR's 32x32 images a random flip; training batches shuffled with the seed,
    //    validation and test in order.
    let normalize = backbone.normalize.unwrap_or(data.normalize);
    //    (--rrc, --trivial-augment, --randaugment, --random-erasing add torchvision's
    //    recipe augmentations to the training transform.)
    let pipelines =
        recipe::tutorial_pipelines_with(&data, normalize, args.upsample, false, &args.augment())?;
    println!("transforms: {}", pipelines.description);
    let workers = args.workers.unwrap_or_else(default_workers);
    let loaders = data.loaders(
        pipelines.train,
        pipelines.eval,
        LoaderConfig::train(hyper.batch_size, args.seed).with_workers(workers),
        &device,
    )?;

    // 5. Optimizer and schedule: SGD (lr 0.001 on CIFAR-10, momentum 0.9) and StepLR, the
    //    learning rate divided by 10 every 7 epochs.
    let config = LearnerConfig::default()
        .with_epochs(hyper.epochs)
        .with_lr(hyper.lr)
        .with_seed(args.seed)
        .with_optimizer(OptimizerConfig::sgd(0.9))
        .with_schedule(Schedule::Step {
            step_size: 7,
            gamma: 0.1,
        })
        .with_schedule_unit(ScheduleUnit::Epoch)
        // Off unless asked for (--label-smoothing, --mixup, --cutmix, --grad-accum,
        // --clip-grad-norm, --ema, --freeze-epochs): timm's, torchvision's and fastai's
        // training features, not the tutorial's.
        .with_label_smoothing(args.label_smoothing)
        .with_mixup_alpha(args.mixup)
        .with_cutmix_alpha(args.cutmix)
        .with_grad_accum_steps(args.grad_accum)
        .with_clip_grad_norm(args.clip_grad_norm)
        .with_ema_decay(args.ema)
        .with_ema_warmup(args.ema.map(|_| true))
        .with_freeze_epochs(args.freeze_epochs);
    let run_dir = args
        .out
        .clone()
        .unwrap_or_else(|| recipe::default_run_dir(Mode::FineTune));

    // (--lr-find) fastai's learning-rate finder instead of training: a throw-away copy of the
    // model trained with the learning rate growing from 1e-7 to 10, the smoothed loss
    // plotted, and the rates it suggests.
    if args.lr_find {
        recipe::check_writable_dir(&run_dir)?;
        let found =
            Learner::new(config).lr_find(&model, &loaders.train, &LrFindConfig::default())?;
        let plot = run_dir.join("lr_find.png");
        found.save_plot(&plot)?;
        println!("{}", found.describe());
        println!("{}", plot.display());
        return Ok(());
    }

    // 6. Training: a training and a validation phase every epoch, the best validation epoch's
    //    weights kept; a checkpoint every epoch (`--resume` continues from it), the history
    //    and the best model in the run directory. Progress goes to a sink of our choice: here
    //    one that prints a line per epoch (and a progress bar on a terminal).
    println!(
        "fine-tuning on {}{} | {}{}{} | run dir {}",
        args.options(Mode::FineTune).describe_devices(),
        match args.dtype {
            finetune::Precision::F32 => String::new(),
            other => format!(" in {other}"),
        },
        hyper.describe(),
        recipe::small_data_note(n_train, args.epochs, args.batch_size, args.lr),
        config
            .describe_features()
            .map(|r| format!(" | {r}"))
            .unwrap_or_default(),
        run_dir.display()
    );
    let outcome = Learner::new(config)
        .data_parallel(replicas)
        .sink(Arc::new(ConsoleProgress::new()))
        .run_dir(&run_dir)
        .resume(args.resume)
        .class_names(data.classes.clone())
        .fit(model, &loaders.train, &loaders.val)?;

    // 7. Test: the best model, once, on images it never saw.
    //    (--tta: again with each image and its mirror image averaged.)
    let test = evaluate(&outcome.model, &loaders.test)?;
    println!(
        "test accuracy {:.4} (top-5 {:.4}, loss {:.4}) with the best epoch ({}, val acc {:.4})",
        test.accuracy,
        test.top5_accuracy,
        test.loss,
        outcome.best_epoch,
        outcome.history.best_val_acc
    );
    if args.tta {
        let tta = evaluate_tta(&outcome.model, &loaders.test)?;
        println!(
            "test accuracy with flip TTA {:.4} (loss {:.4})",
            tta.accuracy, tta.loss
        );
    }

    // 8. Pictures, drawn by the Learner: the loss and accuracy curves, the confusion matrix
    //    and validation images with their predicted labels (the tutorial's `visualize_model`).
    for picture in ["curves.png", "confusion.png", "predictions.png"] {
        let path = run_dir.join(picture);
        if path.is_file() {
            println!("{}", path.display());
        }
    }
    Ok(())
}
