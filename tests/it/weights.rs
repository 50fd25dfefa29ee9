//! Pretrained weights: PyTorch parity of the `.pth` / `.safetensors` import (fixtures written by
//! tests/fixtures/make_weights_fixtures.py with torchvision's own ResNet classes), strictness,
//! backbone-only loading, typed errors, architecture inference, the registry, `pretrained`
//! through a local server, and the inference helpers behind examples/predict.rs.

use finetune::model::VisionModel;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use finetune::Error;
use finetune::download::{Cache, DownloadError};
use finetune::model::{BlockKind, ResNet, ResNetConfig, Stem};
use finetune::weights::{
    Classifier, LoadOptions, Preprocess, ResNetWeights, Weights, WeightsError, WeightsFile,
    WeightsFormat, WeightsSource, keymap, open_image, read_input_tensor, read_safetensors_f32,
};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use sha2::{Digest, Sha256};

use crate::common::{changed, cpu, max_abs_diff, snapshot};
use crate::http::{Reply, serve};

const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/weights")
        .join(name)
}

/// A tensor of tests/fixtures/weights/io.safetensors.
fn expected(name: &str) -> Tensor<2> {
    let (values, shape) = read_safetensors_f32(fixture("io.safetensors"), name).unwrap();
    Tensor::from_data(TensorData::new(values, [shape[0], shape[1]]), &cpu())
}

fn input() -> Tensor<4> {
    read_input_tensor(fixture("io.safetensors"), 3, &cpu()).unwrap()
}

/// The fixture script's `SmallResNet(BasicBlock, [2,2,2,2], [4,8,8,16], 10)`.
fn basic_config() -> ResNetConfig {
    ResNetConfig::resnet18(10).with_widths([4, 8, 8, 16])
}

/// The fixture script's `SmallResNet(Bottleneck, [2,1,2,1], [4,4,8,8], 7)`.
fn bottleneck_config() -> ResNetConfig {
    ResNetConfig::new([2, 1, 2, 1], BlockKind::Bottleneck, 7).with_widths([4, 4, 8, 8])
}

/// Loads `file` into a fresh `config` model and checks logits and features against PyTorch's.
fn assert_parity(config: &ResNetConfig, file: &str, prefix: &str) -> (f32, f32) {
    let mut model = config.init(&cpu());
    let report = model
        .load_weights(fixture(file), &LoadOptions::strict())
        .unwrap();
    assert_eq!(report.applied.len(), model.tensor_paths().len(), "{report}");
    assert!(report.skipped.is_empty(), "{report}");
    assert!(
        !report.ignored.is_empty()
            && report
                .ignored
                .iter()
                .all(|k| k.ends_with("num_batches_tracked")),
        "{report}"
    );
    let features = model.forward_pre_logits(input());
    let logits = model.forward_classifier(features.clone());
    let df = max_abs_diff(features, expected(&format!("{prefix}_features")));
    let dl = max_abs_diff(logits, expected(&format!("{prefix}_logits")));
    eprintln!("{file}: max |features - PyTorch| = {df:.2e}, max |logits - PyTorch| = {dl:.2e}");
    assert!(df <= TOLERANCE, "{file}: features differ by {df}");
    assert!(dl <= TOLERANCE, "{file}: logits differ by {dl}");
    (df, dl)
}

#[test]
fn basic_block_pth_matches_pytorch() {
    assert_parity(&basic_config(), "basic.pth", "basic");
}

#[test]
fn basic_block_safetensors_matches_pytorch() {
    assert_parity(&basic_config(), "basic.safetensors", "basic");
}

#[test]
fn bottleneck_pth_matches_pytorch() {
    assert_parity(&bottleneck_config(), "bottleneck.pth", "bottleneck");
}

#[test]
fn bottleneck_safetensors_matches_pytorch() {
    assert_parity(&bottleneck_config(), "bottleneck.safetensors", "bottleneck");
}

#[test]
fn the_fixture_logits_are_not_trivial() {
    // Guards the parity tests: a model that ignored the weights would not come close.
    let model = basic_config().init(&cpu());
    let diff = max_abs_diff(model.forward(input()), expected("basic_logits"));
    assert!(
        diff > 0.1,
        "random init is within {diff} of PyTorch's logits"
    );
}

#[test]
fn checkpoints_with_a_top_level_key_are_found() {
    for file in ["basic_checkpoint.pth", "basic_model_optim.pth"] {
        let opened = WeightsFile::open(fixture(file)).unwrap();
        let key = opened.top_level_key().unwrap().to_string();
        assert!(key == "state_dict" || key == "model", "{file}: {key}");
        assert_parity(&basic_config(), file, "basic");
    }
    let mut model = basic_config().init(&cpu());
    model
        .load_weights(
            fixture("basic_checkpoint.pth"),
            &LoadOptions::strict().with_top_level_key("state_dict"),
        )
        .unwrap();
    let err = model
        .load_weights(
            fixture("basic_checkpoint.pth"),
            &LoadOptions::strict().with_top_level_key("ema"),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::UnknownKey { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("state_dict"), "{err}");
    // The checkpoint's other entries are listed, the optimizer's tensors included.
    let report = model
        .load_weights(fixture("basic_model_optim.pth"), &LoadOptions::strict())
        .unwrap();
    assert!(
        report
            .other_entries
            .iter()
            .any(|e| e.starts_with("optimizer: dict with")),
        "{report}"
    );
}

#[test]
fn formats_are_detected_from_content_not_extension() {
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("weights.bin");
    std::fs::copy(fixture("basic.safetensors"), &renamed).unwrap();
    assert_eq!(
        WeightsFile::open(&renamed).unwrap().format(),
        WeightsFormat::Safetensors
    );
    let renamed = dir.path().join("weights.safetensors");
    std::fs::copy(fixture("basic.pth"), &renamed).unwrap();
    let file = WeightsFile::open(&renamed).unwrap();
    assert_eq!(file.format(), WeightsFormat::Pytorch);
    // Torchvision's names, as stored.
    let names: Vec<String> = file.tensors().into_iter().map(|(k, _)| k).collect();
    assert!(names.contains(&"layer2.0.downsample.1.running_var".to_string()));
    assert!(names.contains(&"bn1.weight".to_string()));
}

#[test]
fn a_whole_pickled_model_is_refused_like_weights_only() {
    // `torch.save(model)` names the module classes, which `torch.load(weights_only=True)`
    // refuses: so does the import, saying how to re-save the weights.
    let err = ResNet::from_weights_file(fixture("basic_whole_model.pth"), &cpu()).unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::UnsafePickle { .. })),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("`torch.nn.modules."), "{message}");
    assert!(
        message.contains("torch.save(model.state_dict(), path)"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn other_pickled_objects_say_how_to_resave_them() {
    let dir = tempfile::tempdir().unwrap();
    for (name, pickle, found, refused) in [
        // pickle.dumps([], protocol=2)
        ("list.pth", &b"\x80\x02]q\x00."[..], "list", false),
        // pickle.dumps(f, protocol=2) for `class Foo: pass` in __main__ and `f.a = 1`.
        (
            "object.pth",
            &b"\x80\x02c__main__\nFoo\nq\x00)\x81q\x01}q\x02X\x01\x00\x00\x00aq\x03K\x01sb."[..],
            "`__main__.Foo`",
            true,
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, pickle).unwrap();
        let err = ResNet::from_weights_file(&path, &cpu()).unwrap_err();
        if refused {
            assert!(
                matches!(err, Error::Weights(WeightsError::UnsafePickle { .. })),
                "{name}: {err}"
            );
        } else {
            assert!(
                matches!(err, Error::Weights(WeightsError::NotAStateDict { .. })),
                "{name}: {err}"
            );
        }
        let message = err.to_string();
        assert!(message.contains(found), "{message}");
        assert!(
            message.contains("torch.save(model.state_dict(), path)"),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }
}

#[test]
fn missing_junk_and_truncated_files_are_one_line_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = basic_config().init(&cpu());
    let before = snapshot(&model);

    let missing = dir.path().join("nope.pth");
    let err = model
        .load_weights(&missing, &LoadOptions::strict())
        .unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::NotFound { .. })),
        "{err}"
    );

    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, b"this is not a checkpoint at all").unwrap();
    let err = model
        .load_weights(&junk, &LoadOptions::strict())
        .unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::UnknownFormat { .. })),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("torch.save(model.state_dict(), path)"),
        "{err}"
    );

    for name in ["basic.pth", "basic.safetensors"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let truncated = dir.path().join(format!("truncated-{name}"));
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let err = model
            .load_weights(&truncated, &LoadOptions::strict())
            .unwrap_err();
        assert!(
            matches!(err, Error::Weights(WeightsError::Corrupt { .. })),
            "{name}: {err}"
        );
        assert!(!err.to_string().contains('\n'), "{err}");
    }
    assert!(changed(&before, &snapshot(&model)).is_empty());
}

