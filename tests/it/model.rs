//! Topology, parameter names, counts and the head contract.

use finetune::model::VisionModel;
use std::collections::BTreeMap;

use burn::tensor::Device;
use finetune::model::{InferenceModel, ResNetConfig, Stem};
use finetune::weights::keymap;

use crate::common::{cpu, images, tiny18};

/// `key -> shape` from a committed torchvision key list (see tests/fixtures/make_keylists.py).
fn torchvision_keys(file: &str) -> (BTreeMap<String, Vec<usize>>, usize) {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    let mut params = 0;
    let mut keys = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('#') {
            params = rest
                .split("parameters=")
                .nth(1)
                .and_then(|n| n.trim().parse().ok())
                .expect("parameter count in header");
            continue;
        }
        let (key, shape) = line.split_once(' ').expect("key shape");
        let shape = shape
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|d| d.parse().expect("dim"))
            .collect();
        keys.insert(key.to_string(), shape);
    }
    (keys, params)
}

fn check_against_torchvision(config: ResNetConfig, file: &str) {
    let (expected, expected_params) = torchvision_keys(file);
    let model = config.init(&cpu());
    let mut ours = BTreeMap::new();
    for (path, shape) in model.tensor_paths() {
        let (key, shape) = keymap::burn_to_torchvision(&path, shape);
        assert!(ours.insert(key.clone(), shape).is_none(), "duplicate {key}");
    }
    let expected: BTreeMap<_, _> = expected
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect();
    let missing: Vec<_> = expected.keys().filter(|k| !ours.contains_key(*k)).collect();
    let extra: Vec<_> = ours.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (key, shape) in &expected {
        assert_eq!(&ours[key], shape, "shape of {key}");
    }
    assert_eq!(model.param_summary().total(), expected_params);
}

#[test]
fn resnet18_matches_torchvision_names_and_shapes() {
    check_against_torchvision(ResNetConfig::resnet18(1000), "resnet18_state_dict.txt");
}

#[test]
fn resnet50_matches_torchvision_names_and_shapes() {
    check_against_torchvision(ResNetConfig::resnet50(1000), "resnet50_state_dict.txt");
}

#[test]
fn parameter_counts_of_the_tutorial_setup() {
    let device = cpu();
    let model = ResNetConfig::resnet18(1000).init(&device);
    assert_eq!(model.param_summary().total(), 11_689_512);
    let model = model.with_num_classes(10);
    let summary = model.param_summary();
    assert_eq!(summary.total(), 11_181_642);
    assert_eq!(summary.trainable(), 11_181_642);
    let summary = model.freeze_backbone().param_summary();
    assert_eq!(summary.trainable(), 5_130);
    assert_eq!(summary.frozen(), 11_181_642 - 5_130);
    assert_eq!(summary.stage("fc").trainable, 5_130);
    assert_eq!(summary.stage("layer4").trainable, 0);
    let table = summary.to_string();
    assert!(table.contains("11,181,642"), "{table}");
    assert!(table.contains("5,130"), "{table}");
}

#[test]
fn other_depths_have_torchvisions_parameter_counts() {
    // torchvision: resnet34 21,797,672; resnet101 44,549,160; resnet152 60,192,808.
    let device = cpu();
    for (config, expected) in [
        (ResNetConfig::resnet34(1000), 21_797_672),
        (ResNetConfig::resnet101(1000), 44_549_160),
        (ResNetConfig::resnet152(1000), 60_192_808),
    ] {
        let model = config.init(&device);
        assert_eq!(model.param_summary().total(), expected);
    }
}

#[test]
fn forward_shapes_for_both_stems() {
    let device = cpu();
    let model = tiny18(7).init(&device);
    assert_eq!(model.forward(images(2, 32, &device)).dims(), [2, 7]);
    assert_eq!(
        model.forward_pre_logits(images(2, 32, &device)).dims(),
        [2, 16]
    );
    assert_eq!(model.num_features(), 16);
    assert_eq!(model.num_classes(), 7);

    let model = ResNetConfig::resnet50(5)
        .with_widths([4, 4, 8, 8])
        .init(&device);
    assert_eq!(model.num_features(), 32);
    assert_eq!(
        model.forward_features(images(1, 64, &device)).dims(),
        [1, 32, 2, 2]
    );
    assert_eq!(model.forward(images(1, 64, &device)).dims(), [1, 5]);
}

