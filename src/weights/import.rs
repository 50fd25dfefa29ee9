//! Importing torchvision (and timm) weights of every registered family: PyTorch `.pth`
//! checkpoints (`torch.save` zip archives of a state_dict, as torchvision publishes them) and
//! `.safetensors` files, read by burn-store's `PytorchStore` and `SafetensorsStore` with its
//! `PyTorchToBurnAdapter`. Key names are mapped by the model's [`KeyMap`](keymap::KeyMap)
//! ([`VisionModel::key_map`]).
//!
//! A `.pth` is first checked against PyTorch's `torch.load(weights_only=True)` allow-list
//! ([`pickle`]): a pickle naming any other global (a whole pickled `nn.Module`,
//! `os.system`, ...) is refused with [`WeightsError::UnsafePickle`], naming it. It may hold a
//! bare state_dict or a checkpoint dict with the state_dict under a key (`state_dict`, `model`,
//! nested keys too: found automatically and reported in [`LoadReport::key`]). Several
//! state_dicts (`{"model": .., "ema": ..}`) are [`WeightsError::AmbiguousStateDict`], naming the
//! candidates: pick one with [`LoadOptions::key`]. A wrapper prefix on every key (`module.` from
//! `nn.DataParallel`/DDP, Lightning's `model.` under `state_dict`, `torch.compile`'s
//! `_orig_mod.`, in `.safetensors` files too) is stripped when it is the only way the keys name
//! a model, and reported in [`LoadReport::stripped_prefix`]. A state_dict is recognised by one
//! of [`keymap::ANCHORS`]' key pairs (a ResNet's `conv1.weight` and `layer1.0.conv1.weight`, a
//! ViT's `conv_proj.weight` and its first encoder block, ...). Every other entry of the file (`epoch`, an
//! optimizer's state, strings) is listed in [`LoadReport::other_entries`].
//!
//! Loading is strict by default, like PyTorch's `load_state_dict(strict=True)`: every tensor of
//! the model must come from the file with the right shape, and the file may hold nothing else
//! (`num_batches_tracked` is the one key ignored). [`LoadOptions::backbone_only`] is the
//! transfer-learning case: everything but the classifier head (the model's last stage: `fc`,
//! `classifier.N`, `heads.head`) is loaded and the head is reported as left as it was. A failed
//! load leaves the model untouched; a successful one keeps its parameters' ids and freeze state.
//!
//! ```no_run
//! use burn::tensor::{Device, FloatDType, Tensor};
//! use finetune::model::{ResNetConfig, VisionModel};
//! use finetune::weights::LoadOptions;
//!
//! let device = Device::default();
//! let mut model = ResNetConfig::resnet18(10).init(&device);
//! // A 1000-class ImageNet file into a 10-class model: keep the new head.
//! let report = model.load_weights("resnet18-f37072fd.pth", &LoadOptions::backbone_only())?;
//! println!("{report}");
//! # Ok::<(), finetune::Error>(())
//! ```

use crate::model::{ModelConfig, VisionModel, apply_freeze, regex_literal, under};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::store::pytorch_reader::{PickleValue, PytorchError, PytorchReader};
use burn::store::{
    ApplyResult, KeyRemapper, ModuleSnapshot, ModuleStore, PathFilter, PyTorchToBurnAdapter,
    PytorchStore, PytorchStoreError, SafetensorsStore, SafetensorsStoreError,
};
use burn::tensor::{Device, FloatDType, Tensor};

use super::error::WeightsError;
use super::keymap::{self, IGNORED_SUFFIX};
use super::pickle::{self, ScanError, short_list};
use super::report::{LoadMismatch, LoadReport};
use crate::error::Result;
use crate::model::{BlockKind, ResNet, ResNetConfig, Stem};

/// The container format of a weights file, detected from its first bytes (not its extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightsFormat {
    /// A `torch.save` file (zip archive, or the legacy pickle format).
    Pytorch,
    /// A safetensors file.
    Safetensors,
}

impl fmt::Display for WeightsFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightsFormat::Pytorch => "PyTorch checkpoint",
            WeightsFormat::Safetensors => "safetensors",
        })
    }
}

/// How to load: strictly (the default) or backbone only, and where the state_dict is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    backbone_only: bool,
    key: Option<String>,
}

impl LoadOptions {
    /// Every tensor, strictly (the default).
    pub fn strict() -> Self {
        Self::default()
    }

    /// Everything but the classifier head (the model's last stage), which keeps its values and is
    /// reported as skipped
    /// (the file's head, of any size, is not used). Missing, unused or mis-shaped backbone
    /// tensors are still errors.
    pub fn backbone_only() -> Self {
        LoadOptions {
            backbone_only: true,
            key: None,
        }
    }

    /// Reads the state_dict under this key of a checkpoint (`"model"`, `"ema"`,
    /// `"state_dict"`; dotted for nested keys or a prefix inside one dict:
    /// `"state_dict.model_ema"`), as the candidates of
    /// [`WeightsError::AmbiguousStateDict`] name them. Without it, the one state_dict of the
    /// file is found wherever it is, and several are an error.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The same as [`key`](Self::key).
    pub fn with_top_level_key(self, key: impl Into<String>) -> Self {
        self.key(key)
    }

    /// The key given with [`key`](Self::key), if any.
    pub fn state_dict_key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Whether only the backbone is loaded.
    pub fn is_backbone_only(&self) -> bool {
        self.backbone_only
    }
}

