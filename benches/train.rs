//! Training and inference throughput, side by side with PyTorch in the same run.
//!
//! ```text
//! cargo bench --bench train --features wgpu                      # flex (+ wgpu) and PyTorch
//! cargo bench --bench train -- --devices flex --quick --no-pytorch
//! cargo bench --bench train -- --devices flex --sizes 224 --archs convnext_tiny,vit_b_16
//! cargo bench --bench train --features wgpu -- --devices wgpu --pytorch-device cuda   # on a GPU
//! ```
//!
//! Workloads (each `--archs` architecture with a 10-class head, ResNet-18 by default;
//! images/second, median of timed runs, warm-up excluded), at 32x32 (batch 128) and 224x224
//! (batch 32):
//! - `finetune_step`: one epoch of [`Learner`] training over in-memory batches (forward,
//!   backward, SGD momentum step, loss read back every batch), everything trainable;
//! - `frozen_step`: the same with `freeze_backbone()` (the fixed feature extractor: the
//!   backbone runs without autodiff);
//! - `eval_forward`: inference forward through `VisionModel::for_inference()` (a ResNet's
//!   BatchNorm folded; the other families without autodiff), logits read back.
//!
//! The PyTorch side is `benches/pytorch_baseline.py` (same shapes and thread count), run once
//! before and once after the Burn workloads, keeping PyTorch's better figure for each; the
//! table shows Burn / PyTorch per workload. `--leak-epochs N` also runs N epochs and prints the
//! resident memory after each (it must stay flat). `--workloads finetune_step,...` and
//! `--sizes 32,224` select a subset (for profiling one workload); `--conv backend|gemm|host`
//! forces Burn's own kernels, the batched-GEMM lowering, or the flex host kernels (default: per
//! device). The benchmark calls [`finetune::tune_allocator`] first, as the examples do;
//! `--default-allocator` measures with glibc's default settings instead. `--single-thread` runs
//! everything on the calling thread (a one-thread rayon pool), for `perf record --call-graph
//! dwarf` profiles in which every parallel loop keeps its caller.

#[path = "../examples/common/cli.rs"]
mod cli;

use finetune::model::{InferenceModel, VisionModel};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use finetune::kernels::{ConvImpl, set_conv_impl};
use finetune::model::{AnyModel, create_model};
use finetune::train::{Learner, LearnerConfig, TensorSource};
use finetune::{DeviceChoice, Precision};

struct Args {
    archs: Vec<String>,
    devices: Vec<DeviceChoice>,
    dtype: Precision,
    quick: bool,
    pytorch: bool,
    pytorch_device: String,
    json: Option<String>,
    leak_epochs: usize,
    sizes: Vec<usize>,
    workloads: Vec<String>,
    conv: ConvImpl,
    tune_allocator: bool,
    single_thread: bool,
}

