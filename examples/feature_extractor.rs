//! PyTorch's transfer-learning tutorial, "ConvNet as fixed feature extractor", on CIFAR-10:
//! ResNet-18 from ImageNet weights with its backbone frozen (BatchNorm included), only a new
//! 10-class head trained. The frozen backbone runs without autodiff; `--cache-features`
//! computes its features once.
//!
//! ```text
//! cargo run --release --example feature_extractor
//! cargo run --release --example feature_extractor -- --cache-features
//! ```

#[path = "common/args.rs"]
mod args;
#[path = "common/tutorial.rs"]
mod tutorial;

fn main() -> std::process::ExitCode {
    tutorial::main(
        "feature_extractor",
        finetune::recipe::Mode::FeatureExtractor,
    )
}