#[test]
fn a_different_head_fails_strictly_and_loads_as_backbone() {
    let mut model = basic_config().init(&cpu()).with_num_classes(5);
    let before = snapshot(&model);
    let err = model
        .load_weights(fixture("basic.pth"), &LoadOptions::strict())
        .unwrap_err();
    match &err {
        Error::Weights(WeightsError::HeadMismatch {
            file_classes,
            model_classes,
            ..
        }) => assert_eq!((*file_classes, *model_classes), (10, 5)),
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("backbone"), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    // A failed load leaves the model exactly as it was.
    assert!(changed(&before, &snapshot(&model)).is_empty());

    for file in ["basic.pth", "basic.safetensors"] {
        let mut model = basic_config().init(&cpu()).with_num_classes(5);
        let head_before = model.fc.weight.val().into_data();
        let report = model.load_backbone(fixture(file)).unwrap();
        assert_eq!(report.skipped, vec!["fc.bias", "fc.weight"], "{report}");
        assert!(report.to_string().contains("fc.weight"), "{report}");
        assert_eq!(model.fc.weight.val().into_data(), head_before);
        let diff = max_abs_diff(
            model.forward_pre_logits(input()),
            expected("basic_features"),
        );
        assert!(diff <= TOLERANCE, "{file}: features differ by {diff}");
        assert_eq!(model.forward(input()).dims(), [2, 5]);
    }
}

#[test]
fn a_different_architecture_is_named() {
    // A BasicBlock file into a Bottleneck model of the same widths.
    let mut model = ResNetConfig::resnet50(10)
        .with_widths([4, 8, 8, 16])
        .init(&cpu());
    let err = model
        .load_weights(fixture("basic.pth"), &LoadOptions::strict())
        .unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::WrongArchitecture { .. })),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("Basic [2, 2, 2, 2]"), "{message}");
    assert!(message.contains("Bottleneck [3, 4, 6, 3]"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

/// A safetensors file with every tensor of `config` in torchvision's names and layout, filled
/// with a deterministic pattern, plus `num_batches_tracked` counters.
fn write_torchvision_file(config: &ResNetConfig, path: &Path) {
    let model = config.init(&cpu());
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = Vec::new();
    for (i, (burn_path, shape)) in model.tensor_paths().into_iter().enumerate() {
        let (key, shape) = keymap::burn_to_torchvision(&burn_path, shape);
        let n: usize = shape.iter().product();
        let bytes = (0..n)
            .flat_map(|j| (0.01 * ((i + j) % 7) as f32 + 0.5).to_le_bytes())
            .collect();
        if key.ends_with("running_var") {
            let stem = key.trim_end_matches("running_var");
            tensors.push((
                format!("{stem}num_batches_tracked"),
                vec![],
                7i64.to_le_bytes().to_vec(),
                Dtype::I64,
            ));
        }
        tensors.push((key, shape, bytes, Dtype::F32));
    }
    write_safetensors(path, &tensors);
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>, Dtype)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, shape, bytes, dtype)| {
            (
                k.clone(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Every tensor of a safetensors file as `(name, shape, bytes, dtype)`.
fn read_all(path: &Path) -> Vec<(String, Vec<usize>, Vec<u8>, Dtype)> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.shape().to_vec(), v.data().to_vec(), v.dtype()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_resnet34_file_into_a_resnet18_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet34-tiny.safetensors");
    let r34 = ResNetConfig::resnet34(10).with_widths([4, 8, 8, 16]);
    write_torchvision_file(&r34, &path);
    let mut model = basic_config().init(&cpu());
    let err = model
        .load_weights(&path, &LoadOptions::strict())
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, Error::Weights(WeightsError::WrongArchitecture { .. })),
        "{message}"
    );
    assert!(message.contains("Basic [3, 4, 6, 3]"), "{message}");
    assert!(message.contains("AnyModel::from_weights_file"), "{message}");
    assert!(message.contains("--arch auto"), "{message}");
    // The same file loads into the architecture it describes.
    let (loaded, report) = ResNet::from_weights_file(&path, &cpu()).unwrap();
    assert_eq!(loaded.config(), r34);
    assert_eq!(report.applied.len(), loaded.tensor_paths().len());
}

#[test]
fn architectures_are_inferred_from_files() {
    let dir = tempfile::tempdir().unwrap();
    for config in [
        basic_config(),
        bottleneck_config(),
        ResNetConfig::resnet18(3)
            .with_widths([8, 8, 16, 16])
            .with_stem(Stem::Cifar),
        ResNetConfig::resnet101(4)
            .with_widths([2, 2, 2, 2])
            .with_in_channels(1),
    ] {
        let path = dir.path().join("w.safetensors");
        write_torchvision_file(&config, &path);
        let file = WeightsFile::open(&path).unwrap();
        assert_eq!(file.infer_config().unwrap(), config);
        let (model, _) = ResNet::from_weights_file(&path, &cpu()).unwrap();
        assert_eq!(model.config(), config);
    }
    for (file, config) in [
        ("basic.pth", basic_config()),
        ("bottleneck.safetensors", bottleneck_config()),
    ] {
        assert_eq!(
            WeightsFile::open(fixture(file))
                .unwrap()
                .infer_config()
                .unwrap(),
            config
        );
    }
}

#[test]
fn strict_errors_list_missing_unused_and_misshaped_keys_in_torchvision_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = read_all(&fixture("basic.safetensors"));
    tensors
        .retain(|(k, ..)| k != "layer2.0.downsample.1.weight" && k != "layer1.0.bn1.running_mean");
    tensors.push((
        "extra.weight".into(),
        vec![2],
        [0f32, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F32,
    ));
    let conv = tensors
        .iter_mut()
        .find(|(k, ..)| k == "layer3.1.conv2.weight")
        .unwrap();
    // [8, 8, 3, 3] stored as [8, 8, 9, 1]: same bytes, wrong shape.
    conv.1 = vec![8, 8, 9, 1];
    let path = dir.path().join("edited.safetensors");
    write_safetensors(&path, &tensors);

    let mut model = basic_config().init(&cpu());
    let before = snapshot(&model);
    let err = model
        .load_weights(&path, &LoadOptions::strict())
        .unwrap_err();
    let Error::Weights(WeightsError::Mismatch { mismatch, .. }) = &err else {
        panic!("unexpected {err}");
    };
    assert_eq!(
        mismatch.missing,
        vec!["layer1.0.bn1.running_mean", "layer2.0.downsample.1.weight"]
    );
    assert_eq!(mismatch.unused, vec!["extra.weight"]);
    assert_eq!(
        mismatch.mismatched,
        vec![(
            "layer3.1.conv2.weight".to_string(),
            vec![8, 8, 3, 3],
            vec![8, 8, 9, 1]
        )]
    );
    let message = err.to_string();
    assert!(
        message.contains("layer2.0.downsample.1.weight"),
        "{message}"
    );
    assert!(changed(&before, &snapshot(&model)).is_empty());
    // Backbone-only is just as strict about the backbone.
    assert!(model.load_backbone(&path).is_err());
}

#[test]
fn timm_style_files_and_data_parallel_prefixes_load() {
    // timm's ResNet uses torchvision's names; its safetensors files carry no
    // `num_batches_tracked`. `nn.DataParallel` state_dicts prefix every key with `module.`.
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = read_all(&fixture("basic.safetensors"));
    tensors.retain(|(k, ..)| !k.ends_with("num_batches_tracked"));
    let timm = dir.path().join("timm.safetensors");
    write_safetensors(&timm, &tensors);
    let mut model = basic_config().init(&cpu());
    let report = model.load_weights(&timm, &LoadOptions::strict()).unwrap();
    assert!(report.ignored.is_empty());
    let diff = max_abs_diff(model.forward(input()), expected("basic_logits"));
    assert!(diff <= TOLERANCE, "{diff}");

    for t in &mut tensors {
        t.0 = format!("module.{}", t.0);
    }
    let dp = dir.path().join("dp.safetensors");
    write_safetensors(&dp, &tensors);
    let (model, _) = ResNet::from_weights_file(&dp, &cpu()).unwrap();
    let diff = max_abs_diff(model.forward(input()), expected("basic_logits"));
    assert!(diff <= TOLERANCE, "{diff}");
}

#[test]
fn registry_entries_are_torchvisions() {
    assert_eq!(ResNetWeights::ALL.len(), 8);
    for w in ResNetWeights::ALL {
        assert!(
            w.url()
                .starts_with("https://download.pytorch.org/models/resnet")
        );
        assert!(
            w.file_name()
                .ends_with(&format!("-{}.pth", w.sha256_prefix()))
        );
        assert_eq!(w.sha256_prefix().len(), 8);
        assert_eq!(w.config().arch_name(), Some(w.arch()));
        assert_eq!(w.config().num_classes, 1000);
        assert_eq!(w.categories().len(), 1000);
        assert!(w.top1() > 69.0 && w.top5() > w.top1());
        assert_eq!(w.preprocess().crop, 224);
        assert_eq!(w.name().parse::<ResNetWeights>().unwrap(), w);
        assert_eq!(w.short_name().parse::<ResNetWeights>().unwrap(), w);
        assert_eq!(format!("{w:?}").parse::<ResNetWeights>().unwrap(), w);
    }
    let r18 = ResNetWeights::ResNet18ImageNet1kV1;
    assert_eq!(
        r18.url(),
        "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    );
    assert_eq!((r18.top1(), r18.top5()), (69.758, 89.078));
    assert_eq!(r18.preprocess(), Preprocess::IMAGENET);
    assert_eq!(
        ResNetConfig::resnet18(1000)
            .init(&cpu())
            .param_summary()
            .total(),
        r18.num_params()
    );
    let classes = r18.categories();
    assert_eq!(
        (classes[0], classes[1], classes[999]),
        ("tench", "goldfish", "toilet tissue")
    );
    assert_eq!(ResNetWeights::ResNet50ImageNet1kV2.preprocess().resize, 232);
    assert_eq!(
        ResNetWeights::ResNet34ImageNet1kV1.url(),
        "https://download.pytorch.org/models/resnet34-b627a593.pth"
    );
    assert_eq!(
        ResNetWeights::ResNet50ImageNet1kV1.sha256_prefix(),
        "0676ba61"
    );
}

#[test]
fn registry_names_parse_like_torchvision_and_timm() {
    use ResNetWeights::*;
    for (name, expected) in [
        ("resnet18", ResNet18ImageNet1kV1),
        ("ResNet18_Weights.IMAGENET1K_V1", ResNet18ImageNet1kV1),
        ("resnet50", ResNet50ImageNet1kV2),
        ("ResNet50_Weights.DEFAULT", ResNet50ImageNet1kV2),
        ("resnet50.v1", ResNet50ImageNet1kV1),
        ("resnet50_v2", ResNet50ImageNet1kV2),
        ("resnet50.tv_in1k", ResNet50ImageNet1kV1),
        ("resnet152.tv2_in1k", ResNet152ImageNet1kV2),
        ("resnet-101", ResNet101ImageNet1kV2),
        ("RESNET34", ResNet34ImageNet1kV1),
    ] {
        assert_eq!(ResNetWeights::parse(name).unwrap(), expected, "{name}");
    }
    for bad in ["resnet19", "resnet18.v2", "vgg16", "", "resnet50.v3"] {
        let err = ResNetWeights::parse(bad).unwrap_err();
        assert!(
            matches!(err, Error::Weights(WeightsError::UnknownWeights { .. })),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("resnet50.v2"), "{err}");
    }
}

#[test]
fn pretrained_offline_names_the_url_and_the_cache_path() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path()).offline(true);
    let weights = ResNetWeights::ResNet18ImageNet1kV1;
    let err = ResNet::pretrained_in(weights, &cache, &cpu()).unwrap_err();
    let expected_path = dir.path().join("weights").join("resnet18-f37072fd.pth");
    assert_eq!(weights.cache_path(&cache), expected_path);
    match &err {
        Error::Download(DownloadError::Offline { url, path }) => {
            assert_eq!(url, weights.url());
            assert_eq!(path, &expected_path);
        }
        other => panic!("unexpected {other}"),
    }

    // A wrong file placed by hand is refused, and kept for the user to inspect.
    std::fs::create_dir_all(expected_path.parent().unwrap()).unwrap();
    std::fs::copy(fixture("basic.pth"), &expected_path).unwrap();
    let err = ResNet::pretrained_in(weights, &cache, &cpu()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Download(DownloadError::ChecksumMismatch { url: None, .. })
        ),
        "{err}"
    );
    assert!(expected_path.exists());
    let err = ResNet::pretrained_from_file(weights, &expected_path, &cpu()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Download(DownloadError::ChecksumMismatch { url: None, .. })
        ),
        "{err}"
    );
}

