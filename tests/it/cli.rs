//! Every example binary, run with bad flags and bad inputs: a clean exit code (never 101, a
//! panic) and a one-line `error: ...` message on stderr.
//!
//! The binaries are the ones `cargo test` builds next to this test binary
//! (`target/<profile>/examples/`); `cargo test --test it` alone does not build them, and this
//! test then fails saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/it-<hash> -> target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo test` (which builds the examples), not `cargo test --test it` alone",
        path.display()
    );
    path
}

/// Runs `name args...` offline in `cwd`, and checks the failure is clean: not a panic, a
/// non-zero exit code, and exactly one line on stderr that starts with `error: `.
fn fails_cleanly(name: &str, args: &[&std::ffi::OsStr], cwd: &Path) -> String {
    let cache = cwd.join("cache");
    let output = Command::new(example(name))
        .args(args)
        .current_dir(cwd)
        .env("FINETUNE_OFFLINE", "1")
        .env("FINETUNE_CACHE", &cache)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run the example");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let shown = format!(
        "{name} {args:?}: exit {:?}, stderr:\n{stderr}",
        output.status.code()
    );
    assert_ne!(output.status.code(), Some(101), "panicked: {shown}");
    assert!(!output.status.success(), "succeeded: {shown}");
    assert!(
        output.status.code().is_some(),
        "killed by a signal: {shown}"
    );
    // Not ours: on a headless machine with Mesa's Vulkan drivers, probing for a GPU (`--device
    // auto`) makes Mesa's device-selection layer print this through libwayland.
    let system_noise = |l: &str| l.contains("XDG_RUNTIME_DIR is invalid or not set");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("downloading ") && !system_noise(l))
        .collect();
    assert_eq!(lines.len(), 1, "not a one-line message: {shown}");
    assert!(lines[0].starts_with("error: "), "{shown}");
    assert!(!stderr.contains("panicked"), "{shown}");
    lines[0].to_string()
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(|a| a.into()).collect()
}

fn run_cases(name: &str, cases: &[Vec<std::ffi::OsString>], cwd: &Path) -> Vec<String> {
    cases
        .iter()
        .map(|args| {
            let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            fails_cleanly(name, &refs, cwd)
        })
        .collect()
}

/// A folder of two tiny PNGs (one per class): too few for a train/val/test split.
fn two_image_folder(root: &Path) -> PathBuf {
    let dir = root.join("tiny");
    for class in ["cat", "dog"] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]))
            .save(dir.join(class).join("0.png"))
            .unwrap();
    }
    dir
}

