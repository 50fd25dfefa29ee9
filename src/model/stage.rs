//! Named stages: every architecture lists its parts from stem to head ([`StageSpec`]), and
//! freezing ([`VisionModel::freeze_to`](super::VisionModel::freeze_to)), discriminative
//! learning rates and [`param_summary`](super::VisionModel::param_summary) work on that one
//! list. This file is the single source of truth for which parameter path belongs to which
//! stage.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The name of a stage of a model (`stem`, `layer1` .. `layer4`, `fc` for ResNets). Stage
/// names come from the model's [`stages`](super::VisionModel::stages); `head` is accepted for
/// the last stage of any model, and names compare case-insensitively.
///
/// ```
/// use finetune::model::Stage;
/// assert_eq!(Stage::new("layer3").name(), "layer3");
/// let s: Stage = "layer2".into();
/// assert_eq!(s.to_string(), "layer2");
/// let from_user = String::from("layer4");
/// assert_eq!(Stage::from(from_user.as_str()), Stage::new("layer4"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Stage(Cow<'static, str>);

impl Stage {
    /// A stage name known at compile time.
    pub const fn new(name: &'static str) -> Self {
        Stage(Cow::Borrowed(name))
    }

    /// The stage name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// Whether this name denotes `spec` (case-insensitive; `head` names the last stage).
    fn denotes(&self, spec: &StageSpec, is_last: bool) -> bool {
        let name = self.0.to_ascii_lowercase();
        name == spec.name.to_ascii_lowercase() || (is_last && name == "head")
    }
}

impl From<&str> for Stage {
    fn from(name: &str) -> Self {
        Stage(Cow::Owned(name.to_string()))
    }
}

impl From<String> for Stage {
    fn from(name: String) -> Self {
        Stage(Cow::Owned(name))
    }
}

impl From<&Stage> for Stage {
    fn from(stage: &Stage) -> Self {
        stage.clone()
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One stage of an architecture: its name and the module paths it owns (top-level fields such
/// as `layer1`, or deeper prefixes such as `encoder.layers.3`). The stages of a model cover
/// every parameter, in forward order; the last one is the classifier head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageSpec {
    /// Display name (`stem`, `layer1`, ..., `fc`).
    pub name: &'static str,
    /// Module path prefixes belonging to this stage (`conv1`, `bn1` for ResNet's stem).
    pub modules: Vec<String>,
}

impl StageSpec {
    /// A stage owning the given module paths.
    pub fn new(name: &'static str, modules: &[&str]) -> Self {
        StageSpec {
            name,
            modules: modules.iter().map(|m| m.to_string()).collect(),
        }
    }

    /// This stage as a [`Stage`] name.
    pub fn stage(&self) -> Stage {
        Stage::new(self.name)
    }

    /// Whether the parameter path (`layer2.0.conv1.weight`) lies under this stage.
    pub fn owns(&self, path: &str) -> bool {
        self.modules.iter().any(|m| under(path, m))
    }
}

/// Whether the dotted `path` is `module` or lies inside it (`layer1.0.conv1.weight` is under
/// `layer1` and `layer1.0`, not under `layer`).
/// Names of numbered stages (`stage1` ..), for families whose stage count follows their
/// configuration (EfficientNet, MobileNetV3); configurations are bounded to this many.
pub(crate) const STAGE_NAMES: [&str; 16] = [
    "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "stage8", "stage9",
    "stage10", "stage11", "stage12", "stage13", "stage14", "stage15", "stage16",
];

pub(crate) fn under(path: &str, module: &str) -> bool {
    path.strip_prefix(module)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// `text` as a regex that matches it literally (every character but ASCII letters, digits and
/// `_` written as `\x{..}`): the module paths and key prefixes that freezing and weight
/// import turn into Burn `ParamGroup` / `KeyRemapper` patterns.
pub(crate) fn regex_literal(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("\\x{{{:X}}}", u32::from(c))
            }
        })
        .collect()
}

/// The ordered stages of one model, with lookups by name and by parameter path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stages(Vec<StageSpec>);

impl Stages {
    /// Wraps an architecture's stage list (stem first, head last; at least one stage).
    pub fn new(stages: Vec<StageSpec>) -> Self {
        Stages(stages)
    }

    /// The stages in forward order.
    pub fn iter(&self) -> impl Iterator<Item = &StageSpec> {
        self.0.iter()
    }

    /// Number of stages.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no stages.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stage names in order, comma-separated (for error messages).
    pub fn names(&self) -> String {
        self.0.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    }

    /// The position of `stage` in forward order.
    ///
    /// # Errors
    /// [`Error::UnknownStage`] listing the model's stage names.
    pub fn index_of(&self, stage: &Stage) -> Result<usize> {
        let last = self.0.len().saturating_sub(1);
        self.0
            .iter()
            .enumerate()
            .position(|(i, spec)| stage.denotes(spec, i == last))
            .ok_or_else(|| Error::UnknownStage {
                stage: stage.to_string(),
                known: self.names(),
            })
    }

    /// The position of the stage owning a parameter path, if any.
    pub fn index_of_path(&self, path: &str) -> Option<usize> {
        self.0.iter().position(|spec| spec.owns(path))
    }

    /// The stage at position `i`.
    pub fn get(&self, i: usize) -> Option<&StageSpec> {
        self.0.get(i)
    }

    /// The last stage (the classifier head).
    pub fn head(&self) -> Option<&StageSpec> {
        self.0.last()
    }

    /// The module prefixes of the stages `0..=last`.
    pub fn prefixes_through(&self, last: usize) -> Vec<&str> {
        self.0
            .iter()
            .take(last + 1)
            .flat_map(|s| s.modules.iter().map(String::as_str))
            .collect()
    }
}
