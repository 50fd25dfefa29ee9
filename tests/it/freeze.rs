//! Freezing: the classic bugs (weight decay moving frozen weights, BatchNorm statistics drifting,
//! freeze state lost across valid()/train() or save/load, gradients computed for frozen parts).

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, SgdConfig, decay::WeightDecayConfig, momentum::MomentumConfig};
use burn::tensor::{Int, Tensor};
use finetune::model::VisionModel;
use finetune::model::{BnPolicy, ResNet, Stage, is_batch_norm_path};

use crate::common::{changed, cpu, images, snapshot, tiny18};

fn targets(n: usize, classes: usize, device: &burn::tensor::Device) -> Tensor<1, Int> {
    let t: Vec<i64> = (0..n).map(|i| (i % classes) as i64).collect();
    Tensor::from_data(t.as_slice(), device)
}

/// A few SGD steps (momentum, weight decay 0.01) on random data, on the autodiff device.
fn train_steps(mut model: ResNet, steps: usize) -> ResNet {
    let device = cpu().autodiff();
    model = model.fork(&device).train();
    let mut optim = SgdConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(0.01)))
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    for _ in 0..steps {
        let logits = model.forward(images(8, 32, &device));
        let loss = loss_fn.forward(logits, targets(8, 5, &device));
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.1, model, grads);
    }
    model.valid()
}

#[test]
fn frozen_backbone_is_bitwise_unchanged_after_sgd_with_weight_decay() {
    let model = tiny18(5).init(&cpu()).freeze_backbone();
    assert_eq!(model.freeze_state().bn, BnPolicy::Frozen);
    let before = snapshot(&model);
    let model = train_steps(model, 3);
    let after = snapshot(&model);
    let moved = changed(&before, &after);
    assert!(!moved.is_empty(), "nothing trained");
    assert!(
        moved.iter().all(|p| p.starts_with("fc.")),
        "frozen tensors changed: {moved:?}"
    );
    assert!(moved.contains(&"fc.weight".to_string()));
    assert!(moved.contains(&"fc.bias".to_string()));
}

#[test]
fn trainable_bn_policy_trains_batch_norms_but_not_convolutions() {
    let model = tiny18(5)
        .init(&cpu())
        .with_bn_policy(BnPolicy::Trainable)
        .freeze_backbone();
    assert_eq!(model.freeze_state().bn, BnPolicy::Trainable);
    let before = snapshot(&model);
    let model = train_steps(model, 2);
    let moved = changed(&before, &snapshot(&model));
    for (path, _) in &before {
        let is_bn = is_batch_norm_path(path);
        let is_fc = path.starts_with("fc.");
        assert_eq!(
            moved.contains(path),
            is_bn || is_fc,
            "{path}: changed = {}",
            moved.contains(path)
        );
    }
    // Running statistics update in training mode under this policy.
    assert!(moved.contains(&"layer1.0.bn1.running_mean".to_string()));
    assert!(moved.contains(&"layer2.0.downsample.bn.gamma".to_string()));
}

#[test]
fn train_mode_bn_policy_updates_running_statistics_but_nothing_else_in_the_backbone() {
    let model = tiny18(5)
        .init(&cpu())
        .with_bn_policy(BnPolicy::TrainMode)
        .freeze_backbone();
    assert_eq!(model.freeze_state().bn, BnPolicy::TrainMode);
    // Affine parameters are not trainable; only the head is.
    let summary = model.param_summary();
    assert_eq!(summary.stage("layer4").trainable, 0);
    let mut with_grads = params_with_gradients(&model);
    with_grads.sort();
    assert_eq!(
        with_grads,
        vec!["fc.bias".to_string(), "fc.weight".to_string()]
    );
    let before = snapshot(&model);
    let trained = train_steps(model.clone(), 3);
    let moved = changed(&before, &snapshot(&trained));
    for (path, _) in &before {
        let running = path.ends_with(".running_mean") || path.ends_with(".running_var");
        // The head trains, every BatchNorm's running statistics follow the new data, and the
        // backbone's weights (BatchNorm gamma and beta included) stay bitwise fixed.
        assert_eq!(
            moved.contains(path),
            running || path.starts_with("fc."),
            "{path}: changed = {}",
            moved.contains(path)
        );
    }
    // The policy survives valid()/train() and no graph goes through the backbone.
    assert_eq!(trained.freeze_state(), model.freeze_state());
    let device = cpu().autodiff();
    let features = trained
        .fork(&device)
        .train()
        .forward_features(images(2, 32, &device));
    assert!(!features.is_tracked());
}