#[test]
fn pretrained_downloads_verifies_caches_and_matches_pytorch() {
    let body = std::fs::read(fixture("basic.pth")).unwrap();
    let prefix: String = Sha256::digest(&body)
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let route = format!("/models/basic-{prefix}.pth");
    let server = serve(vec![(route.as_str(), Reply::Body(body))]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.url(&route);
    let (model, report) = ResNet::pretrained_url(
        &basic_config(),
        &url,
        &prefix,
        &Cache::new(dir.path()),
        &cpu(),
    )
    .unwrap();
    assert_eq!(report.applied.len(), model.tensor_paths().len());
    let diff = max_abs_diff(model.forward(input()), expected("basic_logits"));
    assert!(diff <= TOLERANCE, "{diff}");
    assert!(
        dir.path()
            .join(format!("weights/basic-{prefix}.pth"))
            .is_file()
    );
    // Offline now works from the cache, without a request.
    let offline = Cache::new(dir.path()).offline(true);
    ResNet::pretrained_url(&basic_config(), &url, &prefix, &offline, &cpu()).unwrap();
    assert_eq!(server.hits(), 1);

    // A wrong published checksum: nothing is kept.
    let other = tempfile::tempdir().unwrap();
    let err = ResNet::pretrained_url(
        &basic_config(),
        &url,
        "00000000",
        &Cache::new(other.path()),
        &cpu(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Download(DownloadError::ChecksumMismatch { url: Some(_), .. })
        ),
        "{err}"
    );
    assert!(
        !other
            .path()
            .join(format!("weights/basic-{prefix}.pth"))
            .exists()
    );
}

/// torchvision's `ImageClassification` output for tests/fixtures/weights/photo.png.
fn torchvision_preprocessed(name: &str) -> Vec<f32> {
    read_safetensors_f32(fixture("preprocess.safetensors"), name)
        .unwrap()
        .0
}

#[test]
fn preprocessing_matches_torchvision() {
    let image = open_image(fixture("photo.png")).unwrap();
    assert_eq!((image.width(), image.height()), (40, 30));
    for (resize, name) in [(28, "resize28_crop24"), (20, "resize20_crop24")] {
        let pre = Preprocess {
            resize,
            crop: 24,
            ..Preprocess::IMAGENET
        };
        // The data pipeline's Pillow-exact resize and crop, then ToTensor and Normalize in
        // torchvision's f32 operations: the same values, bit for bit.
        let ours = pre.apply(&image).unwrap();
        let theirs = torchvision_preprocessed(name);
        assert_eq!(ours.len(), theirs.len());
        let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{name}: {differ} values differ from torchvision");
    }
    let pre = Preprocess::IMAGENET;
    assert_eq!(pre.resized_size(500, 375), (341, 256));
    assert_eq!(pre.resized_size(375, 500), (256, 341));
    let batch = pre.batch(&[image.clone(), image.clone()], &cpu()).unwrap();
    assert_eq!(batch.dims(), [2, 3, 224, 224]);
    // A size of 0 is a typed error, never a panic or an empty tensor.
    let zero = Preprocess { crop: 0, ..pre };
    assert!(matches!(
        zero.apply(&image).unwrap_err(),
        Error::Data(finetune::data::DataError::Transform { .. })
    ));
    // So is a size no image should have (predict --crop 4000000000), before any allocation.
    for huge in [
        Preprocess {
            crop: u32::MAX,
            ..pre
        },
        Preprocess {
            resize: 4_000_000_000,
            ..pre
        },
    ] {
        let err = huge
            .batch(std::slice::from_ref(&image), &cpu())
            .unwrap_err();
        assert!(err.to_string().contains("16384"), "{err}");
    }
}

#[test]
fn sources_parse_auto_names_and_files() {
    use ResNetWeights::*;
    assert_eq!(
        WeightsSource::parse("auto", None).unwrap(),
        WeightsSource::Registry(Weights::ResNet(ResNet18ImageNet1kV1))
    );
    assert_eq!(
        WeightsSource::parse("auto", Some("resnet50")).unwrap(),
        WeightsSource::Registry(Weights::ResNet(ResNet50ImageNet1kV2))
    );
    assert_eq!(
        WeightsSource::parse("resnet34", Some("auto")).unwrap(),
        WeightsSource::Registry(Weights::ResNet(ResNet34ImageNet1kV1))
    );
    let file = fixture("basic.pth");
    assert_eq!(
        WeightsSource::parse(file.to_str().unwrap(), None).unwrap(),
        WeightsSource::File(file)
    );
    let err = WeightsSource::parse("missing/resnet.pth", None).unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::NotFound { .. })),
        "{err}"
    );
    let err = WeightsSource::parse("resnet19", None).unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::UnknownWeights { .. })),
        "{err}"
    );
}

