//! PyTorch's transfer-learning tutorial trained by burn-train's `SupervisedTraining` instead of
//! the crate's own Learner, on one device or several (feature `train`): the same data, model
//! and training flags as the `finetune` example, plus `--devices` and `--strategy`.
//!
//! - `--devices flex` (or one GPU) trains on it alone (`ExecutionStrategy::SingleDevice`).
//! - `--devices cuda:0,cuda:1` (or `wgpu:0,wgpu:1`, or `flex,flex`: two replicas on the CPU)
//!   trains data parallel: `--strategy multi` is burn-train's `MultiDevice` (each device a
//!   slice of every epoch, the gradients summed on the first device, which steps the
//!   optimizer), `sharded` the same with the optimizer sharded over the devices, `ddp`
//!   `DistributedDataParallel` (a replica per device, gradients averaged by all-reduce; NCCL on
//!   CUDA).
//!
//! Burn's metrics (loss, accuracy, top-5, learning rate) are logged in the run directory
//! (`train/`, `valid/`, `experiment.log`) and summarised at the end; burn-train's checkpoints
//! are in `checkpoint/` and `--resume` continues from the last one. Then the test split is
//! evaluated with the model of the last epoch.
//!
//! ```text
//! cargo run --release --features train --example multi_device -- --sample --devices flex
//! cargo run --release --features train --example multi_device -- --sample --devices flex,flex
//! cargo run --release --features train,cuda --example multi_device -- --devices cuda:0,cuda:1 --strategy ddp
//! ```

#[path = "common/cli.rs"]
mod cli;
#[path = "common/downloads.rs"]
mod downloads;
#[path = "common/progress.rs"]
#[allow(dead_code)]
mod progress;
#[path = "common/tutorial.rs"]
mod tutorial;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::distributed::{DistributedConfig, ReduceOperation};
use burn::train::metric::{AccuracyMetric, LearningRateMetric, LossMetric, TopKAccuracyMetric};
use burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining};
use finetune::data::{LoaderConfig, default_workers};
use finetune::model::VisionModel;
use finetune::recipe::{self, Mode};
use finetune::train::{EpochLines, LearnerConfig, OptimizerConfig, Schedule, evaluate};
use finetune::{DeviceChoice, Error};

use tutorial::TutorialArgs;

/// Fine-tunes a pretrained backbone with burn-train's SupervisedTraining, on one device or
/// several in data parallel (PyTorch's transfer-learning tutorial).
#[derive(clap::Parser, Debug)]
#[command(name = "multi_device", allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    tutorial: TutorialArgs,

    /// How several devices train: multi (burn-train's MultiDevice: gradients summed, optimizer
    /// on the first device), sharded (MultiDevice, optimizer sharded), ddp
    /// (DistributedDataParallel: gradients averaged by all-reduce)
    #[arg(long, value_name = "S", value_enum, default_value_t = Strategy::Multi, help_heading = "Devices")]
    strategy: Strategy,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    Multi,
    Sharded,
    Ddp,
}

fn main() -> ExitCode {
    cli::quiet_broken_pipe();
    downloads::report_on_console();
    finetune::tune_allocator();
    let args = match cli::parse::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => tutorial::fail(e),
    }
}

/// The flags of the crate's own Learner that burn-train's loop does not have.
fn refuse_learner_only_flags(t: &TutorialArgs) -> finetune::Result<()> {
    let given = [
        ("--label-smoothing", t.label_smoothing.is_some()),
        ("--mixup", t.mixup.is_some()),
        ("--cutmix", t.cutmix.is_some()),
        ("--ema", t.ema.is_some()),
        ("--freeze-epochs", t.freeze_epochs.is_some()),
        ("--lr-find", t.lr_find),
        ("--tta", t.tta),
    ];
    let refused: Vec<&str> = given.iter().filter(|g| g.1).map(|g| g.0).collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidConfig(format!(
        "{} belong to the crate's own Learner, which burn-train's SupervisedTraining does not have: run the finetune example for them",
        refused.join(", ")
    )))
}

