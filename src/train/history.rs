//! Per-epoch training history, written as `history.json` and `history.csv` (the numbers the
//! tutorial prints as "train Loss: .. Acc: .. / val Loss: .. Acc: ..").

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::checkpoint::write_atomic;

/// One epoch's results. Accuracies are fractions in [0, 1]; epochs count from 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Base (head) learning rate at the start of the epoch.
    pub lr: f64,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Training accuracy over the epoch.
    pub train_acc: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation accuracy (top-1).
    pub val_acc: f64,
    /// Validation top-5 accuracy (`None` in histories written before it was recorded).
    #[serde(default)]
    pub val_top5: Option<f64>,
    /// With model EMA, the validation loss of the trained model itself (`val_loss` is the
    /// average's); `None` without EMA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_val_loss: Option<f64>,
    /// With model EMA, the validation accuracy of the trained model itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_val_acc: Option<f64>,
    /// Wall time of the epoch (train and validation), seconds.
    pub seconds: f64,
    /// Training throughput, images per second.
    pub images_per_sec: f64,
}

/// The whole run: every epoch and the best one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Epoch (from 1) with the best monitored metric; 0 before the first epoch.
    pub best_epoch: usize,
    /// Validation accuracy of the best epoch.
    pub best_val_acc: f64,
    /// All epochs in order.
    pub epochs: Vec<EpochRecord>,
}

impl History {
    /// Writes `history.json`, atomically.
    pub fn save_json(&self, path: &Path) -> Result<(), TrainError> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| TrainError::Config(format!("serialising history: {e}")))?;
        write_atomic(path, &json)
    }

    /// Reads a `history.json`.
    pub fn load_json(path: &Path) -> Result<Self, TrainError> {
        let bytes = std::fs::read(path).map_err(|e| TrainError::io("reading", path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("unreadable history: {e}"),
        })
    }

    /// Writes `history.csv` (one row per epoch), atomically.
    pub fn save_csv(&self, path: &Path) -> Result<(), TrainError> {
        let mut csv = String::from(
            "epoch,lr,train_loss,train_acc,val_loss,val_acc,val_top5,model_val_loss,model_val_acc,seconds,images_per_sec\n",
        );
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        for e in &self.epochs {
            csv.push_str(&format!(
                "{},{},{:.6},{:.6},{:.6},{:.6},{},{},{},{:.3},{:.1}\n",
                e.epoch,
                e.lr,
                e.train_loss,
                e.train_acc,
                e.val_loss,
                e.val_acc,
                opt(e.val_top5),
                opt(e.model_val_loss),
                opt(e.model_val_acc),
                e.seconds,
                e.images_per_sec
            ));
        }
        write_atomic(path, csv.as_bytes())
    }
}