#[test]
fn the_predict_pipeline_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path()).offline(true);
    let source = WeightsSource::File(fixture("basic.safetensors"));
    let classifier = Classifier::load(&source, None, None, &cache, &cpu()).unwrap();
    assert_eq!(classifier.model.config(), basic_config().into());
    assert_eq!(classifier.class_names[3], "class 3");

    // --input-tensor ... --json
    let json: serde_json::Value =
        serde_json::from_str(&classifier.logits_and_features_json(input()).unwrap()).unwrap();
    let logits = json["logits"].as_array().unwrap();
    assert_eq!(logits.len(), 2);
    let flat: Vec<f32> = logits
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let theirs = expected("basic_logits")
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let diff = flat
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff <= TOLERANCE, "{diff}");
    assert_eq!(json["features"][0].as_array().unwrap().len(), 16);

    // --top: probabilities sorted, summing to 1 over all classes, argmax = PyTorch's.
    let top = classifier.top_k(expected("basic_logits"), 10);
    for (row, predictions) in top.iter().enumerate() {
        let sum: f32 = predictions.iter().map(|p| p.probability).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        assert!(
            predictions
                .windows(2)
                .all(|w| w[0].probability >= w[1].probability)
        );
        let row_values = &theirs[row * 10..(row + 1) * 10];
        let argmax = (0..10)
            .max_by(|&a, &b| row_values[a].total_cmp(&row_values[b]))
            .unwrap();
        assert_eq!(predictions[0].class, argmax);
    }
    let image = open_image(fixture("photo.png")).unwrap();
    let predictions = classifier.classify(&[image], 3).unwrap();
    assert_eq!(predictions[0].len(), 3);

    // --arch that does not fit, --num-classes that does not fit: one-line errors.
    let err = Classifier::load(&source, Some("resnet34"), None, &cache, &cpu()).unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::WrongArchitecture { .. })),
        "{err}"
    );
    let err = Classifier::load(&source, None, Some(4), &cache, &cpu()).unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::HeadMismatch { .. })),
        "{err}"
    );
    // A registry entry, offline and not cached: the download error.
    let err = Classifier::load(
        &WeightsSource::Registry(Weights::ResNet(ResNetWeights::ResNet18ImageNet1kV1)),
        None,
        None,
        &cache,
        &cpu(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Download(_)), "{err}");
}

