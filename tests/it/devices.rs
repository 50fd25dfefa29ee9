//! The same model and weights on every compiled-in device give the same logits.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use finetune::model::VisionModel;
use finetune::model::{ResNet, ResNetConfig};

use crate::common::{cpu, images, max_abs_diff};

/// A small ResNet-18-shaped model (ImageNet stem) with non-trivial BatchNorm statistics.
fn reference_model() -> ResNet {
    let device = cpu().autodiff();
    device.seed(7);
    let mut model = ResNetConfig::resnet18(10)
        .with_widths([8, 16, 16, 32])
        .init(&device)
        .train();
    let mut optim = SgdConfig::new().init();
    let loss = CrossEntropyLossConfig::new().init(&device);
    for _ in 0..2 {
        let x = images(8, 64, &device);
        let y = Tensor::<1, Int>::from_data([0i64, 1, 2, 3, 4, 5, 6, 7].as_slice(), &device);
        let grads =
            GradientsParams::from_grads(loss.forward(model.forward(x), y).backward(), &model);
        model = optim.step(0.05, model, grads);
    }
    model.valid()
}

fn compare_on(device: &Device) {
    let model = reference_model();
    let input = images(4, 64, &cpu());
    let expected = model.forward(input.clone());
    let data: TensorData = input.into_data();
    let moved = model.to_device(device);
    let actual = moved.forward(Tensor::from_data(data, device));
    let actual = Tensor::<2>::from_data(actual.into_data(), &cpu());
    let diff = max_abs_diff(expected, actual);
    assert!(diff <= 1e-4, "max abs diff {diff} on {device:?}");
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_matches_flex() {
    compare_on(&Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
}

#[cfg(feature = "ndarray")]
#[test]
#[allow(deprecated)]
fn ndarray_matches_flex() {
    compare_on(&Device::ndarray());
}

#[test]
fn flex_is_deterministic() {
    compare_on(&cpu());
}

#[test]
fn auto_never_picks_a_software_gpu() {
    use finetune::DeviceChoice;
    // CI and this test machine have only Mesa's software Vulkan: `auto` must stay on the CPU.
    let resolved = DeviceChoice::Auto.resolve();
    if finetune::device::has_hardware_gpu() {
        assert_eq!(resolved, DeviceChoice::Wgpu);
    } else {
        assert_eq!(resolved, DeviceChoice::Flex);
    }
}

/// `--device wgpu:N` for a GPU the machine does not have: our error, not cubecl-wgpu's panic
/// on one of its threads; and the names of devices parse or are refused with what to write.
#[test]
fn device_names_parse_and_a_missing_wgpu_gpu_is_an_error_not_a_panic() {
    use finetune::DeviceChoice;
    let err = DeviceChoice::WgpuDiscrete(64)
        .device()
        .unwrap_err()
        .to_string();
    if cfg!(feature = "wgpu") {
        assert!(err.contains("wgpu:64 does not exist"), "{err}");
    } else {
        assert!(err.contains("--features wgpu"), "{err}");
    }
    for (name, choice) in [
        ("cuda", DeviceChoice::Cuda(0)),
        ("CUDA:1", DeviceChoice::Cuda(1)),
        ("wgpu:2", DeviceChoice::WgpuDiscrete(2)),
        ("cpu", DeviceChoice::Flex),
    ] {
        assert_eq!(name.parse::<DeviceChoice>().unwrap(), choice, "{name}");
    }
    assert_eq!(DeviceChoice::Cuda(3).to_string(), "cuda:3");
    for bad in ["cuda:", "flex:0", "tpu", "wgpu:-1"] {
        assert!(bad.parse::<DeviceChoice>().is_err(), "{bad}");
    }
    let err = "bf17"
        .parse::<finetune::Precision>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("f32, bf16 or f16"), "{err}");
}

/// `FusedSgd` off the flex device runs as Burn tensor operations: same updates as Burn's SGD.
#[cfg(feature = "wgpu")]
#[test]
fn fused_sgd_on_wgpu_matches_burns_sgd() {
    use burn::optim::ModuleOptimizer;
    use burn::optim::momentum::MomentumConfig;
    use finetune::train::FusedSgd;

    let device = Device::wgpu(burn::tensor::DeviceKind::DefaultDevice).autodiff();
    let start = ResNetConfig::resnet18(4)
        .with_widths([4, 4, 8, 8])
        .init(&cpu());
    let batches: Vec<TensorData> = (0..2).map(|_| images(4, 32, &cpu()).into_data()).collect();
    let run = |mut optim: ModuleOptimizer| {
        let mut model = start.clone().fork(&device).train();
        let loss = CrossEntropyLossConfig::new().init(&device);
        for data in &batches {
            let x = Tensor::<4>::from_data(data.clone(), &device);
            let y = Tensor::<1, Int>::from_data([0i64, 1, 2, 3].as_slice(), &device);
            let grads =
                GradientsParams::from_grads(loss.forward(model.forward(x), y).backward(), &model);
            model = optim.step(0.05, model, grads);
        }
        let fc = model.valid().fc.weight.val();
        Tensor::<2>::from_data(fc.into_data(), &cpu())
    };
    let burn_sgd = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(0.9)
                .with_dampening(0.0)
                .with_nesterov(true),
        ))
        .init();
    let fused = ModuleOptimizer::from(FusedSgd {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.0,
    });
    let diff = max_abs_diff(run(burn_sgd), run(fused));
    assert!(diff <= 1e-5, "fc weights differ by {diff}");
}
