//! Exports a model saved by this crate (a run's `best_model.bpk`, any architecture) back to
//! PyTorch: a state_dict with torchvision's key names and tensor layouts, as `.safetensors`
//! (`weights::save_safetensors`) or as PyTorch's own `.pth` (`weights::save_pth`; the
//! extension of `--out` chooses), and beside it a `.json` with what rebuilds the network in
//! Python (the torchvision name and number of classes, the normalisation, the crate's own
//! configuration). In Python:
//!
//! ```text
//! model = torchvision.models.get_model("resnet18", num_classes=10)
//! model.load_state_dict(safetensors.torch.load_file("model.safetensors"))   # strict
//! model.load_state_dict(torch.load("model.pth", weights_only=True))          # or the .pth
//! ```
//!
//! ```text
//! cargo run --release --example export -- --model runs/finetune-1234/best_model.bpk --out model.safetensors
//! ```
//!
//! `tests/fixtures/models/check_export.py model.safetensors` (or `model.pth`) does the Python side and prints
//! the logits of a fixed input, to compare with `predict --weights model.safetensors
//! --input-tensor ...`.

#[path = "common/cli.rs"]
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use finetune::model::{AnyModel, VisionModel};

/// Exports a saved model (.bpk) as a PyTorch state_dict (.safetensors or .pth, torchvision's
/// names) with a JSON description beside it.
#[derive(clap::Parser, Debug)]
#[command(name = "export")]
struct Args {
    /// The model: a .bpk file written by this crate (a run's best_model.bpk)
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// The state_dict to write: .safetensors, or .pth / .pt for torch.save's format; FILE with
    /// .json holds its description
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

fn main() -> ExitCode {
    cli::quiet_broken_pipe();
    let args = match cli::parse::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match export(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn export(args: &Args) -> finetune::Result<()> {
    let model = AnyModel::load(&args.model, &burn::tensor::Device::flex())?;
    let export = finetune::weights::export_pytorch(&model, &args.out)?;
    println!(
        "{} ({}, {} classes) -> {} and {}",
        args.model.display(),
        export.arch.as_deref().unwrap_or("custom shape"),
        model.num_classes(),
        export.state_dict.display(),
        export.description.display()
    );
    match &export.torchvision {
        Some(line) => {
            let path = format!("{:?}", export.state_dict.display().to_string());
            let load = if export
                .state_dict
                .extension()
                .is_some_and(|e| e == "safetensors")
            {
                format!("safetensors.torch.load_file({path})")
            } else {
                format!("torch.load({path}, weights_only=True)")
            };
            println!("PyTorch: model = {line}; model.load_state_dict({load})");
        }
        None => println!(
            "PyTorch: no torchvision constructor for this architecture; build it from {} (finetune_mini: tests/fixtures/models/finetune_mini.py)",
            export.description.display()
        ),
    }
    Ok(())
}
