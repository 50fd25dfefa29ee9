//! The backbone the crate ships (`finetune_mini.rotation`): registered and verified like any
//! other weights, loaded without a network, and really pretrained — it tells the rotations of
//! the bundled sample's images apart, images it never saw in pretraining.

use burn::tensor::{Tensor, TensorData};
use finetune::data::functional::rot90;
use finetune::data::{Cifar10, Normalize};
use finetune::download::Cache;
use finetune::model::{AnyModel, InferenceModel, VisionModel};
use finetune::weights::{FINETUNE_MINI_ROTATION, LoadOptions, Weights, pretrained_names};
use finetune::{Error, recipe};

use crate::common::cpu;

fn bundled() -> Weights {
    Weights::Bundled(&FINETUNE_MINI_ROTATION)
}

#[test]
fn the_bundled_backbone_is_registered_and_verified_like_any_weights() {
    let w = bundled();
    for name in [
        "finetune_mini.rotation",
        "finetune-mini.rotation",
        "FinetuneMini_Weights.ROTATION_CIFAR10",
        "finetune_mini",
    ] {
        assert_eq!(Weights::parse(name).unwrap(), w, "{name}");
    }
    assert_eq!(Weights::default_for("finetune_mini").unwrap(), w);
    assert!(pretrained_names().contains(&"finetune_mini.rotation".to_string()));
    assert!(Weights::parse("finetune_mini.imagenet").is_err());

    let path = FINETUNE_MINI_ROTATION.path();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 4 << 20, "{size} bytes: a few MB at most");
    assert!(w.file_name().contains(w.sha256_prefix()));
    assert_eq!(FINETUNE_MINI_ROTATION.sha256.len(), 64);
    w.checksum().verify_file(&path).unwrap();

    // Loaded with no network and an empty offline cache: nothing is downloaded.
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path()).offline(true);
    let (model, report) = w.load(&cache, &cpu()).unwrap();
    assert_eq!(model.arch(), "finetune_mini");
    assert_eq!(model.num_classes(), 4);
    assert_eq!(model.param_summary().total() as u64, w.num_params());
    assert_eq!(report.applied.len(), model.tensor_paths().len());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // The file names its own architecture.
    let (inferred, _) = AnyModel::from_weights_file(&path, &LoadOptions::strict(), &cpu()).unwrap();
    assert_eq!(
        (inferred.arch().as_str(), inferred.num_classes()),
        ("finetune_mini", 4)
    );
    let p = w.preprocess();
    assert_eq!((p.resize, p.crop), (32, 32));
    assert_eq!(w.categories(), ["0", "90", "180", "270"]);
}

#[test]
fn a_bundled_file_that_was_altered_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(bundled().file_name());
    let mut bytes = std::fs::read(FINETUNE_MINI_ROTATION.path()).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&copy, bytes).unwrap();
    let err = bundled().load_from_file(&copy, &cpu()).unwrap_err();
    assert!(matches!(err, Error::Download(_)), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
}

/// The sample's test images, each at 0, 90, 180 and 270 degrees (counter-clockwise), and the
/// rotation labels.
fn rotated_sample(n: usize) -> (Vec<f32>, Vec<usize>) {
    let sample = Cifar10::sample().unwrap();
    let test = sample.test();
    let lut = Normalize::new(
        FINETUNE_MINI_ROTATION.preprocess.mean,
        FINETUNE_MINI_ROTATION.preprocess.std,
    )
    .lut();
    let (mut values, mut labels) = (Vec::new(), Vec::new());
    for i in 0..n {
        let image = test.item(i * test.len() / n).unwrap().image;
        for k in 0..4 {
            let mut chw = vec![0.0; 3 * 32 * 32];
            finetune::data::to_chw(&rot90(&image, k), &lut, &mut chw);
            values.extend(chw);
            labels.push(k as usize);
        }
    }
    (values, labels)
}

#[test]
fn the_bundled_backbone_tells_rotations_of_images_it_never_saw() {
    let device = cpu();
    let (model, _) = bundled()
        .load(&Cache::new(tempfile::tempdir().unwrap().path()), &device)
        .unwrap();
    let (values, labels) = rotated_sample(40);
    let n = labels.len();
    let x = Tensor::<4>::from_data(TensorData::new(values, [n, 3, 32, 32]), &device);
    let logits = model.for_inference().forward(x);
    let predicted: Vec<i64> = logits.argmax(1).into_data().iter::<i64>().collect();
    let correct = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| **p as usize == **l)
        .count();
    let accuracy = correct as f64 / n as f64;
    // Chance is 0.25; the weights' held-out rotation accuracy is in their registry entry.
    assert!(accuracy > 0.6, "rotation accuracy {accuracy} on the sample");
}

#[test]
fn named_bundled_weights_start_the_recipe_with_their_own_normalisation() {
    let backbone =
        recipe::load_backbone(&recipe::WeightsChoice::Named(bundled()), None, None, &cpu())
            .unwrap();
    assert_eq!(backbone.arch(), "finetune_mini");
    assert_eq!(
        backbone.description,
        "FinetuneMini_Weights.ROTATION_CIFAR10"
    );
    let normalize = backbone.normalize.unwrap();
    assert_eq!(normalize, Normalize::cifar10());
    let model = backbone
        .model
        .reset_classifier(10)
        .unwrap()
        .freeze_backbone();
    assert_eq!(model.param_summary().trainable(), 128 * 10 + 10);
}

/// `rot90` turns as `torch.rot90(x, k, dims=[H, W])`: [[a, b], [c, d]] -> [[b, d], [a, c]].
#[test]
fn rot90_turns_counter_clockwise_as_torch() {
    let px = |v: u8| image::Rgb([v, v, v]);
    let mut img = image::RgbImage::new(2, 2);
    for (x, y, v) in [(0, 0, 1), (1, 0, 2), (0, 1, 3), (1, 1, 4)] {
        img.put_pixel(x, y, px(v));
    }
    let at = |i: &image::RgbImage| [i[(0, 0)][0], i[(1, 0)][0], i[(0, 1)][0], i[(1, 1)][0]];
    assert_eq!(at(&rot90(&img, 0)), [1, 2, 3, 4]);
    assert_eq!(at(&rot90(&img, 1)), [2, 4, 1, 3]);
    assert_eq!(at(&rot90(&img, 2)), [4, 3, 2, 1]);
    assert_eq!(at(&rot90(&img, 3)), [3, 1, 4, 2]);
    assert_eq!(at(&rot90(&img, 5)), at(&rot90(&img, 1)));
}