enum Store {
    Pytorch(PytorchStore),
    Safetensors(SafetensorsStore),
}

/// An opened weights file: its format, tensor names and shapes (read from the header; the
/// tensor data is read only when loading).
pub struct WeightsFile {
    path: PathBuf,
    format: WeightsFormat,
    /// The key asked for, to reopen the file the same way.
    requested_key: Option<String>,
    /// Where the state_dict was found and what was stripped.
    selection: Selection,
    /// The chosen state_dict's keys (its prefix stripped, in the reference implementation's
    /// names), with their shapes as stored.
    tensors: BTreeMap<String, Vec<usize>>,
    store: Option<Store>,
}

impl fmt::Debug for WeightsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightsFile")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("selection", &self.selection)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// The largest JSON header the safetensors format accepts.
const SAFETENSORS_MAX_HEADER: u64 = 100_000_000;

/// Detects the container from the first bytes.
fn sniff(path: &Path) -> Result<WeightsFormat, WeightsError> {
    let io = |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut header = Vec::with_capacity(262);
    std::fs::File::open(path)
        .map_err(io)?
        .take(262)
        .read_to_end(&mut header)
        .map_err(io)?;
    if header.starts_with(b"PK\x03\x04") || header.starts_with(b"PK\x05\x06") {
        return Ok(WeightsFormat::Pytorch);
    }
    if let Some(len) = header.first_chunk::<8>().map(|b| u64::from_le_bytes(*b))
        && (2..=SAFETENSORS_MAX_HEADER).contains(&len)
        && header.get(8) == Some(&b'{')
    {
        return Ok(WeightsFormat::Safetensors);
    }
    // A pickle (the legacy `torch.save` format starts with one) or the pre-2018 tar format.
    if header.first() == Some(&0x80) || header.get(257..262) == Some(b"ustar") {
        return Ok(WeightsFormat::Pytorch);
    }
    if header.starts_with(&burn::store::burn_pack::MAGIC_NUMBER.to_le_bytes()) {
        return Err(WeightsError::BurnpackModel {
            path: path.to_path_buf(),
        });
    }
    Err(WeightsError::UnknownFormat {
        path: path.to_path_buf(),
    })
}

/// Python type name of a pickle's root value, for the "not a state_dict" error.
fn python_type(value: &PickleValue) -> Option<String> {
    Some(match value {
        PickleValue::Dict(_) => return None,
        PickleValue::None => "None".into(),
        PickleValue::Bool(_) => "bool".into(),
        PickleValue::Int(_) => "int".into(),
        PickleValue::Float(_) => "float".into(),
        PickleValue::String(_) => "str".into(),
        PickleValue::List(_) => "list".into(),
        PickleValue::Bytes(_) => "bytes".into(),
        PickleValue::Unsupported(name) => name.clone(),
    })
}

