//! Model EMA: an exponential moving average of a model's weights, with the semantics of timm's
//! `ModelEmaV3` (`timm/utils/model_ema.py`): after the `t`-th optimizer step (from 1),
//! every floating-point tensor of the model (parameters and BatchNorm running statistics)
//! is blended into the average, `ema ← ema + (1 - d_t) · (model - ema)` (`torch.lerp`), with
//!
//! - `d_t = 0` for `t = 1` (the average starts as a copy),
//! - `d_t = decay` afterwards, or with warm-up `d_t = max(min(decay, 1 - (1 + (t - 1))^(-2/3)), 0)`
//!   (timm's `warmup_gamma = 1`, `warmup_power = 2/3`, `min_decay = 0`, `update_after_step = 0`).
//!
//! Polyak & Juditsky (1992) for averaging; timm's training script validates the average and
//! selects checkpoints on it, as the [`Learner`](super::Learner) does when EMA is on.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// The decay used for the `step`-th update (from 1): timm's `ModelEmaV3.get_decay`.
pub fn ema_decay_at(decay: f64, warmup: bool, step: u64) -> f64 {
    let t = step.saturating_sub(1);
    if t == 0 {
        return 0.0;
    }
    if warmup {
        let d = 1.0 - (1.0 + t as f64).powf(-2.0 / 3.0);
        d.min(decay).max(0.0)
    } else {
        decay
    }
}

/// Collects a module's float tensors (parameters and running statistics) in visit order,
/// flattened, without autodiff.
struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0
            .push(param.val().without_autodiff().flatten::<1>(0, D - 1));
    }
}

/// Blends the collected tensors into a module's float tensors, in the same visit order.
struct Lerp {
    model: std::vec::IntoIter<Tensor<1>>,
    weight: f64,
    mismatch: bool,
}

impl ModuleMapper for Lerp {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(model) = self.model.next() else {
            self.mismatch = true;
            return param;
        };
        let weight = self.weight;
        let mut mismatch = false;
        let param = param.map(|ema| {
            let dims = ema.dims();
            if model.dims()[0] != dims.iter().product::<usize>() {
                mismatch = true;
                return ema;
            }
            let model: Tensor<D> = model.to_device(&ema.device()).reshape(dims);
            lerp(ema, model, weight)
        });
        self.mismatch |= mismatch;
        param
    }
}

/// `torch.lerp(start, end, weight)`: `start + w · (end - start)` for `|w| < 0.5`, else
/// `end - (end - start) · (1 - w)` (so that `w = 1` gives `end` exactly).
fn lerp<const D: usize>(start: Tensor<D>, end: Tensor<D>, weight: f64) -> Tensor<D> {
    if weight.abs() < 0.5 {
        start.clone() + (end - start).mul_scalar(weight)
    } else {
        end.clone() - (end - start).mul_scalar(1.0 - weight)
    }
}

/// An exponential moving average of a model (see the module docs).
#[derive(Clone, Debug)]
pub struct ModelEma<M> {
    /// The averaged model (without autodiff).
    pub model: M,
    /// Updates applied so far.
    pub updates: u64,
    /// The configured decay.
    pub decay: f64,
    /// timm's warm-up.
    pub warmup: bool,
}

impl<M: Module> ModelEma<M> {
    /// An average that starts from `model` (its first update copies the model anyway).
    pub fn new(model: M, decay: f64, warmup: bool) -> Self {
        ModelEma {
            model,
            updates: 0,
            decay,
            warmup,
        }
    }

    /// Blends `model` (the same architecture, any device or autodiff state) into the average
    /// after one optimizer step. Returns `false`, leaving the average unchanged, when the
    /// two modules' tensors do not line up (a different architecture).
    pub fn update(&mut self, model: &M) -> bool {
        let mut collect = Collect(Vec::new());
        model.visit(&mut collect);
        let step = self.updates + 1;
        let decay = ema_decay_at(self.decay, self.warmup, step);
        let mut lerp = Lerp {
            model: collect.0.into_iter(),
            weight: 1.0 - decay,
            mismatch: false,
        };
        // `valid` copies the BatchNorm running statistics: a clone would share them (Burn's
        // `RunningState` holds its value behind an `Arc`), and mapping it would change this
        // average, and every copy of it, in place.
        let averaged = self.model.valid().map(&mut lerp);
        if lerp.mismatch || lerp.model.next().is_some() {
            return false;
        }
        self.model = averaged;
        self.updates = step;
        true
    }
}