#[test]
fn input_tensor_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_input_tensor(fixture("io.safetensors"), 1, &cpu()).unwrap_err();
    assert!(err.to_string().contains("[N, 1, H, W]"), "{err}");
    let err = read_input_tensor(fixture("basic.safetensors"), 3, &cpu()).unwrap_err();
    assert!(err.to_string().contains("no tensor named `input`"), "{err}");
    let err = read_input_tensor(fixture("basic.pth"), 3, &cpu()).unwrap_err();
    assert!(err.to_string().contains("not a safetensors file"), "{err}");
    let err = read_input_tensor(dir.path().join("none.safetensors"), 3, &cpu()).unwrap_err();
    assert!(err.to_string().contains("no such file"), "{err}");
    // f64 and f16 inputs are converted.
    let values = [0.5f64, -1.25, 2.0, 0.0];
    let f64_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f16_bytes: Vec<u8> = [0x3800u16, 0xbd00, 0x4000, 0x0000]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    for (dtype, bytes) in [(Dtype::F64, f64_bytes), (Dtype::F16, f16_bytes)] {
        let path = dir.path().join("x.safetensors");
        write_safetensors(
            &path,
            &[("input".to_string(), vec![1, 1, 2, 2], bytes, dtype)],
        );
        let t = read_input_tensor(&path, 1, &cpu()).unwrap();
        assert_eq!(
            t.into_data().try_to_vec::<f32>().unwrap(),
            vec![0.5, -1.25, 2.0, 0.0]
        );
    }
}

#[test]
fn a_frozen_model_keeps_its_freeze_state_when_loading() {
    let mut model = basic_config().init(&cpu()).freeze_backbone();
    let state = model.freeze_state().clone();
    model
        .load_weights(fixture("basic.safetensors"), &LoadOptions::strict())
        .unwrap();
    assert_eq!(model.freeze_state(), &state);
    assert_eq!(model.param_summary().trainable(), 16 * 10 + 10);
}

#[test]
fn half_and_double_precision_files_load_as_f32() {
    // burn-store keeps the stored precision; the importer casts to the device's f32 so that
    // inference with f32 inputs works (it panicked in Burn's kernels before).
    let dir = tempfile::tempdir().unwrap();
    let tensors = read_all(&fixture("basic.safetensors"));
    let convert = |to: Dtype| -> Vec<(String, Vec<usize>, Vec<u8>, Dtype)> {
        tensors
            .iter()
            .map(|(k, shape, bytes, dtype)| {
                if *dtype != Dtype::F32 {
                    return (k.clone(), shape.clone(), bytes.clone(), *dtype);
                }
                let values = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let out: Vec<u8> = match to {
                    Dtype::F64 => values.flat_map(|v| (v as f64).to_le_bytes()).collect(),
                    // bfloat16: the upper half of the f32, rounded to nearest.
                    _ => values
                        .flat_map(|v| (((v.to_bits() + 0x8000) >> 16) as u16).to_le_bytes())
                        .collect(),
                };
                (k.clone(), shape.clone(), out, to)
            })
            .collect()
    };
    for (dtype, tolerance) in [(Dtype::F64, TOLERANCE), (Dtype::BF16, 0.1)] {
        let path = dir.path().join(format!("{dtype:?}.safetensors"));
        write_safetensors(&path, &convert(dtype));
        let (model, _) = ResNet::from_weights_file(&path, &cpu()).unwrap();
        assert_eq!(
            model.conv1.weight.val().dtype(),
            burn::tensor::DType::F32,
            "{dtype:?}"
        );
        let diff = max_abs_diff(model.forward(input()), expected("basic_logits"));
        assert!(diff <= tolerance, "{dtype:?}: logits differ by {diff}");
        eprintln!("{dtype:?} file: max |logits - PyTorch f32| = {diff:.2e}");
    }
}

#[test]
fn a_headless_file_loads_only_as_backbone() {
    // timm's `num_classes=0` exports have no `fc`: strictly that is missing, as a backbone fine.
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = read_all(&fixture("basic.safetensors"));
    tensors.retain(|(k, ..)| !k.starts_with("fc."));
    let path = dir.path().join("headless.safetensors");
    write_safetensors(&path, &tensors);
    let mut model = basic_config().init(&cpu()).with_num_classes(3);
    let err = model
        .load_weights(&path, &LoadOptions::strict())
        .unwrap_err();
    let Error::Weights(WeightsError::Mismatch { mismatch, .. }) = &err else {
        panic!("unexpected {err}");
    };
    assert_eq!(mismatch.missing, vec!["fc.bias", "fc.weight"]);
    let report = model.load_backbone(&path).unwrap();
    assert_eq!(report.skipped, vec!["fc.bias", "fc.weight"]);
    let diff = max_abs_diff(
        model.forward_pre_logits(input()),
        expected("basic_features"),
    );
    assert!(diff <= TOLERANCE, "{diff}");
    // Its architecture is still read from it: strictly the head is missing, and
    // `AnyModel::from_weights_file` (what `--arch auto` and the recipe use) loads the backbone.
    let err = ResNet::from_weights_file(&path, &cpu()).unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::Mismatch { .. })),
        "{err}"
    );
    let (any, report) =
        finetune::AnyModel::from_weights_file(&path, &LoadOptions::strict(), &cpu()).unwrap();
    assert_eq!(report.skipped, vec!["fc.bias", "fc.weight"]);
    assert_eq!(any.num_classes(), 1000);
    let diff = max_abs_diff(any.forward_pre_logits(input()), expected("basic_features"));
    assert!(diff <= TOLERANCE, "{diff}");
}

// --- Checkpoint containers and the `weights_only` pickle allow-list (issue 13) -------------
//
// Every fixture below is written by the test itself: a `torch.save`-style ZIP (stored entries
// `archive/data.pkl`, `archive/data/N`, `archive/version`, `archive/byteorder`) whose pickle is
// assembled by hand at protocol 2 as `torch.save` writes it, with the basic fixture's tensors.