impl WeightsFile {
    /// Opens a `.pth` or `.safetensors` file (detected from its content) and reads its tensor
    /// names and shapes. A checkpoint whose state_dict sits under one top-level key (`{"epoch":
    /// .., "state_dict": ..}`, `{"model": .., "optimizer": ..}`) is found automatically.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &LoadOptions::default())
    }

    /// [`open`](Self::open) with the state_dict chosen by `options` ([`LoadOptions::key`]).
    pub fn open_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            return Err(WeightsError::IsADirectory {
                path: path.to_path_buf(),
            }
            .into());
        }
        if !path.is_file() {
            return Err(WeightsError::NotFound {
                path: path.to_path_buf(),
            }
            .into());
        }
        let format = sniff(path)?;
        let file = match format {
            WeightsFormat::Safetensors => Self::open_safetensors(path, options)?,
            WeightsFormat::Pytorch => Self::open_pytorch(path, options)?,
        };
        if file.family().is_none() {
            let tops: Vec<String> = file
                .tensors
                .keys()
                .map(|k| k.split('.').next().unwrap_or(k).to_string())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            return Err(WeightsError::NotAModel {
                path: path.to_path_buf(),
                keys: if tops.is_empty() {
                    "none".into()
                } else {
                    short_list(&tops, 10)
                },
            }
            .into());
        }
        Ok(file)
    }

    fn open_pytorch(path: &Path, options: &LoadOptions) -> Result<Self, WeightsError> {
        // What `torch.load(weights_only=True)` refuses, refused before anything else is read.
        match pickle::scan_file(path) {
            Ok(refused) if !refused.0.is_empty() => {
                let globals: Vec<String> = refused.0.iter().map(|g| format!("`{g}`")).collect();
                return Err(WeightsError::UnsafePickle {
                    path: path.to_path_buf(),
                    globals: short_list(&globals, 10),
                });
            }
            Ok(_) => {}
            Err(ScanError::Io(source)) => {
                return Err(WeightsError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
            Err(ScanError::Corrupt(reason)) => {
                return Err(WeightsError::Corrupt {
                    path: path.to_path_buf(),
                    format: "PyTorch checkpoint",
                    reason,
                });
            }
        }
        let root =
            PytorchReader::read_pickle_data(path, None).map_err(|e| reader_error(path, e))?;
        if let Some(found) = python_type(&root) {
            return Err(WeightsError::NotAStateDict {
                path: path.to_path_buf(),
                found,
            });
        }
        let mut keys = BTreeSet::new();
        flatten_tensors(&root, String::new(), 0, &mut keys);
        let top_keys = match &root {
            PickleValue::Dict(map) => map.keys().cloned().collect::<BTreeSet<_>>(),
            _ => BTreeSet::new(),
        };
        let prefix = choose_prefix(path, &keys, options.key.as_deref(), &top_keys)?;
        let nested = nested_candidates(&keys, &prefix);
        let selection = Selection::in_tree(&root, prefix, nested);
        let mut store = PytorchStore::from_file(path)
            .remap(remapper_for(path, &selection.prefix, &[])?)
            .map_indices_contiguous(false)
            .validate(false)
            .allow_partial(true);
        let tensors = match store.get_all_tensors() {
            Ok(map) => selection.inside(map.iter().map(|(k, t)| (k, t.shape.to_vec()))),
            Err(e) => return Err(diagnose_pytorch(path, e)),
        };
        Ok(WeightsFile {
            path: path.to_path_buf(),
            format: WeightsFormat::Pytorch,
            requested_key: options.key.clone(),
            selection,
            tensors,
            store: Some(Store::Pytorch(store)),
        })
    }

    fn open_safetensors(path: &Path, options: &LoadOptions) -> Result<Self, WeightsError> {
        let corrupt = |e: SafetensorsStoreError| WeightsError::Corrupt {
            path: path.to_path_buf(),
            format: "safetensors",
            reason: clip(&e.to_string()),
        };
        let keys: BTreeSet<String> = SafetensorsStore::from_file(path)
            .get_all_tensors()
            .map_err(corrupt)?
            .keys()
            .cloned()
            .collect();
        let prefix = choose_prefix(path, &keys, options.key.as_deref(), &BTreeSet::new())?;
        let nested = nested_candidates(&keys, &prefix);
        let selection = Selection::flat(&keys, prefix, nested);
        let mut store = SafetensorsStore::from_file(path)
            .remap(remapper_for(path, &selection.prefix, &[])?)
            .with_from_adapter(PyTorchToBurnAdapter)
            .map_indices_contiguous(false)
            .validate(false)
            .allow_partial(true);
        let tensors = selection.inside(
            store
                .get_all_tensors()
                .map_err(corrupt)?
                .iter()
                .map(|(k, t)| (k, t.shape.to_vec())),
        );
        Ok(WeightsFile {
            path: path.to_path_buf(),
            format: WeightsFormat::Safetensors,
            requested_key: options.key.clone(),
            selection,
            tensors,
            store: Some(Store::Safetensors(store)),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The detected container format.
    pub fn format(&self) -> WeightsFormat {
        self.format
    }

    /// The key the state_dict was read from (dotted when nested), if not the file's root.
    pub fn top_level_key(&self) -> Option<&str> {
        self.selection.key.as_deref()
    }

    /// The wrapper prefix stripped from every key (`module.`, `model.`, `_orig_mod.`), if any.
    pub fn stripped_prefix(&self) -> Option<&str> {
        self.selection.stripped.as_deref()
    }

    /// The file's entries that are not tensors of the state_dict, described (`epoch = 10`).
    pub fn other_entries(&self) -> &[String] {
        &self.selection.other_entries
    }

    /// Tensor names (torchvision's) and shapes as stored, sorted by name.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    }

    /// The shape of a tensor of the state_dict, by its reference name (`fc.weight`).
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(Vec::as_slice)
    }

    /// Whether the file holds `model`'s classifier head (a headless file, timm's
    /// `num_classes=0`, loads with [`LoadOptions::backbone_only`]).
    pub fn has_head<M: VisionModel>(&self, model: &M) -> bool {
        let key_map = model.key_map();
        let head = model
            .stages()
            .head()
            .map(|h| h.modules.clone())
            .unwrap_or_default();
        model
            .tensor_paths()
            .into_iter()
            .filter(|(p, _)| head.iter().any(|h| under(p, h)))
            .all(|(p, s)| self.shape(&key_map.to_reference(&p, s).0).is_some())
    }

    /// The family whose state_dict the file holds (`resnet`, `convnext`, `efficientnet`,
    /// `mobilenet_v3`, `vit`), recognised by [`keymap::ANCHORS`].
    pub fn family(&self) -> Option<&'static str> {
        keymap::ANCHORS
            .iter()
            .find(|(_, a, b)| self.tensors.contains_key(*a) && self.tensors.contains_key(*b))
            .map(|(family, ..)| *family)
    }

    /// The ResNet the file's tensor names and shapes describe: depth per stage, block kind,
    /// stage widths, stem, input channels and number of classes. For any family, see
    /// [`infer_architecture`](crate::model::infer_architecture) (what an architecture of `auto`
    /// means in the examples).
    ///
    /// # Errors
    /// [`WeightsError::UnknownArchitecture`] saying what does not fit, or naming the family the
    /// file holds when it is not a ResNet.
    pub fn infer_config(&self) -> Result<ResNetConfig> {
        let fail = |reason: String| WeightsError::UnknownArchitecture {
            path: self.path.clone(),
            reason,
        };
        if let Some(family) = self.family().filter(|f| *f != "resnet") {
            return Err(fail(format!(
                "it holds a {family}, not a ResNet: read it with AnyModel::from_weights_file (or --arch auto)"
            ))
            .into());
        }
        let conv1 = self
            .shape("conv1.weight")
            .ok_or_else(|| fail("no conv1.weight".into()))?;
        let [stem_width, in_channels, kh, kw] = *conv1 else {
            return Err(fail(format!("conv1.weight has shape {conv1:?}, expected 4 dims")).into());
        };
        let stem = match (kh, kw) {
            (7, 7) => Stem::ImageNet,
            (3, 3) => Stem::Cifar,
            _ => return Err(fail(format!("a {kh}x{kw} stem convolution")).into()),
        };
        let block = if self.tensors.contains_key("layer1.0.conv3.weight") {
            BlockKind::Bottleneck
        } else {
            BlockKind::Basic
        };
        let mut layers = [0usize; 4];
        let mut widths = [0usize; 4];
        for stage in 0..4 {
            let blocks = (0..)
                .take_while(|b| {
                    self.tensors
                        .contains_key(&format!("layer{}.{b}.conv1.weight", stage + 1))
                })
                .count();
            if blocks == 0 {
                return Err(fail(format!("no layer{}.0.conv1.weight", stage + 1)).into());
            }
            layers[stage] = blocks;
            let conv1 = self
                .shape(&format!("layer{}.0.conv1.weight", stage + 1))
                .unwrap_or(&[]);
            widths[stage] = conv1.first().copied().unwrap_or(0);
            if block == BlockKind::Bottleneck {
                let conv3 = self
                    .shape(&format!("layer{}.0.conv3.weight", stage + 1))
                    .unwrap_or(&[]);
                if conv3.first() != Some(&(widths[stage] * 4)) {
                    return Err(fail(format!(
                        "layer{}.0 has bottleneck width {} but {:?} output channels: wide or grouped ResNets (wide_resnet50_2, resnext) are not supported",
                        stage + 1,
                        widths[stage],
                        conv3.first()
                    ))
                    .into());
                }
            }
        }
        if stem_width != widths[0] {
            return Err(fail(format!(
                "the stem has {stem_width} channels but layer1 is {} wide",
                widths[0]
            ))
            .into());
        }
        // A headless file (timm's `num_classes=0`): ImageNet's 1000 classes, whose head the
        // file then lacks ([`has_head`](Self::has_head)).
        let widest = widths[3] * block.expansion();
        let [num_classes, features] = match self.shape("fc.weight") {
            None => [1000, widest],
            Some(&[n, f]) => [n, f],
            Some(fc) => {
                return Err(fail(format!("fc.weight has shape {fc:?}, expected 2 dims")).into());
            }
        };
        let config = ResNetConfig::new(layers, block, num_classes)
            .with_stem(stem)
            .with_widths(widths)
            .with_in_channels(in_channels);
        if features != config.num_features() {
            return Err(fail(format!(
                "fc takes {features} features but layer4 gives {}",
                config.num_features()
            ))
            .into());
        }
        config.validate()?;
        Ok(config)
    }

    /// Loads the file into `model` (see [`LoadOptions`]), through its family's key map
    /// ([`VisionModel::load_state_dict`]). On error the model is unchanged.
    ///
    /// # Errors
    /// [`WeightsError`] saying which tensors are missing, unused or mis-shaped (in the
    /// reference implementation's names), or that the file holds another architecture.
    pub fn load_into<M: VisionModel>(
        &mut self,
        model: &mut M,
        options: &LoadOptions,
    ) -> Result<LoadReport> {
        model.load_state_dict(self, options)
    }

    /// Every family's import: the model's [`KeyMap`](keymap::KeyMap) on top of the shared
    /// reader, loaded into a fresh copy of the model (so that a refused load changes nothing),
    /// which then replaces it with the freeze state re-applied.
    pub(crate) fn load_model<M: VisionModel>(
        &mut self,
        model: &mut M,
        options: &LoadOptions,
    ) -> Result<LoadReport> {
        let family = model.config().family();
        if let Some(theirs) = self.family()
            && theirs != family
        {
            return Err(WeightsError::WrongArchitecture {
                path: self.path.clone(),
                file_arch: self.describe_architecture(),
                file_arch_name: self.architecture_name(),
                model_arch: model.arch(),
            }
            .into());
        }
        let key_map = model.key_map();
        let head: Vec<String> = model
            .stages()
            .head()
            .map(|h| h.modules.clone())
            .unwrap_or_default();
        let is_head = move |path: &str| head.iter().any(|h| under(path, h));
        let (head_paths, body_paths): (Vec<String>, Vec<String>) = model
            .tensor_paths()
            .into_iter()
            .map(|(p, _)| p)
            .partition(|p| is_head(p));
        let filter = if options.backbone_only {
            PathFilter::new().with_full_paths(body_paths)
        } else {
            PathFilter::new()
        };
        let device = model.device();
        let mut candidate = model.config().try_init(&device)?;
        if options.backbone_only {
            // The head stays as it is in `model`.
            let keep = PathFilter::new().with_full_paths(head_paths);
            candidate.apply(model.collect(Some(keep), None, false), None, None, false);
        }
        let remapper = remapper_for(&self.path, &self.selection.prefix, &key_map.patterns())?;
        let store = self.store.take();
        let (store, result) = match store {
            Some(Store::Pytorch(store)) => {
                let mut store = store.remap(remapper).filter(filter);
                let result = candidate.load_from(&mut store);
                (
                    Store::Pytorch(store),
                    result.map_err(|e| diagnose_pytorch(&self.path, e)),
                )
            }
            Some(Store::Safetensors(store)) => {
                let mut store = store.remap(remapper).filter(filter);
                let result = candidate.load_from(&mut store);
                (
                    Store::Safetensors(store),
                    result.map_err(|e| WeightsError::Corrupt {
                        path: self.path.clone(),
                        format: "safetensors",
                        reason: clip(&e.to_string()),
                    }),
                )
            }
            None => {
                // Only reachable after a panic inside a previous load: reopen.
                let reopened = WeightsFile::open_with(
                    &self.path,
                    &LoadOptions {
                        backbone_only: false,
                        key: self.requested_key.clone(),
                    },
                )?;
                *self = reopened;
                return self.load_model(model, options);
            }
        };
        self.store = Some(store);
        let mut result: ApplyResult = result?;
        // Tensors outside the chosen state_dict are described in `other_entries`, not unused.
        result.unused.retain(|k| !self.selection.is_outside(k));
        if options.backbone_only {
            // A headless file (timm's `num_classes=0`) has no head at all: that is fine too.
            let (head, rest): (Vec<_>, Vec<_>) =
                result.missing.into_iter().partition(|(p, _)| is_head(p));
            result.missing = rest;
            result.skipped.extend(head.into_iter().map(|(p, _)| p));
            result.skipped.sort();
            result.skipped.dedup();
        }
        match LoadReport::strict(result, &[IGNORED_SUFFIX]) {
            Ok(mut report) => {
                report.key = self.selection.key.clone();
                report.stripped_prefix = self.selection.stripped.clone();
                report.other_entries = self.selection.other_entries.clone();
                // burn-store keeps a tensor's stored precision: an f16 or f64 file would give
                // f16/f64 parameters, and the first forward pass with f32 inputs would panic.
                let candidate = adopt_ids(candidate.map(&mut DeviceFloatDType), model);
                *model = apply_freeze(candidate, model.freeze_state().clone());
                Ok(report)
            }
            Err(mismatch) => Err(self.explain(model, &key_map, mismatch).into()),
        }
    }

    /// The architecture the file holds, described (`resnet34`, `convnext_tiny`, a ResNet's
    /// custom shape), or its family when no registered variant matches.
    pub fn describe_architecture(&self) -> String {
        match crate::model::infer_architecture(self) {
            Ok(config) => config.label(),
            Err(_) => match self.family() {
                Some(family) => format!("{family} (of a shape no registered architecture has)"),
                None => "state_dict of no known architecture".to_string(),
            },
        }
    }

    /// The name `create_model` takes for the file's architecture, or `auto`.
    fn architecture_name(&self) -> String {
        crate::model::infer_architecture(self)
            .ok()
            .and_then(|c| c.arch_name())
            .unwrap_or_else(|| "auto".to_string())
    }

    /// Turns a strict-load failure into the most useful error: a different architecture, a
    /// different head, or the full list of disagreeing tensors (in the reference names).
    fn explain<M: VisionModel>(
        &self,
        model: &M,
        key_map: &keymap::KeyMap,
        mismatch: LoadMismatch,
    ) -> WeightsError {
        if let Ok(theirs) = crate::model::infer_architecture(self)
            && let Some(ours) = model.config().as_any()
            && !theirs.same_backbone(&ours)
        {
            return WeightsError::WrongArchitecture {
                path: self.path.clone(),
                file_arch: theirs.label(),
                file_arch_name: theirs.arch_name().unwrap_or_else(|| "auto".to_string()),
                model_arch: ours.label(),
            };
        }
        let head: Vec<String> = model
            .stages()
            .head()
            .map(|h| h.modules.clone())
            .unwrap_or_default();
        let in_head = |p: &str| head.iter().any(|h| under(p, h));
        let head_only = mismatch.missing.is_empty()
            && mismatch.unused.is_empty()
            && mismatch.other.is_empty()
            && !mismatch.mismatched.is_empty()
            && mismatch.mismatched.iter().all(|(p, _, _)| in_head(p));
        if head_only {
            // The classifier's weight: its first reference dimension is the class count.
            let file_classes = mismatch
                .mismatched
                .iter()
                .filter(|(p, _, _)| p.ends_with(".weight"))
                .find_map(|(p, m, _)| {
                    let (key, _) = key_map.to_reference(p, m.clone());
                    self.shape(&key).and_then(|s| s.first().copied())
                });
            if let Some(file_classes) = file_classes {
                return WeightsError::HeadMismatch {
                    path: self.path.clone(),
                    file_classes,
                    model_classes: model.num_classes(),
                };
            }
        }
        let reference = |p: &String| key_map.to_reference(p, Vec::new()).0;
        WeightsError::Mismatch {
            path: self.path.clone(),
            mismatch: LoadMismatch {
                missing: mismatch.missing.iter().map(reference).collect(),
                unused: mismatch.unused.iter().map(reference).collect(),
                mismatched: mismatch
                    .mismatched
                    .into_iter()
                    .map(|(p, m, f)| {
                        let (key, m) = key_map.to_reference(&p, m);
                        let (_, f) = key_map.to_reference(&p, f);
                        (key, m, f)
                    })
                    .collect(),
                other: mismatch.other,
            },
        }
    }
}

/// Marks the file keys outside the chosen state_dict, so that they never meet a model path.
const OUTSIDE: char = '\u{1}';

/// At most this many characters of a reader's message go into an error.
const MAX_REASON: usize = 300;

/// Keeps a message to one short line.
fn clip(text: &str) -> String {
    let line = text.replace('\n', " ");
    match line.char_indices().nth(MAX_REASON) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line,
    }
}

/// The deepest nesting of dicts and lists looked into for tensors and entries.
const MAX_DEPTH: usize = 64;

fn is_tensor(value: &PickleValue) -> bool {
    matches!(value, PickleValue::Unsupported(t) if t == "torch.Tensor")
}

/// Every tensor's flattened name (dict keys and list indices joined by `.`, as burn-store's
/// reader names them).
fn flatten_tensors(value: &PickleValue, path: String, depth: usize, out: &mut BTreeSet<String>) {
    if depth > MAX_DEPTH {
        return;
    }
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        PickleValue::Dict(map) => {
            for (key, value) in map {
                flatten_tensors(value, join(key), depth + 1, out);
            }
        }
        PickleValue::List(items) => {
            for (index, value) in items.iter().enumerate() {
                flatten_tensors(value, join(&index.to_string()), depth + 1, out);
            }
        }
        value if is_tensor(value) => {
            out.insert(path);
        }
        _ => {}
    }
}