#[test]
fn downsample_exactly_when_stride_or_width_changes() {
    let model = ResNetConfig::resnet18(10).init(&cpu());
    assert!(model.layer1.iter().all(|b| b.downsample.is_none()));
    for stage in [&model.layer2, &model.layer3, &model.layer4] {
        assert!(stage[0].downsample.is_some());
        assert!(stage[1].downsample.is_none());
    }
    let model = ResNetConfig::resnet50(10).init(&cpu());
    // 64 -> 256 channels at stride 1: the first bottleneck projects.
    assert!(model.layer1[0].downsample.is_some());
    assert!(model.layer1[1].downsample.is_none());
}

#[test]
fn cifar_stem_keeps_resolution() {
    let device = cpu();
    let model = tiny18(10).init(&device);
    assert!(model.maxpool.is_none());
    assert_eq!(model.conv1.weight.dims(), [4, 3, 3, 3]);
    // 32x32 in, three stride-2 stages: 4x4 feature maps.
    assert_eq!(
        model.forward_features(images(1, 32, &device)).dims(),
        [1, 16, 4, 4]
    );
    let imagenet = tiny18(10).with_stem(Stem::ImageNet).init(&device);
    assert_eq!(
        imagenet.forward_features(images(1, 64, &device)).dims(),
        [1, 16, 2, 2]
    );
}

#[test]
fn initialisation_follows_torchvision() {
    let device = cpu();
    let model = ResNetConfig::resnet18(10).init(&device);
    // Kaiming normal, fan-out, ReLU gain: std = sqrt(2 / (out * k * k)).
    let w = model.layer3[0]
        .conv2
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let std = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
    let expected = (2.0f32 / (256.0 * 9.0)).sqrt();
    assert!(
        (std / expected - 1.0).abs() < 0.05,
        "std {std} vs {expected}"
    );
    let gamma = model
        .bn1
        .gamma
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert!(gamma.iter().all(|&g| g == 1.0));

    let zero = ResNetConfig::resnet18(10)
        .with_zero_init_residual(true)
        .init(&device);
    let g = zero.layer1[0]
        .bn2
        .gamma
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert!(g.iter().all(|&x| x == 0.0));
    let zero50 = ResNetConfig::resnet50(10)
        .with_widths([4, 4, 4, 4])
        .with_zero_init_residual(true)
        .init(&device);
    let bn3 = zero50.layer1[0].bn3.as_ref().unwrap();
    assert!(
        bn3.gamma
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|&x| x == 0.0)
    );
    let bn2 = zero50.layer1[0]
        .bn2
        .gamma
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert!(bn2.iter().all(|&x| x == 1.0));
}

#[test]
fn invalid_configs_are_typed_errors() {
    let device = cpu();
    assert!(ResNetConfig::resnet18(0).try_init(&device).is_err());
    assert!(
        ResNetConfig::resnet18(10)
            .with_widths([0, 8, 8, 8])
            .try_init(&device)
            .is_err()
    );
    let mut no_blocks = ResNetConfig::resnet18(10);
    no_blocks.layers = [2, 0, 2, 2];
    assert!(no_blocks.try_init(&device).is_err());
    let err = ResNetConfig::from_name("resnet19", 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("resnet18"), "{err}");
    let model = tiny18(3).init(&device);
    assert!(model.reset_classifier(0).is_err());
}

#[test]
fn with_num_classes_keeps_the_backbone_and_device() {
    let device = cpu();
    let model = tiny18(10).init(&device);
    let x = images(2, 32, &device);
    let before = model.forward_features(x.clone());
    let model = model.with_num_classes(3);
    assert_eq!(model.num_classes(), 3);
    assert_eq!(model.config().num_classes, 3);
    assert_eq!(model.forward(x.clone()).dims(), [2, 3]);
    let after = model.forward_features(x);
    assert_eq!(crate::common::max_abs_diff(before, after), 0.0);
    assert_eq!(model.device(), device);
    let _: Device = model.device();
}

