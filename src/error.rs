//! Typed errors for the whole crate.
//!
//! Every fallible public function returns [`Result<T>`](crate::Result). Each variant says what went
//! wrong and, where a user can act on it, what to do about it.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `finetune`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A device name could not be parsed or the device is not compiled in.
    #[error("{0}")]
    Device(String),

    /// Reading or writing a file failed.
    #[error("{action} '{path}': {source}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A file could not be downloaded or verified.
    #[error(transparent)]
    Download(#[from] crate::download::DownloadError),

    /// Training failed.
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),

    /// Pretrained weights could not be imported.
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightsError),

    /// A dataset, image folder, split or transform is invalid.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),

    /// A picture could not be drawn or written.
    #[error(transparent)]
    Viz(#[from] crate::viz::VizError),

    /// A BatchNorm layer that normalises with batch statistics (training mode) would see at most
    /// one value per channel, where the batch variance is undefined: PyTorch refuses this with
    /// "Expected more than 1 value per channel when training". Raised by
    /// [`VisionModel::check_training_batch`](crate::VisionModel::check_training_batch) before any kernel
    /// runs.
    #[error(
        "{layer}: BatchNorm in training mode would see {values} value(s) per channel (input {input:?} reaches it as {batch} image(s) of {height}x{width}), and PyTorch refuses fewer than 2 (\"Expected more than 1 value per channel when training\"): use a larger batch (at least 2 images) or larger input images"
    )]
    BatchNormSingleValue {
        /// The layer's module path (`layer4.1.bn2`, `layer2.0.downsample.bn`, `bn1`).
        layer: String,
        /// The model's input shape `[B, C, H, W]`.
        input: [usize; 4],
        /// Images in the batch.
        batch: usize,
        /// Height of the layer's input maps.
        height: usize,
        /// Width of the layer's input maps.
        width: usize,
        /// Values per channel (`batch · height · width`).
        values: usize,
    },

    /// A batch does not fit the model (input channels, empty dimensions).
    #[error("the input does not fit the model: {0}")]
    InputShape(String),

    /// A stage name that the model does not have (freezing, discriminative learning rates).
    #[error("the model has no stage '{stage}': its stages are {known} (or `head` for the last)")]
    UnknownStage {
        /// The name asked for.
        stage: String,
        /// The model's stage names, in forward order.
        known: String,
    },

    /// An architecture or weights name that no registered model family knows.
    #[error("unknown model '{name}': known architectures are {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The registered architecture names.
        known: String,
    },

    /// A saved model could not be read back.
    #[error("cannot load model from '{path}': {reason}")]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A model could not be written (disk full, file-size limit, permissions): the file is
    /// incomplete, the model in memory is intact.
    #[error(
        "cannot write model to '{path}': {reason} (free some space or choose another directory, then save again)"
    )]
    ModelWrite {
        /// The file being written.
        path: PathBuf,
        /// What the writer reported.
        reason: String,
    },
}

impl Error {
    /// Helper to wrap an I/O error together with the path it concerns.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
