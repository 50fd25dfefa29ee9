//! Weights from the Hugging Face Hub by timm's names: `hf-hub:timm/resnet50.a1_in1k` (a
//! revision after `@`: `hf-hub:timm/resnet50.a1_in1k@main`). The repository's `config.json`
//! (timm's `pretrained_cfg`: architecture, classes, input size, crop fraction, interpolation,
//! mean and std) and `model.safetensors` are fetched with the [`hf_hub`] crate's synchronous API
//! into the Hub's own cache (`$HF_HOME/hub`, `~/.cache/huggingface/hub` by default, the layout
//! Python's `huggingface_hub` shares), from `$HF_ENDPOINT` (`https://huggingface.co` by
//! default). Offline (`FINETUNE_OFFLINE=1` or `HF_HUB_OFFLINE=1`) only the cache is read.
//!
//! The crate's download rules hold here too:
//! - **checksums**: a file stored by the Hub's LFS is named in the cache by its SHA-256 (the
//!   `X-Linked-Etag` the Hub sends); the file's digest is checked against that name after every
//!   fetch and every cache hit, and a mismatch is an error (a freshly downloaded mismatch is
//!   removed);
//! - **no writes through planted links**: `hf_hub` creates its lock and partial files with
//!   `File::create`, which follows symbolic links, so a repository's cache folder holding a
//!   symbolic link among its blobs is refused before anything is fetched.
//!
//! timm's ResNets use torchvision's parameter names and load strictly into this crate's
//! ResNets; timm's other families name their parameters differently (`stem.0`,
//! `stages.N.blocks.M`, `blocks.N.attn`) and are refused, naming torchvision's weights of the
//! same architecture to use instead.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::tensor::Device;
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;

use super::Interpolation;
use super::preprocess::Preprocess;
use super::report::LoadReport;
use crate::error::{Error, Result};
use crate::model::{AnyConfig, AnyModel, ModelConfig, VisionModel};

/// The prefix of a Hub name.
pub const HUB_PREFIX: &str = "hf-hub:";

/// A model repository on the Hugging Face Hub (`hf-hub:timm/resnet50.a1_in1k[@revision]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubWeights {
    /// `owner/name`.
    pub repo: String,
    /// Branch, tag or commit (`main` when not given).
    pub revision: String,
}

impl FromStr for HubWeights {
    type Err = Error;

    /// Parses `hf-hub:OWNER/NAME[@REVISION]`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidConfig(format!(
                "'{s}' is not a Hub name: {why} (expected hf-hub:OWNER/NAME, e.g. hf-hub:timm/resnet50.a1_in1k, optionally @REVISION)"
            ))
        };
        let rest = s
            .strip_prefix(HUB_PREFIX)
            .ok_or_else(|| bad("it does not start with hf-hub:"))?;
        let (repo, revision) = match rest.split_once('@') {
            Some((repo, rev)) => (repo, rev),
            None => (rest, "main"),
        };
        let valid = |part: &str| {
            !part.is_empty()
                && part.len() <= 96
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        match repo.split_once('/') {
            Some((owner, name)) if valid(owner) && valid(name) => {}
            _ => {
                return Err(bad(
                    "the repository must be OWNER/NAME of letters, digits, '-', '_', '.'",
                ));
            }
        }
        if !valid(revision) && !revision.split('/').all(valid) {
            return Err(bad(
                "the revision holds characters a branch, tag or commit cannot",
            ));
        }
        Ok(HubWeights {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }
}

impl std::fmt::Display for HubWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.revision == "main" {
            write!(f, "{HUB_PREFIX}{}", self.repo)
        } else {
            write!(f, "{HUB_PREFIX}{}@{}", self.repo, self.revision)
        }
    }
}

/// timm's `config.json`: what the network is and how its images were prepared.
#[derive(Clone, Debug, Deserialize)]
struct TimmConfig {
    architecture: String,
    num_classes: Option<usize>,
    #[serde(default)]
    pretrained_cfg: PretrainedCfg,
}

/// timm's `pretrained_cfg` (the fields evaluation uses; timm's defaults when absent).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
struct PretrainedCfg {
    input_size: Vec<u32>,
    interpolation: String,
    mean: Vec<f32>,
    std: Vec<f32>,
    crop_pct: f64,
    num_classes: Option<usize>,
}

