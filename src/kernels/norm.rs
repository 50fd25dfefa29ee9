//! BatchNorm with PyTorch's `BatchNorm2d` semantics: the dispatchers every model BatchNorm goes
//! through ([`batch_norm`], [`batch_norm_relu`], [`batch_norm_add_relu`]) and their strategies:
//! the flex host kernels (`flex/norm.rs`, training mode only) and Burn's own operations
//! ([`batch_norm_backend`]), both followed by PyTorch's running-statistics update
//! ([`update_running_statistics`]).

use burn::nn::BatchNorm;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::{ConvImpl, conv_impl};

/// Applies `bn` to `x` `[B, C, H, W]`, what the models use for every BatchNorm, with
/// PyTorch's `BatchNorm2d` semantics.
///
/// In training (a layer whose training flag is on, on an autodiff device) the output is
/// normalised with the batch mean and the **biased** batch variance, and the running statistics
/// are updated with the module's momentum from the batch mean and the **unbiased** batch
/// variance (`n / (n - 1)` times the biased one, `n = B·H·W` values per channel), as
/// `torch.nn.BatchNorm2d` does. Burn's own [`BatchNorm::forward`] feeds the biased variance to
/// the running variance (14-33% too small after one step at batch 4-8 on 32x32 images), so it
/// is only used for inference here. With one value per channel (`n = 1`), where PyTorch refuses
/// ("Expected more than 1 value per channel when training"), the running variance is left
/// unchanged; [`VisionModel::check_training_batch`](crate::model::VisionModel::check_training_batch)
/// turns that case into an error before any kernel runs.
///
/// Kernels: on flex (when the selected [`ConvImpl`] is `Auto` or `Host`) host kernels that
/// compute the batch statistics and the backward pass in one pass each; elsewhere (ndarray,
/// wgpu, `Backend`/`Gemm`) Burn's `batch_norm_train` operation.
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    batch_norm_with(bn, x, conv_impl())
}

/// [`batch_norm`] with an explicit kernel choice (`Backend` and `Gemm` mean Burn's own).
pub fn batch_norm_with(bn: &BatchNorm, x: Tensor<4>, choice: ConvImpl) -> Tensor<4> {
    let mut x = x;
    if host_norm(bn, &x, choice) {
        match super::flex::batch_norm(bn, x, None, false) {
            Ok(out) => return out,
            Err((unchanged, _)) => x = unchanged,
        }
    }
    batch_norm_backend(bn, x)
}

/// `relu(batch_norm(bn, x))`, fused into one host operation where [`batch_norm`] uses the host
/// kernels.
pub fn batch_norm_relu(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    batch_norm_relu_with(bn, x, None, conv_impl())
}

/// `relu(batch_norm(bn, x) + residual)` (the end of a residual block), fused where
/// [`batch_norm`] uses the host kernels.
pub fn batch_norm_add_relu(bn: &BatchNorm, x: Tensor<4>, residual: Tensor<4>) -> Tensor<4> {
    batch_norm_relu_with(bn, x, Some(residual), conv_impl())
}

/// `relu(batch_norm(bn, x) (+ residual))` with an explicit kernel choice.
pub fn batch_norm_relu_with(
    bn: &BatchNorm,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    choice: ConvImpl,
) -> Tensor<4> {
    let (mut x, mut residual) = (x, residual);
    if host_norm(bn, &x, choice)
        && residual
            .as_ref()
            .is_none_or(|r| r.dims() == x.dims() && r.dtype() == x.dtype())
    {
        match super::flex::batch_norm(bn, x, residual, true) {
            Ok(out) => return out,
            Err(unchanged) => (x, residual) = unchanged,
        }
    }
    let out = batch_norm_backend(bn, x);
    relu(match residual {
        Some(r) => out + r,
        None => out,
    })
}

/// [`batch_norm`] with the backend's own operations: Burn's `batch_norm_train` in training
/// (followed by PyTorch's running-statistics update), [`BatchNorm::forward`] (running
/// statistics) otherwise.
fn batch_norm_backend(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if !uses_batch_statistics(bn, &x.device()) {
        return bn.forward(x);
    }
    let [b, _, h, w] = x.dims();
    let out = burn::tensor::module::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon);
    update_running_statistics(bn, out.mean, out.variance, b * h * w);
    out.output
}

/// Whether `bn` normalises with batch statistics (and updates its running statistics) on
/// `device`: its training flag is on and the device records gradients, as in Burn's
/// [`BatchNorm::forward`].
pub(crate) fn uses_batch_statistics(bn: &BatchNorm, device: &Device) -> bool {
    bn.training.is_enabled() && device.is_autodiff()
}

/// PyTorch's running-statistics update after a training-mode forward over `values` values per
/// channel: `running_mean ← (1 - m)·running_mean + m·mean` and
/// `running_var ← (1 - m)·running_var + m·var·values/(values - 1)` (the unbiased batch
/// variance, from the biased `var` that normalised the batch), `m` the module's momentum. With
/// a single value per channel the unbiased variance is undefined and the running variance is
/// left unchanged.
pub(crate) fn update_running_statistics(
    bn: &BatchNorm,
    mean: Tensor<1>,
    biased_var: Tensor<1>,
    values: usize,
) {
    let device = mean.device();
    let m = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_mean = running_mean
        .mul_scalar(1.0 - m)
        .add(mean.detach().mul_scalar(m));
    bn.running_mean.update(running_mean.detach());
    if values > 1 {
        let unbiased = biased_var
            .detach()
            .mul_scalar(values as f64 / (values - 1) as f64);
        let running_var = bn.running_var.value_sync().to_device(&device);
        let running_var = running_var.mul_scalar(1.0 - m).add(unbiased.mul_scalar(m));
        bn.running_var.update(running_var.detach());
    }
}

/// Whether the host BatchNorm kernels apply: training-mode layer on the flex autodiff device.
fn host_norm(bn: &BatchNorm, x: &Tensor<4>, choice: ConvImpl) -> bool {
    matches!(choice, ConvImpl::Auto | ConvImpl::Host)
        && bn.training.is_enabled()
        && super::flex::batch_norm_supported(bn, x)
}