#[test]
fn training_examples_fail_cleanly_on_bad_flags_and_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = two_image_folder(tmp.path());
    let tiny = tiny.to_str().unwrap();
    let a_dir = tmp.path().to_str().unwrap();
    for name in ["finetune", "feature_extractor"] {
        let cases = [
            os(&["--no-such-flag"]),
            os(&["--epochs", "five"]),
            os(&["--epochs"]),
            os(&["--batch-size", "-1"]),
            os(&["--device", "quantum"]),
            os(&["--sample", "--data-dir", a_dir]),
            os(&["--weights", "resnet99"]),
            os(&["--weights", "none", "--weights-key", "model", "--sample"]),
            os(&["--bn", "sideways", "--sample"]),
            os(&["--weights", a_dir, "--sample"]),
            os(&["--image-folder", "/nonexistent/finetune-test"]),
            os(&["--image-folder", tiny, "--weights", "none", "--epochs", "1"]),
            os(&[
                "--image-folder",
                tiny,
                "--image-size",
                "0",
                "--weights",
                "none",
            ]),
            os(&["--resume", "--sample"]),
            os(&["--sample", "--upsample", "0", "--weights", "none"]),
            os(&["--sample", "--weights", "none", "--label-smoothing", "1.5"]),
            os(&["--sample", "--weights", "none", "--mixup", "-1"]),
            os(&["--sample", "--weights", "none", "--grad-accum", "0"]),
            os(&["--sample", "--weights", "none", "--ema", "1.5"]),
            os(&["--sample", "--weights", "none", "--clip-grad-norm", "-1"]),
            os(&["--sample", "--lr-find", "--resume", "--out", a_dir]),
            os(&["--sample", "--weights", "none", "--randaugment", "2"]),
            os(&["--sample", "--weights", "none", "--randaugment", "2,40"]),
            os(&["--sample", "--weights", "none", "--random-erasing", "1.5"]),
            os(&["--sample", "--trivial-augment", "--randaugment", "2,9"]),
            os(&["--sample", "--weights", "none", "--dtype", "f8"]),
            os(&["--sample", "--weights", "none", "--device", "cuda:x"]),
            os(&["--sample", "--weights", "none", "--device", "flex:1"]),
        ];
        let messages = run_cases(name, &cases, tmp.path());
        assert!(messages[0].contains("no-such-flag"), "{}", messages[0]);
        assert!(messages[3].contains("--batch-size"), "{}", messages[3]);
        assert!(messages[7].contains("weights-key"), "{}", messages[7]);
        assert!(messages[9].contains("directory"), "{}", messages[9]);
        // The library names its option, the example adds the flag.
        assert!(
            messages[12].contains("image_size") && messages[12].contains("--image-size"),
            "{}",
            messages[12]
        );
        assert!(messages[13].contains("--out"), "{}", messages[13]);
        assert!(
            messages[14].contains("upsample") && messages[14].contains("--upsample"),
            "{}",
            messages[14]
        );
        assert!(
            messages[15].contains("--label-smoothing"),
            "{}",
            messages[15]
        );
        assert!(messages[16].contains("--mixup"), "{}", messages[16]);
        assert!(messages[17].contains("--grad-accum"), "{}", messages[17]);
        assert!(messages[18].contains("--ema"), "{}", messages[18]);
        assert!(
            messages[19].contains("--clip-grad-norm"),
            "{}",
            messages[19]
        );
        assert!(messages[20].contains("--lr-find"), "{}", messages[20]);
        assert!(messages[21].contains("N,M"), "{}", messages[21]);
        assert!(messages[22].contains("--randaugment"), "{}", messages[22]);
        assert!(
            messages[23].contains("--random-erasing"),
            "{}",
            messages[23]
        );
        assert!(messages[24].contains("--randaugment"), "{}", messages[24]);
        assert!(messages[25].contains("bf16"), "{}", messages[25]);
        assert!(messages[26].contains("cuda:0"), "{}", messages[26]);
        assert!(messages[27].contains("no index"), "{}", messages[27]);
    }
    // Augmentations with cached features; fastai's fine_tune, which unfreezes the backbone:
    // the feature extractor refuses both.
    let messages = run_cases(
        "feature_extractor",
        &[
            os(&[
                "--sample",
                "--weights",
                "none",
                "--cache-features",
                "--trivial-augment",
            ]),
            os(&["--sample", "--weights", "none", "--freeze-epochs", "1"]),
        ],
        tmp.path(),
    );
    assert!(messages[0].contains("--trivial-augment"), "{}", messages[0]);
    let message = &messages[1];
    assert!(message.contains("--freeze-epochs"), "{message}");
}