#[test]
fn folded_batch_norm_inference_matches_the_model() {
    use burn::module::Module;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::{GradientsParams, SgdConfig};
    use burn::tensor::{Int, Tensor};
    use finetune::kernels::ConvImpl;

    // Train a few steps so BatchNorm statistics and affine parameters are non-trivial.
    let device = cpu().autodiff();
    let mut model = ResNetConfig::resnet50(4)
        .with_widths([4, 8, 8, 8])
        .init(&device)
        .train();
    let mut optim = SgdConfig::new().init();
    let loss = CrossEntropyLossConfig::new().init(&device);
    for _ in 0..3 {
        let y = Tensor::<1, Int>::from_data([0i64, 1, 2, 3].as_slice(), &device);
        let out = loss.forward(model.forward(images(4, 64, &device)), y);
        let grads = GradientsParams::from_grads(out.backward(), &model);
        model = optim.step(0.02, model, grads);
    }
    let model = model.valid();
    // 64x64 inputs use every kernel tap; at 32x32 and 16x16 the last stages see 1x1 maps,
    // where the host path skips the taps that only read padding.
    for (size, conv, host) in [64, 32, 16]
        .into_iter()
        .flat_map(|s| [(s, ConvImpl::Backend, false), (s, ConvImpl::Gemm, true)])
    {
        let x = images(3, size, &cpu());
        let fused = model.for_inference_with(conv);
        assert_eq!(fused.uses_host_path(), host);
        let reference = model.forward(x.clone());
        let scale = reference.clone().abs().max().into_scalar::<f32>();
        let diff = crate::common::max_abs_diff(reference, fused.forward(x.clone()));
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "logits differ by {diff} (max |logit| {scale})"
        );
        let reference = model.forward_pre_logits(x.clone());
        let scale = reference.clone().abs().max().into_scalar::<f32>();
        let diff = crate::common::max_abs_diff(reference, fused.forward_pre_logits(x.clone()));
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "features differ by {diff} (max |feature| {scale})"
        );
    }
}

