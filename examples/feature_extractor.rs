//! PyTorch's transfer-learning tutorial, "ConvNet as fixed feature extractor", on CIFAR-10:
//! ResNet-18 from ImageNet weights with its backbone frozen, only a new 10-class head trained.
//! As in the tutorial (`requires_grad = False`, model left in train mode), the backbone's
//! BatchNorm layers normalise with batch statistics and keep updating their running statistics
//! while their affine parameters stay fixed (`BnPolicy::TrainMode`, `--bn train-mode`); no
//! gradient flows through the backbone. `--bn frozen` holds BatchNorm in eval mode (the frozen
//! backbone then runs once per batch on the inference path), and `--cache-features` (frozen
//! BatchNorm) computes its features once. The run's first line names the policy.
//!
//! ```text
//! cargo run --release --example feature_extractor
//! cargo run --release --example feature_extractor -- --bn frozen
//! cargo run --release --example feature_extractor -- --cache-features
//! ```

#[path = "common/args.rs"]
mod args;
#[path = "common/progress.rs"]
mod progress;
#[path = "common/tutorial.rs"]
mod tutorial;

fn main() -> std::process::ExitCode {
    tutorial::main(
        "feature_extractor",
        finetune::recipe::Mode::FeatureExtractor,
    )
}
