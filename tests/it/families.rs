//! The ConvNeXt, EfficientNet, MobileNetV3 and ViT families against torchvision: parameter
//! names and shapes of the full-size models (`state_dicts/*.txt`), and outputs of small
//! configurations with random weights (`parity_cases.json`, written by
//! `tests/fixtures/models/make_parity.py`) imported through the strict loader.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use finetune::Error;
use finetune::model::{
    AnyConfig, AnyFeatures, AnyModel, ConvNeXtConfig, EfficientNetConfig, InferenceModel,
    InvertedResidualSetting, MobileNetV3Config, ModelConfig, VisionModel, VisionTransformerConfig,
    create_model,
};
use finetune::weights::keymap::KeyMap;
use finetune::weights::{LoadOptions, WeightsError, read_safetensors_f32};

use crate::common::cpu;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn cases() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("parity_cases.json")).unwrap()).unwrap()
}

/// The configuration torchvision's constructor arguments describe.
fn config_of(case: &serde_json::Value) -> AnyConfig {
    let args = &case["args"];
    let get = |k: &str| args[k].as_u64().unwrap() as usize;
    match case["family"].as_str().unwrap() {
        "convnext" => {
            let blocks = args["block_setting"].as_array().unwrap();
            let depths: Vec<usize> = blocks
                .iter()
                .map(|b| b["num_layers"].as_u64().unwrap() as usize)
                .collect();
            let dims: Vec<usize> = blocks
                .iter()
                .map(|b| b["input_channels"].as_u64().unwrap() as usize)
                .collect();
            ConvNeXtConfig::new(
                depths.try_into().unwrap(),
                dims.try_into().unwrap(),
                get("num_classes"),
            )
            .with_stochastic_depth_prob(args["stochastic_depth_prob"].as_f64().unwrap())
            .with_layer_scale(args["layer_scale"].as_f64().unwrap())
            .into()
        }
        "efficientnet" => EfficientNetConfig::new(
            serde_json::from_value(args["inverted_residual_setting"].clone()).unwrap(),
            get("num_classes"),
        )
        .with_dropout(args["dropout"].as_f64().unwrap())
        .with_stochastic_depth_prob(args["stochastic_depth_prob"].as_f64().unwrap())
        .with_norm_eps(args["norm_eps"].as_f64().unwrap())
        .with_last_channel(args["last_channel"].as_u64().map(|c| c as usize))
        .into(),
        "mobilenet_v3" => {
            let setting = args["inverted_residual_setting"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let u = |k: &str| b[k].as_u64().unwrap() as usize;
                    InvertedResidualSetting {
                        input_channels: u("input_channels"),
                        kernel: u("kernel"),
                        expanded_channels: u("expanded_channels"),
                        out_channels: u("out_channels"),
                        use_se: b["use_se"].as_bool().unwrap(),
                        use_hs: b["activation"] == "HS",
                        stride: u("stride"),
                        dilation: u("dilation"),
                    }
                })
                .collect();
            MobileNetV3Config::new(setting, get("last_channel"), get("num_classes")).into()
        }
        "vit" => VisionTransformerConfig::new(
            get("image_size"),
            get("patch_size"),
            get("num_layers"),
            get("num_heads"),
            get("hidden_dim"),
            get("mlp_dim"),
            get("num_classes"),
        )
        .into(),
        other => panic!("unknown family {other}"),
    }
}