#[test]
fn inference_and_inspection_examples_fail_cleanly_on_bad_flags_and_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let missing = tmp.path().join("missing.jpg");
    let missing = missing.to_str().unwrap();
    run_cases(
        "predict",
        &[
            os(&["--no-such-flag"]),
            os(&["--weights"]),
            os(&["--weights", "none", "--image", missing]),
            os(&["--weights", dir, "--image", missing]),
            os(&["--weights", "resnet18", "--image", missing, "--top", "x"]),
            os(&["--weights", "resnet18"]),
            os(&[
                "--weights",
                "resnet18",
                "--image",
                missing,
                "--interpolation",
                "nearest",
            ]),
            os(&["--weights", "resnet18", "--image", missing, "--crop", "0"]),
        ],
        tmp.path(),
    );
    run_cases(
        "inspect",
        &[
            os(&["resnet99"]),
            os(&["--no-such-flag"]),
            os(&["resnet18", "--num-classes", "0"]),
            os(&["resnet18", "--freeze-to", "layer9"]),
        ],
        tmp.path(),
    );
    run_cases(
        "show_batch",
        &[
            os(&["--no-such-flag"]),
            os(&["--count", "x"]),
            os(&["--sample", "--size", "0"]),
            os(&["--image-folder", "/nonexistent/finetune-test"]),
        ],
        tmp.path(),
    );
    // Pretraining: no images, or images that are not the bundled sample's source (whose
    // exclusion it checks image by image before training).
    let folder = two_image_folder(tmp.path());
    let out = tmp.path().join("rotation-run");
    let out = out.to_str().unwrap();
    let messages = run_cases(
        "pretrain_rotation",
        &[
            os(&["--no-such-flag"]),
            os(&["--images", "/nonexistent/finetune-test", "--out", out]),
            os(&[
                "--images",
                folder.to_str().unwrap(),
                "--exclude-first",
                "0",
                "--out",
                out,
            ]),
        ],
        tmp.path(),
    );
    let missing_model = tmp.path().join("missing.bpk");
    run_cases(
        "export",
        &[
            os(&["--no-such-flag"]),
            os(&[
                "--model",
                missing_model.to_str().unwrap(),
                "--out",
                "m.safetensors",
            ]),
            os(&["--model", missing_model.to_str().unwrap(), "--out", "m.pt"]),
        ],
        tmp.path(),
    );
    assert!(
        messages[2].contains("bundled sample image") && messages[2].contains("--exclude-first"),
        "{}",
        messages[2]
    );
}

#[cfg(unix)]
#[test]
fn non_utf8_arguments_are_paths_or_clean_errors_never_panics() {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    // A Latin-1 name (as from an old FAT volume) that does not exist.
    let bad: OsString = tmp
        .path()
        .join(OsStr::from_bytes(b"caf\xe9-missing"))
        .into();
    let flag = |f: &str| OsString::from(f);
    let cases: [(&str, Vec<OsString>); 6] = [
        ("inspect", vec![flag("--weights"), bad.clone()]),
        ("inspect", vec![OsStr::from_bytes(b"resnet\xe9").into()]),
        (
            "predict",
            vec![flag("--weights"), bad.clone(), flag("--image"), bad.clone()],
        ),
        (
            "finetune",
            vec![
                flag("--image-folder"),
                bad.clone(),
                flag("--weights"),
                flag("none"),
            ],
        ),
        (
            "feature_extractor",
            vec![flag("--weights"), bad.clone(), flag("--sample")],
        ),
        ("show_batch", vec![flag("--image-folder"), bad.clone()]),
    ];
    for (name, args) in cases {
        let refs: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        let message = fails_cleanly(name, &refs, tmp.path());
        // The path is named (lossily), not replaced by another one.
        assert!(
            message.contains("caf") || message.contains("resnet"),
            "{name}: {message}"
        );
    }
}

