//! Saving and loading any (fine-tuned) [`VisionModel`] in Burn's native burnpack format (burn-store's
//! `BurnpackStore`), with its configuration and freeze state stored in the file's metadata so
//! one file is enough to rebuild it. Writes are atomic (burn-pack writes a temporary file and
//! renames it).

use std::path::Path;

use burn::store::burn_pack::Reader;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::contract::{ModelConfig, VisionModel};
use super::freeze::{self, FreezeState};
use crate::error::{Error, Result};
use crate::weights::report::LoadReport;

/// Metadata key under which the model description is stored.
pub const METADATA_KEY: &str = "finetune.model";
/// 2: a `family` tag, and stages named as the model names them (`layer4`; version 1 wrote
/// ResNet's `Layer4`, still read).
const FORMAT_VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct SavedModel {
    format_version: u32,
    /// The model family (absent in files written before there were several: `resnet`).
    #[serde(default = "resnet_family")]
    family: String,
    config: serde_json::Value,
    freeze: FreezeState,
}

fn resnet_family() -> String {
    "resnet".into()
}

/// Saves `model` (see [`VisionModel::save`]).
pub(crate) fn save<M: VisionModel>(model: &M, path: &Path) -> Result<()> {
    let config = model.config();
    let description = SavedModel {
        format_version: FORMAT_VERSION,
        family: config.family().to_string(),
        config: config
            .to_saved()
            .map_err(|e| Error::InvalidConfig(format!("cannot serialise model config: {e}")))?,
        freeze: model.freeze_state().clone(),
    };
    let json = serde_json::to_string(&description)
        .map_err(|e| Error::InvalidConfig(format!("cannot serialise model config: {e}")))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
    }
    let mut store = BurnpackStore::from_file(path)
        .auto_extension(false)
        .overwrite(true)
        .metadata(METADATA_KEY, json);
    model.save_into(&mut store).map_err(|e| Error::ModelWrite {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Loads a model of type `M` (see [`VisionModel::load`]).
pub(crate) fn load<M: VisionModel>(path: &Path, device: &Device) -> Result<M> {
    let bad = |reason: String| Error::ModelFile {
        path: path.to_path_buf(),
        reason,
    };
    if path.is_dir() {
        return Err(bad(
            "it is a directory: pass the model file (`*.bpk`) inside it".into(),
        ));
    }
    if !path.is_file() {
        return Err(bad("no such file".into()));
    }
    // An unreadable file (permissions, I/O) is reported as such, not as a damaged one.
    std::fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let reader =
        Reader::from_file_exact(path).map_err(|e| bad(format!("not a burnpack file ({e})")))?;
    let json = reader.metadata().get(METADATA_KEY).ok_or_else(|| {
        bad(format!(
            "the file has no '{METADATA_KEY}' metadata: it was not written by finetune's VisionModel::save"
        ))
    })?;
    let saved: SavedModel = serde_json::from_str(json)
        .map_err(|e| bad(format!("unreadable model description: {e}")))?;
    if saved.format_version > FORMAT_VERSION {
        return Err(bad(format!(
            "written by a newer finetune (format {}, this build reads {FORMAT_VERSION}); upgrade finetune",
            saved.format_version
        )));
    }
    let config = M::Config::from_saved(&saved.family, saved.config).map_err(bad)?;
    // Validate before anything is allocated: the configuration's bounds, and its agreement
    // with the tensors the file really stores (a crafted config cannot ask for more memory
    // than the file's own tensors take).
    config.validate().map_err(|e| {
        bad(format!(
            "its stored configuration is unusable ({e}); the file is damaged or was edited"
        ))
    })?;
    let tensors = reader
        .into_tensors()
        .map_err(|e| bad(format!("unreadable tensor table ({e})")))?;
    let stored = tensors
        .iter()
        .map(|t| t.shape.num_elements() as u64)
        .fold(0u64, u64::saturating_add);
    let expected = config.num_stored_values();
    if stored != expected {
        return Err(bad(format!(
            "its stored configuration ({}) describes {expected} values but the file holds {stored}: the file is damaged or was edited",
            config.describe()
        )));
    }
    drop(tensors);
    let mut model = config.try_init(device)?;
    let mut store = BurnpackStore::from_file(path)
        .auto_extension(false)
        .validate(true)
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| bad(format!("reading tensors failed: {e}")))?;
    LoadReport::strict(result, &[]).map_err(|e| bad(e.to_string()))?;
    if let Some(stage) = &saved.freeze.frozen_through {
        model
            .stages()
            .index_of(stage)
            .map_err(|e| bad(format!("its freeze state is unusable ({e})")))?;
    }
    Ok(freeze::apply_freeze(model, saved.freeze))
}
