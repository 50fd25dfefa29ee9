//! Freezing, in fastai's vocabulary (`freeze`, `freeze_to`, `unfreeze`, `train_bn`), built on
//! Burn's own [`Module::freeze_group`] / [`Module::unfreeze_group`] and [`ParamGroup`]: a frozen
//! parameter has `require_grad = false` and, under [`BnPolicy::Frozen`], a frozen BatchNorm's
//! training flag is off, so it normalises with its running statistics and never updates them.
//! It works on any [`VisionModel`] through its named [`Stages`]; BatchNorm layers are found by
//! their module type (Burn's `BatchNorm`), whatever the family calls them.
//!
//! The BatchNorm policy for frozen stages is explicit ([`BnPolicy`]); the default is
//! [`BnPolicy::Frozen`] (running statistics and affine parameters fixed, PyTorch's eval mode)
//! and never changes silently. [`BnPolicy::TrainMode`] is what PyTorch's transfer-learning
//! tutorial ("ConvNet as fixed feature extractor") does: `requires_grad = False` on the
//! backbone with the model left in train mode; [`BnPolicy::Trainable`] is fastai's `train_bn`.

use burn::module::{Flag, Module, ModuleMapper, ModuleVisitor, Param, ParamGroup};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::contract::VisionModel;
use super::stage::{Stage, Stages, regex_literal, under};

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
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FreezeState {
    /// Every stage up to and including this one is frozen; `None`: nothing is frozen.
    pub frozen_through: Option<Stage>,
    /// BatchNorm policy inside the frozen stages.
    pub bn: BnPolicy,
}

impl FreezeState {
    /// The position of the last frozen stage among `stages` (`None`: nothing frozen, or a
    /// stage name these stages do not have).
    pub fn frozen_index(&self, stages: &Stages) -> Option<usize> {
        self.frozen_through
            .as_ref()
            .and_then(|s| stages.index_of(s).ok())
    }

    /// Whether the parameter at `path` is trainable under this specification, for a model
    /// with `stages` whose BatchNorm modules are `batch_norms` (module paths).
    pub fn is_trainable(&self, path: &str, stages: &Stages, batch_norms: &[String]) -> bool {
        let Some(last) = self.frozen_index(stages) else {
            return true;
        };
        match stages.index_of_path(path) {
            Some(i) if i <= last => {
                self.bn == BnPolicy::Trainable && batch_norms.iter().any(|bn| under(path, bn))
            }
            _ => true,
        }
    }

    /// The freeze state in words, for messages (`frozen through layer4, BatchNorm frozen`).
    pub fn describe(&self) -> String {
        match &self.frozen_through {
            None => "nothing frozen".into(),
            Some(stage) => format!("frozen through {stage}, BatchNorm {}", self.bn),
        }
    }
}

/// Whether a parameter path lies inside a module named like torchvision's ResNet BatchNorms
/// (`bn1`, `layer1.0.bn2`, `layer2.0.downsample.bn`). Generic code finds BatchNorm layers by
/// type instead ([`batch_norm_paths`]).
pub fn is_batch_norm_path(path: &str) -> bool {
    path.split('.').any(|seg| {
        seg == "bn" || (seg.starts_with("bn") && seg[2..].chars().all(|c| c.is_ascii_digit()))
    })
}

/// Dotted paths of parameters and of the modules that hold them, for any Burn module: the one
/// path-tracking visitor the crate uses (freezing, summaries, BatchNorm discovery).
#[derive(Default)]
pub(crate) struct PathVisitor {
    stack: Vec<String>,
    containers: Vec<String>,
    /// `(dotted path, number of elements, shape, type of the module holding it)` per float
    /// tensor, running statistics included.
    pub entries: Vec<(String, usize, Vec<usize>, String)>,
}

impl ModuleVisitor for PathVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.push(name.to_string());
        self.containers.push(container_type.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
        self.containers.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.lazy_shape();
        let owner = self.containers.last().cloned().unwrap_or_default();
        self.entries.push((
            self.stack.join("."),
            shape.num_elements(),
            shape.to_vec(),
            owner,
        ));
    }
}

impl PathVisitor {
    /// Visits `module`.
    pub(crate) fn of(module: &impl Module) -> Self {
        let mut visitor = PathVisitor::default();
        module.visit(&mut visitor);
        visitor
    }
}

/// The module paths of every BatchNorm layer of `module` (`bn1`, `layer1.0.downsample.bn`),
/// found by type: Burn's derive reports `Struct:BatchNorm` when it enters a BatchNorm's fields.
pub fn batch_norm_paths(module: &impl Module) -> Vec<String> {
    let mut paths: Vec<String> = PathVisitor::of(module)
        .entries
        .into_iter()
        .filter(|(_, _, _, owner)| owner == "Struct:BatchNorm")
        .filter_map(|(path, ..)| path.rsplit_once('.').map(|(m, _)| m.to_string()))
        .collect();
    paths.dedup();
    paths
}

fn alternatives<'a>(paths: impl IntoIterator<Item = &'a str>) -> String {
    paths
        .into_iter()
        .map(regex_literal)
        .collect::<Vec<_>>()
        .join("|")
}

/// Every value (tensor parameters and training flags) under the module paths `prefixes`.
fn prefixes_group<'a>(prefixes: impl IntoIterator<Item = &'a str>) -> ParamGroup {
    let alternatives = alternatives(prefixes);
    if alternatives.is_empty() {
        // Matches nothing.
        return group_from_regex(r"^[^\s\S]");
    }
    group_from_regex(&format!(r"^({alternatives})(\.|$)"))
}

/// Every parameter outside the last stage (the head): what a backbone learning-rate
/// multiplier applies to.
pub fn backbone_group(stages: &Stages) -> ParamGroup {
    prefixes_group(stages.prefixes_through(stages.len().saturating_sub(2)))
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
        // The patterns are built from escaped module paths and always compile.
        Err(e) => unreachable!("internal freeze pattern {pattern} is invalid: {e:?}"),
    }
}

/// Applies `state` to `model` from scratch: everything is unfrozen, then the frozen stages are
/// frozen with Burn's `freeze_group`, then their BatchNorms are unfrozen again
/// ([`BnPolicy::Trainable`]) or only put back in training mode ([`BnPolicy::TrainMode`]). The
/// recorded state names the stage as the model does (`head` and `LAYER3` become `fc` and
/// `layer3`); a stage name the model does not have freezes nothing.
pub(crate) fn apply_freeze<M: VisionModel>(model: M, state: FreezeState) -> M {
    let stages = model.stages();
    let state = FreezeState {
        frozen_through: state
            .frozen_index(&stages)
            .and_then(|i| stages.get(i))
            .map(|spec| spec.stage()),
        bn: state.bn,
    };
    let mut model = Module::unfreeze(model);
    if let Some(last) = state.frozen_index(&stages) {
        let prefixes = stages.prefixes_through(last);
        model = model.freeze_group(prefixes_group(prefixes.iter().copied()));
        let frozen_norms: Vec<String> = batch_norm_paths(&model)
            .into_iter()
            .filter(|bn| prefixes.iter().any(|p| under(bn, p)))
            .collect();
        let norms = || prefixes_group(frozen_norms.iter().map(String::as_str));
        match state.bn {
            BnPolicy::Frozen => {}
            BnPolicy::Trainable => model = model.unfreeze_group(norms()),
            BnPolicy::TrainMode => {
                model = model.map(&mut EnableTrainingFlags {
                    path: Vec::new(),
                    group: norms(),
                })
            }
        }
    }
    model.set_freeze_state(state);
    model
}