/// Every example's `--help` (generated by clap from the doc comments) lists each of its flags
/// with a description; usage errors exit with code 2, library errors with 1.
#[test]
fn help_documents_every_flag_and_usage_errors_exit_2() {
    let tutorial = [
        "data-dir",
        "image-folder",
        "sample",
        "image-size",
        "holdout",
        "weights",
        "weights-key",
        "arch",
        "epochs",
        "batch-size",
        "lr",
        "seed",
        "train-limit",
        "val-limit",
        "upsample",
        "device",
        "dtype",
        "devices",
        "workers",
        "out",
        "resume",
        "label-smoothing",
        "mixup",
        "cutmix",
        "grad-accum",
        "clip-grad-norm",
        "ema",
        "freeze-epochs",
        "tta",
        "lr-find",
        "rrc",
        "trivial-augment",
        "randaugment",
        "random-erasing",
    ];
    let feature_extractor: Vec<&str> = tutorial
        .iter()
        .copied()
        .chain(["cache-features", "bn"])
        .collect();
    let examples: [(&str, &[&str]); 7] = [
        ("finetune", &tutorial),
        ("feature_extractor", &feature_extractor),
        (
            "predict",
            &[
                "weights",
                "image",
                "input-tensor",
                "top",
                "json",
                "arch",
                "num-classes",
                "weights-key",
                "device",
            ],
        ),
        (
            "inspect",
            &[
                "num-classes",
                "freeze-backbone",
                "freeze-to",
                "bn-trainable",
                "device",
                "weights",
                "weights-key",
            ],
        ),
        (
            "show_batch",
            &[
                "data-dir",
                "image-folder",
                "sample",
                "out",
                "count",
                "augment",
                "size",
                "seed",
                "epoch",
            ],
        ),
        (
            "pretrain_rotation",
            &[
                "images",
                "exclude-first",
                "limit",
                "val-images",
                "epochs",
                "lr",
                "batch-size",
                "seed",
                "out",
                "resume",
                "weights-out",
            ],
        ),
        ("export", &["model", "out"]),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (name, flags) in examples {
        // `-h`: one line per flag, its description beside it.
        let output = Command::new(example(name))
            .arg("-h")
            .current_dir(tmp.path())
            .output()
            .expect("run the example");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{name} -h: {output:?}");
        for flag in flags {
            let line = help
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with("Usage:"))
                .find(|l| l.split([' ', ',']).any(|w| w == format!("--{flag}")))
                .unwrap_or_else(|| panic!("{name}: --{flag} missing from the help:\n{help}"));
            let described = line
                .split_once("  ")
                .is_some_and(|(_, text)| !text.trim().is_empty());
            assert!(described, "{name}: --{flag} is not described: {line}");
        }
        let output = Command::new(example(name))
            .arg("--no-such-flag")
            .current_dir(tmp.path())
            .output()
            .expect("run the example");
        assert_eq!(output.status.code(), Some(2), "{name}: {output:?}");
    }
    let help = Command::new(example("finetune"))
        .arg("--help")
        .output()
        .expect("run the example");
    let help = String::from_utf8_lossy(&help.stdout);
    for default in [
        "[default: 5; 15 with fewer than 4000 training images",
        "[default: 128; 32 with fewer than 4000",
        "[default: 0.001; with fewer than 4000 training images 0.01, or 0.1 for the feature",
        "[default: auto]",
    ] {
        assert!(help.contains(default), "{default} missing:\n{help}");
    }
}

/// Offline, the tutorial examples start from the backbone the crate ships (saying so), and
/// `--weights none` from random initialisation.
#[test]
fn offline_the_examples_start_from_the_bundled_backbone() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(format!("{name}-{}", extra.len()));
        let output = Command::new(example(name))
            .args(["--epochs", "1", "--train-limit", "64", "--val-limit", "32"])
            .args(["--batch-size", "32", "--out"])
            .arg(&out)
            .args(extra)
            .current_dir(tmp.path())
            .env("FINETUNE_OFFLINE", "1")
            .env("FINETUNE_CACHE", tmp.path().join("cache"))
            .output()
            .expect("run the example");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{name} {extra:?}: {output:?}");
        stdout
    };
    for name in ["finetune", "feature_extractor"] {
        let stdout = run(name, &[]);
        assert!(
            stdout.contains("starting from the bundled finetune_mini.rotation backbone"),
            "{name}:\n{stdout}"
        );
        assert!(
            stdout.contains("finetune_mini")
                && stdout.contains("FinetuneMini_Weights.ROTATION_CIFAR10"),
            "{name}:\n{stdout}"
        );
        let stdout = run(name, &["--weights", "none"]);
        assert!(!stdout.contains("finetune_mini"), "{name}:\n{stdout}");
        assert!(
            stdout.contains("random initialisation"),
            "{name}:\n{stdout}"
        );
    }
}

