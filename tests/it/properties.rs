//! Property tests of every file parser the crate has: valid `.pth`, `.safetensors`, `.bpk`,
//! CIFAR batch files and image files, truncated at random lengths, with random bits flipped,
//! replaced by random bytes or given a random tail. Each must end in a typed error or a load,
//! never a panic, and the weights, model and CIFAR parsers must never request one allocation
//! larger than [`MAX_ALLOCATION`] on the loading thread (the valid files are at most 100 KB, so
//! a larger request means the parser trusted a size it read).

use finetune::model::VisionModel;
use std::path::{Path, PathBuf};

use finetune::data::{Cifar10, ImageFolder, ImageFolderOptions};
use finetune::model::ResNet;
use finetune::weights::{LoadOptions, WeightsFile};
use proptest::prelude::*;

use crate::alloc::largest_allocation;
use crate::common::{cpu, tiny18};

/// The largest single allocation any parse of a corrupted small file may request: 64 MiB.
const MAX_ALLOCATION: usize = 64 << 20;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/weights")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A corrupted version of `valid`: truncated, bit-flipped, random, or a valid head with a random
/// tail.
fn corrupted(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len();
    let (a, b, c) = (valid.clone(), valid.clone(), valid);
    prop_oneof![
        (0..n).prop_map(move |len| a[..len].to_vec()),
        prop::collection::vec((0..n, 0u8..8), 1..16).prop_map(move |flips| {
            let mut bytes = b.clone();
            for (i, bit) in flips {
                bytes[i] ^= 1 << bit;
            }
            bytes
        }),
        prop::collection::vec(any::<u8>(), 0..2048),
        (0..n.min(1024), prop::collection::vec(any::<u8>(), 0..2048)).prop_map(
            move |(keep, tail)| {
                let mut bytes = c[..keep].to_vec();
                bytes.extend(tail);
                bytes
            }
        ),
    ]
}