impl Default for PretrainedCfg {
    fn default() -> Self {
        PretrainedCfg {
            input_size: vec![3, 224, 224],
            interpolation: "bicubic".into(),
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            crop_pct: 0.875,
            num_classes: None,
        }
    }
}

impl PretrainedCfg {
    /// timm's evaluation transform (`transforms_factory.transforms_imagenet_eval`, centre
    /// crop): `Resize(floor(size / crop_pct))`, `CenterCrop(size)`, the interpolation, mean and
    /// std.
    fn preprocess(&self) -> Result<Preprocess> {
        let bad = |why: String| Error::InvalidConfig(format!("timm's pretrained_cfg: {why}"));
        let size = match self.input_size.as_slice() {
            [3, h, w] if h == w && (1..=crate::data::MAX_SIDE).contains(h) => *h,
            other => return Err(bad(format!("input_size {other:?} is not [3, N, N]"))),
        };
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return Err(bad(format!("crop_pct {} is not in (0, 1]", self.crop_pct)));
        }
        let interpolation = match self.interpolation.as_str() {
            "bilinear" => Interpolation::Bilinear,
            "bicubic" => Interpolation::Bicubic,
            other => {
                return Err(bad(format!(
                    "interpolation '{other}' (this crate resizes bilinear or bicubic)"
                )));
            }
        };
        let three = |v: &[f32], what: &str| -> Result<[f32; 3]> {
            <[f32; 3]>::try_from(v).map_err(|_| bad(format!("{what} {v:?} does not hold 3 values")))
        };
        Ok(Preprocess {
            resize: (f64::from(size) / self.crop_pct).floor() as u32,
            interpolation,
            crop: size,
            mean: three(&self.mean, "mean")?,
            std: three(&self.std, "std")?,
        })
    }
}

/// What [`load_hub`] loaded.
#[derive(Debug)]
pub struct HubModel {
    /// The network with the repository's weights (its own head).
    pub model: AnyModel,
    /// timm's evaluation preprocessing of these weights.
    pub preprocess: Preprocess,
    /// The strict load report.
    pub report: LoadReport,
    /// The cached `model.safetensors`.
    pub file: PathBuf,
}

/// Where [`load_hub_with`] looks: the Hub's address, its cache, and whether the network may be
/// used. [`HubOptions::from_env`] is what [`load_hub`] uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubOptions {
    /// The Hub's address (`$HF_ENDPOINT`, else `https://huggingface.co`).
    pub endpoint: String,
    /// The Hub cache directory (`$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Read the cache only: `FINETUNE_OFFLINE` or `HF_HUB_OFFLINE` set to `1`, `true` or
    /// `yes`.
    pub offline: bool,
}

impl HubOptions {
    /// The options the environment sets (see the fields).
    pub fn from_env() -> Self {
        let offline = crate::download::is_offline() || crate::download::env_flag("HF_HUB_OFFLINE");
        HubOptions {
            endpoint: std::env::var("HF_ENDPOINT")
                .unwrap_or_else(|_| "https://huggingface.co".to_string()),
            cache_dir: Cache::from_env().path().clone(),
            offline,
        }
    }
}

/// Refuses a repository cache folder whose `blobs/` holds a symbolic link (see the module
/// docs): `hf_hub` would write its lock or partial file through it.
fn check_no_planted_links(cache: &Cache, repo: &Repo) -> Result<()> {
    let blobs = cache.path().join(repo.folder_name()).join("blobs");
    let Ok(entries) = std::fs::read_dir(&blobs) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            return Err(Error::InvalidConfig(format!(
                "{} is a symbolic link in the Hub cache's blobs: nothing is downloaded through it; remove it (the Hub cache stores blobs as plain files)",
                entry.path().display()
            )));
        }
    }
    Ok(())
}