#[test]
fn train_mode_bn_policy_trains_through_the_learner_and_refuses_cached_features() {
    use finetune::train::{Learner, LearnerConfig, TensorSource, TrainError};
    let device = cpu();
    let model = tiny18(5)
        .init(&device)
        .with_bn_policy(BnPolicy::TrainMode)
        .freeze_backbone();
    let labels: Vec<usize> = (0..16).map(|i| i % 5).collect();
    let train = TensorSource::new(images(16, 32, &device), &labels, 8);
    let val = TensorSource::new(images(8, 32, &device), &labels[..8], 8);
    let learner = Learner::new(LearnerConfig::default().with_epochs(1).with_lr(0.05));

    let err = learner
        .clone()
        .cache_features(true)
        .fit(model.clone(), &train, &val)
        .unwrap_err();
    assert!(matches!(err, TrainError::Config(_)), "{err}");
    let message = err.to_string();
    assert!(message.contains("TrainMode"), "{message}");
    assert!(message.contains("cache_features"), "{message}");

    let before = snapshot(&model);
    let outcome = learner.fit(model, &train, &val).unwrap();
    let moved = changed(&before, &snapshot(&outcome.model));
    assert!(moved.contains(&"fc.weight".to_string()), "{moved:?}");
    assert!(moved.contains(&"layer4.1.bn2.running_var".to_string()));
    assert!(moved.contains(&"bn1.running_mean".to_string()));
    let weights_moved: Vec<_> = moved
        .iter()
        .filter(|p| !p.starts_with("fc.") && !p.contains(".running_"))
        .collect();
    assert!(weights_moved.is_empty(), "{weights_moved:?}");
}

#[test]
fn bn_policies_have_names() {
    for policy in [BnPolicy::Frozen, BnPolicy::Trainable, BnPolicy::TrainMode] {
        assert_eq!(BnPolicy::parse(policy.name()), Some(policy));
        assert!(!policy.describe().is_empty());
    }
    assert_eq!(BnPolicy::parse("train_mode"), Some(BnPolicy::TrainMode));
    assert_eq!(BnPolicy::parse("sometimes"), None);
}

#[test]
fn freeze_to_a_stage_freezes_exactly_the_stages_before_it() {
    let model = tiny18(5).init(&cpu()).freeze_to("layer2").unwrap();
    let before = snapshot(&model);
    let model = train_steps(model, 2);
    let moved = changed(&before, &snapshot(&model));
    for (path, _) in &before {
        let stages = model.stages();
        let stage = stages.index_of_path(path).unwrap();
        let frozen = stage <= stages.index_of(&Stage::new("layer2")).unwrap();
        // Every trainable tensor moves (weights, biases and running statistics alike).
        assert_eq!(moved.contains(path), !frozen, "{path}");
    }
    let summary = model.param_summary();
    assert_eq!(summary.stage("layer2").trainable, 0);
    assert_eq!(summary.stage("layer3").frozen(), 0);
}

#[test]
fn unfreeze_makes_everything_train_again() {
    let model = tiny18(5).init(&cpu()).freeze_backbone().unfreeze();
    assert_eq!(model.freeze_state().frozen_through, None);
    let before = snapshot(&model);
    let moved = changed(&before, &snapshot(&train_steps(model, 1)));
    assert_eq!(moved.len(), before.len());
}

/// Ids of the float parameters of `module` with their paths.
fn param_ids(model: &ResNet) -> Vec<(String, ParamId, usize)> {
    #[derive(Default)]
    struct Ids {
        stack: Vec<String>,
        out: Vec<(String, ParamId, usize)>,
    }
    impl ModuleVisitor for Ids {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out.push((self.stack.join("."), param.id, D));
        }
    }
    let mut ids = Ids::default();
    model.visit(&mut ids);
    ids.out
}

/// Paths of the parameters that received a gradient from one backward pass.
fn params_with_gradients(model: &ResNet) -> Vec<String> {
    let device = cpu().autodiff();
    let model = model.clone().fork(&device).train();
    let logits = model.forward(images(4, 32, &device));
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(logits, targets(4, 5, &device));
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    param_ids(&model)
        .into_iter()
        .filter(|(_, id, rank)| match rank {
            1 => grads.get::<1>(*id).is_some(),
            2 => grads.get::<2>(*id).is_some(),
            4 => grads.get::<4>(*id).is_some(),
            _ => unreachable!(),
        })
        .map(|(p, _, _)| p)
        .collect()
}

