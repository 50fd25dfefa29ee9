//! Helpers shared by the integration tests.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Tensor};
use finetune::model::{ResNetConfig, Stem};

/// The CPU device every test uses.
pub fn cpu() -> Device {
    Device::flex()
}

/// A tiny ResNet-18-shaped model (same topology, small widths) for fast tests.
pub fn tiny18(num_classes: usize) -> ResNetConfig {
    ResNetConfig::resnet18(num_classes)
        .with_widths([4, 8, 8, 16])
        .with_stem(Stem::Cifar)
}

/// The same tiny 3-class ResNet (widths 4/4/8/8, CIFAR stem) on every call. Initialised once
/// and cloned: parameters are drawn lazily from the device's one random generator, which the
/// tests running in parallel (any of them building a model) also draw from, so seeding it
/// before each `init` would not make two calls agree. The clone's values are materialised
/// first, so every clone has the same ones.
pub fn tiny_model() -> finetune::model::ResNet {
    static MODEL: std::sync::OnceLock<finetune::model::ResNet> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            let device = cpu();
            device.seed(3);
            let model = ResNetConfig::resnet18(3)
                .with_widths([4, 4, 8, 8])
                .with_stem(Stem::Cifar)
                .init(&device);
            // Reading every value materialises the lazily initialised parameters.
            let _ = snapshot(&model);
            model
        })
        .clone()
}

/// Random images `[n, 3, size, size]`.
pub fn images(n: usize, size: usize, device: &Device) -> Tensor<4> {
    Tensor::random([n, 3, size, size], Distribution::Normal(0.0, 1.0), device)
}

/// Every float tensor of a module (running statistics included) as `(path, f32 bit patterns)`.
pub fn snapshot<M: Module>(module: &M) -> Vec<(String, Vec<u32>)> {
    #[derive(Default)]
    struct Snap {
        stack: Vec<String>,
        out: Vec<(String, Vec<u32>)>,
    }
    impl ModuleVisitor for Snap {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data();
            let bits = data
                .try_to_vec::<f32>()
                .expect("f32 tensor")
                .into_iter()
                .map(f32::to_bits)
                .collect();
            self.out.push((self.stack.join("."), bits));
        }
    }
    let mut snap = Snap::default();
    module.visit(&mut snap);
    snap.out
}

/// Paths whose values differ between two snapshots of the same model.
pub fn changed(a: &[(String, Vec<u32>)], b: &[(String, Vec<u32>)]) -> Vec<String> {
    assert_eq!(a.len(), b.len(), "snapshots of different models");
    a.iter()
        .zip(b)
        .filter(|((pa, va), (pb, vb))| {
            assert_eq!(pa, pb);
            va != vb
        })
        .map(|((p, _), _)| p.clone())
        .collect()
}

/// Max absolute difference between two float tensors of the same shape.
pub fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let a = a.into_data().try_to_vec::<f32>().expect("f32");
    let b = b.into_data().try_to_vec::<f32>().expect("f32");
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