/// A value to pickle into a test checkpoint.
enum Py {
    Int(i32),
    Str(String),
    /// A tensor: shape, little-endian bytes, dtype (F32 or I64).
    Tensor(Vec<usize>, Vec<u8>, Dtype),
    /// A plain dict.
    Dict(Vec<(String, Py)>),
    /// A `collections.OrderedDict`, as `state_dict()` returns.
    Ordered(Vec<(String, Py)>),
    /// Opcodes that push one value, written as they are.
    Raw(Vec<u8>),
}

#[derive(Default)]
struct Pickler {
    out: Vec<u8>,
    storages: Vec<Vec<u8>>,
}

impl Pickler {
    fn unicode(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend((s.len() as u32).to_le_bytes());
        self.out.extend(s.as_bytes());
    }

    fn int(&mut self, i: i32) {
        self.out.push(b'J');
        self.out.extend(i.to_le_bytes());
    }

    fn items(&mut self, items: &[(String, Py)]) {
        if !items.is_empty() {
            self.out.push(b'(');
            for (k, v) in items {
                self.unicode(k);
                self.value(v);
            }
            self.out.push(b'u');
        }
    }

    fn value(&mut self, value: &Py) {
        match value {
            Py::Int(i) => self.int(*i),
            Py::Str(s) => self.unicode(s),
            Py::Raw(bytes) => self.out.extend(bytes),
            Py::Dict(items) => {
                self.out.push(b'}');
                self.items(items);
            }
            Py::Ordered(items) => {
                self.out.extend(b"ccollections\nOrderedDict\n)R");
                self.items(items);
            }
            Py::Tensor(shape, bytes, dtype) => {
                let (storage, size) = match dtype {
                    Dtype::F32 => ("FloatStorage", 4),
                    Dtype::I64 => ("LongStorage", 8),
                    other => panic!("no storage for {other:?}"),
                };
                let key = self.storages.len().to_string();
                self.storages.push(bytes.clone());
                // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
                self.out.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
                // persistent id ('storage', torch.FloatStorage, key, 'cpu', numel)
                self.out.push(b'(');
                self.unicode("storage");
                self.out.extend(format!("ctorch\n{storage}\n").as_bytes());
                self.unicode(&key);
                self.unicode("cpu");
                self.int((bytes.len() / size) as i32);
                self.out.extend(b"tQ");
                self.int(0);
                self.out.push(b'(');
                for &d in shape {
                    self.int(d as i32);
                }
                self.out.push(b't');
                self.out.push(b'(');
                for i in 0..shape.len() {
                    self.int(shape[i + 1..].iter().product::<usize>() as i32);
                }
                self.out.push(b't');
                self.out.extend(b"\x89ccollections\nOrderedDict\n)RtR");
            }
        }
    }
}

/// Writes `root` as a `torch.save` ZIP checkpoint.
fn write_pth(path: &Path, root: &Py) {
    use std::io::Write;
    let mut p = Pickler::default();
    p.out.extend(b"\x80\x02");
    p.value(root);
    p.out.push(b'.');
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut entry = |name: String, bytes: &[u8]| {
        zip.start_file(name, stored).unwrap();
        zip.write_all(bytes).unwrap();
    };
    entry("archive/data.pkl".into(), &p.out);
    for (i, bytes) in p.storages.iter().enumerate() {
        entry(format!("archive/data/{i}"), bytes);
    }
    entry("archive/version".into(), b"3\n");
    entry("archive/byteorder".into(), b"little");
    zip.finish().unwrap();
}

/// The basic fixture's state_dict, every key prefixed with `prefix`, float values scaled.
fn basic_entries(prefix: &str, scale: f32) -> Vec<(String, Py)> {
    read_all(&fixture("basic.safetensors"))
        .into_iter()
        .map(|(k, shape, bytes, dtype)| {
            let bytes = if dtype == Dtype::F32 {
                bytes
                    .chunks_exact(4)
                    .flat_map(|b| {
                        (f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * scale).to_le_bytes()
                    })
                    .collect()
            } else {
                bytes
            };
            (format!("{prefix}{k}"), Py::Tensor(shape, bytes, dtype))
        })
        .collect()
}

fn basic_state_dict() -> Py {
    Py::Ordered(basic_entries("", 1.0))
}

/// Loads `path` strictly into the basic model and checks PyTorch's logits.
fn load_basic(path: &Path, options: &LoadOptions) -> finetune::weights::LoadReport {
    let mut model = basic_config().init(&cpu());
    let report = model.load_weights(path, options).unwrap();
    let diff = max_abs_diff(model.forward(input()), expected("basic_logits"));
    assert!(diff <= TOLERANCE, "{}: {diff}", path.display());
    report
}

fn weights_error(result: finetune::Result<impl std::fmt::Debug>) -> WeightsError {
    match result {
        Err(Error::Weights(e)) => e,
        other => panic!("expected a weights error, got {other:?}"),
    }
}

#[test]
fn an_unsafe_global_is_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("PWNED");
    // A valid state_dict plus one entry whose value calls `os.system` (as in
    // ../shared/cases/weights/extra_pickled_call.pth), then other refused globals.
    let call = |module: &str, name: &str| {
        let mut raw = format!("c{module}\n{name}\n").into_bytes();
        let arg = format!("touch {}", marker.display());
        raw.push(b'X');
        raw.extend((arg.len() as u32).to_le_bytes());
        raw.extend(arg.as_bytes());
        raw.extend(b"\x85R");
        raw
    };
    for (module, name) in [
        ("os", "system"),
        ("posix", "system"),
        ("builtins", "eval"),
        ("subprocess", "Popen"),
        ("torchvision.models.resnet", "ResNet"),
    ] {
        let mut entries = basic_entries("", 1.0);
        entries.push(("evil".into(), Py::Raw(call(module, name))));
        let path = dir.path().join(format!("{module}.pth"));
        write_pth(&path, &Py::Ordered(entries));
        let mut model = basic_config().init(&cpu());
        let before = snapshot(&model);
        let err = weights_error(model.load_weights(&path, &LoadOptions::strict()));
        assert!(matches!(err, WeightsError::UnsafePickle { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&format!("`{module}.{name}`")), "{message}");
        assert!(message.contains("weights_only=True"), "{message}");
        assert!(
            message.contains("torch.save(model.state_dict(), path)"),
            "{message}"
        );
        assert!(!message.contains('\n') && message.len() < 500, "{message}");
        assert!(changed(&before, &snapshot(&model)).is_empty());
        // Opening it is refused too (inspect, --arch auto).
        assert!(matches!(
            weights_error(WeightsFile::open(&path)),
            WeightsError::UnsafePickle { .. }
        ));
    }
    assert!(!marker.exists());
}