#[test]
fn gemm_and_host_convolutions_match_burns_forward_and_gradients() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, Tensor};
    use finetune::kernels::ConvImpl;

    let device = cpu().autodiff();
    // (in, out, kernel, stride, padding (top, left, bottom, right), bias, input size)
    let cases = [
        (3, 8, 7, 2, 3, false, 19),
        (8, 8, 3, 1, 1, false, 9),
        (8, 16, 3, 2, 1, true, 9),
        (8, 16, 1, 2, 0, false, 7),
        (16, 4, 1, 1, 0, true, 5),
        (4, 6, 3, 2, 0, false, 8),
        (5, 3, 5, 3, 2, false, 11),
        // More output channels than one 16-row block of the weight-gradient transpose.
        (6, 20, 3, 1, 1, false, 6),
        // Kernel taps that only ever see padding (ResNet's last stage on 32x32 inputs).
        (8, 6, 3, 1, 1, false, 1),
        (16, 4, 1, 1, 0, true, 1),
        // More than 256 trimmed kernels (the dead taps' zero gradient is built in chunks).
        (24, 16, 3, 1, 1, false, 1),
        (8, 6, 3, 2, 1, true, 2),
        (4, 5, 5, 1, 2, false, 2),
        // Maps with no more pixels than live taps, run as one dense layer: ResNet's 3x3 on 2x2
        // maps, and 3x3 maps where some output and input pixels are linked by no tap.
        (8, 6, 3, 1, 1, true, 2),
        (6, 5, 3, 1, 1, false, 3),
        (4, 5, 3, 2, 1, false, 3),
        // Large enough that the host convolution splits the batch into GEMM chunks (2 + 1).
        (64, 4, 3, 1, 1, false, 40),
        // 1x1 on maps of 256 pixels and more: one GEMM per image, straight on the input.
        (6, 10, 1, 1, 0, true, 16),
        (12, 5, 1, 1, 0, false, 19),
    ]
    .map(|(cin, cout, k, s, p, bias, size)| (cin, cout, k, s, [p; 4], bias, size));
    // Same-size stride-1 convolutions with asymmetric padding: their input gradient is a
    // convolution with the padding mirrored.
    let asymmetric = [
        (5, 7, 2, 1, [0, 1, 1, 0], false, 6),
        (4, 3, 4, 1, [1, 2, 2, 1], true, 7),
    ];
    for (cin, cout, k, s, p, bias, size) in cases.into_iter().chain(asymmetric) {
        let conv = Conv2dConfig::new([cin, cout], [k, k])
            .with_stride([s, s])
            .with_padding(PaddingConfig2d::Explicit(p[0], p[1], p[2], p[3]))
            .with_bias(bias)
            .init(&device);
        let x = Tensor::<4>::random(
            [3, cin, size, size],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let r = Tensor::<4>::random(
            conv2d_with_dims(&conv, &x),
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        // Gradients with the input differentiated and, like a network's first convolution,
        // without.
        let run = |choice, input_grad: bool| {
            let x = if input_grad {
                x.clone().require_grad()
            } else {
                x.clone()
            };
            let out = finetune::kernels::conv2d_with(&conv, x.clone(), choice);
            let grads = (out.clone() * r.clone()).sum().backward();
            let gw = conv.weight.grad(&grads).unwrap();
            let gx = x.grad(&grads);
            assert_eq!(gx.is_some(), input_grad);
            (out.without_autodiff(), gw, gx)
        };
        // Frozen weights: only the input gradient (and no im2col matrix kept for the backward
        // pass, so large inputs take the chunked path).
        let frozen = burn::module::Module::freeze(conv.clone());
        let run_frozen = |choice| {
            let x = x.clone().require_grad();
            let out = finetune::kernels::conv2d_with(&frozen, x.clone(), choice);
            let grads = (out * r.clone()).sum().backward();
            assert!(frozen.weight.grad(&grads).is_none());
            x.grad(&grads).unwrap()
        };
        let scale = |t: &Tensor<4>| t.clone().abs().max().into_scalar::<f32>().max(1.0);
        let (o1, w1, x1) = run(ConvImpl::Backend, true);
        let xf1 = run_frozen(ConvImpl::Backend);
        for choice in [ConvImpl::Gemm, ConvImpl::Host] {
            let (o2, w2, x2) = run(choice, true);
            let (_, w3, _) = run(choice, false);
            for (name, a, b) in [
                ("output", o1.clone(), o2),
                ("weight grad", w1.clone(), w2),
                ("weight grad without input grad", w1.clone(), w3),
                ("input grad", x1.clone().unwrap(), x2.unwrap()),
                ("input grad, frozen weight", xf1.clone(), run_frozen(choice)),
            ] {
                let tol = 1e-5 * scale(&a);
                let d = crate::common::max_abs_diff(a, b);
                assert!(
                    d <= tol,
                    "{choice:?}: {name} differs by {d} for k{k} s{s} p{p:?} {size}x{size}"
                );
            }
        }
    }
}

#[test]
fn host_max_pool_matches_burns_forward_and_gradients() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::{Distribution, Tensor};
    use finetune::kernels::{ConvImpl, max_pool2d_with};

    let device = cpu().autodiff();
    // (kernel, stride, padding, height, width)
    let cases = [
        (3, 2, 1, 16, 16), // torchvision's stem pool at 32x32
        (3, 2, 1, 7, 9),
        (2, 2, 0, 6, 5),
        (3, 1, 1, 5, 4),
        (2, 3, 1, 8, 8),
    ];
    for (k, s, p, h, w) in cases {
        let pool = MaxPool2dConfig::new([k, k])
            .with_strides([s, s])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .init();
        let x = Tensor::<4>::random([3, 4, h, w], Distribution::Normal(0.0, 1.0), &device);
        let run = |choice| {
            let x = x.clone().require_grad();
            let y = max_pool2d_with(&pool, x.clone(), choice);
            // A fixed upstream gradient (the same in both runs), distinct values mostly.
            let n = y.dims().iter().product::<usize>();
            let r: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let r = Tensor::<1>::from_floats(r.as_slice(), &device).reshape(y.dims());
            let grads = (y.clone() * r).sum().backward();
            (y.without_autodiff(), x.grad(&grads).unwrap())
        };
        let (y1, dx1) = run(ConvImpl::Backend);
        let (y2, dx2) = run(ConvImpl::Host);
        assert_eq!(y1.dims(), y2.dims(), "k{k} s{s} p{p} {h}x{w}");
        for (name, a, b) in [("output", y1, y2), ("input grad", dx1, dx2)] {
            let d = crate::common::max_abs_diff(a, b);
            assert!(d == 0.0, "{name} differs by {d} for k{k} s{s} p{p} {h}x{w}");
        }
    }
}

fn conv2d_with_dims(conv: &burn::nn::conv::Conv2d, x: &burn::tensor::Tensor<4>) -> [usize; 4] {
    finetune::kernels::conv2d_with(conv, x.clone(), finetune::kernels::ConvImpl::Backend).dims()
}

