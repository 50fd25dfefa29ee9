//! The tutorial recipe end to end on the bundled CIFAR-10 sample: a short run, then a resumed
//! one, with every output file.

use finetune::DeviceChoice;
use finetune::model::BnPolicy;
use finetune::recipe::{DataChoice, Hyperparameters, Mode, TutorialOptions, WeightsChoice, run};

fn options(mode: Mode, out: &std::path::Path, epochs: usize) -> TutorialOptions {
    let mut o = TutorialOptions::new(mode);
    o.data = DataChoice::Sample;
    o.weights = WeightsChoice::None;
    o.device = DeviceChoice::Flex;
    o.epochs = Some(epochs);
    o.batch_size = Some(16);
    o.train_limit = Some(48);
    o.val_limit = Some(16);
    o.workers = Some(1);
    o.out = Some(out.to_path_buf());
    o
}

#[test]
fn the_tutorial_runs_on_the_sample_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(&options(Mode::FineTune, dir.path(), 1)).unwrap();
    assert_eq!(first.sizes, [48, 16, 16]);
    assert_eq!(first.history.epochs.len(), 1);
    let mut more = options(Mode::FineTune, dir.path(), 2);
    more.resume = true;
    let second = run(&more).unwrap();
    assert_eq!(second.history.epochs.len(), 2);
    assert_eq!(second.history.epochs[0], first.history.epochs[0]);
    for file in [
        "summary.json",
        "history.json",
        "history.csv",
        "config.json",
        "best_model.bpk",
        "curves.png",
        "confusion.png",
        "predictions.png",
        "checkpoint/model.bpk",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
    }
    assert!((0.0..=1.0).contains(&second.test_acc));
}

#[test]
fn the_feature_extractor_caches_features_and_bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(Mode::FeatureExtractor, dir.path(), 2);
    o.cache_features = true;
    let report = run(&o).unwrap();
    assert_eq!(report.history.epochs.len(), 2);

    let mut bad = options(Mode::FineTune, &dir.path().join("other"), 1);
    bad.cache_features = true;
    assert!(
        run(&bad)
            .unwrap_err()
            .to_string()
            .contains("feature-extractor")
    );
    let mut bad = options(Mode::FineTune, dir.path(), 1);
    bad.out = None;
    bad.resume = true;
    assert!(
        run(&bad)
            .unwrap_err()
            .to_string()
            .contains("TutorialOptions::out")
    );
    let mut missing = options(Mode::FineTune, &dir.path().join("x"), 1);
    missing.data = DataChoice::CifarDir(dir.path().join("no-such-dir"));
    assert!(run(&missing).is_err());
}

#[test]
fn small_datasets_get_their_own_defaults_per_mode() {
    use Hyperparameters as H;
    assert_eq!(H::for_mode(Mode::FineTune, 1000), H::SMALL_DATA);
    assert_eq!(
        H::for_mode(Mode::FeatureExtractor, 1000),
        H::SMALL_DATA_HEAD
    );
    assert_eq!(H::for_mode(Mode::FineTune, 45_000), H::TUTORIAL);
    assert_eq!(H::for_mode(Mode::FeatureExtractor, 45_000), H::TUTORIAL);
    let mut o = TutorialOptions::new(Mode::FeatureExtractor);
    assert_eq!(o.hyperparameters(1000).lr, 0.1);
    assert_eq!(o.bn_policy_for(1000), BnPolicy::Frozen);
    assert_eq!(o.bn_policy_for(45_000), BnPolicy::TrainMode);
    o.lr = Some(0.5);
    o.bn_policy = Some(BnPolicy::TrainMode);
    assert_eq!(o.hyperparameters(1000).lr, 0.5);
    assert_eq!(o.bn_policy_for(1000), BnPolicy::TrainMode);
    o.bn_policy = None;
    o.cache_features = true;
    assert_eq!(o.bn_policy_for(45_000), BnPolicy::Frozen);
    // Caching with a policy that changes the features is refused before anything loads.
    let dir = tempfile::tempdir().unwrap();
    let mut bad = options(Mode::FeatureExtractor, dir.path(), 1);
    bad.cache_features = true;
    bad.bn_policy = Some(BnPolicy::TrainMode);
    let err = run(&bad).unwrap_err().to_string();
    assert!(err.contains("frozen"), "{err}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn an_architecture_that_differs_from_the_weights_is_an_error_never_ignored() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/weights/basic.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(Mode::FineTune, dir.path(), 1);
    o.weights = WeightsChoice::File(fixture.clone());
    o.arch = Some("resnet50".into());
    let err = run(&o).unwrap_err().to_string();
    assert!(err.contains("not a resnet50"), "{err}");
    assert!(!dir.path().join("checkpoint").exists());

    // Unset, the weights' own architecture is used and reported (a ResNet-18 topology of
    // narrower widths: not a `resnet18`, whose weights would not fit it).
    o.arch = None;
    let report = run(&o).unwrap();
    assert_eq!(report.arch, "resnet(custom)");
    o.arch = Some("resnet18".into());
    let err = run(&o).unwrap_err().to_string();
    assert!(err.contains("not a resnet18"), "{err}");
}

#[test]
fn every_family_runs_both_recipes_on_the_sample() {
    for arch in [
        "convnext_tiny",
        "efficientnet_b0",
        "mobilenet_v3_small",
        "vit_b_16",
    ] {
        for mode in [Mode::FineTune, Mode::FeatureExtractor] {
            let dir = tempfile::tempdir().unwrap();
            let mut o = options(mode, dir.path(), 1);
            o.arch = Some(arch.into());
            o.train_limit = Some(32);
            o.cache_features = mode == Mode::FeatureExtractor;
            let report = run(&o).unwrap_or_else(|e| panic!("{arch} {mode:?}: {e}"));
            assert_eq!(report.arch, arch);
            assert_eq!(report.history.epochs.len(), 1, "{arch} {mode:?}");
            assert!(
                report.history.epochs[0].train_loss.is_finite(),
                "{arch} {mode:?}"
            );
            assert!(
                dir.path().join("best_model.bpk").is_file(),
                "{arch} {mode:?}"
            );
        }
    }
}
