//! The last phase of [`Learner::fit`]: the best epoch's weights restored (the tutorial's
//! `model.load_state_dict(best_model_wts)`), evaluated, and the run's reports written.

use std::path::Path;

use super::TrainError;
use super::checkpoint;
use super::evaluate::{Evaluation, evaluate_with};
use super::history::History;
use super::learner::{FitOutcome, Learner};
use super::progress::FitEvent;
use super::start::{FitData, FitRun};
use crate::model::VisionModel;

impl Learner {
    /// Ends the run: errors when no epoch is recorded, evaluates the best weights on the
    /// validation data, and writes the reports into the run directory (still locked).
    pub(super) fn finish<M: VisionModel>(
        &self,
        run: FitRun<M>,
        data: &FitData<'_, M>,
    ) -> Result<FitOutcome<M>, TrainError> {
        let FitRun {
            best,
            state,
            resumed_from,
            stopped_early,
            lock: _lock,
            ..
        } = run;
        let config = &self.config;
        let completed = state.epochs_done >= config.total_epochs() || stopped_early;
        if state.history.best_epoch == 0 {
            return Err(TrainError::Config(
                "no epoch ran: the checkpoint already covers every configured epoch (raise epochs to continue)".into(),
            ));
        }
        self.emit(FitEvent::Finished {
            monitor: config.monitor.name(),
            best_metric: state.best_metric,
            best_epoch: state.history.best_epoch,
        });
        let evaluation = evaluate_with(&best, data.val_source(), data.eval_path(), false)?;
        if let Some(run_dir) = &self.run_dir {
            self.write_reports(run_dir, &best, &state.history, &evaluation, data)?;
        }
        Ok(FitOutcome {
            model: best,
            best_epoch: state.history.best_epoch,
            best_metric: state.best_metric,
            history: state.history,
            resumed_from,
            stopped_early,
            completed,
            evaluation,
        })
    }

    /// `history.json`, `history.csv`, `config.json`, `best_model.bpk` and the pictures.
    fn write_reports<M: VisionModel>(
        &self,
        run_dir: &Path,
        best: &M,
        history: &History,
        evaluation: &Evaluation,
        data: &FitData<'_, M>,
    ) -> Result<(), TrainError> {
        history.save_json(&run_dir.join("history.json"))?;
        history.save_csv(&run_dir.join("history.csv"))?;
        let config = serde_json::to_vec_pretty(&self.config)
            .map_err(|e| TrainError::Config(format!("serialising config: {e}")))?;
        checkpoint::write_atomic(&run_dir.join("config.json"), &config)?;
        best.save(run_dir.join("best_model.bpk"))
            .map_err(TrainError::model)?;
        super::report::write_pictures(
            run_dir,
            history,
            evaluation,
            data.val,
            &self.class_names,
            self.config.prediction_grid,
        )
    }
}