fn tensor<const D: usize>(file: &str, name: &str, device: &Device) -> Tensor<D> {
    let (values, shape) = read_safetensors_f32(fixture(file), name).unwrap();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Largest absolute difference relative to the reference's largest magnitude.
fn relative_error<const D: usize>(ours: Tensor<D>, reference: Tensor<D>) -> f32 {
    assert_eq!(ours.dims(), reference.dims());
    let scale: f32 = reference.clone().abs().max().into_scalar();
    let diff: f32 = (ours - reference).abs().max().into_scalar();
    let scale = scale.max(1e-6);
    diff / scale
}

/// The model of `case` with its fixture's weights, loaded strictly onto `device`.
fn parity_model(case: &serde_json::Value, weights: &str, device: &Device) -> AnyModel {
    let mut model = config_of(case).try_init(device).unwrap();
    let report = model
        .load_weights(fixture(weights), &LoadOptions::strict())
        .unwrap();
    assert_eq!(
        report.applied.len(),
        model.tensor_paths().len(),
        "{weights}"
    );
    model
}

/// Features, pre-logits and logits against torchvision's, within 1e-4 of their scale.
fn check_parity(name: &str, device: &Device) -> [f32; 3] {
    let cases = cases();
    let case = &cases["cases"][name];
    let io = case["io"].as_str().unwrap();
    // vit_test_interp: the 32x32 weights run at 48x48, position embeddings resized on the fly.
    let built = if name == "vit_test_interp" {
        &cases["cases"]["vit_test"]
    } else {
        case
    };
    let model = parity_model(built, built["weights"].as_str().unwrap(), device);
    let input: Tensor<4> = tensor(io, "input", device);
    model.check_input(input.dims()).unwrap();
    let features = match model.forward_features(input.clone()) {
        AnyFeatures::Maps(maps) => relative_error(maps, tensor::<4>(io, "features", device)),
        AnyFeatures::Tokens(tokens) => relative_error(tokens, tensor::<3>(io, "features", device)),
        other => panic!("{other:?}"),
    };
    let pre = relative_error(
        model.forward_pre_logits(input.clone()),
        tensor(io, "pre_logits", device),
    );
    let logits = relative_error(model.forward(input.clone()), tensor(io, "logits", device));
    // The inference form (BatchNorm folded, host activations) gives the same logits.
    let inference = model.for_inference();
    let folded = relative_error(
        InferenceModel::forward(&inference, input),
        tensor(io, "logits", device),
    );
    assert!(folded < 1e-4, "{name}: inference form off by {folded}");
    [features, pre, logits]
}

const CASES: [&str; 6] = [
    "convnext_test",
    "efficientnet_test",
    "efficientnet_v2_test",
    "mobilenet_v3_test",
    "vit_test",
    "vit_test_interp",
];

#[test]
fn every_family_matches_torchvision_on_random_weights() {
    for name in CASES {
        let errors = check_parity(name, &cpu());
        eprintln!("{name}: relative error features/pre-logits/logits {errors:?}");
        for e in errors {
            assert!(e < 1e-4, "{name}: {errors:?}");
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn every_family_matches_torchvision_on_wgpu() {
    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    for name in CASES {
        let errors = check_parity(name, &device);
        eprintln!("{name} (wgpu): relative error {errors:?}");
        for e in errors {
            assert!(e < 1e-4, "{name} on wgpu: {errors:?}");
        }
    }
}

/// torchvision's state_dict keys and shapes, from `state_dicts/<arch>.txt`.
fn torchvision_state_dict(arch: &str) -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(fixture(&format!("state_dicts/{arch}.txt"))).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, shape) = l.split_once(' ').unwrap_or((l, ""));
            let shape: Vec<usize> = shape
                .trim()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            (!key.ends_with("num_batches_tracked")).then(|| (key.to_string(), shape))
        })
        .collect()
}

#[test]
fn full_size_models_have_torchvisions_names_and_shapes() {
    for arch in [
        "convnext_tiny",
        "efficientnet_b0",
        "efficientnet_v2_s",
        "mobilenet_v3_small",
        "mobilenet_v3_large",
        "vit_b_16",
    ] {
        // Parameters are initialised lazily: listing them allocates nothing.
        let model = create_model(arch, 1000, &cpu()).unwrap();
        let key_map: KeyMap = model.key_map();
        let ours: BTreeMap<String, Vec<usize>> = model
            .tensor_paths()
            .into_iter()
            .map(|(p, s)| key_map.to_reference(&p, s))
            .collect();
        let theirs = torchvision_state_dict(arch);
        let missing: Vec<&String> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
        let extra: Vec<&String> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{arch}: missing {missing:?}, extra {extra:?}"
        );
        for (key, shape) in &theirs {
            assert_eq!(&ours[key], shape, "{arch}: {key}");
        }
    }
}