/// Training and inference throughput of any registered architecture, side by side with PyTorch.
#[derive(clap::Parser, Debug)]
#[command(name = "train", allow_negative_numbers = true)]
struct Cli {
    /// Architectures, comma-separated, by their torchvision names (resnet18, convnext_tiny,
    /// efficientnet_b0, mobilenet_v3_large, vit_b_16, ...)
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values_t = ["resnet18".to_string()])]
    archs: Vec<String>,

    /// Devices to measure, comma-separated: flex, ndarray, wgpu, wgpu:N, cuda, cuda:N [default:
    /// flex, and wgpu when built in]
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = cli::device)]
    devices: Vec<DeviceChoice>,

    /// Float type of the Burn workloads: f32, bf16 or f16 (one per run: Burn fixes a device's
    /// float type at its first tensor)
    #[arg(long, value_name = "T", value_parser = cli::precision, default_value = "f32")]
    dtype: Precision,

    /// Fewer timed runs and epochs
    #[arg(long)]
    quick: bool,

    /// Skip the PyTorch baseline (benches/pytorch_baseline.py)
    #[arg(long)]
    no_pytorch: bool,

    /// The PyTorch baseline's device (cpu, cuda)
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pytorch_device: String,

    /// Also write the table as JSON to FILE
    #[arg(long, value_name = "FILE")]
    json: Option<String>,

    /// Also run N epochs and print the resident memory after each (it must stay flat)
    #[arg(long, value_name = "N", default_value_t = 0)]
    leak_epochs: usize,

    /// Image sizes, comma-separated (batch 128 up to 64 pixels, 32 above)
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values_t = [32, 224])]
    sizes: Vec<usize>,

    /// Workloads, comma-separated
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_values = WORKLOADS,
        value_parser = clap::builder::PossibleValuesParser::new(WORKLOADS)
    )]
    workloads: Vec<String>,

    /// Convolution kernels
    #[arg(long, value_enum, default_value_t = Conv::Auto)]
    conv: Conv,

    /// Measure with glibc's default allocator settings (skip `finetune::tune_allocator`)
    #[arg(long)]
    default_allocator: bool,

    /// Run everything on the calling thread (a one-thread rayon pool), for `perf record
    /// --call-graph dwarf` profiles in which every parallel loop keeps its caller
    #[arg(long)]
    single_thread: bool,

    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

const WORKLOADS: [&str; 3] = ["finetune_step", "frozen_step", "eval_forward"];

/// `--conv`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Conv {
    /// Per device (`ConvImpl::Auto`)
    Auto,
    /// Burn's own convolution kernels
    Backend,
    /// The batched-GEMM lowering written with tensor operations
    Gemm,
    /// The flex host kernels
    Host,
}