#[test]
fn a_stack_global_is_resolved_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = |s: &str| {
        let mut raw = vec![0x8c, s.len() as u8];
        raw.extend(s.as_bytes());
        raw
    };
    // STACK_GLOBAL on two pushed strings, memoised (protocol 4 style).
    let mut direct = short("os");
    direct.push(0x94);
    direct.extend(short("system"));
    direct.extend(b"\x94\x93");
    direct.extend(short("id"));
    direct.extend(b"\x85R");
    // The same two strings fetched back from the memo by BINPUT/BINGET.
    let mut memo = short("nt");
    memo.extend(b"q\xf0");
    memo.extend(short("system"));
    memo.extend(b"q\xf10h\xf0h\xf1\x93");
    memo.extend(short("id"));
    memo.extend(b"\x85R");
    // An int where the module name should be: unresolvable, refused.
    let mut unresolvable = b"K\x01".to_vec();
    unresolvable.extend(short("system"));
    unresolvable.extend(b"\x93)R");
    for (name, raw, named) in [
        ("direct", direct, "`os.system`"),
        ("memo", memo, "`nt.system`"),
        ("unresolvable", unresolvable, "STACK_GLOBAL"),
    ] {
        let mut entries = basic_entries("", 1.0);
        entries.push(("evil".into(), Py::Raw(raw)));
        let path = dir.path().join(format!("{name}.pth"));
        write_pth(&path, &Py::Ordered(entries));
        let err = weights_error(ResNet::from_weights_file(&path, &cpu()));
        assert!(
            matches!(err, WeightsError::UnsafePickle { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(named), "{name}: {err}");
    }
    // An allowed global by STACK_GLOBAL loads.
    let mut ordered = short("collections");
    ordered.extend(short("OrderedDict"));
    ordered.extend(b"\x93)R");
    let mut entries = basic_entries("", 1.0);
    entries.push(("extra".into(), Py::Raw(ordered)));
    let path = dir.path().join("allowed.pth");
    write_pth(&path, &Py::Ordered(entries));
    let report = load_basic(&path, &LoadOptions::strict());
    assert!(
        report.other_entries.iter().any(|e| e.starts_with("extra")),
        "{report}"
    );
}

#[test]
fn allowed_files_still_load() {
    let dir = tempfile::tempdir().unwrap();
    for (name, root) in [
        ("ordered.pth", basic_state_dict()),
        ("dict.pth", Py::Dict(basic_entries("", 1.0))),
    ] {
        let path = dir.path().join(name);
        write_pth(&path, &root);
        let report = load_basic(&path, &LoadOptions::strict());
        assert_eq!(report.key, None);
        assert_eq!(report.stripped_prefix, None);
        assert!(report.other_entries.is_empty(), "{report}");
    }
    // torchvision's own files (written by PyTorch) pass the scan; a plain state_dict has no
    // other entries (its `_metadata` version table is not one).
    for file in [
        "basic.pth",
        "bottleneck.pth",
        "basic_checkpoint.pth",
        "basic_model_optim.pth",
    ] {
        let opened = WeightsFile::open(fixture(file)).unwrap();
        if file == "basic.pth" {
            assert!(
                opened.other_entries().is_empty(),
                "{:?}",
                opened.other_entries()
            );
        }
        if file == "basic_checkpoint.pth" {
            assert_eq!(opened.other_entries(), ["epoch = 3"]);
        }
    }
}

#[test]
fn non_tensor_entries_are_listed_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = basic_entries("", 1.0);
    entries.push(("epoch".into(), Py::Int(10)));
    entries.push(("arch".into(), Py::Str("resnet18".into())));
    let path = dir.path().join("extras.pth");
    write_pth(&path, &Py::Ordered(entries));
    let report = load_basic(&path, &LoadOptions::strict());
    assert!(
        report.other_entries.contains(&"epoch = 10".to_string()),
        "{report}"
    );
    assert!(
        report
            .other_entries
            .contains(&"arch = \"resnet18\"".to_string()),
        "{report}"
    );
    let shown = report.to_string();
    assert!(
        shown.contains("epoch = 10") && shown.contains("not loaded"),
        "{shown}"
    );

    // Beside a nested state_dict: the other top-level entries, optimizer included.
    let root = Py::Dict(vec![
        ("model".into(), basic_state_dict()),
        ("epoch".into(), Py::Int(3)),
        (
            "optimizer".into(),
            Py::Dict(vec![(
                "lr".into(),
                Py::Raw(b"G?\xb9\x99\x99\x99\x99\x99\x9a".to_vec()),
            )]),
        ),
    ]);
    let path = dir.path().join("checkpoint.pth");
    write_pth(&path, &root);
    let report = load_basic(&path, &LoadOptions::strict());
    assert_eq!(report.key.as_deref(), Some("model"));
    assert!(
        report.other_entries.contains(&"epoch = 3".to_string()),
        "{report}"
    );
    assert!(
        report
            .other_entries
            .contains(&"optimizer: dict of 1 entries".to_string()),
        "{report}"
    );
}

/// `{"model": A, "ema": B, "epoch": 10}`, the shape of
/// `../shared/cases/weights/two_state_dicts.pth`, written to `dir/two.pth`.
fn two_state_dicts(dir: &Path) -> PathBuf {
    let path = dir.join("two.pth");
    write_pth(
        &path,
        &Py::Dict(vec![
            ("model".into(), basic_state_dict()),
            ("ema".into(), Py::Ordered(basic_entries("", 0.5))),
            ("epoch".into(), Py::Int(10)),
        ]),
    );
    path
}

#[test]
fn two_state_dicts_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_state_dicts(dir.path());
    let mut model = basic_config().init(&cpu());
    let before = snapshot(&model);
    let err = weights_error(model.load_weights(&path, &LoadOptions::strict()));
    assert!(
        matches!(err, WeightsError::AmbiguousStateDict { .. }),
        "{err}"
    );
    let message = err.to_string();
    for word in ["model", "ema", "LoadOptions::key"] {
        assert!(message.contains(word), "{word}: {message}");
    }
    // The library names its API, not the examples' flags.
    assert!(!message.contains("--"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert!(changed(&before, &snapshot(&model)).is_empty());
    // Also when only opening the file (`--arch auto`).
    assert!(matches!(
        weights_error(ResNet::from_weights_file(&path, &cpu())),
        WeightsError::AmbiguousStateDict { .. }
    ));
}

#[test]
fn the_key_option_picks_one_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    let path = two_state_dicts(dir.path());
    let report = load_basic(&path, &LoadOptions::strict().key("model"));
    assert_eq!(report.key.as_deref(), Some("model"));
    assert!(
        report.other_entries.contains(&"epoch = 10".to_string()),
        "{report}"
    );
    let ema_tensors = basic_entries("", 1.0).len();
    assert!(
        report
            .other_entries
            .contains(&format!("ema: dict with {ema_tensors} tensors")),
        "{report}"
    );
    assert!(report.to_string().contains("key 'model'"), "{report}");

    // The other one really is the other one.
    let mut model = basic_config().init(&cpu());
    let report = model
        .load_weights(&path, &LoadOptions::backbone_only().key("ema"))
        .unwrap();
    assert_eq!(report.key.as_deref(), Some("ema"));
    let diff = max_abs_diff(model.forward(input()), expected("basic_logits"));
    assert!(diff > 1e-3, "ema loaded the model's weights: {diff}");

    let err = weights_error(model.load_weights(&path, &LoadOptions::strict().key("nope")));
    assert!(matches!(err, WeightsError::UnknownKey { .. }), "{err}");
    assert!(
        err.to_string().contains("ema") && err.to_string().contains("model"),
        "{err}"
    );
}

