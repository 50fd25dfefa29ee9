//! The training examples' console output (`#[path]`-included): a [`FitSink`] that prints the
//! Learner's and the recipe's lines to stdout (one line per epoch, resume, feature caching,
//! early stopping, the best epoch, the recipe's notes) and, on a terminal, an indicatif
//! progress bar over each epoch's training batches.

use std::io::IsTerminal;
use std::sync::Mutex;

use finetune::train::{FitEvent, FitSink};

/// Prints a training run's progress to the console.
pub struct ConsoleProgress {
    /// Whether stdout is a terminal (no bar otherwise: logs and pipes get the lines only).
    terminal: bool,
    /// The current epoch's bar, while its training phase runs.
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl ConsoleProgress {
    /// Lines on stdout; a progress bar too when stdout is a terminal.
    pub fn new() -> Self {
        ConsoleProgress {
            terminal: std::io::stdout().is_terminal(),
            bar: Mutex::new(None),
        }
    }

    /// Runs `f` on the bar slot (a poisoned lock only means a panic mid-update: the bar is
    /// still usable).
    fn with_bar<R>(&self, f: impl FnOnce(&mut Option<indicatif::ProgressBar>) -> R) -> R {
        let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut bar)
    }

    /// Removes the bar, if any, from the screen.
    fn clear_bar(&self) {
        self.with_bar(|bar| {
            if let Some(bar) = bar.take() {
                bar.finish_and_clear();
            }
        });
    }

    /// A bar over an epoch's training batches.
    fn start_bar(&self, epoch: usize, epochs: usize, batches: usize) {
        if !self.terminal {
            return;
        }
        let bar = indicatif::ProgressBar::new(batches as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("{epoch}/{epochs}"));
        self.with_bar(|slot| {
            if let Some(old) = slot.replace(bar) {
                old.finish_and_clear();
            }
        });
    }

    /// A line on stdout, after clearing the bar.
    fn say(&self, line: &str) {
        self.clear_bar();
        println!("{line}");
    }
}

impl Default for ConsoleProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ConsoleProgress {
    /// A run that failed mid-epoch leaves no bar behind its error message.
    fn drop(&mut self) {
        self.clear_bar();
    }
}

impl FitSink for ConsoleProgress {
    fn event(&self, event: &FitEvent<'_>) {
        match event {
            FitEvent::Resumed {
                checkpoint,
                epochs_done,
            } => self.say(&format!(
                "resuming from {} after epoch {epochs_done}",
                checkpoint.display()
            )),
            FitEvent::FeaturesCached {
                train_images,
                val_images,
                seconds,
            } => self.say(&format!(
                "cached backbone features of {train_images} + {val_images} images in {seconds:.1} s"
            )),
            FitEvent::EpochStarted {
                epoch,
                epochs,
                batches,
            } => self.start_bar(*epoch, *epochs, *batches),
            FitEvent::Batch {
                batch,
                batches,
                loss,
                accuracy,
                ..
            } => self.with_bar(|slot| {
                if let Some(bar) = slot.as_ref() {
                    bar.set_position(*batch as u64);
                    bar.set_message(format!("loss {loss:.4} acc {accuracy:.4}"));
                }
                // The training phase is over: validation runs without a bar.
                if batch >= batches
                    && let Some(bar) = slot.take()
                {
                    bar.finish_and_clear();
                }
            }),
            FitEvent::EpochEnded {
                record,
                epochs,
                improved,
            } => self.say(&format!(
                "Epoch {}/{epochs}  train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} | lr {:.2e} | {:.1} s, {:.0} img/s{}",
                record.epoch,
                record.train_loss,
                record.train_acc,
                record.val_loss,
                record.val_acc,
                record.lr,
                record.seconds,
                record.images_per_sec,
                if *improved { "  *" } else { "" }
            )),
            FitEvent::EarlyStopped {
                monitor,
                stale_epochs,
            } => self.say(&format!(
                "early stopping: {monitor} has not improved for {stale_epochs} epochs"
            )),
            FitEvent::Finished {
                monitor,
                best_metric,
                best_epoch,
            } => self.say(&format!(
                "Best {monitor} {best_metric:.4} at epoch {best_epoch}"
            )),
            FitEvent::Note(line) => self.say(line),
            _ => {}
        }
    }
}
