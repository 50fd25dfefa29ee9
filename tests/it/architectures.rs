//! The model contract, checked for every registered architecture (timm's
//! `tests/test_models.py` style: one loop over `finetune::architectures()`, so a new family is
//! covered by registering it). Real depths and widths, ImageNet stem, 32x32 images (the last
//! stage sees 1x1 maps, the smallest input a training batch of 2 accepts). Parameter counts are
//! checked for every architecture (parameters are initialised lazily, so that allocates
//! nothing); the tests that run the networks take each family's first variant, ResNet-50
//! (the first bottleneck ResNet) and every architecture under 10M parameters, as timm's tests
//! leave out the largest models.

use std::collections::BTreeSet;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, SgdConfig, decay::WeightDecayConfig, momentum::MomentumConfig};
use burn::tensor::{Int, Tensor};
use finetune::model::{
    AnyConfig, AnyFeatures, AnyModel, BnPolicy, ModelConfig, VisionModel, create_model,
};

use crate::common::{changed, cpu, images, snapshot};

const SIZE: usize = 32;

/// The architectures the running tests use: each family's first variant, `resnet50`, and
/// every one under 10M parameters.
fn exercised() -> Vec<&'static str> {
    let counts = torchvision_counts();
    let mut seen = BTreeSet::new();
    finetune::architectures()
        .iter()
        .copied()
        .filter(|name| {
            let family = name
                .split('_')
                .next()
                .unwrap_or(name)
                .trim_end_matches(char::is_numeric);
            let first = seen.insert(family.to_string());
            first
                || *name == "resnet50"
                || counts[*name]["params_1000"].as_u64().unwrap() < 10_000_000
        })
        .collect()
}

fn torchvision_counts() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/models/param_counts.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn targets(n: usize, classes: usize, device: &burn::tensor::Device) -> Tensor<1, Int> {
    let labels: Vec<i64> = (0..n).map(|i| (i % classes) as i64).collect();
    Tensor::<1, Int>::from_ints(labels.as_slice(), device)
}

/// One SGD step (momentum, weight decay 0.01) on a 2-image batch, on an autodiff device.
fn sgd_step(model: AnyModel) -> AnyModel {
    let device = cpu().autodiff();
    let model = model.fork(&device).train();
    let mut optim = SgdConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(0.01)))
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init();
    let classes = model.num_classes();
    let logits = model.forward(images(2, SIZE, &device));
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(logits, targets(2, classes, &device));
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    optim.step(0.1, model, grads).valid()
}

#[test]
fn every_architecture_is_registered_under_its_torchvision_name() {
    let counts = torchvision_counts();
    let registered: BTreeSet<&str> = finetune::architectures().iter().copied().collect();
    let fixture: BTreeSet<&str> = counts
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(registered, fixture, "regenerate make_param_counts.py");
    let err = create_model("resnet19", 10, &cpu())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown model 'resnet19'") && err.contains("resnet50"),
        "{err}"
    );
    assert!(create_model("resnet18", 0, &cpu()).is_err());
    // A weights tag names the same architecture.
    let tagged = create_model("resnet18.tv_in1k", 10, &cpu()).unwrap();
    assert_eq!(tagged.arch(), "resnet18");
}

