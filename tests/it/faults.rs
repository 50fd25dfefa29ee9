//! Bad inputs and faults around the files the crate writes and reads back: symlinks planted in
//! the download cache, two runs in one directory, damaged or edited checkpoints, crafted model
//! configurations, and batches that do not fit the model.

use finetune::model::VisionModel;
use std::fs;
use std::path::Path;

use burn::store::burn_pack::Reader;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Distribution, Tensor};
use finetune::download::{Checksum, DownloadError, fetch_to};
use finetune::model::{METADATA_KEY, ResNet, ResNetConfig, Stem};
use finetune::train::{Learner, LearnerConfig, TensorSource, TrainError};

use crate::common::cpu;
use crate::http::{Reply, serve};

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(unix)]
#[test]
fn symlinks_planted_in_the_cache_are_never_written_through() {
    let body = b"pretend weights".repeat(100);
    let checksum = Checksum::Sha256Prefix(sha256_hex(&body)[..8].to_string());
    for suffix in [".lock", ".verified"] {
        let server = serve(vec![("/w.pth", Reply::Body(body.clone()))]);
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        fs::write(&victim, b"precious").unwrap();
        let dest = dir.path().join("w.pth");
        let planted = dir.path().join(format!("w.pth{suffix}"));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();

        let result = fetch_to(&server.url("/w.pth"), &dest, &checksum);
        assert_eq!(fs::read(&victim).unwrap(), b"precious", "{suffix}");
        match suffix {
            ".lock" => {
                let err = result.unwrap_err();
                assert!(matches!(err, DownloadError::Io { .. }), "{err}");
                assert!(err.to_string().contains("symbolic link"), "{err}");
                assert!(!dest.exists());
            }
            _ => {
                result.unwrap();
                assert_eq!(fs::read(&dest).unwrap(), body);
            }
        }
        if suffix == ".verified" {
            // The stamp replaced the link rather than writing through it.
            assert!(!fs::symlink_metadata(&planted).unwrap().is_symlink());
        }
    }
}

