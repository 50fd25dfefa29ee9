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