fn count_tensors(value: &PickleValue, depth: usize) -> usize {
    match value {
        _ if depth > MAX_DEPTH => 0,
        PickleValue::Dict(map) => map.values().map(|v| count_tensors(v, depth + 1)).sum(),
        PickleValue::List(items) => items.iter().map(|v| count_tensors(v, depth + 1)).sum(),
        value => usize::from(is_tensor(value)),
    }
}

/// `epoch = 10`, `optimizer: dict with 40 tensors`, `arch = "resnet18"`.
fn describe_entry(name: &str, value: &PickleValue) -> String {
    let container = |kind: &str, len: usize| match count_tensors(value, 0) {
        0 => format!("{name}: {kind} of {len} entries"),
        1 => format!("{name}: {kind} with 1 tensor"),
        n => format!("{name}: {kind} with {n} tensors"),
    };
    match value {
        PickleValue::None => format!("{name} = None"),
        PickleValue::Bool(b) => format!("{name} = {}", if *b { "True" } else { "False" }),
        PickleValue::Int(i) => format!("{name} = {i}"),
        PickleValue::Float(x) => format!("{name} = {x}"),
        PickleValue::String(text) => {
            let short: String = text.chars().take(40).collect();
            let more = if short.len() < text.len() { "..." } else { "" };
            format!("{name} = {short:?}{more}")
        }
        PickleValue::Bytes(b) => format!("{name}: {} bytes", b.len()),
        PickleValue::List(items) => container("list", items.len()),
        PickleValue::Dict(map) => container("dict", map.len()),
        value if is_tensor(value) => format!("{name}: a tensor"),
        PickleValue::Unsupported(kind) => format!("{name}: {kind}"),
    }
}

