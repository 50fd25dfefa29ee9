//! The end of every epoch in [`Learner::fit`]: validation, the epoch's record, best-weights
//! tracking, the checkpoint, the `on_epoch` callback and early stopping.

use super::TrainError;
use super::checkpoint;
use super::config::Monitor;
use super::epoch::EpochTotals;
use super::evaluate::{Evaluation, evaluate_with};
use super::history::EpochRecord;
use super::learner::Learner;
use super::progress::FitEvent;
use super::start::{FitData, FitRun};
use crate::model::VisionModel;

impl Learner {
    /// Validates `model` after epoch `epoch`, records the epoch, keeps its weights when they
    /// are the best so far, writes the checkpoint and calls the callback. Returns whether
    /// early stopping ends the run.
    pub(super) fn end_epoch<M: VisionModel>(
        &self,
        model: &M,
        run: &mut FitRun<M>,
        data: &FitData<'_, M>,
        epoch: usize,
        totals: EpochTotals,
    ) -> Result<bool, TrainError> {
        let eval = evaluate_with(model, data.val_source(), data.eval_path(), false)?;
        // With EMA, the average is what is validated and kept; the model's own result is
        // recorded beside it.
        let (eval, own) = match &run.ema {
            Some(ema) => (
                evaluate_with(&ema.model, data.val_source(), data.eval_path(), false)?,
                Some(eval),
            ),
            None => (eval, None),
        };
        let mut record = self.record(epoch, &totals, &eval);
        if let Some(own) = own {
            record.model_val_loss = Some(own.loss);
            record.model_val_acc = Some(own.accuracy);
        }
        let improved = self.track_best(model, run, &record);
        self.emit(FitEvent::EpochEnded {
            record: &record,
            epochs: self.config.total_epochs(),
            improved,
        });
        run.state.history.epochs.push(record.clone());
        run.state.epochs_done = epoch;
        if let Some(run_dir) = &self.run_dir {
            checkpoint::save(
                run_dir,
                &model.valid(),
                &run.best,
                run.ema.as_ref().map(|ema| &ema.model),
                &run.optim,
                &run.scheduler,
                &run.state,
            )?;
        }
        if let Some(callback) = &self.on_epoch {
            callback(&record);
        }
        Ok(self.early_stop(run))
    }

    /// The epoch's record from its training totals and validation.
    fn record(&self, epoch: usize, totals: &EpochTotals, eval: &Evaluation) -> EpochRecord {
        EpochRecord {
            epoch,
            lr: totals.first_lr.unwrap_or(self.config.lr),
            train_loss: totals.loss(),
            train_acc: totals.accuracy(),
            val_loss: eval.loss,
            val_acc: eval.accuracy,
            val_top5: Some(eval.top5_accuracy),
            model_val_loss: None,
            model_val_acc: None,
            seconds: totals.started.elapsed().as_secs_f64(),
            images_per_sec: totals.seen as f64 / totals.train_seconds.max(1e-9),
        }
    }

    /// Updates the best metric, epoch and weights when the monitored metric improved (and the
    /// count of epochs without improvement otherwise); returns whether it improved.
    fn track_best<M: VisionModel>(
        &self,
        model: &M,
        run: &mut FitRun<M>,
        record: &EpochRecord,
    ) -> bool {
        let monitor = self.config.monitor;
        let metric = match monitor {
            Monitor::ValAccuracy => record.val_acc,
            Monitor::ValLoss => record.val_loss,
        };
        let state = &mut run.state;
        if !monitor.improves(metric, state.best_metric) {
            state.stale_epochs += 1;
            return false;
        }
        state.best_metric = metric;
        state.history.best_epoch = record.epoch;
        state.history.best_val_acc = record.val_acc;
        state.stale_epochs = 0;
        run.best = match &run.ema {
            // A copy of its own: the average keeps changing.
            Some(ema) => ema.model.valid(),
            None => model.valid(),
        };
        true
    }

    /// Early stopping: whether the monitored metric has not improved for the configured
    /// patience (reported, and recorded in `run`).
    fn early_stop<M>(&self, run: &mut FitRun<M>) -> bool {
        let stale_epochs = run.state.stale_epochs;
        let patience = self.config.early_stopping_patience;
        if patience.is_none_or(|patience| stale_epochs < patience) {
            return false;
        }
        self.emit(FitEvent::EarlyStopped {
            monitor: self.config.monitor.name(),
            stale_epochs,
        });
        run.stopped_early = true;
        true
    }
}
