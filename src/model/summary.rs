//! Parameter counts per stage, in the spirit of `torchinfo.summary` / fastai's `learn.summary()`:
//! total, trainable and frozen parameters (BatchNorm running statistics are buffers, not
//! parameters, as in PyTorch's `model.parameters()`).

use std::fmt;

use super::contract::VisionModel;
use super::freeze::{PathVisitor, batch_norm_paths};

/// Parameter counts of one stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageCount {
    /// All parameters of the stage.
    pub total: usize,
    /// Parameters that receive gradients.
    pub trainable: usize,
}

impl StageCount {
    /// Parameters that are frozen.
    pub fn frozen(&self) -> usize {
        self.total - self.trainable
    }
}

/// Total / trainable / frozen parameter counts, per stage and overall. Displays as a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSummary {
    /// Architecture name (`resnet18`, ... or a description of a custom shape).
    pub arch: String,
    /// One row per stage (its name and counts), in forward order.
    pub stages: Vec<(String, StageCount)>,
}

impl ParamSummary {
    /// All parameters.
    pub fn total(&self) -> usize {
        self.stages.iter().map(|(_, c)| c.total).sum()
    }
    /// Parameters that receive gradients.
    pub fn trainable(&self) -> usize {
        self.stages.iter().map(|(_, c)| c.trainable).sum()
    }
    /// Parameters that are frozen.
    pub fn frozen(&self) -> usize {
        self.total() - self.trainable()
    }
    /// Counts for the stage named `stage` (zero for a name the model does not have).
    pub fn stage(&self, stage: &str) -> StageCount {
        self.stages
            .iter()
            .find(|(s, _)| s.eq_ignore_ascii_case(stage))
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

impl fmt::Display for ParamSummary {
    /// One row per stage; the first column is as wide as the longest stage name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .stages
            .iter()
            .map(|(s, _)| s.len())
            .chain([8])
            .max()
            .unwrap_or(8);
        let rule = "-".repeat(w + 45);
        writeln!(f, "{}", self.arch)?;
        writeln!(
            f,
            "{:<w$} {:>14} {:>14} {:>14}",
            "stage", "params", "trainable", "frozen"
        )?;
        writeln!(f, "{rule}")?;
        for (stage, c) in &self.stages {
            writeln!(
                f,
                "{:<w$} {:>14} {:>14} {:>14}",
                stage,
                thousands(c.total),
                thousands(c.trainable),
                thousands(c.frozen())
            )?;
        }
        writeln!(f, "{rule}")?;
        write!(
            f,
            "{:<w$} {:>14} {:>14} {:>14}",
            "total",
            thousands(self.total()),
            thousands(self.trainable()),
            thousands(self.frozen())
        )
    }
}

/// Whether a path names a BatchNorm running statistic (a buffer, not a parameter).
pub(crate) fn is_buffer_path(path: &str) -> bool {
    path.ends_with("running_mean") || path.ends_with("running_var")
}

/// `(path, shape)` of every tensor of `model` in Burn's naming, running statistics included,
/// in traversal order.
pub(crate) fn tensor_paths<M: VisionModel>(model: &M) -> Vec<(String, Vec<usize>)> {
    PathVisitor::of(model)
        .entries
        .into_iter()
        .map(|(path, _, shape, _)| (path, shape))
        .collect()
}

/// Total / trainable / frozen parameter counts per stage of `model`, from the freeze state
/// applied through Burn's `freeze_group`.
pub(crate) fn param_summary<M: VisionModel>(model: &M) -> ParamSummary {
    let stages = model.stages();
    let norms = batch_norm_paths(model);
    let state = model.freeze_state();
    let mut counts: Vec<(String, StageCount)> = stages
        .iter()
        .map(|s| (s.name.to_string(), StageCount::default()))
        .collect();
    for (path, n, _, _) in PathVisitor::of(model).entries {
        if is_buffer_path(&path) {
            continue;
        }
        let Some(i) = stages.index_of_path(&path) else {
            continue;
        };
        let count = &mut counts[i].1;
        count.total += n;
        if state.is_trainable(&path, &stages, &norms) {
            count.trainable += n;
        }
    }
    ParamSummary {
        arch: model.arch(),
        stages: counts,
    }
}