/// Tensors not under the stripped prefix, grouped by their first name segment.
fn describe_outside_tensors(names: &[&str], out: &mut Vec<String>) {
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    for name in names {
        *groups
            .entry(name.split('.').next().unwrap_or(name))
            .or_default() += 1;
    }
    for (group, count) in groups {
        if count == 1 {
            let name = names
                .iter()
                .find(|n| n.split('.').next() == Some(group))
                .unwrap_or(&group);
            out.push(format!("{name}: a tensor"));
        } else {
            out.push(format!("{group}.*: {count} tensors"));
        }
    }
}

/// How the state_dict was located in a file.
#[derive(Clone, Debug, Default)]
struct Selection {
    /// The flattened prefix of its tensors' names (`""`, `"model."`, `"state_dict.model."`),
    /// stripped from every key.
    prefix: String,
    /// The dict keys leading to it (dotted), if not the root.
    key: Option<String>,
    /// The wrapper prefix within its keys (`module.`), if any.
    stripped: Option<String>,
    /// Every other entry of the file, described.
    other_entries: Vec<String>,
    /// Other candidates' prefixes under this one (`module.` when the root was chosen over a
    /// `module.` copy beside it), relative to it: their tensors are not part of this one.
    nested: Vec<String>,
}

impl Selection {
    /// Whether a remapped key is outside the chosen state_dict.
    fn is_outside(&self, key: &str) -> bool {
        key.starts_with(OUTSIDE) || self.nested.iter().any(|n| key.starts_with(n.as_str()))
    }