#[test]
fn host_batch_norm_matches_burns_forward_running_statistics_and_gradients() {
    use burn::module::Param;
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Distribution, Tensor};
    use finetune::kernels::{ConvImpl, batch_norm_relu_with, batch_norm_with};

    let device = cpu().autodiff();
    let shapes = [
        ([4, 6, 5, 5], true),
        ([3, 5, 1, 1], true),
        ([2, 3, 7, 4], false),
        // Planes larger than the f32 partial sums (their totals go to f64 plane by plane).
        ([2, 2, 70, 70], true),
    ];
    // 0: BatchNorm, 1: relu(BatchNorm), 2: relu(BatchNorm + residual)
    for ((shape, trainable_affine), variant) in
        shapes.into_iter().flat_map(|s| [(s, 0), (s, 1), (s, 2)])
    {
        let c = shape[1];
        let gamma = Tensor::<1>::random([c], Distribution::Uniform(0.5, 1.5), &device);
        let beta = Tensor::<1>::random([c], Distribution::Normal(0.0, 1.0), &device);
        let x = Tensor::<4>::random(shape, Distribution::Normal(1.0, 2.0), &device);
        let res = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let r = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let run = |choice| {
            let mut bn = BatchNormConfig::new(c).with_momentum(0.3).init(&device);
            bn.gamma = Param::from_tensor(gamma.clone());
            bn.beta = Param::from_tensor(beta.clone());
            if !trainable_affine {
                bn.gamma = bn.gamma.set_require_grad(false);
                bn.beta = bn.beta.set_require_grad(false);
            }
            let x = x.clone().require_grad();
            let res = res.clone().require_grad();
            let y = match variant {
                0 => batch_norm_with(&bn, x.clone(), choice),
                1 => batch_norm_relu_with(&bn, x.clone(), None, choice),
                _ => batch_norm_relu_with(&bn, x.clone(), Some(res.clone()), choice),
            };
            let grads = (y.clone() * r.clone()).sum().backward();
            let grad1 = |t: &Param<Tensor<1>>| t.grad(&grads);
            (
                y.without_autodiff(),
                x.grad(&grads).unwrap(),
                res.grad(&grads),
                grad1(&bn.gamma),
                grad1(&bn.beta),
                bn.running_mean.value().without_autodiff(),
                bn.running_var.value().without_autodiff(),
            )
        };
        let (y1, dx1, dr1, dg1, db1, rm1, rv1) = run(ConvImpl::Backend);
        let (y2, dx2, dr2, dg2, db2, rm2, rv2) = run(ConvImpl::Host);
        assert_eq!(dg1.is_some(), trainable_affine);
        assert_eq!(dg2.is_some(), trainable_affine);
        assert_eq!(dr1.is_some(), variant == 2);
        assert_eq!(dr2.is_some(), variant == 2);
        let what = format!("{shape:?}, variant {variant}");
        // The gradients and statistics are sums over up to 9,800 values per channel, which
        // Burn adds in f32 (in an order that depends on its threads): they get a looser bound
        // than the output (a real error is of the order of the values themselves).
        let close4 = |name: &str, a: Tensor<4>, b: Tensor<4>, tol: f32| {
            let scale = a.clone().abs().max().into_scalar::<f32>().max(1.0);
            let d = crate::common::max_abs_diff(a, b);
            assert!(d <= tol * scale, "{name} differs by {d} for {what}");
        };
        let close1 = |name: &str, a: Tensor<1>, b: Tensor<1>| {
            let scale = a.clone().abs().max().into_scalar::<f32>().max(1.0);
            let d = (a - b).abs().max().into_scalar::<f32>();
            assert!(d <= 1e-4 * scale, "{name} differs by {d} for {what}");
        };
        close4("output", y1, y2, 1e-5);
        close4("input grad", dx1, dx2, 1e-4);
        if let (Some(a), Some(b)) = (dr1, dr2) {
            close4("residual grad", a, b, 1e-4);
        }
        if let (Some(a), Some(b)) = (dg1, dg2) {
            close1("gamma grad", a, b);
        }
        if let (Some(a), Some(b)) = (db1, db2) {
            close1("beta grad", a, b);
        }
        close1("running mean", rm1, rm2);
        close1("running var", rv1, rv2);
    }
}
