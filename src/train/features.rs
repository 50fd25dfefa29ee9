//! Backbone feature caching for the fixed-feature-extractor workflow: with a frozen backbone
//! (frozen BatchNorm included) and no random augmentation, every epoch would recompute the
//! same embeddings; computing them once turns each later epoch into a few head-only steps.

use burn::tensor::Tensor;

use super::TrainError;
use super::evaluate::read_indices;
use super::source::{BatchSource, TensorSource};
use crate::model::{InferenceModel, VisionModel};

/// Pooled embeddings of every image of `data` (its epoch-1 batches, in batch order), as a
/// [`TensorSource`] of `[N, F, 1, 1]` "images" with the same labels and batch size.
pub(crate) fn extract<M: VisionModel>(
    model: &M,
    data: &dyn BatchSource,
    shuffle_seed: Option<u64>,
) -> Result<TensorSource, TrainError> {
    let backbone = model.for_inference();
    let loader = data.batches(1);
    let mut features = Vec::new();
    let mut labels = Vec::with_capacity(data.num_items());
    for batch in loader.iter() {
        let batch = batch.map_err(|e| TrainError::Data(e.to_string()))?;
        let images = batch.images.without_autodiff();
        model
            .check_input(images.dims())
            .map_err(TrainError::model)?;
        let f = backbone.forward_pre_logits(images);
        labels.extend(read_indices(batch.targets.without_autodiff())?);
        features.push(f);
    }
    if features.is_empty() {
        return Err(TrainError::Data(
            "no batches to extract features from".into(),
        ));
    }
    let features = Tensor::cat(features, 0);
    let [n, f] = features.dims();
    let source = TensorSource::new(features.reshape([n, f, 1, 1]), &labels, data.batch_size());
    Ok(match shuffle_seed {
        Some(seed) => source.shuffled(seed),
        None => source,
    })
}