    /// The tensors of the chosen state_dict and their shapes (remapped keys).
    fn inside<'a>(
        &self,
        tensors: impl Iterator<Item = (&'a String, Vec<usize>)>,
    ) -> BTreeMap<String, Vec<usize>> {
        tensors
            .filter(|(k, _)| !self.is_outside(k))
            .map(|(k, s)| (k.clone(), s))
            .collect()
    }

    /// Splits `prefix` into dict keys (followed through `root`) and a wrapper prefix, and
    /// describes everything else in the file.
    fn in_tree(root: &PickleValue, prefix: String, nested: Vec<String>) -> Self {
        let segments: Vec<&str> = prefix.trim_end_matches('.').split('.').collect();
        let segments = if prefix.is_empty() {
            Vec::new()
        } else {
            segments
        };
        let mut node = root;
        let mut path: Vec<String> = Vec::new();
        let mut other_entries = Vec::new();
        let mut at = 0;
        'descend: while at < segments.len() {
            let PickleValue::Dict(map) = node else {
                break;
            };
            // A key may itself contain dots: try the longest run first.
            for end in (at + 1..=segments.len()).rev() {
                let key = segments[at..end].join(".");
                if let Some(child @ PickleValue::Dict(_)) = map.get(&key) {
                    describe_siblings(map, &key, &path, &mut other_entries);
                    path.push(key);
                    node = child;
                    at = end;
                    continue 'descend;
                }
            }
            break;
        }
        let stripped = segments[at..].join(".");
        let stripped = (!stripped.is_empty()).then(|| format!("{stripped}."));
        // Within the state_dict: entries that are not its tensors.
        if let PickleValue::Dict(map) = node {
            let wrapper = stripped.as_deref().unwrap_or("");
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut outside = Vec::new();
            for key in keys {
                let value = &map[key];
                // `state_dict()`'s per-module version table (an attribute of the OrderedDict,
                // which the reader shows as an entry): part of every state_dict, not data.
                if key == "_metadata" && matches!(value, PickleValue::Dict(_)) {
                    continue;
                }
                if is_tensor(value) {
                    let ours = key
                        .strip_prefix(wrapper)
                        .is_some_and(|rest| !nested.iter().any(|n| rest.starts_with(n.as_str())));
                    if !ours {
                        outside.push(key.as_str());
                    }
                } else if !matches!(value, PickleValue::Dict(_) | PickleValue::List(_))
                    || count_tensors(value, 0) == 0
                    || !key.starts_with(wrapper)
                {
                    other_entries.push(describe_entry(&qualified(&path, key), value));
                }
            }
            describe_outside_tensors(&outside, &mut other_entries);
        }
        Selection {
            prefix,
            key: (!path.is_empty()).then(|| path.join(".")),
            stripped,
            other_entries,
            nested,
        }
    }

    /// A flat file (safetensors): the whole prefix is a wrapper prefix.
    fn flat(keys: &BTreeSet<String>, prefix: String, nested: Vec<String>) -> Self {
        let outside: Vec<&str> = keys
            .iter()
            .filter(|k| {
                k.strip_prefix(prefix.as_str())
                    .is_none_or(|rest| nested.iter().any(|n| rest.starts_with(n.as_str())))
            })
            .map(String::as_str)
            .collect();
        let mut other_entries = Vec::new();
        describe_outside_tensors(&outside, &mut other_entries);
        Selection {
            stripped: (!prefix.is_empty()).then(|| prefix.clone()),
            prefix,
            key: None,
            other_entries,
            nested,
        }
    }
}

