//! Writing a model's weights as a PyTorch-compatible state_dict, in a `.safetensors` file or in
//! PyTorch's own `.pth` format: the
//! reference implementation's key names (torchvision's, through the model's
//! [`KeyMap`](super::keymap::KeyMap)) and tensor layouts (`Linear` weights `[out, in]`), with
//! the BatchNorm step counters (`num_batches_tracked`) PyTorch's strict `load_state_dict`
//! expects. The reverse of [`WeightsFile`](super::WeightsFile)'s import: a file written here
//! imports strictly into the same architecture, here or in torchvision.

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::ModuleSnapshot;
use burn::store::burn_pack::DType;

use super::keymap::IGNORED_SUFFIX;
use super::pth_writer::{StorageKind, Stored, pth_bytes};
use crate::error::{Error, Result};
use crate::model::VisionModel;

/// Saves `model`'s parameters and BatchNorm statistics to `path` as a safetensors state_dict
/// with the reference implementation's names and layouts (`layer1.0.bn1.weight`,
/// `fc.weight` as `[num_classes, num_features]`), `f32`, plus an `int64` `num_batches_tracked`
/// of 0 per BatchNorm (PyTorch's strict loading wants the key; nothing reads its value when
/// the momentum is fixed). `metadata` is stored in the file's header (`__metadata__`), e.g. the
/// architecture name. The file is written atomically: a failed write leaves any previous
/// file at `path` as it was, and a symlink at `path` is replaced, never written through.
///
/// ```no_run
/// use burn::tensor::Device;
/// use finetune::model::create_model;
/// use finetune::weights::save_safetensors;
/// let model = create_model("resnet18", 10, &Device::flex())?;
/// save_safetensors(&model, "resnet18-finetuned.safetensors", [("arch", "resnet18")])?;
/// // Python: torchvision.models.resnet18(num_classes=10).load_state_dict(
/// //     safetensors.torch.load_file("resnet18-finetuned.safetensors"))
/// # Ok::<(), finetune::Error>(())
/// ```
///
/// # Errors
/// [`Error::Io`] when the file cannot be written; [`Error::InvalidConfig`] for a tensor that is
/// not `f32` (a model converted to another float type: convert it back first).
pub fn save_safetensors<'a, M: VisionModel>(
    model: &M,
    path: impl AsRef<Path>,
    metadata: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    let path = path.as_ref();
    let tensors = state_dict(model)?;
    let views = tensors
        .iter()
        .map(|(name, t)| {
            let dtype = match t.kind {
                StorageKind::Float => safetensors::Dtype::F32,
                StorageKind::Long => safetensors::Dtype::I64,
            };
            safetensors::tensor::TensorView::new(dtype, t.shape.clone(), &t.bytes)
                .map(|view| (name.clone(), view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidConfig(format!("building the safetensors file: {e}")))?;
    let metadata: std::collections::HashMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let metadata = (!metadata.is_empty()).then_some(metadata);
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| Error::InvalidConfig(format!("building the safetensors file: {e}")))?;
    write_file(path, &bytes)
}

/// Saves `model` as [`save_safetensors`] does (the same keys, layouts and
/// `num_batches_tracked`), in PyTorch's own `torch.save` format (`.pth`: a zip of a pickled
/// `OrderedDict` and one storage per tensor), which `torch.load(path, weights_only=True)` reads
/// with PyTorch's safe unpickler: `model.load_state_dict(torch.load(path))`. Written
/// atomically, never through a symlink at `path`.
///
/// ```no_run
/// use burn::tensor::Device;
/// use finetune::model::create_model;
/// use finetune::weights::save_pth;
/// let model = create_model("resnet18", 10, &Device::flex())?;
/// save_pth(&model, "resnet18-finetuned.pth")?;
/// // Python: torchvision.models.resnet18(num_classes=10).load_state_dict(
/// //     torch.load("resnet18-finetuned.pth", weights_only=True))
/// # Ok::<(), finetune::Error>(())
/// ```
///
/// # Errors
/// As [`save_safetensors`].
pub fn save_pth<M: VisionModel>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors = state_dict(model)?;
    let stored: Vec<(String, Stored<'_>)> = tensors
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                Stored {
                    kind: t.kind,
                    shape: &t.shape,
                    bytes: &t.bytes,
                },
            )
        })
        .collect();
    let bytes = pth_bytes(&stored)
        .map_err(|e| Error::InvalidConfig(format!("building the .pth file: {e}")))?;
    write_file(path, &bytes)
}

