//! Prints a ResNet's parameter summary: total, trainable and frozen parameters per stage.
//!
//! ```text
//! cargo run --release --example inspect -- resnet50 --num-classes 10 --freeze-backbone
//! cargo run --release --example inspect -- resnet18 --freeze-to layer2 --bn-trainable
//! cargo run --release --example inspect -- --weights checkpoint.pth [--weights-key model]
//! ```
//!
//! `--weights FILE` reads the architecture from a `.pth` / `.safetensors` file, loads it
//! strictly and prints the load report (where the state_dict was found, what was stripped,
//! what else the file holds); `--weights-key KEY` picks one state_dict of a checkpoint holding
//! several.

#[allow(unused_imports)]
use finetune::model::VisionModel;
use std::process::ExitCode;

use finetune::DeviceChoice;
use finetune::model::{BnPolicy, ResNetConfig, Stage};
use finetune::weights::import::describe;
use finetune::weights::{LoadOptions, WeightsFile};

const USAGE: &str = "usage: inspect [resnet18|resnet34|resnet50|resnet101|resnet152] \
[--num-classes N] [--freeze-backbone | --freeze-to stem|layer1..layer4|fc] [--bn-trainable] \
[--device flex|ndarray|wgpu] [--weights FILE [--weights-key KEY]]";

fn run() -> Result<(), String> {
    let mut arch = "resnet18".to_string();
    let mut num_classes = None;
    let mut freeze: Option<Stage> = None;
    let mut bn = BnPolicy::Frozen;
    let mut device = DeviceChoice::Flex;
    let mut weights: Option<std::path::PathBuf> = None;
    let mut weights_key: Option<String> = None;
    let mut arch_given = false;
    // Paths (`--weights`) need not be UTF-8; every other argument must be.
    let mut args = std::env::args_os().skip(1);
    let text = |v: std::ffi::OsString| {
        v.into_string()
            .map_err(|v| format!("'{}' is not valid UTF-8", v.to_string_lossy()))
    };
    while let Some(arg) = args.next() {
        let arg = text(arg)?;
        let mut next = |missing: &str| match args.next() {
            Some(v) => text(v),
            None => Err(missing.to_string()),
        };
        match arg.as_str() {
            "--num-classes" => {
                let v = next("--num-classes needs a value")?;
                num_classes = Some(
                    v.parse::<usize>()
                        .map_err(|_| format!("--num-classes: '{v}' is not a number"))?,
                );
            }
            "--freeze-backbone" => freeze = Some(Stage::new("layer4")),
            "--freeze-to" => {
                let v = next("--freeze-to needs a stage")?;
                freeze = Some(Stage::from(v));
            }
            "--bn-trainable" => bn = BnPolicy::Trainable,
            "--weights" => {
                weights = Some(args.next().ok_or("--weights needs a file")?.into());
            }
            "--weights-key" => {
                weights_key = Some(next("--weights-key needs a key")?);
            }
            "--device" => {
                let v = next("--device needs a value")?;
                device = v.parse().map_err(|e: finetune::Error| e.to_string())?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other if other.starts_with('-') => {
                return Err(format!("unknown flag {other} (see --help)"));
            }
            other => {
                arch = other.to_string();
                arch_given = true;
            }
        }
    }
    // Parameters are initialised lazily: summarising even ResNet-152 allocates almost nothing.
    let device = device.device().map_err(|e| e.to_string())?;
    let mut model = match &weights {
        Some(path) => {
            let options = match &weights_key {
                Some(key) => LoadOptions::strict().key(key),
                None => LoadOptions::strict(),
            };
            let mut file = WeightsFile::open_with(path, &options).map_err(|e| e.to_string())?;
            let config = file.infer_config().map_err(|e| e.to_string())?;
            let mut model = config.try_init(&device).map_err(|e| e.to_string())?;
            let report = file
                .load_into(&mut model, &options)
                .map_err(|e| e.to_string())?;
            if arch_given {
                let asked = ResNetConfig::from_name(&arch, 1).map_err(|e| e.to_string())?;
                if asked.layers != config.layers || asked.block != config.block {
                    return Err(format!(
                        "{} holds {}, not {arch}: drop the architecture argument",
                        path.display(),
                        describe(&config)
                    ));
                }
            }
            println!("{}: {report}\n", path.display());
            arch = describe(&config);
            model
        }
        None => ResNetConfig::from_name(&arch, 1000)
            .map_err(|e| e.to_string())?
            .try_init(&device)
            .map_err(|e| e.to_string())?,
    };
    if let Some(n) = num_classes {
        model = model.reset_classifier(n).map_err(|e| e.to_string())?;
    }
    model = model.with_bn_policy(bn);
    if let Some(stage) = freeze {
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
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