fn qualified(path: &[String], key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{}.{key}", path.join("."))
    }
}

/// Describes the entries of `map` beside the one (`chosen`) leading to the state_dict.
fn describe_siblings(
    map: &std::collections::HashMap<String, PickleValue>,
    chosen: &str,
    path: &[String],
    out: &mut Vec<String>,
) {
    let mut keys: Vec<&String> = map.keys().filter(|k| *k != chosen).collect();
    keys.sort();
    out.extend(
        keys.into_iter()
            .map(|k| describe_entry(&qualified(path, k), &map[k])),
    );
}

/// Flattened prefixes under which a state_dict of a known family sits: `P` such that both
/// `P + a` and `P + b` are tensors for one of [`keymap::ANCHORS`]'s `(a, b)`.
fn candidates(keys: &BTreeSet<String>) -> Vec<String> {
    let mut found: Vec<String> = keymap::ANCHORS
        .iter()
        .flat_map(|(_, a, b)| {
            keys.iter()
                .filter_map(move |k| k.strip_suffix(a))
                .filter(|p| p.is_empty() || p.ends_with('.'))
                .filter(move |p| keys.contains(&format!("{p}{b}")))
        })
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The other candidates under `prefix`, relative to it.
fn nested_candidates(keys: &BTreeSet<String>, prefix: &str) -> Vec<String> {
    candidates(keys)
        .into_iter()
        .filter(|q| q != prefix)
        .filter_map(|q| q.strip_prefix(prefix).map(str::to_string))
        .collect()
}

/// How a candidate prefix is named to users (and given to [`LoadOptions::key`]).
fn candidate_name(prefix: &str) -> String {
    match prefix.trim_end_matches('.') {
        "" => "\"\" (the file's root)".to_string(),
        name => name.to_string(),
    }
}

/// The prefix of the state_dict to load: the one asked for, or the only one.
fn choose_prefix(
    path: &Path,
    keys: &BTreeSet<String>,
    requested: Option<&str>,
    top_keys: &BTreeSet<String>,
) -> Result<String, WeightsError> {
    let found = candidates(keys);
    let ambiguous = |among: &[String]| {
        let names: Vec<String> = among.iter().map(|p| candidate_name(p)).collect();
        WeightsError::AmbiguousStateDict {
            path: path.to_path_buf(),
            first: among
                .first()
                .map(|p| p.trim_end_matches('.').to_string())
                .unwrap_or_default(),
            candidates: short_list(&names, 10),
        }
    };
    let Some(requested) = requested else {
        return match found.as_slice() {
            [] => Ok(String::new()),
            [one] => Ok(one.clone()),
            many => Err(ambiguous(many)),
        };
    };
    let wanted = requested.trim_end_matches('.');
    let exact: Vec<String> = found
        .iter()
        .filter(|p| p.trim_end_matches('.') == wanted)
        .cloned()
        .collect();
    let under: Vec<String> = found
        .iter()
        .filter(|p| wanted.is_empty() || p.starts_with(&format!("{wanted}.")))
        .cloned()
        .collect();
    match (exact.as_slice(), under.as_slice()) {
        ([one], _) | ([], [one]) => Ok(one.clone()),
        ([], []) => {
            let names: Vec<String> = if found.is_empty() {
                top_keys.iter().cloned().collect()
            } else {
                found.iter().map(|p| candidate_name(p)).collect()
            };
            Err(WeightsError::UnknownKey {
                path: path.to_path_buf(),
                key: requested.to_string(),
                candidates: if names.is_empty() {
                    "none".into()
                } else {
                    short_list(&names, 10)
                },
            })
        }
        (_, many) => Err(ambiguous(many)),
    }
}

/// Marks every key [`OUTSIDE`], marks the chosen state_dict's keys [`keymap::INSIDE`] instead
/// (stripping `prefix`), then applies a family's `patterns` (which remove the mark; with none,
/// the mark is removed and the keys keep their reference names).
fn remapper_for(
    path: &Path,
    prefix: &str,
    patterns: &[(String, String)],
) -> Result<KeyRemapper, WeightsError> {
    let inside = keymap::INSIDE.to_string();
    let mut all = vec![
        ("^".to_string(), OUTSIDE.to_string()),
        (format!("^\\x01{}", regex_literal(prefix)), inside.clone()),
    ];
    if patterns.is_empty() {
        all.push((format!("^{inside}"), String::new()));
    }
    all.extend(patterns.iter().cloned());
    KeyRemapper::from_patterns(all).map_err(|e| WeightsError::Corrupt {
        path: path.to_path_buf(),
        format: "PyTorch checkpoint",
        reason: clip(&format!("key prefix {prefix:?}: {e}")),
    })
}

/// `candidate` with the parameter ids of `model` (the same network, traversed in the same
/// order): the loaded model keeps its parameters' identities, so an optimizer's state (keyed by
/// id) still refers to them.
fn adopt_ids<M: VisionModel>(candidate: M, model: &M) -> M {
    struct Ids(Vec<ParamId>);
    impl ModuleVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.id);
        }
    }
    struct Adopt(std::vec::IntoIter<ParamId>);
    impl ModuleMapper for Adopt {
        fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if let Some(id) = self.0.next() {
                param.id = id;
            }
            param
        }
    }
    let mut ids = Ids(Vec::new());
    model.visit(&mut ids);
    candidate.map(&mut Adopt(ids.0.into_iter()))
}