/// The SHA-256 a cached file must have: the name of the blob its snapshot entry points to,
/// when that is a SHA-256 (files stored by the Hub's LFS); `None` for small files named by a
/// git hash.
fn expected_sha256(path: &Path) -> Option<String> {
    let target = std::fs::canonicalize(path).ok()?;
    let name = target.file_name()?.to_str()?.to_string();
    (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

/// `filename` of `weights`: from the cache, else fetched (online); its SHA-256 checked.
fn fetch(weights: &HubWeights, filename: &str, options: &HubOptions) -> Result<PathBuf> {
    let repo = Repo::with_revision(
        weights.repo.clone(),
        RepoType::Model,
        weights.revision.clone(),
    );
    let cache = Cache::new(options.cache_dir.clone());
    let cached = cache.repo(repo.clone()).get(filename);
    let (path, fresh) = match cached {
        Some(path) => (path, false),
        None if options.offline => {
            return Err(Error::InvalidConfig(format!(
                "{weights}: {filename} is not in the Hub cache ({}) and the network is off (FINETUNE_OFFLINE / HF_HUB_OFFLINE): fetch it once online, or copy the Hub cache here",
                cache.path().display()
            )));
        }
        None => {
            check_no_planted_links(&cache, &repo)?;
            let api = ApiBuilder::from_cache(cache.clone())
                .with_endpoint(options.endpoint.trim_end_matches('/').to_string())
                .with_progress(false)
                .with_retries(0)
                .build()
                .map_err(|e| Error::InvalidConfig(format!("the Hub client: {e}")))?;
            let path = api.repo(repo.clone()).get(filename).map_err(|e| {
                Error::InvalidConfig(format!(
                    "{weights}: fetching {filename} from the Hub failed: {e} (check the name on huggingface.co, the network, or set FINETUNE_OFFLINE=1 to use the cache only)"
                ))
            })?;
            (path, true)
        }
    };
    if let Some(expected) = expected_sha256(&path) {
        let actual =
            crate::download::sha256_file(&path).map_err(|e| Error::io("reading", &path, e))?;
        if actual != expected {
            if fresh && let Ok(blob) = std::fs::canonicalize(&path) {
                let _ = std::fs::remove_file(&blob);
                let _ = std::fs::remove_file(&path);
            }
            return Err(Error::InvalidConfig(format!(
                "{weights}: {} has SHA-256 {actual}, the Hub named it {expected}: the file is damaged{}",
                path.display(),
                if fresh {
                    " and was removed; fetch it again"
                } else {
                    "; delete it from the Hub cache and fetch it again"
                }
            )));
        }
    }
    Ok(path)
}

/// Loads `weights` from the Hub (see the module docs): the architecture `config.json` names,
/// built with the repository's number of classes, its `model.safetensors` imported strictly,
/// and timm's evaluation preprocessing.
///
/// # Errors
/// [`Error::InvalidConfig`] when the repository cannot be fetched (or is not cached offline),
/// a file fails its checksum, `config.json` names an architecture this crate does not have or
/// a family whose timm parameter names it does not map, or its preprocessing is unusable;
/// import errors as [`VisionModel::load_weights`] reports them.
pub fn load_hub(weights: &HubWeights, device: &Device) -> Result<HubModel> {
    load_hub_with(weights, &HubOptions::from_env(), device)
}

/// [`load_hub`] from the Hub and cache of `options`.
///
/// # Errors
/// As [`load_hub`].
pub fn load_hub_with(
    weights: &HubWeights,
    options: &HubOptions,
    device: &Device,
) -> Result<HubModel> {
    let config_path = fetch(weights, "config.json", options)?;
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| Error::io("reading", &config_path, e))?;
    let config: TimmConfig = serde_json::from_str(&text).map_err(|e| {
        Error::InvalidConfig(format!(
            "{weights}: {} is not timm's config.json: {e}",
            config_path.display()
        ))
    })?;
    let classes = config
        .num_classes
        .or(config.pretrained_cfg.num_classes)
        .unwrap_or(1000);
    let arch = config.architecture.as_str();
    let any = AnyConfig::from_name(arch, classes).map_err(|e| {
        Error::InvalidConfig(format!(
            "{weights}: timm's architecture '{arch}' is not one this crate builds ({e})"
        ))
    })?;
    if any.family() != "resnet" {
        return Err(Error::InvalidConfig(format!(
            "{weights}: timm's {arch} names its parameters timm's way, which this crate maps for ResNets only; use torchvision's weights of the architecture instead ({arch}, e.g. --weights auto --arch {arch})"
        )));
    }
    let preprocess = config.pretrained_cfg.preprocess()?;
    let file = fetch(weights, "model.safetensors", options)?;
    let mut model = any.try_init(device)?;
    let report = model.load_weights(&file, &super::LoadOptions::strict())?;
    Ok(HubModel {
        model,
        preprocess,
        report,
        file,
    })
}
