//! Evaluation of a classifier over a [`BatchSource`]: mean cross-entropy loss, accuracy,
//! per-class accuracy and the confusion matrix (rows: true class, columns: predicted class).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Int, Tensor};

use super::TrainError;
use super::source::BatchSource;
use crate::model::{InferenceModel, VisionModel};

/// The result of [`evaluate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy loss per image.
    pub loss: f64,
    /// Fraction of images classified correctly.
    pub accuracy: f64,
    /// Accuracy per true class (NaN for a class with no images).
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Predicted class of every image, in batch order.
    pub predictions: Vec<usize>,
    /// True class of every image, in batch order.
    pub targets: Vec<usize>,
}

impl Evaluation {
    /// Number of images evaluated.
    pub fn len(&self) -> usize {
        self.targets.len()
    }
    /// Whether nothing was evaluated.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// Reads class indices back to the host.
pub(crate) fn read_indices(t: Tensor<1, Int>) -> Result<Vec<usize>, TrainError> {
    t.into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map(|v| v.into_iter().map(|x| x.max(0) as usize).collect())
        .map_err(|e| TrainError::Data(format!("reading class indices: {e:?}")))
}

/// Reads a batch's loss and predictions back to the host.
pub(crate) fn batch_stats(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
) -> Result<(f32, Vec<usize>, Vec<usize>), TrainError> {
    let device = logits.device();
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(logits.clone(), targets.clone());
    let loss: f32 = loss.into_scalar::<f32>();
    let predictions = read_indices(logits.argmax(1).flatten(0, 1))?;
    let targets = read_indices(targets)?;
    Ok((loss, predictions, targets))
}

/// Evaluates `model` (in inference mode: BatchNorm uses running statistics) on every batch of
/// `data` (its epoch-1 batches).
///
/// # Errors
/// [`TrainError::Data`] for an empty source, a failing loader or a label out of range;
/// [`TrainError::Model`] for images that do not fit the model.
pub fn evaluate<M: VisionModel>(
    model: &M,
    data: &dyn BatchSource,
) -> Result<Evaluation, TrainError> {
    evaluate_with(model, data, EvalPath::Full)
}

/// How [`evaluate_with`] turns a batch into logits.
pub(crate) enum EvalPath<'a, I> {
    /// The whole model, BatchNorm folded.
    Full,
    /// The batches hold pooled features `[B, F, 1, 1]`: only the head runs.
    HeadOnly,
    /// A prepared (frozen) backbone, then the model's current head.
    Backbone(&'a I),
}

/// [`evaluate`] along a chosen path.
pub(crate) fn evaluate_with<M: VisionModel>(
    model: &M,
    data: &dyn BatchSource,
    path: EvalPath<'_, M::Inference>,
) -> Result<Evaluation, TrainError> {
    let classes = model.num_classes();
    let head = model.valid();
    let full = matches!(path, EvalPath::Full).then(|| model.for_inference());
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut loss_sum = 0.0f64;
    let mut all_predictions = Vec::with_capacity(data.num_items());
    let mut all_targets = Vec::with_capacity(data.num_items());
    let loader = data.batches(1);
    for batch in loader.iter() {
        let batch = batch.map_err(|e| TrainError::Data(e.to_string()))?;
        let n = batch.targets.dims()[0];
        let images = batch.images.without_autodiff();
        if !matches!(path, EvalPath::HeadOnly) {
            model
                .check_input(images.dims())
                .map_err(TrainError::model)?;
        }
        let logits = match (&path, &full) {
            (EvalPath::HeadOnly, _) => head.forward_classifier(images.flatten(1, 3)),
            (EvalPath::Backbone(backbone), _) => {
                head.forward_classifier(backbone.forward_pre_logits(images))
            }
            (EvalPath::Full, Some(fused)) => fused.forward(images),
            (EvalPath::Full, None) => head.forward(images),
        };
        let (loss, predictions, targets) = batch_stats(logits, batch.targets.without_autodiff())?;
        loss_sum += loss as f64 * n as f64;
        for (&p, &t) in predictions.iter().zip(&targets) {
            if t >= classes {
                return Err(TrainError::Data(format!(
                    "label {t} is out of range for a {classes}-class model"
                )));
            }
            confusion[t][p.min(classes - 1)] += 1;
        }
        all_predictions.extend(predictions);
        all_targets.extend(targets);
    }
    if all_targets.is_empty() {
        return Err(TrainError::Data("the evaluation data is empty".into()));
    }
    let total = all_targets.len() as f64;
    let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
    let per_class_accuracy = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let n: u64 = row.iter().sum();
            if n == 0 {
                f64::NAN
            } else {
                row[c] as f64 / n as f64
            }
        })
        .collect();
    Ok(Evaluation {
        loss: loss_sum / total,
        accuracy: correct as f64 / total,
        per_class_accuracy,
        confusion,
        predictions: all_predictions,
        targets: all_targets,
    })
}
