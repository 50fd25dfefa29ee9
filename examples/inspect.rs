//! Prints a model's parameter summary: total, trainable and frozen parameters per stage.
//!
//! ```text
//! cargo run --release --example inspect -- resnet50 --num-classes 10 --freeze-backbone
//! cargo run --release --example inspect -- resnet18 --freeze-to layer2 --bn-trainable
//! cargo run --release --example inspect -- --weights checkpoint.pth [--weights-key model]
//! ```
//!
//! `--weights FILE` reads the architecture from a `.pth` / `.safetensors` file, loads it
//! strictly and prints the load report; `--help` lists every flag.

#[path = "common/cli.rs"]
mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use finetune::DeviceChoice;
use finetune::model::{AnyConfig, AnyModel, BnPolicy, VisionModel, create_model};
use finetune::weights::LoadOptions;

/// Prints a model's parameter summary: total, trainable and frozen parameters per stage.
#[derive(clap::Parser, Debug)]
#[command(name = "inspect", allow_negative_numbers = true)]
struct Args {
    /// Architecture, by its timm/torchvision name (resnet18, resnet50, convnext_tiny,
    /// efficientnet_b0, efficientnet_v2_s, mobilenet_v3_large, vit_b_16, ...) [default:
    /// resnet18, or the --weights file's]
    #[arg(value_name = "ARCH", value_parser = cli::utf8())]
    arch: Option<String>,

    /// The architecture, as the other examples take it (same as ARCH)
    #[arg(long = "arch", value_name = "NAME", conflicts_with = "arch", value_parser = cli::utf8())]
    arch_flag: Option<String>,

    /// Replace the head with one for N classes
    #[arg(long, value_name = "N", value_parser = cli::positive::<usize>)]
    num_classes: Option<usize>,

    /// Freeze everything but the head (the fixed feature extractor)
    #[arg(long, conflicts_with = "freeze_to")]
    freeze_backbone: bool,

    /// Freeze every stage up to and including STAGE, by the model's stage names (a ResNet's:
    /// stem, layer1..layer4, fc; a ConvNeXt's: stem, stage1..stage4, classifier; a ViT's:
    /// patch_embed, blocks1..blocks4, heads; `head` names the last stage of any model)
    #[arg(long, value_name = "STAGE", value_parser = cli::utf8())]
    freeze_to: Option<String>,

    /// Let the BatchNorm layers of frozen stages train (fastai's train_bn) [default: frozen]
    #[arg(long)]
    bn_trainable: bool,

    /// Device: flex, ndarray or wgpu (parameters are initialised lazily: even ResNet-152
    /// allocates almost nothing)
    #[arg(long, value_parser = cli::device, default_value = "flex")]
    device: DeviceChoice,

    /// Read the architecture from a .pth / .safetensors file, load it strictly and print the
    /// load report (where the state_dict was found, what was stripped, what else the file
    /// holds)
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,

    /// With --weights: the key of the state_dict to load from a checkpoint holding several
    #[arg(long, value_name = "KEY", requires = "weights", value_parser = cli::utf8())]
    weights_key: Option<String>,
}

/// The library options its errors name, and their flags.
const FLAGS: &[(&str, &str)] = &[("LoadOptions::key", "--weights-key")];

fn run(args: Args) -> Result<(), String> {
    let arch = args.arch.or(args.arch_flag);
    let arch_given = arch.is_some();
    let mut arch = arch.unwrap_or_else(|| "resnet18".into());
    let bn = if args.bn_trainable {
        BnPolicy::Trainable
    } else {
        BnPolicy::Frozen
    };
    // Parameters are initialised lazily: summarising even ResNet-152 allocates almost nothing.
    let device = args.device.device().map_err(|e| e.to_string())?;
    let mut model = match &args.weights {
        Some(path) => {
            let options = match &args.weights_key {
                Some(key) => LoadOptions::strict().key(key),
                None => LoadOptions::strict(),
            };
            let (model, report) =
                AnyModel::from_weights_file(path, &options, &device).map_err(|e| e.to_string())?;
            let config = model.config();
            if arch_given {
                let asked = AnyConfig::from_name(&arch, 1).map_err(|e| e.to_string())?;
                if !asked.same_backbone(&config) {
                    return Err(format!(
                        "{} holds {}, not {arch}: drop the architecture argument",
                        path.display(),
                        config.label()
                    ));
                }
            }
            println!("{}: {report}\n", path.display());
            arch = config.label();
            model
        }
        None => create_model(&arch, 1000, &device).map_err(|e| e.to_string())?,
    };
    if let Some(n) = args.num_classes {
        model = model.reset_classifier(n).map_err(|e| e.to_string())?;
    }
    model = model.with_bn_policy(bn);
    if args.freeze_backbone {
        model = model.freeze_backbone();
    } else if let Some(stage) = args.freeze_to {
        model = model.freeze_to(stage).map_err(|e| e.to_string())?;
    }
    let state = model.freeze_state();
    println!(
        "{arch}: {} classes, {} features, frozen through {}, BatchNorm in frozen stages: {:?}\n",
        model.num_classes(),
        model.num_features(),
        state
            .frozen_through
            .as_ref()
            .map(|s| s.name().to_string())
            .unwrap_or_else(|| "nothing".into()),
        state.bn
    );
    println!("{}", model.param_summary());
    Ok(())
}

fn main() -> ExitCode {
    cli::quiet_broken_pipe();
    let args = match cli::parse::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::with_flags(e, FLAGS));
            ExitCode::FAILURE
        }
    }
}
