//! Data-pipeline throughput (images per second), decode-free: CIFAR-10 images held in memory as
//! `u8`, augmented, normalised and stacked into `[B, 3, H, W]` batches.
//!
//! ```text
//! cargo bench --bench data              # add --features wgpu to include GPU uploads
//! ```
//!
//! Data: the CIFAR-10 sample shipped with the crate, tiled to 50,000 images (154 MB, like the
//! full training set, so memory traffic is realistic). Each row: one warm-up run, then the
//! median of 5 timed runs. "host" rows stop at the `f32` host buffer; "loader" rows go through
//! `ImageLoader::epoch(..).iter()` (worker threads, ordered delivery, one tensor upload per batch)
//! onto the flex CPU device.

use std::sync::Arc;
use std::time::Instant;

use burn::data::dataloader::Dataset;
use burn::tensor::Device;
use finetune::data::{
    Cifar10, ImageDataset, ImageLoader, LoaderConfig, Normalize, Pipeline, RandomCrop,
    RandomHorizontalFlip, Resize, Subset,
};

const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Images per second of `f` (which returns the number of images it processed).
fn measure(mut f: impl FnMut() -> usize) -> f64 {
    f(); // warm-up
    median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                let n = f();
                n as f64 / t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn tiled_cifar(copies: usize) -> ImageDataset {
    let sample = Cifar10::sample().expect("the CIFAR-10 sample shipped with the crate");
    let train = sample.train();
    let mut pixels = Vec::with_capacity(train.len() * copies * 3072);
    let mut labels = Vec::with_capacity(train.len() * copies);
    for _ in 0..copies {
        for i in 0..train.len() {
            let (p, _, _) = train.pixels(i).expect("pixel data");
            pixels.extend_from_slice(p);
            labels.push(train.labels()[i]);
        }
    }
    ImageDataset::from_uniform(32, 32, pixels, labels, sample.classes().to_vec())
        .expect("tiled dataset")
}

fn row(name: &str, batch: usize, workers: &str, rate: f64) {
    println!("| {name:<58} | {batch:>5} | {workers:>7} | {rate:>9.0} |");
}

fn bench_loader(
    name: &str,
    dataset: Arc<dyn Dataset<finetune::data::ImageItem>>,
    pipeline: &Pipeline,
    batch: usize,
    device: &Device,
) {
    // Host only, on the calling thread.
    let host = ImageLoader::new(
        dataset.clone(),
        pipeline.clone(),
        LoaderConfig::train(batch, 0).with_workers(0),
        device.clone(),
    );
    let mut epoch = 0;
    let rate = measure(|| {
        epoch += 1;
        host.host_iter(epoch).map(|b| b.expect("batch").len()).sum()
    });
    row(&format!("{name}, host buffers"), batch, "0", rate);
    for workers in [0, 1, 2] {
        let loader = ImageLoader::new(
            dataset.clone(),
            pipeline.clone(),
            LoaderConfig::train(batch, 0).with_workers(workers),
            device.clone(),
        );
        let mut epoch = 0;
        let rate = measure(|| {
            epoch += 1;
            let mut n = 0;
            for b in loader.epoch(epoch).iter() {
                n += b.expect("batch").targets.dims()[0];
            }
            n
        });
        row(
            &format!("{name}, loader -> tensors"),
            batch,
            &workers.to_string(),
            rate,
        );
    }
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("finetune data pipeline, {cores} cores, median of {RUNS} runs after a warm-up\n");
    println!(
        "| {:<58} | {:>5} | {:>7} | {:>9} |",
        "pipeline", "batch", "workers", "images/s"
    );
    println!("|{:-<60}|{:->7}|{:->9}|{:->11}|", "", "", "", "");
    let device = Device::flex();
    let full = tiled_cifar(50);

    let cifar = Pipeline::new()
        .then(RandomCrop::new(32, 4))
        .then(RandomHorizontalFlip::default())
        .normalize(Normalize::cifar10());
    bench_loader(
        "32x32 crop(4) + flip + normalise (50k)",
        Arc::new(full.clone()),
        &cifar,
        128,
        &device,
    );

    let upsample = Pipeline::new()
        .then(Resize::new(224))
        .then(RandomHorizontalFlip::default())
        .normalize(Normalize::imagenet());
    bench_loader(
        "32->224 resize + flip + normalise (2k)",
        Arc::new(Subset::range(full, 0..2048)),
        &upsample,
        32,
        &device,
    );
}
