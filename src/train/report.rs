//! Picture reports of a finished run: `curves.png` (loss and accuracy per epoch, train and
//! validation), `confusion.png` (the best model on the validation data) and `predictions.png`
//! (validation images with predicted and true labels, the tutorial's `visualize_model`).

use std::path::Path;

use super::TrainError;
use super::evaluate::Evaluation;
use super::history::History;
use super::source::BatchSource;
use crate::viz;

fn report_err(path: &Path) -> impl Fn(viz::VizError) -> TrainError + '_ {
    move |e: viz::VizError| TrainError::Report {
        path: path.to_path_buf(),
        reason: e.reason(),
    }
}

/// Writes the run's pictures into `run_dir`. `predictions.png` needs a source that exposes its
/// items in batch order (an unshuffled loader); it is skipped otherwise.
pub(crate) fn write_pictures(
    run_dir: &Path,
    history: &History,
    evaluation: &Evaluation,
    val: &dyn BatchSource,
    class_names: &[String],
    grid: usize,
) -> Result<(), TrainError> {
    let column =
        |f: fn(&super::EpochRecord) -> f64| -> Vec<f64> { history.epochs.iter().map(f).collect() };
    let curves = run_dir.join("curves.png");
    viz::save_curves(
        &curves,
        &column(|e| e.train_loss),
        &column(|e| e.val_loss),
        &column(|e| e.train_acc),
        &column(|e| e.val_acc),
    )
    .map_err(report_err(&curves))?;

    let names: Vec<String> = (0..evaluation.confusion.len())
        .map(|i| class_names.get(i).cloned().unwrap_or_else(|| i.to_string()))
        .collect();
    let confusion = run_dir.join("confusion.png");
    viz::save_confusion(&confusion, &evaluation.confusion, &names)
        .map_err(report_err(&confusion))?;

    if let Some(items) = val.items() {
        let n = grid.min(items.len()).min(evaluation.predictions.len());
        let mut images = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            if let Ok(item) = items.get(i) {
                images.push(item.image);
                labels.push(item.label);
            }
        }
        if !images.is_empty() {
            let predictions = run_dir.join("predictions.png");
            viz::save_grid(
                &predictions,
                &images,
                &names,
                &labels,
                Some(&evaluation.predictions[..images.len()]),
            )
            .map_err(|e| TrainError::Report {
                path: predictions.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    Ok(())
}