#[test]
fn every_architecture_counts_parameters_as_torchvision_does() {
    let counts = torchvision_counts();
    for &name in finetune::architectures() {
        let expected = &counts[name];
        let model = create_model(name, 1000, &cpu()).unwrap();
        let summary = model.param_summary();
        assert_eq!(
            summary.total() as u64,
            expected["params_1000"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(summary.trainable(), summary.total(), "{name}");
        assert_eq!(
            model.num_features() as u64,
            expected["num_features"].as_u64().unwrap()
        );
        let ten = model.reset_classifier(10).unwrap();
        assert_eq!(
            ten.param_summary().total() as u64,
            expected["params_10"].as_u64().unwrap(),
            "{name} with a 10-class head"
        );
    }
}

#[test]
fn every_architecture_has_the_contract_shapes_and_stages() {
    let device = cpu();
    for name in exercised() {
        let model = create_model(name, 7, &device).unwrap();
        assert_eq!(model.arch(), name);
        assert_eq!(model.num_classes(), 7);
        let x = images(2, SIZE, &device);
        model.check_input(x.dims()).unwrap();
        let features = model.forward_features(x.clone());
        // Unpooled: a CNN's maps keep their spatial dimensions (1x1 here, at 32x32 input); a
        // ViT's tokens are the class token and one per patch.
        match features.clone() {
            AnyFeatures::Maps(maps) => {
                let [b, _, h, w] = maps.dims();
                assert_eq!(b, 2, "{name}");
                assert!(h >= 1 && w >= 1, "{name}");
            }
            AnyFeatures::Tokens(tokens) => {
                let [b, n, d] = tokens.dims();
                assert_eq!((b, d), (2, model.num_features()), "{name}");
                assert_eq!(n, 1 + (SIZE / 16) * (SIZE / 16), "{name}");
            }
            other => panic!("{name}: unexpected features {other:?}"),
        }
        let pooled = model.forward_head(features.clone(), true);
        assert_eq!(pooled.dims(), [2, model.num_features()], "{name}");
        let logits = model.forward_head(features, false);
        assert_eq!(logits.dims(), [2, 7], "{name}");
        // forward = forward_head(forward_features); pre-logits + classifier = logits.
        let direct = model.forward(x.clone());
        assert_eq!(direct.to_data(), logits.to_data(), "{name}");
        let via_classifier = model.forward_classifier(model.forward_pre_logits(x));
        assert_eq!(via_classifier.to_data(), logits.to_data(), "{name}");

        // Every parameter belongs to exactly one stage; the last stage is the head.
        let stages = model.stages();
        assert!(stages.len() >= 2, "{name}");
        for (path, _) in model.tensor_paths() {
            let owners = stages.iter().filter(|s| s.owns(&path)).count();
            assert_eq!(owners, 1, "{name}: {path} is in {owners} stages");
        }
        let head = stages.head().unwrap();
        let summary = model.param_summary();
        let head_params = summary.stage(head.name).total;
        assert_eq!(head_params, model.num_features() * 7 + 7, "{name}");
        // torchvision's and timm's ImageNet weights expect ImageNet's mean and std.
        let norm = model.normalization();
        assert_eq!(norm, finetune::data::Normalize::imagenet(), "{name}");
    }
}

#[test]
fn every_architecture_trains_its_head_alone_when_frozen_under_weight_decay() {
    for name in exercised() {
        let model = create_model(name, 3, &cpu()).unwrap().freeze_backbone();
        assert_eq!(model.freeze_state().bn, BnPolicy::Frozen);
        assert!(model.is_head_only(), "{name}");
        let summary = model.param_summary();
        assert_eq!(summary.trainable(), model.num_features() * 3 + 3, "{name}");
        let head = model.stages().head().unwrap().clone();
        let before = snapshot(&model);
        let after = sgd_step(model);
        let moved = changed(&before, &snapshot(&after));
        assert!(!moved.is_empty(), "{name}: nothing trained");
        for path in &moved {
            assert!(head.owns(path), "{name}: frozen tensor {path} changed");
        }
    }
}

#[test]
fn every_architecture_backpropagates_into_every_parameter() {
    for name in exercised() {
        // Without stochastic depth, which may drop a block's branch for the whole batch and
        // leave its zero-initialised biases without a gradient.
        let mut config = AnyConfig::from_name(name, 3).unwrap();
        match &mut config {
            AnyConfig::ConvNeXt(c) => c.stochastic_depth_prob = 0.0,
            AnyConfig::EfficientNet(c) => c.stochastic_depth_prob = 0.0,
            _ => {}
        }
        let model = config.try_init(&cpu()).unwrap();
        let before = snapshot(&model);
        // Two steps: a ViT's head starts at zero (torchvision's init), so the first step's
        // gradient reaches only the head.
        let after = sgd_step(sgd_step(model));
        let moved: BTreeSet<String> = changed(&before, &snapshot(&after)).into_iter().collect();
        // Weight decay moves every parameter that received a gradient; running statistics
        // move in training mode.
        for (path, _) in &before {
            assert!(moved.contains(path), "{name}: {path} did not change");
        }
    }
}

#[test]
fn every_architecture_replaces_its_head_and_round_trips_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let device = cpu();
    for name in exercised() {
        let model = create_model(name, 10, &device).unwrap();
        // A stage in the middle: frozen through it, trainable after.
        let middle = model
            .stages()
            .get(model.stages().len() / 2)
            .unwrap()
            .stage();
        let model = model.freeze_to(middle.clone()).unwrap();
        let backbone_before = snapshot(&model);
        let model = model.reset_classifier(4).unwrap();
        assert_eq!(model.num_classes(), 4);
        let head = model.stages().head().unwrap().clone();
        let moved = changed(&backbone_before, &snapshot(&model));
        assert!(
            moved.iter().all(|p| head.owns(p)),
            "{name}: reset_classifier touched {moved:?}"
        );
        assert_eq!(model.freeze_state().frozen_through, Some(middle));

        let path = dir.path().join(format!("{name}.bpk"));
        model.save(&path).unwrap();
        let loaded = AnyModel::load(&path, &device).unwrap();
        assert_eq!(loaded.config(), model.config(), "{name}");
        assert_eq!(loaded.freeze_state(), model.freeze_state(), "{name}");
        assert_eq!(loaded.param_summary(), model.param_summary(), "{name}");
        assert!(
            changed(&snapshot(&model), &snapshot(&loaded)).is_empty(),
            "{name}"
        );
        let x = images(1, SIZE, &device);
        assert_eq!(
            loaded.forward(x.clone()).to_data(),
            model.forward(x).to_data(),
            "{name}"
        );
    }
}
