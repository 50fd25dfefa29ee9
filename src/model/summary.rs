//! Parameter counts per stage, in the spirit of `torchinfo.summary` / fastai's `learn.summary()`:
//! total, trainable and frozen parameters (BatchNorm running statistics are buffers, not
//! parameters, as in PyTorch's `model.parameters()`).

use std::fmt;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use super::ResNet;
use super::freeze::Stage;

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
    /// Architecture name (`resnet18`, ... or `resnet(custom)`).
    pub arch: String,
    /// One row per stage, in forward order.
    pub stages: Vec<(Stage, StageCount)>,
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
    /// Counts for one stage.
    pub fn stage(&self, stage: Stage) -> StageCount {
        self.stages
            .iter()
            .find(|(s, _)| *s == stage)
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.arch)?;
        writeln!(
            f,
            "{:<8} {:>14} {:>14} {:>14}",
            "stage", "params", "trainable", "frozen"
        )?;
        writeln!(f, "{}", "-".repeat(53))?;
        for (stage, c) in &self.stages {
            writeln!(
                f,
                "{:<8} {:>14} {:>14} {:>14}",
                stage.name(),
                thousands(c.total),
                thousands(c.trainable),
                thousands(c.frozen())
            )?;
        }
        writeln!(f, "{}", "-".repeat(53))?;
        write!(
            f,
            "{:<8} {:>14} {:>14} {:>14}",
            "total",
            thousands(self.total()),
            thousands(self.trainable()),
            thousands(self.frozen())
        )
    }
}

/// Collects `(path, element count)` for every float tensor in a module, running statistics
/// included (callers filter them with [`is_buffer_path`]).
#[derive(Default)]
pub(crate) struct PathCollector {
    stack: Vec<String>,
    /// `(dotted path, number of elements, shape)`.
    pub entries: Vec<(String, usize, Vec<usize>)>,
}

impl ModuleVisitor for PathCollector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.lazy_shape();
        self.entries
            .push((self.stack.join("."), shape.num_elements(), shape.to_vec()));
    }
}

/// Whether a path names a BatchNorm running statistic (a buffer, not a parameter).
pub(crate) fn is_buffer_path(path: &str) -> bool {
    path.ends_with("running_mean") || path.ends_with("running_var")
}

impl ResNet {
    /// `(path, shape)` of every tensor of the model in Burn's naming, running statistics
    /// included, in traversal order.
    pub fn tensor_paths(&self) -> Vec<(String, Vec<usize>)> {
        let mut collector = PathCollector::default();
        self.visit(&mut collector);
        collector
            .entries
            .into_iter()
            .map(|(path, _, shape)| (path, shape))
            .collect()
    }

    /// Total / trainable / frozen parameter counts per stage, from the freeze state applied
    /// through Burn's `freeze_group`.
    pub fn param_summary(&self) -> ParamSummary {
        let mut collector = PathCollector::default();
        self.visit(&mut collector);
        let mut stages: Vec<(Stage, StageCount)> = Stage::ALL
            .iter()
            .map(|s| (*s, StageCount::default()))
            .collect();
        for (path, n, _) in collector.entries {
            if is_buffer_path(&path) {
                continue;
            }
            let Some(stage) = Stage::of_path(&path) else {
                continue;
            };
            if let Some((_, count)) = stages.iter_mut().find(|(s, _)| *s == stage) {
                count.total += n;
                if self.freeze.is_trainable(&path) {
                    count.trainable += n;
                }
            }
        }
        ParamSummary {
            arch: self
                .config
                .arch_name()
                .unwrap_or("resnet(custom)")
                .to_string(),
            stages,
        }
    }
}