#[test]
fn another_familys_file_is_named_not_misloaded() {
    let cases = cases();
    let mut model = config_of(&cases["cases"]["efficientnet_test"])
        .try_init(&cpu())
        .unwrap();
    let err = model
        .load_weights(fixture("convnext_test.safetensors"), &LoadOptions::strict())
        .unwrap_err();
    assert!(
        matches!(err, Error::Weights(WeightsError::WrongArchitecture { .. })),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("convnext"), "{message}");
    // A file of the same family and another shape lists the tensors that disagree.
    let mut other = config_of(&cases["cases"]["efficientnet_v2_test"])
        .try_init(&cpu())
        .unwrap();
    let err = other
        .load_weights(
            fixture("efficientnet_test.safetensors"),
            &LoadOptions::strict(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("features.1.0.block.0.0.weight"), "{err}");
}

#[test]
fn a_backbone_loads_into_a_new_head() {
    let cases = cases();
    for name in ["convnext_test", "mobilenet_v3_test", "vit_test"] {
        let case = &cases["cases"][name];
        let model = config_of(case).try_init(&cpu()).unwrap();
        let mut model = model.reset_classifier(3).unwrap();
        let head_before = crate::common::snapshot(&model);
        let report = model
            .load_weights(
                fixture(case["weights"].as_str().unwrap()),
                &LoadOptions::backbone_only(),
            )
            .unwrap();
        assert_eq!(report.skipped.len(), 2, "{name}: {report}");
        assert_eq!(model.num_classes(), 3);
        let head = model.stages().head().unwrap().clone();
        let moved = crate::common::changed(&head_before, &crate::common::snapshot(&model));
        assert!(moved.iter().all(|p| !head.owns(p)), "{name}: head changed");
        assert!(!moved.is_empty(), "{name}: nothing loaded");
    }
}

/// Every tensor of a safetensors file: name -> (dtype, shape, bytes).
fn state_dict_of(path: &std::path::Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = format!("{:?}", view.dtype());
            (name, (dtype, view.shape().to_vec(), view.data().to_vec()))
        })
        .collect()
}

/// `weights::save_safetensors` writes back exactly the state_dict torchvision wrote: the same
/// keys (BatchNorm's `num_batches_tracked` included), shapes, dtypes and `f32` values, for
/// every family (the parity fixtures) and both ResNet block kinds.
#[test]
fn every_family_exports_torchvisions_own_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let mut files: Vec<(String, AnyModel, PathBuf)> = CASES
        .iter()
        .filter(|name| **name != "vit_test_interp")
        .map(|name| {
            let case = &cases["cases"][*name];
            let weights = case["weights"].as_str().unwrap();
            let model = parity_model(case, weights, &cpu());
            (name.to_string(), model, fixture(weights))
        })
        .collect();
    for name in ["basic", "bottleneck"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/weights")
            .join(format!("{name}.safetensors"));
        let (model, _) =
            AnyModel::from_weights_file(&path, &LoadOptions::strict(), &cpu()).unwrap();
        files.push((name.to_string(), model, path));
    }
    for (name, model, original) in files {
        let out = dir.path().join(format!("{name}.safetensors"));
        finetune::weights::save_safetensors(&model, &out, [("arch", name.as_str())]).unwrap();
        let ours = state_dict_of(&out);
        let theirs = state_dict_of(&original);
        let keys = |m: &BTreeMap<String, _>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&ours), keys(&theirs), "{name}: keys");
        for (key, (dtype, shape, bytes)) in &theirs {
            let (d, s, b) = &ours[key];
            assert_eq!((d, s), (dtype, shape), "{name}: {key}");
            if dtype == "F32" {
                assert!(b == bytes, "{name}: {key} values differ");
            }
        }
        // And it loads back strictly.
        let (back, report) = AnyModel::from_weights_file(&out, &LoadOptions::strict(), &cpu())
            .unwrap_or_else(|e| {
                // Custom shapes of the non-ResNet families are not inferred: load into
                // the same configuration instead.
                let mut m = model.config().try_init(&cpu()).unwrap();
                let r = m
                    .load_weights(&out, &LoadOptions::strict())
                    .unwrap_or_else(|e2| panic!("{name}: {e} / {e2}"));
                (m, r)
            });
        assert_eq!(report.applied.len(), back.tensor_paths().len(), "{name}");
    }
}

