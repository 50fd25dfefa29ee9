//! Why pretrained weights could not be imported. Every message names the file and says what to
//! do; all but [`WeightsError::Mismatch`] (which lists the disagreeing tensors) are one line.

use std::path::PathBuf;

use super::report::LoadMismatch;

/// How to write a file this crate reads, quoted by several errors.
pub const RESAVE_HINT: &str = "re-save it in Python with `torch.save(model.state_dict(), path)` \
     (or `safetensors.torch.save_file(model.state_dict(), path)`)";

/// Errors of the weights importer and registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// The file does not exist.
    #[error("weights file '{}' does not exist", path.display())]
    NotFound {
        /// The path given.
        path: PathBuf,
    },

    /// The path is a directory.
    #[error(
        "'{}' is a directory, not a weights file: pass the .pth, .pt, .ckpt or .safetensors file inside it",
        path.display()
    )]
    IsADirectory {
        /// The path given.
        path: PathBuf,
    },

    /// The file could not be read.
    #[error("reading weights file '{}': {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Neither a PyTorch checkpoint nor a safetensors file.
    #[error("'{}' is neither a PyTorch checkpoint (a zip archive written by `torch.save`) nor a safetensors file: {RESAVE_HINT}", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },

    /// A model file written by this crate (`ResNet::save`, burnpack), not a PyTorch or
    /// safetensors state_dict.
    #[error("'{}' is a model saved by finetune (burnpack, e.g. a run's best_model.bpk), not a PyTorch or safetensors state_dict: load it with `VisionModel::load` (`ResNet::load`, `AnyModel::load`)", path.display())]
    BurnpackModel {
        /// The file.
        path: PathBuf,
    },

    /// A pickled Python object (typically a whole `nn.Module`) instead of a state_dict.
    #[error("'{}' holds a pickled `{found}` object, not a state_dict: {RESAVE_HINT}", path.display())]
    NotAStateDict {
        /// The file.
        path: PathBuf,
        /// The Python type at the root of the pickle.
        found: String,
    },

    /// The checkpoint's pickle names a global that `torch.load(weights_only=True)` refuses
    /// (anything but PyTorch's tensor-rebuilding allow-list, see [`crate::weights::pickle`]):
    /// a pickled `nn.Module`, an optimizer or any other object, or a call such as `os.system`.
    /// Nothing from the file was run.
    #[error("'{}' was refused: its pickle names {globals}, which `torch.load(weights_only=True)` refuses too (only tensor-rebuilding globals are allowed; nothing from the file was run). If you trust the file, {RESAVE_HINT}", path.display())]
    UnsafePickle {
        /// The file.
        path: PathBuf,
        /// The refused globals (`module.name`), at most 10 then "and N more".
        globals: String,
    },

    /// Several state_dicts (or several wrapper prefixes) could be the weights.
    #[error("'{}' holds several state_dicts: {candidates}; choose one with `LoadOptions::key(\"{first}\")`", path.display())]
    AmbiguousStateDict {
        /// The file.
        path: PathBuf,
        /// The candidate keys, at most 10 then "and N more".
        candidates: String,
        /// The first candidate, for the hint.
        first: String,
    },

    /// `LoadOptions::key` names no state_dict of the file.
    #[error("'{}' has no state_dict under '{key}'; candidates: {candidates} (`LoadOptions::key`)", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key asked for.
        key: String,
        /// The keys that hold a state_dict, or the top-level keys when none does.
        candidates: String,
    },

    /// The file is damaged or truncated.
    #[error("'{}' is not a readable {format} file ({reason}); it may be truncated or corrupt: download or export it again", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// `PyTorch checkpoint` or `safetensors`.
        format: &'static str,
        /// What the reader reported.
        reason: String,
    },

    /// The file holds no state_dict of a registered family (none of
    /// [`ANCHORS`](super::keymap::ANCHORS)' key pairs, also not under `state_dict` or `model`).
    #[error("'{}' holds no weights of a known architecture (none of the key pairs that identify a torchvision ResNet, ConvNeXt, EfficientNet, MobileNetV3 or ViT state_dict, such as `conv1.weight` with `layer1.0.conv1.weight`; top-level keys: {keys}): {RESAVE_HINT}", path.display())]
    NotAModel {
        /// The file.
        path: PathBuf,
        /// Some of the keys found.
        keys: String,
    },

    /// The file's architecture is not the model's.
    #[error("'{}' holds weights of {file_arch}, but the model is {model_arch}: build the model for the file's architecture (`--arch {file_arch_name}`), or let `AnyModel::from_weights_file` read it from the file", path.display())]
    WrongArchitecture {
        /// The file.
        path: PathBuf,
        /// Description of the file's architecture.
        file_arch: String,
        /// The architecture name for the file's architecture, as `create_model` takes it
        /// (`resnet34`, or `auto` for a custom shape).
        file_arch_name: String,
        /// Description of the model's architecture.
        model_arch: String,
    },

    /// Same backbone, different number of classes.
    #[error("'{}' has a {file_classes}-class head but the model has {model_classes} classes: load only the backbone (`LoadOptions::backbone_only()` / `VisionModel::load_backbone`) to keep the new head, or build the model with {file_classes} classes", path.display())]
    HeadMismatch {
        /// The file.
        path: PathBuf,
        /// Classes of the file's `fc`.
        file_classes: usize,
        /// Classes of the model's `fc`.
        model_classes: usize,
    },

    /// Missing, unused or mis-shaped tensors (torchvision names).
    #[error("'{}': {mismatch}", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Every disagreement.
        mismatch: LoadMismatch,
    },

    /// The architecture could not be read from the file's tensor names and shapes.
    #[error("cannot infer the architecture of '{}': {reason}; give the architecture (`--arch`, `create_model`), or build the model from its configuration and load the file into it (`VisionModel::load_weights`)", path.display())]
    UnknownArchitecture {
        /// The file.
        path: PathBuf,
        /// What is missing or inconsistent.
        reason: String,
    },

    /// A name that is neither a registry entry nor an existing file.
    #[error("'{name}' is not a known weights name nor an existing file; known names: {known}")]
    UnknownWeights {
        /// The name given.
        name: String,
        /// The accepted names.
        known: String,
    },

    /// A tensor file for inference is not usable.
    #[error("input tensor file '{}': {reason}", path.display())]
    BadInput {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// An image could not be decoded.
    #[error("cannot read image '{}': {reason}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
}