#[test]
fn a_single_nested_state_dict_loads_and_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    for (key, root) in [
        (
            "net",
            Py::Dict(vec![
                ("net".into(), basic_state_dict()),
                ("step".into(), Py::Int(7)),
            ]),
        ),
        (
            "checkpoint.state_dict",
            Py::Dict(vec![(
                "checkpoint".into(),
                Py::Dict(vec![
                    ("state_dict".into(), basic_state_dict()),
                    ("epoch".into(), Py::Int(2)),
                ]),
            )]),
        ),
    ] {
        let path = dir.path().join(format!("{key}.pth"));
        write_pth(&path, &root);
        let report = load_basic(&path, &LoadOptions::strict());
        assert_eq!(report.key.as_deref(), Some(key), "{report}");
        assert_eq!(report.stripped_prefix, None);
        assert_eq!(WeightsFile::open(&path).unwrap().top_level_key(), Some(key));
        // Naming it explicitly gives the same.
        load_basic(&path, &LoadOptions::strict().key(key));
    }
}

#[test]
fn wrapper_prefixes_are_stripped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    // DataParallel/DDP, torch.compile, and Lightning (`state_dict` holding `model.*`).
    for (name, root, key, stripped) in [
        (
            "dp.pth",
            Py::Ordered(basic_entries("module.", 1.0)),
            None,
            "module.",
        ),
        (
            "compiled.pth",
            Py::Ordered(basic_entries("_orig_mod.", 1.0)),
            None,
            "_orig_mod.",
        ),
        (
            "lightning.ckpt",
            Py::Dict(vec![
                ("epoch".into(), Py::Int(4)),
                ("global_step".into(), Py::Int(40)),
                ("pytorch-lightning_version".into(), Py::Str("2.4.0".into())),
                (
                    "state_dict".into(),
                    Py::Ordered(basic_entries("model.", 1.0)),
                ),
            ]),
            Some("state_dict"),
            "model.",
        ),
    ] {
        let path = dir.path().join(name);
        write_pth(&path, &root);
        let report = load_basic(&path, &LoadOptions::strict());
        assert_eq!(report.key.as_deref(), key, "{name}: {report}");
        assert_eq!(
            report.stripped_prefix.as_deref(),
            Some(stripped),
            "{name}: {report}"
        );
        assert!(report.to_string().contains(stripped), "{report}");
        let (model, _) = ResNet::from_weights_file(&path, &cpu()).unwrap();
        assert_eq!(model.config(), basic_config());
    }
    // In a safetensors file too.
    let mut tensors = read_all(&fixture("basic.safetensors"));
    for t in &mut tensors {
        t.0 = format!("_orig_mod.{}", t.0);
    }
    let path = dir.path().join("compiled.safetensors");
    write_safetensors(&path, &tensors);
    let report = load_basic(&path, &LoadOptions::strict());
    assert_eq!(report.stripped_prefix.as_deref(), Some("_orig_mod."));

    // Both a bare and a `module.` copy: ambiguous, naming both; the key picks one.
    let mut entries = basic_entries("", 1.0);
    entries.extend(basic_entries("module.", 0.5));
    let path = dir.path().join("both.pth");
    write_pth(&path, &Py::Ordered(entries));
    let err = weights_error(ResNet::from_weights_file(&path, &cpu()));
    assert!(
        matches!(err, WeightsError::AmbiguousStateDict { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("module") && err.to_string().contains("root"),
        "{err}"
    );
    let report = load_basic(&path, &LoadOptions::strict().key(""));
    assert!(
        report
            .other_entries
            .iter()
            .any(|e| e.starts_with("module.*")),
        "{report}"
    );
    let mut model = basic_config().init(&cpu());
    let report = model
        .load_weights(&path, &LoadOptions::strict().key("module"))
        .unwrap();
    assert_eq!(report.stripped_prefix.as_deref(), Some("module."));
}

#[test]
fn container_and_pickle_errors_stay_short() {
    let dir = tempfile::tempdir().unwrap();
    // 30 state_dicts: the error names 10 and counts the rest.
    let root = Py::Dict(
        (0..30)
            .map(|i| (format!("model_{i:02}"), basic_state_dict()))
            .collect(),
    );
    let path = dir.path().join("many.pth");
    write_pth(&path, &root);
    let err = weights_error(ResNet::from_weights_file(&path, &cpu()));
    let message = err.to_string();
    assert!(
        matches!(err, WeightsError::AmbiguousStateDict { .. }),
        "{message}"
    );
    assert!(message.contains("and 20 more"), "{message}");
    assert!(
        message.len() < 400 && !message.contains('\n'),
        "{} bytes: {message}",
        message.len()
    );

    // 30 refused globals.
    let mut entries = basic_entries("", 1.0);
    for i in 0..30 {
        entries.push((
            format!("evil{i}"),
            Py::Raw(format!("cevil_module_{i:02}\nrun\n)R").into_bytes()),
        ));
    }
    let path = dir.path().join("evil.pth");
    write_pth(&path, &Py::Ordered(entries));
    let message = weights_error(ResNet::from_weights_file(&path, &cpu())).to_string();
    assert!(message.contains("and 20 more"), "{message}");
    assert!(
        message.len() < 700 && !message.contains('\n'),
        "{} bytes: {message}",
        message.len()
    );

    // A report with many other entries stays short too.
    let mut entries = basic_entries("", 1.0);
    for i in 0..50 {
        entries.push((format!("note{i:02}"), Py::Str("x".repeat(1000))));
    }
    let path = dir.path().join("notes.pth");
    write_pth(&path, &Py::Ordered(entries));
    let report = load_basic(&path, &LoadOptions::strict());
    assert_eq!(report.other_entries.len(), 50);
    let shown = report.to_string();
    assert!(
        shown.contains("and 40 more") && shown.len() < 1000,
        "{shown}"
    );
}

/// Legacy (pre-1.6, non-ZIP) checkpoints: every pickle of the stream is scanned like a ZIP
/// checkpoint's `data.pkl`. Fixtures: `tests/fixtures/weights/make_legacy_fixtures.py`.
#[test]
fn legacy_checkpoints_are_scanned_like_zip_ones() {
    let (model, _) = ResNet::from_weights_file(fixture("legacy_basic.pth"), &cpu()).unwrap();
    assert_eq!(model.config().widths, [4, 8, 8, 16]);
    let err = WeightsFile::open(fixture("legacy_evil.pth")).unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::UnsafePickle { .. })),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("system"), "{message}");
}