/// `weights::export_pytorch`: the state_dict and, beside it, what rebuilds the network in
/// PyTorch.
#[test]
fn an_export_says_how_to_rebuild_the_network_in_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let model = create_model("mobilenet_v3_small", 7, &cpu()).unwrap();
    let out = dir.path().join("m.safetensors");
    let export = finetune::weights::export_pytorch(&model, &out).unwrap();
    assert_eq!(export.description, dir.path().join("m.json"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export.description).unwrap()).unwrap();
    assert_eq!(json["arch"], "mobilenet_v3_small");
    assert_eq!(json["num_classes"], 7);
    assert_eq!(
        json["torchvision"],
        r#"torchvision.models.get_model("mobilenet_v3_small", num_classes=7)"#
    );
    assert_eq!(json["family"], "mobilenet_v3");
    assert!(state_dict_of(&out).contains_key("features.0.1.num_batches_tracked"));
    // The crate's own small backbone has no torchvision constructor.
    let mini = create_model("finetune_mini", 3, &cpu()).unwrap();
    let export =
        finetune::weights::export_pytorch(&mini, dir.path().join("mini.safetensors")).unwrap();
    assert_eq!(export.arch.as_deref(), Some("finetune_mini"));
    assert_eq!(export.torchvision, None);
    let err = finetune::weights::export_pytorch(&mini, dir.path().join("mini.onnx")).unwrap_err();
    assert!(err.to_string().contains(".safetensors or .pth"), "{err}");
    let export = finetune::weights::export_pytorch(&mini, dir.path().join("mini.pt")).unwrap();
    assert_eq!(export.description, dir.path().join("mini.json"));
}

/// `weights::save_pth` writes what `torch.save(model.state_dict())` writes: a zip of a pickle
/// with only the globals `torch.load(weights_only=True)` allows, which the crate's own strict
/// `.pth` import (burn-store's PyTorch reader) reads back to the same values as the
/// `.safetensors` export, for every family. (`tests/fixtures/models/check_export.py FILE.pth`
/// checks the PyTorch side.)
#[test]
fn every_family_exports_a_pth_that_loads_back_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    for name in CASES.iter().filter(|name| **name != "vit_test_interp") {
        let case = &cases["cases"][*name];
        let model = parity_model(case, case["weights"].as_str().unwrap(), &cpu());
        let pth = dir.path().join(format!("{name}.pth"));
        finetune::weights::save_pth(&model, &pth).unwrap();
        let bytes = std::fs::read(&pth).unwrap();
        assert_eq!(
            &bytes[..4],
            b"PK\x03\x04",
            "{name}: a zip, as torch.save writes"
        );
        let mut back = model.config().try_init(&cpu()).unwrap();
        let report = back
            .load_weights(&pth, &LoadOptions::strict())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.applied.len(), back.tensor_paths().len(), "{name}");
        // `snapshot` reads every float tensor, BatchNorm statistics included.
        assert_eq!(
            crate::common::snapshot(&back),
            crate::common::snapshot(&model),
            "{name}: values differ after the round trip"
        );
    }
}

/// A model trained in half precision (`--dtype bf16`) exports as f32, exactly its values.
#[test]
fn a_bf16_model_exports_as_f32_with_the_same_values() {
    use burn::module::{Module, ModuleMapper, Param};
    use burn::tensor::FloatDType;
    struct Cast(FloatDType);
    impl ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = self.0;
            param.map(|t| t.cast(dtype))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let model = crate::common::tiny_model();
    let half = model.clone().map(&mut Cast(FloatDType::BF16));
    let file = dir.path().join("half.safetensors");
    finetune::weights::save_safetensors(&half, &file, []).unwrap();
    let mut back = model.config().try_init(&cpu()).unwrap();
    back.load_weights(&file, &LoadOptions::strict()).unwrap();
    let widened = half.map(&mut Cast(FloatDType::F32));
    assert_eq!(
        crate::common::snapshot(&back),
        crate::common::snapshot(&widened)
    );
    assert_ne!(
        crate::common::snapshot(&back),
        crate::common::snapshot(&model),
        "bf16 must have rounded something"
    );
}