/// One tensor of an exported state_dict.
struct ExportTensor {
    kind: StorageKind,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// `model`'s state_dict in the reference implementation's names and layouts, sorted by name,
/// with an `int64` `num_batches_tracked` of 0 per BatchNorm.
fn state_dict<M: VisionModel>(model: &M) -> Result<BTreeMap<String, ExportTensor>> {
    let key_map = model.key_map();
    let mut tensors = BTreeMap::new();
    for tensor in model.collect(None, None, true) {
        let ours = tensor.name.clone();
        let shape: Vec<usize> = tensor.shape.iter().copied().collect();
        let raw = tensor
            .to_bytes()
            .map_err(|e| Error::InvalidConfig(format!("reading {ours}: {e}")))?;
        // A model trained in half precision (`--dtype bf16/f16`) is widened to f32, exactly:
        // torchvision's state_dicts are f32.
        let widen = |half: fn([u8; 2]) -> f32| -> Vec<u8> {
            raw.chunks_exact(2)
                .flat_map(|b| half([b[0], b[1]]).to_le_bytes())
                .collect()
        };
        let bytes: Vec<u8> = match tensor.dtype {
            DType::F32 => raw.to_vec(),
            DType::BF16 => widen(|b| burn::tensor::bf16::from_le_bytes(b).to_f32()),
            DType::F16 => widen(|b| burn::tensor::f16::from_le_bytes(b).to_f32()),
            other => {
                return Err(Error::InvalidConfig(format!(
                    "{ours} is {other:?}: only f32, bf16 and f16 models are exported (as f32)"
                )));
            }
        };
        let (name, transposed) = key_map.reference_layout(&ours);
        let (shape, bytes) = if transposed && shape.len() == 2 {
            (
                vec![shape[1], shape[0]],
                transpose_f32(&bytes, shape[0], shape[1]),
            )
        } else {
            (shape, bytes)
        };
        if let Some(module) = name.strip_suffix(".running_mean") {
            tensors.insert(
                format!("{module}.{IGNORED_SUFFIX}"),
                ExportTensor {
                    kind: StorageKind::Long,
                    shape: Vec::new(),
                    bytes: 0i64.to_le_bytes().to_vec(),
                },
            );
        }
        tensors.insert(
            name,
            ExportTensor {
                kind: StorageKind::Float,
                shape,
                bytes,
            },
        );
    }
    Ok(tensors)
}

/// Writes `bytes` to `path` atomically, creating its directory.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
    }
    crate::fsutil::write_atomic(path, bytes).map_err(|e| Error::io("writing", path, e))
}

/// A row-major `rows x cols` `f32` matrix (little-endian bytes) transposed.
fn transpose_f32(bytes: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes.len()];
    for r in 0..rows {
        for c in 0..cols {
            let from = (r * cols + c) * 4;
            let to = (c * rows + r) * 4;
            out[to..to + 4].copy_from_slice(&bytes[from..from + 4]);
        }
    }
    out
}

/// What [`export_pytorch`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Export {
    /// The state_dict (`.safetensors`, or `.pth`).
    pub state_dict: std::path::PathBuf,
    /// Its description beside it (the same path with `.json`).
    pub description: std::path::PathBuf,
    /// The architecture name (`resnet18`), or `None` for a custom shape.
    pub arch: Option<String>,
    /// The Python line that builds the network to load the state_dict into (torchvision's
    /// `get_model`), when torchvision has the architecture.
    pub torchvision: Option<String>,
}

/// Exports `model` for PyTorch: [`save_safetensors`] to `out` when it ends in `.safetensors`,
/// [`save_pth`] when it ends in `.pth` or `.pt`, and beside it `out` with `.json`, describing
/// how to rebuild the network —
/// `arch` (torchvision's name), `num_classes`, `in_channels`, `torchvision` (the
/// `torchvision.models.get_model(...)` call; `null` for `finetune_mini` and custom shapes),
/// `normalize` (mean and standard deviation the model expects), `family` and `config` (this
/// crate's configuration, as saved models store it). Both files are written atomically.
///
/// ```no_run
/// use burn::tensor::Device;
/// use finetune::model::{AnyModel, VisionModel};
/// let model = AnyModel::load("runs/finetune/best_model.bpk", &Device::flex())?;
/// let export = finetune::weights::export_pytorch(&model, "model.safetensors")?;
/// println!("{}", export.torchvision.unwrap_or_default()); // torchvision.models.get_model("resnet18", num_classes=10)
/// # Ok::<(), finetune::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidConfig`] when `out` ends in none of `.safetensors`, `.pth`, `.pt`; as
/// [`save_safetensors`].
pub fn export_pytorch<M: VisionModel>(model: &M, out: impl AsRef<Path>) -> Result<Export> {
    use crate::model::ModelConfig;
    let out = out.as_ref();
    let pth = match out.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => false,
        Some("pth" | "pt") => true,
        _ => {
            return Err(Error::InvalidConfig(format!(
                "{} must end in .safetensors or .pth / .pt (the extension chooses the state_dict format written)",
                out.display()
            )));
        }
    };
    let config = model.config();
    let any = config.as_any();
    let arch = any.as_ref().and_then(crate::model::AnyConfig::arch_name);
    let torchvision = arch.as_ref().filter(|a| *a != "finetune_mini").map(|a| {
        format!(
            "torchvision.models.get_model({a:?}, num_classes={})",
            model.num_classes()
        )
    });
    let normalize = model.normalization();
    let label = arch.clone().unwrap_or_else(|| config.describe());
    let description = serde_json::json!({
        "arch": arch,
        "num_classes": model.num_classes(),
        "in_channels": model.in_channels(),
        "torchvision": torchvision,
        "normalize": {"mean": normalize.mean, "std": normalize.std},
        "family": config.family(),
        "config": config.to_saved().ok(),
    });
    let text = serde_json::to_string_pretty(&description)
        .map_err(|e| Error::InvalidConfig(format!("describing the model: {e}")))?;
    if pth {
        save_pth(model, out)?;
    } else {
        save_safetensors(model, out, [("arch", label.as_str())])?;
    }
    let json = out.with_extension("json");
    crate::fsutil::write_atomic(&json, format!("{text}\n").as_bytes())
        .map_err(|e| Error::io("writing", &json, e))?;
    Ok(Export {
        state_dict: out.to_path_buf(),
        description: json,
        arch,
        torchvision,
    })
}