/// The command line; `--help` and usage errors end the program (exit codes 0 and 2).
fn parse_args() -> Args {
    let cli: Cli = cli::parse_or_exit();
    let mut devices = cli.devices;
    if devices.is_empty() {
        devices.push(DeviceChoice::Flex);
        if cfg!(feature = "wgpu") {
            devices.push(DeviceChoice::Wgpu);
        }
    }
    // Before any tensor exists on a device (the architecture check below creates some).
    devices.retain(|choice| {
        match choice
            .device()
            .and_then(|device| cli.dtype.configure(&device))
        {
            Ok(()) => true,
            Err(e) => {
                eprintln!("skipping {choice}: {e}");
                false
            }
        }
    });
    for arch in &cli.archs {
        if let Err(e) = create_model(arch, 10, &Device::flex()) {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
    Args {
        archs: cli.archs,
        devices,
        dtype: cli.dtype,
        quick: cli.quick,
        pytorch: !cli.no_pytorch,
        pytorch_device: cli.pytorch_device,
        json: cli.json,
        leak_epochs: cli.leak_epochs,
        sizes: cli.sizes,
        workloads: cli.workloads,
        conv: match cli.conv {
            Conv::Auto => ConvImpl::Auto,
            Conv::Backend => ConvImpl::Backend,
            Conv::Gemm => ConvImpl::Gemm,
            Conv::Host => ConvImpl::Host,
        },
        tune_allocator: !cli.default_allocator,
        single_thread: cli.single_thread,
    }
}

fn batch_for(size: usize) -> usize {
    if size <= 64 { 128 } else { 32 }
}

fn model(arch: &str, device: &Device) -> AnyModel {
    match create_model(arch, 10, device) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    }
}

fn synthetic(n: usize, size: usize, device: &Device) -> TensorSource {
    let images = Tensor::<4>::random([n, 3, size, size], Distribution::Normal(0.0, 1.0), device);
    let labels: Vec<usize> = (0..n).map(|i| i % 10).collect();
    TensorSource::new(images, &labels, batch_for(size))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Training images/second through the Learner: epoch 1 is warm-up, the median of the others
/// is reported.
fn train_throughput(arch: &str, device: &Device, size: usize, frozen: bool, quick: bool) -> f64 {
    let batch = batch_for(size);
    let batches = if size <= 64 { 8 } else { 2 };
    let epochs = if quick { 3 } else { 5 };
    let train = synthetic(batch * batches, size, device);
    let val = synthetic(batch, size, device);
    let mut m = model(arch, device);
    if frozen {
        m = m.freeze_backbone();
    }
    let outcome = Learner::new(LearnerConfig::default().with_epochs(epochs)).fit(m, &train, &val);
    match outcome {
        Ok(o) => median(
            o.history.epochs[1..]
                .iter()
                .map(|e| e.images_per_sec)
                .collect(),
        ),
        Err(e) => {
            eprintln!("training failed on {device:?}: {e}");
            f64::NAN
        }
    }
}

fn eval_throughput(arch: &str, device: &Device, size: usize, quick: bool) -> f64 {
    let batch = batch_for(size);
    // The library's inference path: BatchNorm folded (and, on CPU, the host GEMM backbone).
    let m = model(arch, device).for_inference();
    let x = Tensor::<4>::random([batch, 3, size, size], Distribution::Default, device);
    let runs = if quick { 3 } else { 7 };
    let mut times = Vec::new();
    for i in 0..runs + 1 {
        let t0 = Instant::now();
        let logits = m.forward(x.clone());
        let _ = logits.into_data();
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    batch as f64 / median(times)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn leak_check(device: &Device, epochs: usize) {
    let train = synthetic(128 * 4, 32, device);
    let val = synthetic(128, 32, device);
    let rss = Arc::new(Mutex::new(Vec::new()));
    let probe = rss.clone();
    let result = Learner::new(LearnerConfig::default().with_epochs(epochs))
        .on_epoch(Arc::new(move |r| {
            if let Ok(mut v) = probe.lock() {
                v.push((r.epoch, rss_mib()));
            }
        }))
        .fit(model("resnet18", device), &train, &val);
    if let Err(e) = result {
        eprintln!("leak check failed: {e}");
        return;
    }
    println!("\nresident memory after each epoch ({device:?}):");
    if let Ok(v) = rss.lock() {
        for (epoch, mib) in v.iter() {
            println!("  epoch {epoch}: {mib:.0} MiB");
        }
        if let (Some(first), Some(last)) = (v.get(1), v.last()) {
            println!(
                "  growth from epoch 2 to {}: {:+.1} MiB",
                last.0,
                last.1 - first.1
            );
        }
    }
}

fn pytorch(args: &Args, threads: usize) -> Option<serde_json::Value> {
    let out = std::env::temp_dir().join(format!("finetune-pytorch-{}.json", std::process::id()));
    // From the repository root (a binary carried to another machine), else where it was built.
    let local = std::path::Path::new("benches/pytorch_baseline.py");
    let script = if local.is_file() {
        local.to_path_buf()
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pytorch_baseline.py")
    };
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(["--device", &args.pytorch_device])
        .args(["--archs", &args.archs.join(",")])
        .args([
            "--sizes",
            &args
                .sizes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ])
        .args(["--threads", &threads.to_string()])
        .args(["--json", &out.display().to_string()]);
    if args.quick {
        cmd.arg("--quick");
    }
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("PyTorch baseline failed ({s}); is `pip install torch torchvision` done?");
            return None;
        }
        Err(e) => {
            eprintln!("cannot run python3: {e}");
            return None;
        }
    }
    let text = std::fs::read_to_string(&out).ok()?;
    let _ = std::fs::remove_file(&out);
    serde_json::from_str(&text).ok()
}

/// The two PyTorch reports merged, keeping each workload's higher throughput.
fn best_of(
    a: Option<serde_json::Value>,
    b: Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    let (mut a, b) = match (a, b) {
        (Some(a), Some(b)) => (a, b),
        (a, b) => return a.or(b),
    };
    if let (Some(wa), Some(wb)) = (a["workloads"].as_object_mut(), b["workloads"].as_object()) {
        for (name, vb) in wb {
            let better = match (wa.get(name).and_then(|v| v.as_f64()), vb.as_f64()) {
                (Some(x), Some(y)) => y > x,
                (None, Some(_)) => true,
                _ => false,
            };
            if better {
                wa.insert(name.clone(), vb.clone());
            }
        }
    }
    Some(a)
}

fn main() {
    let args = parse_args();
    if args.single_thread {
        // Everything inside a one-thread rayon pool: parallel loops then run on the calling
        // thread, so `perf record --call-graph dwarf` sees whose loop each sample is in
        // (with a global pool the work runs on a worker whose stack starts at rayon).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .stack_size(64 << 20)
            .build();
        match pool {
            Ok(pool) => return pool.install(|| run(args)),
            Err(e) => {
                eprintln!("error: no thread pool: {e}");
                std::process::exit(2);
            }
        }
    }
    run(args)
}

fn run(args: Args) {
    if args.tune_allocator {
        finetune::tune_allocator();
    }
    set_conv_impl(args.conv);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // PyTorch runs before and after the Burn workloads and keeps its better figure per
    // workload: on a shared VM whichever side runs later can find the CPU slower.
    let torch_before = if args.pytorch {
        pytorch(&args, threads)
    } else {
        None
    };
    let mut rows: Vec<(String, String, String, f64)> = Vec::new();
    for choice in &args.devices {
        let device = match choice.device() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("skipping {choice}: {e}");
                continue;
            }
        };
        for arch in &args.archs {
            for &size in &args.sizes {
                for name in ["finetune_step", "frozen_step", "eval_forward"] {
                    if !args.workloads.iter().any(|w| w == name) {
                        continue;
                    }
                    let value = match name {
                        "finetune_step" => train_throughput(arch, &device, size, false, args.quick),
                        "frozen_step" => train_throughput(arch, &device, size, true, args.quick),
                        _ => eval_throughput(arch, &device, size, args.quick),
                    };
                    eprintln!("{choice} {arch} {name}_{size}: {value:.1} img/s");
                    rows.push((
                        arch.clone(),
                        match args.dtype {
                            Precision::F32 => choice.to_string(),
                            other => format!("{choice} {other}"),
                        },
                        format!("{name}_{size}"),
                        value,
                    ));
                }
            }
        }
        if args.leak_epochs > 0 {
            leak_check(&device, args.leak_epochs);
        }
    }
    let torch = if args.pytorch {
        best_of(torch_before, pytorch(&args, threads))
    } else {
        None
    };
    let torch_label = torch
        .as_ref()
        .and_then(|t| t["framework"].as_str().map(str::to_string))
        .unwrap_or_else(|| "PyTorch".into());
    println!(
        "\n10-class heads; batch 128 at 32x32, 32 at 224x224; {threads} threads; images/second"
    );
    println!(
        "{:<20} {:<20} {:<12} {:>12} {:>18} {:>8}",
        "architecture",
        "workload",
        "device",
        "Burn",
        format!("{torch_label} ({})", args.pytorch_device),
        "ratio"
    );
    println!("{}", "-".repeat(95));
    let mut json_rows = Vec::new();
    for (arch, device, workload, burn) in &rows {
        let reference = torch
            .as_ref()
            .and_then(|t| t["workloads"][format!("{arch}/{workload}")].as_f64());
        let ratio = reference.map(|r| burn / r);
        println!(
            "{:<20} {:<20} {:<12} {:>12.1} {:>18} {:>8}",
            arch,
            workload,
            device,
            burn,
            reference.map(|r| format!("{r:.1}")).unwrap_or("-".into()),
            ratio.map(|r| format!("{r:.2}x")).unwrap_or("-".into()),
        );
        json_rows.push(serde_json::json!({
            "arch": arch, "workload": workload, "device": device, "burn": burn,
            "pytorch": reference, "ratio": ratio,
        }));
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "threads": threads, "pytorch": torch, "rows": json_rows });
        if let Err(e) = std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap_or_default()) {
            eprintln!("cannot write {path}: {e}");
        }
    }
}
