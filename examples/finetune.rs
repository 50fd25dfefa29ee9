//! PyTorch's transfer-learning tutorial, "finetuning the ConvNet", on CIFAR-10: ResNet-18 from
//! ImageNet weights, a new 10-class head, every layer trained with SGD (lr 0.001, momentum 0.9)
//! and StepLR(7, 0.1), the best validation epoch kept, then test accuracy and pictures.
//!
//! ```text
//! cargo run --release --example finetune                  # CIFAR-10 (or the bundled sample)
//! cargo run --release --example finetune -- --data-dir ~/data/cifar-10-batches-bin --epochs 5
//! cargo run --release --example finetune -- --help
//! ```

#[path = "common/args.rs"]
mod args;
#[path = "common/progress.rs"]
mod progress;
#[path = "common/tutorial.rs"]
mod tutorial;

fn main() -> std::process::ExitCode {
    tutorial::main("finetune", finetune::recipe::Mode::FineTune)
}
