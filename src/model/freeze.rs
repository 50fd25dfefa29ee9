//! Freezing, in fastai's vocabulary (`freeze`, `freeze_to`, `unfreeze`, `train_bn`), built on
//! Burn's own [`Module::freeze_group`] / [`Module::unfreeze_group`] and [`ParamGroup`]: a frozen
//! parameter has `require_grad = false` and, under [`BnPolicy::Frozen`], a frozen BatchNorm's
//! training flag is off, so it normalises with its running statistics and never updates them.
//!
//! The BatchNorm policy for frozen stages is explicit ([`BnPolicy`]); the default is
//! [`BnPolicy::Frozen`] (running statistics and affine parameters fixed, PyTorch's eval mode)
//! and never changes silently. [`BnPolicy::TrainMode`] is what PyTorch's transfer-learning
//! tutorial ("ConvNet as fixed feature extractor") does: `requires_grad = False` on the
//! backbone with the model left in train mode; [`BnPolicy::Trainable`] is fastai's `train_bn`.

use burn::module::{Flag, Module, ModuleMapper, Param, ParamGroup};
use serde::{Deserialize, Serialize};

use super::ResNet;

/// A contiguous part of the network, in forward order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// `conv1` and `bn1` (and the parameter-free max-pool).
    Stem,
    /// `layer1`.
    Layer1,
    /// `layer2`.
    Layer2,
    /// `layer3`.
    Layer3,
    /// `layer4`.
    Layer4,
    /// `fc`, the classifier.
    Head,
}

impl Stage {
    /// All stages in forward order.
    pub const ALL: [Stage; 6] = [
        Stage::Stem,
        Stage::Layer1,
        Stage::Layer2,
        Stage::Layer3,
        Stage::Layer4,
        Stage::Head,
    ];

    /// Top-level module names belonging to this stage.
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            Stage::Stem => &["conv1", "bn1"],
            Stage::Layer1 => &["layer1"],
            Stage::Layer2 => &["layer2"],
            Stage::Layer3 => &["layer3"],
            Stage::Layer4 => &["layer4"],
            Stage::Head => &["fc"],
        }
    }

    /// Display name (`stem`, `layer1`, ..., `fc`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Stem => "stem",
            Stage::Layer1 => "layer1",
            Stage::Layer2 => "layer2",
            Stage::Layer3 => "layer3",
            Stage::Layer4 => "layer4",
            Stage::Head => "fc",
        }
    }

    /// The stage a parameter path (`layer2.0.conv1.weight`) belongs to.
    pub fn of_path(path: &str) -> Option<Stage> {
        let top = path.split('.').next()?;
        Stage::ALL
            .into_iter()
            .find(|stage| stage.modules().contains(&top))
    }

    /// Parses `stem`, `layer1`..`layer4`, `fc`/`head`.
    pub fn parse(name: &str) -> Option<Stage> {
        match name.to_ascii_lowercase().as_str() {
            "stem" => Some(Stage::Stem),
            "layer1" => Some(Stage::Layer1),
            "layer2" => Some(Stage::Layer2),
            "layer3" => Some(Stage::Layer3),
            "layer4" => Some(Stage::Layer4),
            "fc" | "head" => Some(Stage::Head),
            _ => None,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens to the BatchNorm layers inside frozen stages. In every policy the frozen
/// stages' convolutions are fixed and no gradient flows through them.
///
/// | policy | normalises with | running statistics | affine (γ, β) | PyTorch equivalent |
/// |---|---|---|---|---|
/// | [`Frozen`](Self::Frozen) | running statistics | fixed | fixed | `requires_grad=False` + `.eval()` |
/// | [`TrainMode`](Self::TrainMode) | batch statistics | updated | fixed | `requires_grad=False`, module left in `.train()` |
/// | [`Trainable`](Self::Trainable) | batch statistics | updated | trained | fastai's `train_bn` |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BnPolicy {
    /// Frozen like everything else: affine parameters fixed, running statistics used and never
    /// updated (PyTorch's eval mode). The default.
    #[default]
    Frozen,
    /// fastai's `train_bn`: BatchNorm affine parameters stay trainable and the layers keep
    /// normalising with batch statistics (and updating their running statistics) in training.
    Trainable,
    /// BatchNorm left in training mode with its affine parameters frozen, what PyTorch's
    /// transfer-learning tutorial's fixed feature extractor does (it sets
    /// `requires_grad = False` on the backbone but never calls `.eval()` on it): in training
    /// the layers normalise with batch statistics and keep updating their running statistics
    /// on the new data; `γ` and `β` get no gradient and stay bitwise fixed, and no gradient
    /// flows through the backbone. Evaluation uses the updated running statistics. Backbone
    /// features change as the statistics move, so they cannot be cached
    /// ([`Learner::cache_features`](crate::train::Learner::cache_features) refuses this policy).
    TrainMode,
}

impl BnPolicy {
    /// Command-line name: `frozen`, `trainable`, `train-mode`.
    pub fn name(self) -> &'static str {
        match self {
            BnPolicy::Frozen => "frozen",
            BnPolicy::Trainable => "trainable",
            BnPolicy::TrainMode => "train-mode",
        }
    }

    /// Parses [`name`](Self::name) (case-insensitive; `_` for `-` accepted).
    pub fn parse(name: &str) -> Option<BnPolicy> {
        match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "frozen" | "eval" => Some(BnPolicy::Frozen),
            "trainable" | "train-bn" => Some(BnPolicy::Trainable),
            "train-mode" | "train" => Some(BnPolicy::TrainMode),
            _ => None,
        }
    }

    /// What the policy does, in a few words (for a run's first line).
    pub fn describe(self) -> &'static str {
        match self {
            BnPolicy::Frozen => {
                "running statistics and affine parameters fixed (PyTorch: eval mode)"
            }
            BnPolicy::Trainable => {
                "batch statistics, running statistics updated, affine parameters trained (fastai: train_bn)"
            }
            BnPolicy::TrainMode => {
                "batch statistics, running statistics updated, affine parameters fixed (PyTorch: requires_grad=False in train mode)"
            }
        }
    }
}