#[test]
fn show_batch_draws_the_tutorials_random_resized_crops_of_an_image_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("folder");
    for (class, (w, h)) in [("ants", (40, 30)), ("bees", (20, 50))] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..3u8 {
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8 * 5, y as u8 * 5, i * 60]))
                .save(dir.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let out = tmp.path().join("batch.png");
    let output = Command::new(example("show_batch"))
        .args([
            "--augment",
            "tutorial",
            "--size",
            "16",
            "--count",
            "4",
            "--out",
        ])
        .arg(&out)
        .arg("--image-folder")
        .arg(&dir)
        .output()
        .expect("run the example");
    assert!(output.status.success(), "{output:?}");
    assert!(
        image::open(&out).is_ok(),
        "{} is not an image",
        out.display()
    );
}

/// `--lr-find` writes fastai's plot and prints the suggestions without training; a run with
/// the training features on (fine_tune, EMA, accumulation, clipping, TTA) completes and says
/// what it used.
#[test]
fn the_lr_finder_and_the_training_features_run_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, out: &str, extra: &[&str]| {
        let output = Command::new(example(name))
            .args(["--sample", "--weights", "none", "--train-limit", "64"])
            .args(["--val-limit", "32", "--batch-size", "16", "--out", out])
            .args(extra)
            .current_dir(tmp.path())
            .env("FINETUNE_OFFLINE", "1")
            .env("FINETUNE_CACHE", tmp.path().join("cache"))
            .output()
            .expect("run the example");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{name} {extra:?}: {output:?}");
        stdout
    };
    for name in ["finetune", "feature_extractor"] {
        let out = format!("{name}-lr");
        let stdout = run(name, &out, &["--lr-find"]);
        assert!(
            stdout.contains("suggested learning rates: valley"),
            "{stdout}"
        );
        assert!(tmp.path().join(&out).join("lr_find.png").is_file());
        // Nothing was trained.
        assert!(!tmp.path().join(&out).join("checkpoint").exists());
    }
    let stdout = run(
        "finetune",
        "features",
        &[
            "--epochs",
            "1",
            "--freeze-epochs",
            "1",
            "--ema",
            "0.9",
            "--grad-accum",
            "2",
            "--clip-grad-norm",
            "5",
            "--tta",
            "--rrc",
            "--trivial-augment",
            "--random-erasing",
            "0.25",
        ],
    );
    // Resuming on other training data (here another augmentation) is refused.
    let output = Command::new(example("finetune"))
        .args(["--sample", "--weights", "none", "--train-limit", "64"])
        .args([
            "--val-limit",
            "32",
            "--batch-size",
            "16",
            "--out",
            "features",
        ])
        .args([
            "--epochs",
            "2",
            "--freeze-epochs",
            "1",
            "--ema",
            "0.9",
            "--grad-accum",
            "2",
        ])
        .args([
            "--clip-grad-norm",
            "5",
            "--rrc",
            "--random-erasing",
            "0.25",
            "--resume",
        ])
        .args(["--randaugment", "2,9"])
        .current_dir(tmp.path())
        .env("FINETUNE_OFFLINE", "1")
        .env("FINETUNE_CACHE", tmp.path().join("cache"))
        .output()
        .expect("run the example");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("trained on other data (pipeline differ)"),
        "{stderr}"
    );
    // The finder checks its output directory before it runs.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let file = file.to_str().expect("a UTF-8 temporary path");
    let message = &run_cases(
        "finetune",
        &[os(&[
            "--sample",
            "--weights",
            "none",
            "--lr-find",
            "--out",
            file,
        ])],
        tmp.path(),
    )[0];
    assert!(message.contains("output directory"), "{message}");
    for said in [
        "2 batches per step",
        "model EMA 0.9",
        "fine_tune: 1 head-only epochs",
        "backbone unfrozen",
        "with flip TTA",
        "top-5",
        "train RandomResizedCrop(32) + flip + TrivialAugmentWide + RandomErasing(0.25), eval 32x32",
    ] {
        assert!(stdout.contains(said), "{said} missing:\n{stdout}");
    }
    // Pure bf16 on the CPU: parameters, activations and optimizer state.
    let bf16 = run("finetune", "bf16", &["--epochs", "1", "--dtype", "bf16"]);
    assert!(bf16.contains("fine-tuning on flex in bf16"), "{bf16}");
    assert!(bf16.contains("test accuracy"), "{bf16}");
}

