//! fastai's `fine_tune(epochs, freeze_epochs)` as two phases of one [`Learner::fit`] run:
//! head-only epochs with the backbone frozen, then every parameter trainable at half the base
//! rate, each phase with its own run of the schedule. Runs without `freeze_epochs` have one
//! phase, [`Phase::All`], with the configured rate and the model's own freeze state.

use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;

use super::TrainError;
use super::config::LearnerConfig;
use super::learner::Learner;
use super::progress::FitEvent;
use super::schedule::ScheduleUnit;
use super::start::{FitData, FitRun};
use crate::model::VisionModel;

/// Which part of a run an epoch belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// fastai's frozen epochs: only the head (and, under `BnPolicy::Trainable`, the
    /// backbone's BatchNorm) trains.
    Head,
    /// Everything the model's freeze state allows trains (with `freeze_epochs`: the whole
    /// model, unfrozen).
    All,
}

impl LearnerConfig {
    /// The phase of `epoch` (from 1; 0, before the first epoch, is the first epoch's).
    pub(super) fn phase_of(&self, epoch: usize) -> Phase {
        if epoch.max(1) <= self.head_epochs() {
            Phase::Head
        } else {
            Phase::All
        }
    }

    /// Whether the run is a fastai `fine_tune` (head-only epochs first).
    pub(super) fn is_fine_tune(&self) -> bool {
        self.head_epochs() > 0
    }

    /// Base learning rate and length in epochs of `phase`.
    fn phase_plan(&self, phase: Phase) -> (f64, usize) {
        match (phase, self.is_fine_tune()) {
            (Phase::Head, _) => (self.lr, self.head_epochs()),
            // fastai's `fine_tune` halves the base rate when it unfreezes.
            (Phase::All, true) => (self.lr / 2.0, self.epochs),
            (Phase::All, false) => (self.lr, self.epochs),
        }
    }
}

impl Learner {
    /// A fresh scheduler for `phase`: its base rate, over its epochs (or optimizer steps, for a
    /// per-batch schedule: `ceil(batches / grad_accum_steps)` per epoch).
    pub(super) fn phase_scheduler<M: VisionModel>(
        &self,
        model: &M,
        phase: Phase,
        batches: usize,
    ) -> Result<ModuleLrScheduler, TrainError> {
        let config = &self.config;
        let units_per_epoch = match config.schedule_unit {
            ScheduleUnit::Epoch => 1,
            ScheduleUnit::Batch => batches.div_ceil(config.accum_steps()),
        };
        let (lr, epochs) = config.phase_plan(phase);
        config.schedule.build(
            lr,
            epochs * units_per_epoch,
            config.backbone_lr_mult,
            model.backbone_group(),
        )
    }

    /// `model` frozen as `phase` needs in a `fine_tune` run (backbone frozen for the head
    /// epochs, everything trainable after, the BatchNorm policy kept); unchanged otherwise.
    pub(super) fn phase_model<M: VisionModel>(&self, model: M, phase: Phase) -> M {
        match (self.config.is_fine_tune(), phase) {
            (false, _) => model,
            (true, Phase::Head) => model.freeze_backbone(),
            (true, Phase::All) => VisionModel::unfreeze(model),
        }
    }
}

impl Learner {
    /// Starts the phase of `epoch` in a `fine_tune` run: the backbone unfrozen, the prepared
    /// frozen backbone dropped, a fresh scheduler at the phase's rate; reported as a note.
    pub(super) fn enter_phase<M: VisionModel>(
        &self,
        model: M,
        run: &mut FitRun<M>,
        data: &mut FitData<'_, M>,
        epoch: usize,
    ) -> Result<M, TrainError> {
        let phase = self.config.phase_of(epoch);
        run.scheduler = self.phase_scheduler(&model, phase, data.batches)?;
        data.backbone = None;
        let model = self.phase_model(model, phase);
        let (lr, epochs) = self.config.phase_plan(phase);
        self.emit(FitEvent::Note(&format!(
            "epoch {epoch}: backbone unfrozen ({}), {epochs} epochs at lr {lr} (half the head epochs' rate, as fastai's fine_tune), backbone lr x{}",
            model.freeze_state().describe(),
            self.config.backbone_lr_mult
        )));
        Ok(model)
    }
}
