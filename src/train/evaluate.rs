//! Evaluation of a classifier over a [`BatchSource`]: mean cross-entropy loss, top-1 and top-5
//! accuracy, per-class accuracy and the confusion matrix (rows: true class, columns: predicted
//! class); optionally with test-time augmentation (the image and its mirror image averaged).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor};

use super::TrainError;
use super::source::BatchSource;
use crate::model::{InferenceModel, VisionModel};

/// The result of [`evaluate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy loss per image.
    pub loss: f64,
    /// Fraction of images classified correctly (top-1).
    pub accuracy: f64,
    /// Fraction of images whose class is among the `min(5, classes)` highest scores (timm's
    /// `accuracy(output, target, topk=(1, 5))`; ties counted in the image's favour only when
    /// fewer than five classes score strictly higher).
    pub top5_accuracy: f64,
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

/// What one evaluated batch contributes.
pub(crate) struct BatchStats {
    /// Mean loss over the batch.
    pub loss: f32,
    /// Predicted class per image.
    pub predictions: Vec<usize>,
    /// True class per image.
    pub targets: Vec<usize>,
    /// Images whose class is among the `min(5, classes)` highest scores.
    pub top5_hits: usize,
}

/// Images of a batch whose target is among the `min(5, classes)` highest `scores` (`[B, C]`
/// logits or probabilities, row-major on the host): fewer than that many classes score
/// strictly higher.
fn top5_hits(scores: &[f32], classes: usize, targets: &[usize]) -> usize {
    let k = classes.min(5);
    targets
        .iter()
        .enumerate()
        .filter(|&(i, &t)| {
            let row = &scores[i * classes..(i + 1) * classes];
            let Some(&own) = row.get(t) else {
                return false;
            };
            row.iter().filter(|&&v| v > own).count() < k
        })
        .count()
}

/// Reads a batch's loss, predictions and top-5 hits back to the host. With `tta`, `logits`
/// holds the original images' logits and `tta` their mirror images': the two softmax
/// distributions are averaged, and the loss is the negative log of the averaged probability.
pub(crate) fn batch_stats(
    logits: Tensor<2>,
    tta: Option<Tensor<2>>,
    targets: Tensor<1, Int>,
) -> Result<BatchStats, TrainError> {
    let device = logits.device();
    let classes = logits.dims()[1];
    let (loss, scores) = match tta {
        None => {
            let loss = CrossEntropyLossConfig::new()
                .init(&device)
                .forward(logits.clone(), targets.clone());
            (loss.into_scalar::<f32>(), logits)
        }
        Some(mirrored) => {
            let probs = (softmax(logits, 1) + softmax(mirrored, 1)).mul_scalar(0.5);
            let picked = probs
                .clone()
                .gather(1, targets.clone().unsqueeze_dim(1))
                .clamp_min(f32::MIN_POSITIVE);
            let loss = picked.log().neg().mean().into_scalar::<f32>();
            (loss, probs)
        }
    };
    let predictions = read_indices(scores.clone().argmax(1).flatten(0, 1))?;
    let targets = read_indices(targets)?;
    let host = scores
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| TrainError::Data(format!("reading scores: {e:?}")))?;
    if host.len() != targets.len() * classes {
        return Err(TrainError::Data(format!(
            "a batch holds {} targets for {} rows of scores: images and labels disagree",
            targets.len(),
            host.len() / classes.max(1)
        )));
    }
    let top5_hits = top5_hits(&host, classes, &targets);
    Ok(BatchStats {
        loss,
        predictions,
        targets,
        top5_hits,
    })
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
    evaluate_with(model, data, EvalPath::Full, false)
}

/// [`evaluate`] with flip test-time augmentation: every image and its horizontal mirror image
/// are classified, and their softmax probabilities averaged (the mean of two softmaxes). The
/// loss is the mean negative log of the averaged probability of the true class; it costs two
/// forward passes per image. fastai's `tta` differs: it averages four passes of the random
/// training transforms and blends them with the plain prediction (`beta = 0.25`).
///
/// # Errors
/// As [`evaluate`].
pub fn evaluate_tta<M: VisionModel>(
    model: &M,
    data: &dyn BatchSource,
) -> Result<Evaluation, TrainError> {
    evaluate_with(model, data, EvalPath::Full, true)
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
    tta: bool,
) -> Result<Evaluation, TrainError> {
    if tta && matches!(path, EvalPath::HeadOnly) {
        return Err(TrainError::Config(
            "test-time augmentation mirrors images, and cached features have none: evaluate without the feature cache".into(),
        ));
    }
    let classes = model.num_classes();
    let head = model.valid();
    let full = matches!(path, EvalPath::Full).then(|| model.for_inference());
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut loss_sum = 0.0f64;
    let mut top5 = 0usize;
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
        let logits_of = |images: Tensor<4>| match (&path, &full) {
            (EvalPath::HeadOnly, _) => head.forward_classifier(images.flatten(1, 3)),
            (EvalPath::Backbone(backbone), _) => {
                head.forward_classifier(backbone.forward_pre_logits(images))
            }
            (EvalPath::Full, Some(fused)) => fused.forward(images),
            (EvalPath::Full, None) => head.forward(images),
        };
        let mirrored = tta.then(|| logits_of(images.clone().flip([3])));
        let logits = logits_of(images);
        let BatchStats {
            loss,
            predictions,
            targets,
            top5_hits,
        } = batch_stats(logits, mirrored, batch.targets.without_autodiff())?;
        loss_sum += loss as f64 * n as f64;
        top5 += top5_hits;
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
        top5_accuracy: top5 as f64 / total,
        per_class_accuracy,
        confusion,
        predictions: all_predictions,
        targets: all_targets,
    })
}