#[test]
fn temporaries_of_an_interrupted_download_are_removed_by_the_next_one() {
    let body = b"weights".repeat(10);
    let server = serve(vec![("/w.pth", Reply::Body(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.pth");
    // What a download killed mid-way leaves: a fresh-named partial file.
    let stale = dir.path().join(".w.pth.0123456789abcdef.partial");
    fs::write(&stale, b"half").unwrap();
    let checksum = Checksum::Sha256Prefix(sha256_hex(&body)[..8].to_string());
    fetch_to(&server.url("/w.pth"), &dest, &checksum).unwrap();
    assert!(!stale.exists());
    let left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn an_existing_lock_file_is_never_truncated() {
    let body = b"weights".repeat(10);
    let server = serve(vec![("/w.pth", Reply::Body(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.pth");
    fs::write(dir.path().join("w.pth.lock"), b"keep me").unwrap();
    let checksum = Checksum::Sha256Prefix(sha256_hex(&body)[..8].to_string());
    fetch_to(&server.url("/w.pth"), &dest, &checksum).unwrap();
    assert_eq!(fs::read(dir.path().join("w.pth.lock")).unwrap(), b"keep me");
}

const CLASSES: usize = 2;

fn tiny() -> ResNet {
    let device = cpu();
    device.seed(7);
    ResNetConfig::resnet18(CLASSES)
        .with_widths([4, 4, 4, 4])
        .with_stem(Stem::Cifar)
        .init(&device)
}

fn data(channels: usize) -> (TensorSource, TensorSource) {
    let device = cpu();
    device.seed(1);
    let x = Tensor::<4>::random([8, channels, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let labels: Vec<usize> = (0..8).map(|i| i % CLASSES).collect();
    (
        TensorSource::new(x.clone(), &labels, 4),
        TensorSource::new(x, &labels, 4),
    )
}

fn config(epochs: usize) -> LearnerConfig {
    LearnerConfig::default().with_epochs(epochs).with_lr(0.01)
}

/// Trains one epoch of two into `dir`, leaving a checkpoint to resume.
fn one_epoch_into(dir: &Path) {
    let (train, val) = data(3);
    Learner::new(config(2))
        .run_dir(dir)
        .stop_after(Some(1))
        .fit(tiny(), &train, &val)
        .unwrap();
}

fn resume(dir: &Path) -> Result<finetune::train::FitOutcome<finetune::ResNet>, TrainError> {
    let (train, val) = data(3);
    Learner::new(config(2))
        .run_dir(dir)
        .resume(true)
        .fit(tiny(), &train, &val)
}

/// Every file under `dir` with its contents, to show nothing was overwritten.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                out.push((name, fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_second_run_into_a_directory_in_use_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path()).unwrap();
    let holder = fs::File::create(dir.path().join(".lock")).unwrap();
    holder.lock().unwrap();
    let (train, val) = data(3);
    let err = Learner::new(config(1))
        .run_dir(dir.path())
        .fit(tiny(), &train, &val)
        .unwrap_err();
    assert!(matches!(err, TrainError::RunDirInUse { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(!dir.path().join("checkpoint").exists());
    drop(holder);
    // Released: the run proceeds.
    Learner::new(config(1))
        .run_dir(dir.path())
        .fit(tiny(), &train, &val)
        .unwrap();
}

#[test]
fn incomplete_checkpoints_are_errors_and_nothing_is_overwritten() {
    for damage in [
        "model.bpk missing",
        "state.json a directory",
        "best.bpk missing",
    ] {
        let dir = tempfile::tempdir().unwrap();
        one_epoch_into(dir.path());
        let ck = dir.path().join("checkpoint");
        match damage {
            "model.bpk missing" => fs::remove_file(ck.join("model.bpk")).unwrap(),
            "best.bpk missing" => fs::remove_file(ck.join("best.bpk")).unwrap(),
            _ => {
                fs::remove_file(ck.join("state.json")).unwrap();
                fs::create_dir(ck.join("state.json")).unwrap();
            }
        }
        let before = contents(dir.path());
        let err = resume(dir.path()).unwrap_err();
        assert!(
            matches!(err, TrainError::Checkpoint { .. }),
            "{damage}: {err}"
        );
        assert!(err.to_string().contains("incomplete"), "{damage}: {err}");
        assert_eq!(contents(dir.path()), before, "{damage}: files changed");
    }
}

#[test]
fn a_previous_run_without_its_checkpoint_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    one_epoch_into(dir.path());
    fs::remove_dir_all(dir.path().join("checkpoint")).unwrap();
    let before = contents(dir.path());
    // Resuming: nothing to resume from.
    let err = resume(dir.path()).unwrap_err().to_string();
    assert!(err.contains("nothing to resume"), "{err}");
    // A fresh run into the same directory.
    let (train, val) = data(3);
    let err = Learner::new(config(2))
        .run_dir(dir.path())
        .fit(tiny(), &train, &val)
        .unwrap_err()
        .to_string();
    assert!(err.contains("history.json"), "{err}");
    assert_eq!(contents(dir.path()), before);
}

#[cfg(unix)]
#[test]
fn a_symlink_planted_as_a_run_output_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.txt");
    fs::write(&victim, b"precious").unwrap();
    let run = dir.path().join("run");
    fs::create_dir(&run).unwrap();
    std::os::unix::fs::symlink(&victim, run.join("history.json")).unwrap();
    let (train, val) = data(3);
    let err = Learner::new(config(1))
        .run_dir(&run)
        .fit(tiny(), &train, &val)
        .unwrap_err()
        .to_string();
    assert!(err.contains("history.json"), "{err}");
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn a_crash_between_the_checkpoint_renames_resumes_from_the_old_one_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = data(3);
    let fit = |resume: bool| {
        Learner::new(config(3))
            .run_dir(dir.path())
            .resume(resume)
            .stop_after(Some(1))
            .fit(tiny(), &train, &val)
            .unwrap()
    };
    fit(false);
    // The swap renames `checkpoint` to `checkpoint.old`, then the new one into place: a crash
    // between the two leaves only `checkpoint.old`.
    let (ck, old) = (
        dir.path().join("checkpoint"),
        dir.path().join("checkpoint.old"),
    );
    fs::rename(&ck, &old).unwrap();
    let second = fit(true);
    assert_eq!(second.resumed_from, Some(1));
    assert!(ck.join("state.json").is_file() && !old.exists());
    assert_eq!(fit(true).resumed_from, Some(2));
}

#[test]
fn edited_or_damaged_checkpoints_are_refused() {
    // epochs_done edited (the history still holds one epoch).
    let dir = tempfile::tempdir().unwrap();
    one_epoch_into(dir.path());
    let state_path = dir.path().join("checkpoint/state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(
        state["files"].as_object().map(|f| f.len()),
        Some(4),
        "the state records the checksums of the checkpoint's four other files"
    );
    state["epochs_done"] = serde_json::json!(9);
    fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let before = contents(dir.path());
    let err = resume(dir.path()).unwrap_err();
    assert!(err.to_string().contains("inconsistent"), "{err}");
    assert_eq!(contents(dir.path()), before);

    // One byte of the optimizer state flipped.
    let dir = tempfile::tempdir().unwrap();
    one_epoch_into(dir.path());
    let optimizer = dir.path().join("checkpoint/optimizer.bpk");
    let mut bytes = fs::read(&optimizer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&optimizer, bytes).unwrap();
    let err = resume(dir.path()).unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");

    // Undamaged: resumes and finishes.
    let dir = tempfile::tempdir().unwrap();
    one_epoch_into(dir.path());
    let outcome = resume(dir.path()).unwrap();
    assert_eq!(outcome.resumed_from, Some(1));
    assert!(outcome.completed);
}

/// Rewrites the saved model description of `path` with `edit` applied to its JSON, keeping the
/// stored tensors.
fn with_edited_config(path: &Path, out: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let reader = Reader::from_file_exact(path).unwrap();
    let mut saved: serde_json::Value =
        serde_json::from_str(reader.metadata().get(METADATA_KEY).unwrap()).unwrap();
    drop(reader);
    edit(&mut saved);
    let mut store = BurnpackStore::from_file(out)
        .auto_extension(false)
        .overwrite(true)
        .metadata(METADATA_KEY, saved.to_string());
    tiny().save_into(&mut store).unwrap();
}

#[test]
fn crafted_model_configurations_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.bpk");
    tiny().save(&good).unwrap();
    ResNet::load(&good, &cpu()).unwrap();

    // 10^8 blocks in layer1: ~10^11 parameters; loading must not try to allocate them.
    let bomb = dir.path().join("bomb.bpk");
    with_edited_config(&good, &bomb, |v| {
        v["config"]["layers"] = serde_json::json!([100_000_000usize, 2, 2, 2])
    });
    let err = ResNet::load(&bomb, &cpu()).unwrap_err().to_string();
    assert!(err.contains("parameters"), "{err}");

    // In bounds, but not what the file stores.
    let edited = dir.path().join("edited.bpk");
    with_edited_config(&good, &edited, |v| {
        v["config"]["layers"] = serde_json::json!([3, 2, 2, 2])
    });
    let err = ResNet::load(&edited, &cpu()).unwrap_err().to_string();
    assert!(err.contains("describes") && err.contains("holds"), "{err}");

    // A model file is not a state_dict: the weights importer says what it is.
    let err = finetune::weights::WeightsFile::open(&good)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ResNet::load"), "{err}");

    // A directory, not a file.
    let err = ResNet::load(dir.path(), &cpu()).unwrap_err().to_string();
    assert!(err.contains("is a directory"), "{err}");
}

#[test]
fn parameter_counts_come_from_the_configuration_alone() {
    // torchvision's figures (`sum(p.numel() for p in model.parameters())`).
    for (config, torchvision) in [
        (ResNetConfig::resnet18(1000), 11_689_512u64),
        (ResNetConfig::resnet34(1000), 21_797_672),
        (ResNetConfig::resnet50(1000), 25_557_032),
        (ResNetConfig::resnet101(1000), 44_549_160),
        (ResNetConfig::resnet152(1000), 60_192_808),
    ] {
        assert_eq!(config.num_params(), torchvision, "{:?}", config.layers);
    }
    // And from the built model, for shapes torchvision does not ship.
    for config in [
        ResNetConfig::resnet18(7)
            .with_widths([4, 8, 8, 16])
            .with_in_channels(1),
        ResNetConfig::resnet50(3)
            .with_widths([2, 4, 4, 8])
            .with_stem(Stem::Cifar),
        ResNetConfig::resnet18(5).with_widths([8, 8, 8, 8]),
    ] {
        let model = config.init(&cpu());
        assert_eq!(
            config.num_params(),
            model.param_summary().total() as u64,
            "{config:?}"
        );
    }
}

#[test]
fn batches_that_do_not_fit_the_model_are_typed_errors_before_any_kernel() {
    // A 1-channel stem (e.g. grayscale weights) fed RGB images.
    let device = cpu();
    let gray = ResNetConfig::resnet18(CLASSES)
        .with_widths([4, 4, 4, 4])
        .with_stem(Stem::Cifar)
        .with_in_channels(1)
        .init(&device);
    let (train, val) = data(3);
    let err = Learner::new(config(1))
        .fit(gray.clone(), &train, &val)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 input channel") && err.contains("3 channels"),
        "{err}"
    );
    let err = finetune::train::evaluate(&gray, &val)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 input channel"), "{err}");
    gray.check_input([2, 1, 8, 8]).unwrap();
    assert!(gray.check_input([0, 1, 8, 8]).is_err());
}

#[test]
fn a_failed_model_write_is_reported_as_a_write_not_a_load() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory where the file should go: the writer cannot create it.
    let target = tmp.path().join("model.bpk");
    fs::create_dir(&target).unwrap();
    let model = ResNetConfig::resnet18(2)
        .with_widths([4, 4, 8, 8])
        .with_stem(Stem::Cifar)
        .init(&cpu());
    let err = model.save(&target).unwrap_err();
    assert!(matches!(err, finetune::Error::ModelWrite { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cannot write model"), "{err}");
}
