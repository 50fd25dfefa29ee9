//! PyTorch's transfer-learning tutorial, "ConvNet as fixed feature extractor", on CIFAR-10:
//! ResNet-18 from ImageNet weights with its backbone frozen, only a new 10-class head trained.
//! As in the tutorial (`requires_grad = False`, model left in train mode), the backbone's
//! BatchNorm layers normalise with batch statistics and keep updating their running statistics
//! while their affine parameters stay fixed (`BnPolicy::TrainMode`, `--bn train-mode`); no
//! gradient flows through the backbone. `--bn frozen` holds BatchNorm in eval mode (the frozen
//! backbone then runs once per batch on the inference path), and `--cache-features` (frozen
//! BatchNorm) computes its features once. On fewer than 4,000 training images (the bundled
//! sample) the defaults are frozen BatchNorm and lr 0.1 for the head
//! (`recipe::Hyperparameters::SMALL_DATA_HEAD`). The run's first line names the policy.
//!
//! The steps are those of `examples/finetune.rs`, composed by `finetune::recipe::run`.
//!
//! ```text
//! cargo run --release --example feature_extractor
//! cargo run --release --example feature_extractor -- --bn frozen
//! cargo run --release --example feature_extractor -- --cache-features
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

use finetune::model::BnPolicy;
use finetune::recipe::{Mode, lr_find, run_with_sink};

use progress::ConsoleProgress;

/// Trains a new head on a frozen ImageNet-pretrained backbone (any --arch), on CIFAR-10 or your own images
/// (PyTorch's transfer-learning tutorial, "ConvNet as fixed feature extractor").
#[derive(clap::Parser, Debug)]
#[command(name = "feature_extractor", allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    tutorial: tutorial::TutorialArgs,

    /// Compute the frozen backbone's features once (no random crop or flip; BatchNorm frozen)
    #[arg(long, help_heading = "Feature extractor")]
    cache_features: bool,

    /// The frozen backbone's BatchNorm: train-mode (the tutorial: batch statistics, running
    /// statistics updated, affine fixed), frozen (eval mode, all fixed) or trainable (fastai's
    /// train_bn) [default: train-mode; frozen with --cache-features or fewer than 4000 training
    /// images]
    #[arg(long, value_name = "POLICY", value_parser = bn_policy, help_heading = "Feature extractor")]
    bn: Option<BnPolicy>,
}

fn bn_policy(value: &str) -> Result<BnPolicy, String> {
    BnPolicy::parse(value).ok_or_else(|| "expected train-mode, frozen or trainable".into())
}

fn main() -> ExitCode {
    cli::quiet_broken_pipe();
    downloads::report_on_console();
    // Keep freed activation buffers in the process between steps (see its docs).
    finetune::tune_allocator();
    let args = match cli::parse::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    let mut options = args.tutorial.options(Mode::FeatureExtractor);
    options.cache_features = args.cache_features;
    options.bn_policy = args.bn;
    // The console sink prints the run's progress; it is dropped (its bar cleared) before an
    // error is printed.
    let sink = Arc::new(ConsoleProgress::new());
    let result = if args.tutorial.lr_find {
        lr_find(&options, Some(sink)).map(|_| ())
    } else {
        run_with_sink(&options, sink).map(|_| ())
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => tutorial::fail(e),
    }
}