/// A closed standard output (`inspect ... | head -1`) ends an example quietly, as Unix tools
/// end, never with a panic.
#[test]
#[cfg(unix)]
fn a_closed_stdout_is_not_a_panic() {
    use std::process::Stdio;
    let mut child = Command::new(example("inspect"))
        .args(["resnet18", "--num-classes", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the example");
    // Close the reading end before the example writes.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait for the example");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(101), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `multi_device` (feature `train`): burn-train's SupervisedTraining from the command line,
/// on one CPU device and on two replicas, and its refusals.
#[cfg(feature = "train")]
#[test]
fn multi_device_trains_with_burn_train_on_one_and_two_cpu_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &str, extra: &[&str]| {
        let output = Command::new(example("multi_device"))
            .args(["--sample", "--weights", "none", "--train-limit", "64"])
            .args(["--val-limit", "16", "--batch-size", "16"])
            .args(["--workers", "1", "--out", out])
            .args(extra)
            .current_dir(tmp.path())
            .env("FINETUNE_OFFLINE", "1")
            .env("FINETUNE_CACHE", tmp.path().join("cache"))
            .output()
            .expect("run the example");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{extra:?}: {output:?}");
        stdout
    };
    let one = run("one", &["--devices", "flex", "--epochs", "1"]);
    assert!(one.contains("(SingleDevice)"), "{one}");
    assert!(one.contains("valid epoch 1/1: Accuracy"), "{one}");
    assert!(one.contains("test accuracy"), "{one}");
    let checkpoint = tmp.path().join("one/checkpoint/model-1.bpk");
    assert!(checkpoint.is_file(), "{one}");
    let two = run(
        "two",
        &[
            "--devices",
            "flex,flex",
            "--grad-accum",
            "2",
            "--epochs",
            "1",
        ],
    );
    assert!(two.contains("--lr 0.005 follows one device"), "{two}");
    assert!(two.contains("flex, flex (MultiDevice"), "{two}");
    assert!(
        two.contains("batches of 16 per device, 1 optimizer steps per epoch, 2 batches per step"),
        "{two}"
    );
    // Resuming the one-epoch run for a second epoch.
    let resumed = run("one", &["--devices", "flex", "--epochs", "2", "--resume"]);
    assert!(resumed.contains("epoch 2/2"), "{resumed}");
    assert!(tmp.path().join("one/checkpoint/model-2.bpk").is_file());

    let messages = run_cases(
        "multi_device",
        &[
            os(&["--sample", "--devices", "flex,flex", "--strategy", "ddp"]),
            os(&["--sample", "--devices", "flex,,flex"]),
            os(&["--sample", "--ema", "0.9", "--mixup", "0.2"]),
            os(&["--sample", "--resume", "--out", "nowhere"]),
            os(&["--sample", "--devices", "cuda:1"]),
        ],
        tmp.path(),
    );
    assert!(messages[0].contains("CUDA"), "{}", messages[0]);
    assert!(messages[1].contains("unknown device"), "{}", messages[1]);
    assert!(
        messages[2].contains("--mixup, --ema") && messages[2].contains("finetune example"),
        "{}",
        messages[2]
    );
    assert!(messages[3].contains("--resume"), "{}", messages[3]);
    assert!(messages[4].contains("--features cuda"), "{}", messages[4]);
}