/// Writes `bytes` to a fresh file named `name` and returns (the directory guard, its path).
fn written(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Imports a weights file the way `predict --weights FILE` does: open, infer the architecture,
/// load strictly.
fn import(path: &Path) -> finetune::Result<()> {
    let mut file = WeightsFile::open(path)?;
    let config = file.infer_config()?;
    let mut model = config.try_init(&cpu())?;
    file.load_into(&mut model, &LoadOptions::strict())?;
    Ok(())
}

/// The files are readable temporary files: damaged content must never be reported as an I/O
/// failure (which would send the user to check permissions or disks instead of the file).
fn not_io<T>(what: &str, result: &finetune::Result<T>) -> Result<(), TestCaseError> {
    use finetune::weights::WeightsError;
    let io = matches!(
        result,
        Err(finetune::Error::Io { .. })
            | Err(finetune::Error::Weights(WeightsError::Io { .. }))
            | Err(finetune::Error::Data(finetune::data::DataError::Io { .. }))
    );
    prop_assert!(
        !io,
        "{what}: damaged data reported as an I/O error: {}",
        result
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    Ok(())
}

fn bounded(what: &str, largest: usize) -> Result<(), TestCaseError> {
    prop_assert!(
        largest <= MAX_ALLOCATION,
        "{what}: one allocation of {largest} bytes"
    );
    Ok(())
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn corrupted_pth_files_never_panic(bytes in corrupted(fixture("basic.pth"))) {
        let (_dir, path) = written("w.pth", &bytes);
        let (result, largest) = largest_allocation(|| import(&path));
        bounded("pth", largest)?;
        not_io("pth", &result)?;
    }

    #[test]
    fn corrupted_safetensors_files_never_panic(
        bytes in corrupted(fixture("basic.safetensors"))
    ) {
        let (_dir, path) = written("w.safetensors", &bytes);
        let (result, largest) = largest_allocation(|| import(&path));
        bounded("safetensors", largest)?;
        not_io("safetensors", &result)?;
    }

    #[test]
    fn corrupted_burnpack_models_never_panic(bytes in corrupted(saved_model())) {
        let (_dir, path) = written("m.bpk", &bytes);
        let (result, largest) = largest_allocation(|| ResNet::load(&path, &cpu()));
        bounded("bpk", largest)?;
        not_io("bpk", &result)?;
        if let Ok(model) = result {
            prop_assert_eq!(model.config(), tiny18(3));
        }
    }

    #[test]
    fn corrupted_cifar_batches_never_panic(bytes in corrupted(cifar_batch(4))) {
        let dir = cifar_dir(4);
        std::fs::write(dir.path().join("data_batch_3.bin"), &bytes).unwrap();
        let (result, largest) = largest_allocation(|| Cifar10::from_dir(dir.path()));
        bounded("cifar", largest)?;
        not_io("cifar", &result)?;
        if let Ok(cifar) = result {
            // Loaded only when the file is still whole records, as many as the others.
            prop_assert_eq!(bytes.len(), 4 * 3073);
            prop_assert_eq!(cifar.train().len(), 20);
        }
    }

    #[test]
    fn corrupted_png_files_never_panic(bytes in corrupted(encoded(image::ImageFormat::Png))) {
        image_folder_never_panics("png", &bytes)?;
    }

    #[test]
    fn corrupted_jpeg_files_never_panic(bytes in corrupted(encoded(image::ImageFormat::Jpeg))) {
        image_folder_never_panics("jpg", &bytes)?;
    }

    #[test]
    fn corrupted_bmp_files_never_panic(bytes in corrupted(encoded(image::ImageFormat::Bmp))) {
        image_folder_never_panics("bmp", &bytes)?;
    }
}

fn saved_model() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bpk");
    tiny18(3).init(&cpu()).save(&path).unwrap();
    std::fs::read(&path).unwrap()
}

/// One valid CIFAR-10 batch file of `records` records.
fn cifar_batch(records: usize) -> Vec<u8> {
    let dir = cifar_dir(records);
    std::fs::read(dir.path().join("data_batch_3.bin")).unwrap()
}

/// An extracted `cifar-10-batches-bin` directory with `records` records per batch.
fn cifar_dir(records: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    crate::data::write_cifar10(dir.path(), records, records);
    dir
}

/// A 24x16 gradient image encoded as `format`.
fn encoded(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([x as u8 * 10, y as u8 * 15, 90]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// A one-class folder holding a good image and the corrupted one: opening it ends in a typed
/// error or a dataset of one or two images.
fn image_folder_never_panics(ext: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("a");
    std::fs::create_dir(&class).unwrap();
    std::fs::write(class.join(format!("bad.{ext}")), bytes).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
        .save(class.join("good.png"))
        .unwrap();
    // Decoding runs on worker threads, which the per-thread allocation bound does not see:
    // what bounds it is the `image` crate's decoder limits.
    let result = ImageFolder::open_with(dir.path(), ImageFolderOptions::default().num_threads(1));
    if let Ok(folder) = result {
        prop_assert!((1..=2).contains(&folder.len()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(64))]

    /// Every strict prefix of a valid PNG, JPEG or WebP file is an error (truncated or not
    /// decodable), never an image filled in with grey.
    #[test]
    fn every_cut_of_a_valid_image_is_an_error(
        format in prop_oneof![
            Just(image::ImageFormat::Png),
            Just(image::ImageFormat::Jpeg),
            Just(image::ImageFormat::WebP),
        ],
        cut in 0.0f64..1.0,
    ) {
        let bytes = encoded(format);
        let len = ((bytes.len() as f64) * cut) as usize;
        let (_dir, path) = written(&format!("cut.{}", format.extensions_str()[0]), &bytes[..len]);
        let result = finetune::data::read_image(&path);
        prop_assert!(result.is_err(), "{format:?} cut at {len} of {} bytes loaded", bytes.len());
    }
}
