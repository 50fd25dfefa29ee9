//! Import speed of a full-size torchvision ResNet-18 state_dict (44.7 MB), `.pth` and
//! `.safetensors`: median of several runs, warm-up excluded, printed as a table.
//!
//! The weights are generated locally (no download) with torchvision's own `resnet18()`:
//!
//! ```text
//! python3 tests/fixtures/make_weights_fixtures.py --full /tmp/resnet18-full
//! FINETUNE_IMPORT_BENCH_DIR=/tmp/resnet18-full cargo bench --bench import
//! # dev profile (dependencies at opt-level 3, this crate unoptimised), no Burn rebuild:
//! FINETUNE_IMPORT_BENCH_DIR=/tmp/resnet18-full cargo test --bench import --features wgpu
//! ```
//!
//! Without `FINETUNE_IMPORT_BENCH_DIR` the benchmark prints how to generate the files and exits.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use finetune::ResNet;
use finetune::download::Checksum;
use finetune::model::ResNetConfig;
use finetune::weights::{LoadOptions, WeightsFile};

const ENV: &str = "FINETUNE_IMPORT_BENCH_DIR";
const WARMUP: usize = 2;
const RUNS: usize = 9;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median and min of `RUNS` timed runs after `WARMUP` untimed ones.
fn time(mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..WARMUP {
        f();
    }
    let samples: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    let min = samples.iter().copied().min().unwrap_or_default();
    (median(samples), min)
}

fn row(what: &str, file: &Path, (median, min): (Duration, Duration)) {
    let mb = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    println!(
        "{what:<48} {mb:>7.1} MB {:>9.1} ms {:>9.1} ms {:>8.0} MB/s",
        median.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        mb / median.as_secs_f64()
    );
}

/// Reads every float tensor of the model back to host memory; returns the element count.
fn read_back(model: &ResNet) -> usize {
    struct Reader(usize);
    impl ModuleVisitor for Reader {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 += param.val().into_data().num_elements();
        }
    }
    let mut reader = Reader(0);
    model.visit(&mut reader);
    reader.0
}

fn main() {
    let Some(dir) = std::env::var_os(ENV).map(PathBuf::from) else {
        println!(
            "import benchmark skipped: set {ENV} to a directory holding resnet18-random.pth and \
             resnet18-random.safetensors, written by\n  python3 tests/fixtures/make_weights_fixtures.py --full DIR"
        );
        return;
    };
    let device = Device::flex();
    let profile = if cfg!(debug_assertions) {
        "dev (deps opt-level 3)"
    } else {
        "release"
    };
    println!("ResNet-18 import, {profile} profile, median of {RUNS} runs after {WARMUP} warm-up");
    println!(
        "{:<48} {:>10} {:>12} {:>12} {:>13}",
        "", "file", "median", "min", "throughput"
    );
    let mut base = ResNetConfig::resnet18(1000).init(&device);
    for name in ["resnet18-random.pth", "resnet18-random.safetensors"] {
        let path = dir.join(name);
        if !path.is_file() {
            println!(
                "{} is missing: regenerate it (see the bench's docs)",
                path.display()
            );
            return;
        }
        // The import itself: open the file, read every tensor, strict load into a built model.
        let timing = time(|| {
            let report = WeightsFile::open(&path)
                .and_then(|mut f| f.load_into(&mut base, &LoadOptions::strict()))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(report.applied.len(), 102);
        });
        row(&format!("import {name}"), &path, timing);
        // The same, reading every tensor back to the host afterwards: proves the load is not
        // deferred (the difference is the read-back itself).
        let timing = time(|| {
            WeightsFile::open(&path)
                .and_then(|mut f| f.load_into(&mut base, &LoadOptions::strict()))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(read_back(&base), 11_689_512 + 9_600);
        });
        row(&format!("import + read back {name}"), &path, timing);
        // What `ResNet::from_weights_file` costs end to end (model init included).
        let timing = time(|| {
            let (model, _) =
                ResNet::from_weights_file(&path, &device).unwrap_or_else(|e| panic!("{e}"));
            std::hint::black_box(model);
        });
        row(&format!("init + import {name}"), &path, timing);
    }
    let pth = dir.join("resnet18-random.pth");
    let timing = time(|| {
        std::hint::black_box(ResNetConfig::resnet18(1000).init(&device));
    });
    row(
        "model build alone (lazy: nothing materialised)",
        &pth,
        timing,
    );
    let checksum = Checksum::Sha256Prefix("0".into());
    let timing = time(|| {
        let _ = std::hint::black_box(checksum.verify_file(&pth));
    });
    row(
        "sha256 of the .pth (cache check without stamp)",
        &pth,
        timing,
    );
}