impl std::fmt::Display for BnPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The freeze specification applied to a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FreezeState {
    /// Every stage up to and including this one is frozen; `None`: nothing is frozen.
    pub frozen_through: Option<Stage>,
    /// BatchNorm policy inside the frozen stages.
    pub bn: BnPolicy,
}

impl FreezeState {
    /// Whether `stage` is frozen under this specification.
    pub fn is_stage_frozen(&self, stage: Stage) -> bool {
        self.frozen_through.is_some_and(|last| stage <= last)
    }

    /// Whether the parameter at `path` is trainable under this specification.
    pub fn is_trainable(&self, path: &str) -> bool {
        match Stage::of_path(path) {
            Some(stage) if self.is_stage_frozen(stage) => {
                self.bn == BnPolicy::Trainable && is_batch_norm_path(path)
            }
            _ => true,
        }
    }
}

/// Whether a parameter path lies inside a BatchNorm module (`bn1`, `layer1.0.bn2`,
/// `layer2.0.downsample.bn`).
pub fn is_batch_norm_path(path: &str) -> bool {
    path.split('.').any(|seg| {
        seg == "bn" || (seg.starts_with("bn") && seg[2..].chars().all(|c| c.is_ascii_digit()))
    })
}

fn prefixes_through(last: Stage) -> Vec<&'static str> {
    Stage::ALL
        .into_iter()
        .filter(|s| *s <= last)
        .flat_map(|s| s.modules().iter().copied())
        .collect()
}

/// Every value (tensor parameters and training flags) under the stages `..=last`.
fn stages_group(last: Stage) -> ParamGroup {
    let alternatives = prefixes_through(last).join("|");
    group_from_regex(&format!(r"^({alternatives})(\.|$)"))
}

/// The BatchNorm modules under the stages `..=last`.
fn batch_norms_group(last: Stage) -> ParamGroup {
    let alternatives = prefixes_through(last).join("|");
    group_from_regex(&format!(r"^(({alternatives})\.(.*\.)?(bn\d*)|bn\d+)(\.|$)"))
}

/// Turns the training flags of `group` on, leaving gradient requirements as they are (Burn's
/// `unfreeze_group` would also make the matched tensors require gradients).
struct EnableTrainingFlags {
    path: Vec<String>,
    group: ParamGroup,
}

impl ModuleMapper for EnableTrainingFlags {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_flag(&mut self, flag: Param<Flag>) -> Param<Flag> {
        let path = self.path.join(".");
        if self.group.matches(&flag.id, Some(&path)) {
            flag.with_value(true)
        } else {
            flag
        }
    }
}

fn group_from_regex(pattern: &str) -> ParamGroup {
    match ParamGroup::from_regex(pattern) {
        Ok(group) => group,
        // The patterns above are built from fixed module names and always compile.
        Err(e) => unreachable!("internal freeze pattern {pattern} is invalid: {e:?}"),
    }
}

impl ResNet {
    /// Applies `state` from scratch: everything is unfrozen, then the frozen stages are frozen
    /// with Burn's `freeze_group`, then their BatchNorms are unfrozen again
    /// ([`BnPolicy::Trainable`]) or only put back in training mode ([`BnPolicy::TrainMode`]).
    pub(crate) fn apply_freeze(self, state: FreezeState) -> Self {
        let mut model = Module::unfreeze(self);
        if let Some(last) = state.frozen_through {
            model = model.freeze_group(stages_group(last));
            match state.bn {
                BnPolicy::Frozen => {}
                BnPolicy::Trainable => model = model.unfreeze_group(batch_norms_group(last)),
                BnPolicy::TrainMode => {
                    model = model.map(&mut EnableTrainingFlags {
                        path: Vec::new(),
                        group: batch_norms_group(last),
                    })
                }
            }
        }
        model.freeze = state;
        model
    }

    /// The freeze specification currently applied.
    pub fn freeze_state(&self) -> FreezeState {
        self.freeze
    }

    /// Freezes everything but `fc` (the "fixed feature extractor"), keeping the current
    /// [`BnPolicy`].
    pub fn freeze_backbone(self) -> Self {
        self.freeze_to(Stage::Layer4)
    }

    /// Freezes every stage from the stem through `stage` (inclusive); later stages are
    /// trainable. `freeze_to(Stage::Layer4)` is [`freeze_backbone`](Self::freeze_backbone) and
    /// `freeze_to(Stage::Head)` freezes the whole model.
    pub fn freeze_to(self, stage: Stage) -> Self {
        let bn = self.freeze.bn;
        self.apply_freeze(FreezeState {
            frozen_through: Some(stage),
            bn,
        })
    }

    /// Freezes the whole model, head included (an evaluation-only model on a training device).
    pub fn freeze(self) -> Self {
        self.freeze_to(Stage::Head)
    }

    /// Makes every parameter trainable and every BatchNorm train normally again. The
    /// [`BnPolicy`] is kept for the next freeze.
    pub fn unfreeze(self) -> Self {
        let bn = self.freeze.bn;
        self.apply_freeze(FreezeState {
            frozen_through: None,
            bn,
        })
    }

    /// Sets the BatchNorm policy for frozen stages and re-applies the current freeze.
    pub fn with_bn_policy(self, bn: BnPolicy) -> Self {
        let frozen_through = self.freeze.frozen_through;
        self.apply_freeze(FreezeState { frozen_through, bn })
    }
}