/// Casts every loaded float tensor to its device's default float type (f32 unless configured
/// otherwise), keeping its gradient requirement. Parameters still awaiting lazy initialisation
/// already get that type and are left alone.
struct DeviceFloatDType;

impl ModuleMapper for DeviceFloatDType {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !param.is_initialized() {
            return param;
        }
        let target = param.lazy_device().settings().float_dtype;
        param.map(|tensor| {
            if FloatDType::from(tensor.dtype()) == target {
                tensor
            } else {
                let require_grad = tensor.is_require_grad();
                tensor.detach().cast(target).set_require_grad(require_grad)
            }
        })
    }
}

/// `resnet34`, or `ResNet (Basic [2, 2, 2, 2], widths [4, 8, 8, 16])` for custom shapes.
pub fn describe(config: &ResNetConfig) -> String {
    match config.arch_name() {
        Some(name) => name.to_string(),
        None => format!(
            "ResNet ({:?} {:?}, widths {:?}, {:?} stem, {} input channels)",
            config.block, config.layers, config.widths, config.stem, config.in_channels
        ),
    }
}

/// Maps a `PytorchStore` failure to a typed error.
fn diagnose_pytorch(path: &Path, error: PytorchStoreError) -> WeightsError {
    match error {
        PytorchStoreError::Reader(e) => reader_error(path, e),
        PytorchStoreError::Io(source) => reader_error(path, PytorchError::Io(source)),
        other => WeightsError::Corrupt {
            path: path.to_path_buf(),
            format: "PyTorch checkpoint",
            reason: clip(&other.to_string()),
        },
    }
}

/// Maps a reader failure to a typed error, its message kept to one short line.
fn reader_error(path: &Path, error: PytorchError) -> WeightsError {
    match error {
        // Only an error of the operating system is a failure to read the file; the ZIP layer
        // reports damaged entries (checksums, truncation) as `io::Error`s without one.
        PytorchError::Io(source) if source.raw_os_error().is_some() => WeightsError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => WeightsError::Corrupt {
            path: path.to_path_buf(),
            format: "PyTorch checkpoint",
            reason: clip(&other.to_string()),
        },
    }
}

impl ResNet {
    /// Builds the model a weights file describes ([`WeightsFile::infer_config`]) and loads it
    /// strictly.
    pub fn from_weights_file(
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<(ResNet, LoadReport)> {
        Self::from_weights_file_with(path, &LoadOptions::strict(), device)
    }

    /// [`from_weights_file`](Self::from_weights_file) with `options` (e.g.
    /// [`LoadOptions::key`] to pick one state_dict of a checkpoint holding several).
    pub fn from_weights_file_with(
        path: impl AsRef<Path>,
        options: &LoadOptions,
        device: &Device,
    ) -> Result<(ResNet, LoadReport)> {
        let mut file = WeightsFile::open_with(path, options)?;
        let config = file.infer_config()?;
        let mut model = config.try_init(device)?;
        let report = file.load_into(&mut model, options)?;
        Ok((model, report))
    }
}