#[test]
fn gradients_only_for_trainable_parameters_and_no_graph_through_a_frozen_backbone() {
    let device = cpu().autodiff();
    let model = tiny18(5).init(&cpu()).freeze_backbone();
    let mut with_grads = params_with_gradients(&model);
    with_grads.sort();
    assert_eq!(
        with_grads,
        vec!["fc.bias".to_string(), "fc.weight".to_string()]
    );

    // The frozen backbone's output is not part of any autodiff graph.
    let trained = model.clone().fork(&device).train();
    let features = trained.forward_pre_logits(images(2, 32, &device));
    assert!(!features.is_tracked());
    let unfrozen = model.unfreeze().fork(&device).train();
    assert!(
        unfrozen
            .forward_pre_logits(images(2, 32, &device))
            .is_tracked()
    );
}

#[test]
fn freeze_state_survives_valid_and_train() {
    let model = tiny18(5).init(&cpu()).freeze_to("layer3").unwrap();
    let round_trip = model.clone().fork(&cpu().autodiff()).valid().train();
    assert_eq!(round_trip.freeze_state(), model.freeze_state());
    let grads = params_with_gradients(&round_trip);
    assert!(
        grads
            .iter()
            .all(|p| p.starts_with("layer4") || p.starts_with("fc"))
    );
    assert!(grads.iter().any(|p| p.starts_with("layer4")));
}

#[test]
fn freeze_state_and_weights_survive_save_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bpk");
    let device = cpu();
    let model = train_steps(
        tiny18(5)
            .init(&device)
            .with_bn_policy(BnPolicy::Trainable)
            .freeze_to("layer1")
            .unwrap(),
        1,
    );
    model.save(&path).unwrap();
    let loaded = ResNet::load(&path, &device).unwrap();
    assert_eq!(loaded.freeze_state(), model.freeze_state());
    assert_eq!(loaded.config(), model.config());
    assert!(changed(&snapshot(&model), &snapshot(&loaded)).is_empty());
    let x = images(2, 32, &device);
    assert_eq!(
        crate::common::max_abs_diff(model.forward(x.clone()), loaded.forward(x)),
        0.0
    );
    let grads = params_with_gradients(&loaded);
    assert!(grads.contains(&"layer1.0.bn1.gamma".to_string()));
    assert!(!grads.contains(&"layer1.0.conv1.weight".to_string()));
    assert!(grads.contains(&"layer2.0.conv1.weight".to_string()));
}

#[test]
fn loading_a_file_that_is_not_a_model_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let device = cpu();
    let missing = ResNet::load(dir.path().join("nope.bpk"), &device).unwrap_err();
    assert!(missing.to_string().contains("no such file"), "{missing}");
    let junk = dir.path().join("junk.bpk");
    std::fs::write(&junk, b"definitely not burnpack").unwrap();
    let err = ResNet::load(&junk, &device).unwrap_err().to_string();
    assert!(err.contains("not a burnpack file"), "{err}");
}

#[test]
fn stage_names_are_recorded_as_the_model_names_them() {
    let model = tiny18(5).init(&cpu()).freeze_to("LAYER2").unwrap();
    assert_eq!(
        model.freeze_state().frozen_through,
        Some(Stage::new("layer2"))
    );
    // `head` is the last stage of any model: the same state as freezing everything.
    let by_alias = tiny18(5).init(&cpu()).freeze_to("head").unwrap();
    let all = VisionModel::freeze(tiny18(5).init(&cpu()));
    assert_eq!(by_alias.freeze_state(), all.freeze_state());
    assert_eq!(all.freeze_state().frozen_through, Some(Stage::new("fc")));
    let err = tiny18(5)
        .init(&cpu())
        .freeze_to("layer5")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no stage 'layer5'")
            && err.contains("stem, layer1, layer2, layer3, layer4, fc"),
        "{err}"
    );
}

/// A file written before the model contract (format 1): no family tag, ResNet's stage enum
/// spelled `Layer3`. It loads, with the stage named as the model names it.
#[test]
fn a_model_file_of_format_1_still_loads() {
    use burn::store::{BurnpackStore, ModuleSnapshot};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.bpk");
    let model = tiny18(5).init(&cpu()).freeze_to("layer3").unwrap();
    let config = serde_json::to_value(model.config()).unwrap();
    let legacy = serde_json::json!({
        "format_version": 1,
        "config": config,
        "freeze": {"frozen_through": "Layer3", "bn": "Frozen"},
    });
    let mut store = BurnpackStore::from_file(&path)
        .auto_extension(false)
        .metadata(finetune::model::METADATA_KEY, legacy.to_string());
    model.save_into(&mut store).unwrap();
    let loaded = ResNet::load(&path, &cpu()).unwrap();
    assert_eq!(loaded.freeze_state(), model.freeze_state());
    assert_eq!(
        loaded.freeze_state().frozen_through,
        Some(Stage::new("layer3"))
    );
    assert_eq!(loaded.param_summary(), model.param_summary());
    let any = finetune::AnyModel::load(&path, &cpu()).unwrap();
    assert_eq!(any.arch(), model.arch());
}