fn run(args: &Args) -> finetune::Result<()> {
    let t = &args.tutorial;
    refuse_learner_only_flags(t)?;
    let choices = if t.devices.is_empty() {
        vec![t.device]
    } else {
        t.devices.clone()
    };
    let mut devices = Vec::with_capacity(choices.len());
    for choice in &choices {
        let device = choice.device()?;
        t.dtype.configure(&device)?;
        devices.push(device);
    }
    let main_device = devices[0].clone();
    // Burn's collective operations (DDP's all-reduce) exist for CUDA only (burn-dispatch).
    if args.strategy == Strategy::Ddp
        && devices.len() > 1
        && let Some(other) = choices
            .iter()
            .find(|c| !matches!(c.resolve(), DeviceChoice::Cuda(_)))
    {
        return Err(Error::InvalidConfig(format!(
            "--strategy ddp needs CUDA devices (Burn's all-reduce exists for CUDA only), and {other} is not one: use --strategy multi"
        )));
    }

    // 1.-4. Data, model, new head, pipelines and loaders: the finetune example's steps.
    let data = recipe::load_data(&t.data(), &t.data_options())?.limit(t.train_limit, t.val_limit);
    for note in &data.notes {
        println!("{note}");
    }
    let [n_train, n_val, n_test] = data.sizes();
    println!(
        "data: {} | train {n_train} / val {n_val} / test {n_test} images | {} classes",
        data.description,
        data.classes.len()
    );
    let hyper = recipe::Hyperparameters::for_train_size(n_train).with(t.epochs, t.batch_size, t.lr);
    let backbone = recipe::load_backbone(
        &t.weights,
        t.arch.as_deref(),
        t.weights_key.as_deref(),
        &main_device,
    )?;
    if let Some(note) = &backbone.note {
        println!("{note}");
    }
    println!("model: {} | {}", backbone.arch(), backbone.description);
    let model = backbone.model.reset_classifier(data.classes.len())?;
    let normalize = backbone.normalize.unwrap_or(data.normalize);
    let pipelines =
        recipe::tutorial_pipelines_with(&data, normalize, t.upsample, false, &t.augment())?;
    println!("transforms: {}", pipelines.description);
    let workers = t.workers.unwrap_or_else(default_workers);
    let loaders = data.loaders(
        pipelines.train,
        pipelines.eval,
        LoaderConfig::train(hyper.batch_size, t.seed).with_workers(workers),
        &main_device,
    )?;

    // 5. The crate's SGD (momentum 0.9) with the clipping asked for, and StepLR(7 epochs,
    //    0.1): burn-train steps the schedule once per optimizer step, so the step size is 7
    //    epochs' worth of steps (each device takes its slice of an epoch).
    let config = LearnerConfig::default()
        .with_lr(hyper.lr)
        .with_optimizer(OptimizerConfig::sgd(0.9))
        .with_clip_grad_norm(t.clip_grad_norm);
    let optimizer = config
        .build_optimizer()
        .map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let replicas = devices.len();
    let accum = t.grad_accum.unwrap_or(1).max(1);
    // burn-train's split_dataloader: floor(n / k) items per device, the rest on the last.
    let items = loaders.train.num_items();
    let per_device = items - items / replicas * (replicas - 1);
    // Each device's slice drops its own partial batch (drop_last, as the training loader).
    let batches = if loaders.train.config().drop_last {
        per_device / hyper.batch_size
    } else {
        per_device.div_ceil(hyper.batch_size)
    };
    let steps_per_epoch = batches.div_ceil(accum).max(1);
    let scheduler = Schedule::Step {
        step_size: 7 * steps_per_epoch,
        gamma: 0.1,
    }
    .build(
        hyper.lr,
        hyper.epochs * steps_per_epoch,
        1.0,
        model.backbone_group(),
    )
    .map_err(|e| Error::InvalidConfig(e.to_string()))?;

    let run_dir = t
        .out
        .clone()
        .unwrap_or_else(|| recipe::default_run_dir(Mode::FineTune));
    recipe::check_writable_dir(&run_dir)?;
    let resume_epoch = if t.resume {
        Some(last_checkpoint(&run_dir)?)
    } else {
        None
    };

    // 6. burn-train: the strategy, the loaders (the training one reshuffles and re-augments
    //    every epoch, sliced per device by burn-train), Burn's metrics and checkpointers.
    let strategy = match (replicas, args.strategy) {
        (1, _) => ExecutionStrategy::SingleDevice(main_device.clone()),
        (_, Strategy::Multi) => {
            ExecutionStrategy::MultiDevice(devices.clone(), MultiDeviceOptim::OptimMainDevice)
        }
        (_, Strategy::Sharded) => {
            ExecutionStrategy::MultiDevice(devices.clone(), MultiDeviceOptim::OptimSharded)
        }
        (_, Strategy::Ddp) => ExecutionStrategy::ddp(
            devices.clone(),
            DistributedConfig {
                all_reduce_op: ReduceOperation::Mean,
            },
        ),
    };
    println!(
        "fine-tuning with burn-train on {} ({}) | {} | batches of {} per device, {} optimizer steps per epoch{} | run dir {}",
        choices
            .iter()
            .map(|c| c.resolve().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        match (replicas, args.strategy) {
            (1, _) => "SingleDevice",
            (_, Strategy::Multi) => "MultiDevice, optimizer on the first device",
            (_, Strategy::Sharded) => "MultiDevice, optimizer sharded",
            (_, Strategy::Ddp) => "DistributedDataParallel",
        },
        hyper.describe(),
        hyper.batch_size,
        steps_per_epoch,
        if accum > 1 {
            format!(", {accum} batches per step")
        } else {
            String::new()
        },
        run_dir.display()
    );
    if replicas > 1 && args.strategy != Strategy::Ddp {
        println!(
            "note: MultiDevice sums the {replicas} devices' gradients, so each SGD step is {replicas}x the mean gradient of the global batch: --lr {} follows one device with the same global batch",
            hyper.lr / replicas as f64
        );
    }
    let train_loader = loaders.train.epochs(resume_epoch.unwrap_or(0));
    let valid_loader = loaders.val.epoch(0);
    let mut training = SupervisedTraining::new(&run_dir, train_loader, valid_loader)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .metric_train_numeric(TopKAccuracyMetric::new(5))
        .metric_valid_numeric(TopKAccuracyMetric::new(5))
        .metric_train_numeric(LearningRateMetric::new())
        .renderer(Box::new(EpochLines::new()))
        .with_default_checkpointers()
        .with_training_strategy(burn::train::TrainingStrategy::Default(strategy))
        .num_epochs(hyper.epochs)
        .summary();
    if accum > 1 {
        training = training.grads_accumulation(accum);
    }
    if let Some(epoch) = resume_epoch {
        training = training.checkpoint(epoch);
    }
    let model = model.fork(&main_device.clone().autodiff()).train();
    let started = Instant::now();
    let result = training.launch(Learner::new(model, optimizer, scheduler));
    let seconds = started.elapsed().as_secs_f64();
    let images = n_train * hyper.epochs.saturating_sub(resume_epoch.unwrap_or(0));
    println!(
        "trained in {seconds:.1} s ({:.1} images/s over {} replica(s))",
        images as f64 / seconds,
        replicas
    );

    // 7. Test: the last epoch's model (burn-train returns it in validation mode).
    let test = evaluate(&result.model.fork(&main_device), &loaders.test)?;
    println!(
        "test accuracy {:.4} (top-5 {:.4}, loss {:.4}) with the last epoch's model",
        test.accuracy, test.top5_accuracy, test.loss
    );
    Ok(())
}

/// The last epoch burn-train checkpointed in `run_dir` (`checkpoint/model-N.bpk`).
fn last_checkpoint(run_dir: &Path) -> finetune::Result<usize> {
    let dir = run_dir.join("checkpoint");
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        Error::InvalidConfig(format!(
            "--resume: no burn-train checkpoint in '{}' ({e}): drop --resume to start a new run",
            dir.display()
        ))
    })?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("model-")?
                .strip_suffix(".bpk")?
                .parse::<usize>()
                .ok()
        })
        .max()
        .ok_or_else(|| {
            Error::InvalidConfig(format!(
                "--resume: '{}' holds no model-N.bpk: drop --resume to start a new run",
                dir.display()
            ))
        })
}
