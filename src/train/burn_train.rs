//! burn-train interop (feature `train`): every architecture of the crate is a Burn
//! [`LearnerModel`](burn::train::LearnerModel), so it trains with burn-train's
//! [`SupervisedTraining`](burn::train::SupervisedTraining) on one device, several
//! ([`ExecutionStrategy::MultiDevice`](burn::train::ExecutionStrategy)) or with
//! DistributedDataParallel, with Burn's metrics (accuracy, top-k, loss, learning rate), its
//! checkpointers and its renderers (the terminal dashboard with Burn's `tui` feature).
//!
//! Input: an [`ImageBatch`] (images `[B, 3, H, W]`, normalised; labels `[B]`), as the crate's
//! loaders give it; [`ImageLoader::epochs`](crate::data::ImageLoader::epochs) is the training
//! loader that reshuffles on every pass, as burn-train iterates one loader once per epoch.
//! Output: Burn's [`ClassificationOutput`] (the loss, the logits `[B, classes]`, the labels).
//!
//! The loss is the mean cross-entropy of the logits (`torch.nn.CrossEntropyLoss()`). The
//! crate's own [`Learner`](super::Learner) has what this path does not: label smoothing,
//! MixUp / CutMix, model EMA, `fine_tune`'s phases, the cached-feature and frozen-backbone fast
//! paths, and checkpoints that resume bit for bit. burn-train's `MultiDevice` strategy *sums*
//! the gradients of the devices' batches (burn-optim's `GradientsAccumulator`): with `n`
//! devices, each step is `n` times the gradient of the mean over the global batch, so divide
//! the learning rate by `n` to follow one device with the same global batch.
//!
//! A model's frozen parameters (`freeze_backbone`, `freeze_to`) get no gradient here either,
//! and its BatchNorm policy applies, as everything is in the model's own `forward`.

use std::collections::{BTreeMap, HashMap};

use burn::nn::loss::CrossEntropyLossConfig;
use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::data::ImageBatch;
use crate::model::{
    AnyModel, ConvNeXt, EfficientNet, MobileNetV3, ResNet, VisionModel, VisionTransformer,
};

/// The forward pass and the mean cross-entropy of one batch.
fn classify<M: VisionModel>(model: &M, batch: ImageBatch) -> ClassificationOutput {
    let logits = model.forward(batch.images);
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.clone(), batch.targets.clone());
    ClassificationOutput::new(loss, logits, batch.targets)
}

macro_rules! learner_model {
    ($($model:ty),* $(,)?) => {$(
        impl TrainStep for $model {
            type Input = ImageBatch;
            type Output = ClassificationOutput;

            /// Forward, mean cross-entropy, backward: the gradients of the trainable
            /// parameters.
            fn step(&self, batch: ImageBatch) -> TrainOutput<ClassificationOutput> {
                let output = classify(self, batch);
                let grads = output.loss.backward();
                TrainOutput::new(self, grads, output)
            }
        }

        impl InferenceStep for $model {
            type Input = ImageBatch;
            type Output = ClassificationOutput;

            /// The forward pass and the loss, without gradients.
            fn step(&self, batch: ImageBatch) -> ClassificationOutput {
                classify(self, batch)
            }
        }
    )*};
}

learner_model!(
    ResNet,
    ConvNeXt,
    EfficientNet,
    MobileNetV3,
    VisionTransformer,
    AnyModel
);

/// A burn-train renderer that prints one line per epoch and split, with each metric's epoch
/// value (`train epoch 1/5: Accuracy 41.250 | Loss 1.693 | ...`), and burn-train's summary table
/// at the end; for logs and terminals where Burn's per-item `CliMetricsRenderer` output or its
/// full-screen dashboard are unwanted. Install it with `SupervisedTraining::renderer`.
#[derive(Debug, Default)]
pub struct EpochLines {
    names: HashMap<MetricId, String>,
    latest: BTreeMap<String, String>,
    epoch: usize,
    total_epochs: usize,
    split: String,
}

impl EpochLines {
    /// A renderer with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&mut self, state: MetricState) {
        let entry = match state {
            MetricState::Generic(entry) | MetricState::Numeric(entry, _) => entry,
        };
        let name = self
            .names
            .get(&entry.metric_id)
            .cloned()
            .unwrap_or_else(|| format!("{:?}", entry.metric_id));
        // Numeric metrics format as "epoch <running> - batch <current>": keep the epoch's.
        let formatted = entry.serialized_entry.formatted;
        let value = formatted
            .strip_prefix("epoch ")
            .and_then(|rest| rest.split(" - batch").next())
            .unwrap_or(&formatted)
            .to_string();
        self.latest.insert(name, value);
    }
}

impl MetricsRendererTraining for EpochLines {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }
}

impl MetricsRendererEvaluation for EpochLines {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(state);
    }
}

impl TrainingProgressLogger for EpochLines {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _total_items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.total_epochs = total_epochs;
        self.epoch = starting_epoch;
    }

    /// Called after epoch `epoch` ends: the next lines are the next epoch's.
    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, _total_items: usize) {
        self.split = split.to_string();
        self.latest.clear();
    }

    fn update_split(&mut self, _items_processed: usize) {}

    fn end_split(&mut self) {
        let metrics: Vec<String> = self
            .latest
            .iter()
            .map(|(name, value)| format!("{name} {value}"))
            .collect();
        println!(
            "{} epoch {}/{}: {}",
            self.split,
            self.epoch,
            self.total_epochs,
            metrics.join(" | ")
        );
    }

    fn end(&mut self) {}

    /// burn-train's events ("Iteration", ...) are not printed.
    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for EpochLines {
    fn start_global_progress(&mut self, _total_tests: usize) {}

    fn start_test(&mut self, name: &str, _total_items: usize) {
        self.split = name.to_string();
        self.latest.clear();
    }

    fn update_test_progress(&mut self, _items_processed: usize) {}

    fn end_test(&mut self) {
        self.end_split();
    }

    fn end_global_progress(&mut self) {}

    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRenderer for EpochLines {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id, definition.name.to_string());
    }
}
