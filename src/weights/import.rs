//! Importing torchvision and timm ResNet weights: PyTorch `.pth` checkpoints (`torch.save` zip
//! archives of a state_dict, as torchvision publishes them) and `.safetensors` files, read by
//! burn-store's `PytorchStore` and `SafetensorsStore` with its `PyTorchToBurnAdapter`. Key
//! names are mapped only by [`keymap`].
//!
//! A `.pth` may hold a bare state_dict, a checkpoint dict with the state_dict under one key
//! (`state_dict`, `model`, ...: found automatically), or a whole pickled `nn.Module`
//! (`torch.save(model)`), which burn-store's reader reads as the module's `state_dict()` without
//! running any Python code; any other pickled object is refused with how to re-save it.
//!
//! Loading is strict by default, like PyTorch's `load_state_dict(strict=True)`: every tensor of
//! the model must come from the file with the right shape, and the file may hold nothing else
//! (`num_batches_tracked` is the one key ignored). [`LoadOptions::backbone_only`] is the
//! transfer-learning case: everything but the `fc` head is loaded and the head is reported as
//! left as initialised. A failed load leaves the model untouched.
//!
//! ```no_run
//! use burn::tensor::{Device, FloatDType, Tensor};
//! use finetune::model::ResNetConfig;
//! use finetune::weights::LoadOptions;
//!
//! let device = Device::default();
//! let mut model = ResNetConfig::resnet18(10).init(&device);
//! // A 1000-class ImageNet file into a 10-class model: keep the new head.
//! let report = model.load_weights("resnet18-f37072fd.pth", &LoadOptions::backbone_only())?;
//! println!("{report}");
//! # Ok::<(), finetune::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId, RunningState};
use burn::nn::BatchNorm;
use burn::store::pytorch_reader::{PickleValue, PytorchError, PytorchReader};
use burn::store::{
    ApplyResult, ModuleSnapshot, ModuleStore, PathFilter, PyTorchToBurnAdapter, PytorchStore,
    PytorchStoreError, SafetensorsStore,
};
use burn::tensor::{Device, FloatDType, Tensor};

use super::error::WeightsError;
use super::keymap::{self, IGNORED_SUFFIX};
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
    top_level_key: Option<String>,
}

impl LoadOptions {
    /// Every tensor, strictly (the default).
    pub fn strict() -> Self {
        Self::default()
    }

    /// Everything but the `fc` head, which keeps its initialisation and is reported as skipped
    /// (the file's head, of any size, is not used). Missing, unused or mis-shaped backbone
    /// tensors are still errors.
    pub fn backbone_only() -> Self {
        LoadOptions {
            backbone_only: true,
            top_level_key: None,
        }
    }

    /// Reads the state_dict under this top-level key of a `.pth` checkpoint (for example
    /// `"state_dict"` or `"model"`). Without it, a file whose root is not a state_dict is
    /// searched for one under a single top-level key automatically.
    pub fn with_top_level_key(mut self, key: impl Into<String>) -> Self {
        self.top_level_key = Some(key.into());
        self
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
    top_level_key: Option<String>,
    /// File keys after [`keymap::remapper`], with their shapes as stored.
    tensors: BTreeMap<String, Vec<usize>>,
    store: Option<Store>,
}

impl fmt::Debug for WeightsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightsFile")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("top_level_key", &self.top_level_key)
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

fn not_head(path: &str, _container: &str) -> bool {
    !(path == "fc" || path.starts_with("fc."))
}

impl WeightsFile {
    /// Opens a `.pth` or `.safetensors` file (detected from its content) and reads its tensor
    /// names and shapes. A checkpoint whose state_dict sits under one top-level key (`{"epoch":
    /// .., "state_dict": ..}`, `{"model": .., "optimizer": ..}`) is found automatically.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &LoadOptions::default())
    }

    /// [`open`](Self::open) with an explicit top-level key from `options`.
    pub fn open_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(WeightsError::NotFound {
                path: path.to_path_buf(),
            }
            .into());
        }
        let format = sniff(path)?;
        let file = match format {
            WeightsFormat::Safetensors => Self::open_safetensors(path)?,
            WeightsFormat::Pytorch => {
                let file = Self::open_pytorch(path, options.top_level_key.as_deref())?;
                match (&options.top_level_key, file.wrapped_state_dict()) {
                    (None, Some(key)) => Self::open_pytorch(path, Some(&key))?,
                    _ => file,
                }
            }
        };
        if !file.tensors.contains_key("conv1.weight") {
            let mut tops: Vec<&str> = file
                .tensors
                .keys()
                .map(|k| k.split('.').next().unwrap_or(k))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if tops.is_empty() {
                tops.push("none");
            }
            tops.truncate(10);
            return Err(WeightsError::NotAResNet {
                path: path.to_path_buf(),
                keys: tops.join(", "),
            }
            .into());
        }
        Ok(file)
    }

    fn open_pytorch(path: &Path, top_level_key: Option<&str>) -> Result<Self, WeightsError> {
        let mut store = PytorchStore::from_file(path)
            .remap(keymap::remapper())
            .map_indices_contiguous(false)
            .validate(false)
            .allow_partial(true);
        if let Some(key) = top_level_key {
            store = store.with_top_level_key(key);
        }
        let tensors = match store.get_all_tensors() {
            Ok(map) => map
                .iter()
                .map(|(k, t)| (k.clone(), t.shape.to_vec()))
                .collect(),
            Err(e) => return Err(diagnose_pytorch(path, e)),
        };
        Ok(WeightsFile {
            path: path.to_path_buf(),
            format: WeightsFormat::Pytorch,
            top_level_key: top_level_key.map(str::to_string),
            tensors,
            store: Some(Store::Pytorch(store)),
        })
    }

    fn open_safetensors(path: &Path) -> Result<Self, WeightsError> {
        let mut store = SafetensorsStore::from_file(path)
            .remap(keymap::remapper())
            .with_from_adapter(PyTorchToBurnAdapter)
            .map_indices_contiguous(false)
            .validate(false)
            .allow_partial(true);
        let tensors = match store.get_all_tensors() {
            Ok(map) => map
                .iter()
                .map(|(k, t)| (k.clone(), t.shape.to_vec()))
                .collect(),
            Err(e) => {
                return Err(WeightsError::Corrupt {
                    path: path.to_path_buf(),
                    format: "safetensors",
                    reason: e.to_string(),
                });
            }
        };
        Ok(WeightsFile {
            path: path.to_path_buf(),
            format: WeightsFormat::Safetensors,
            top_level_key: None,
            tensors,
            store: Some(Store::Safetensors(store)),
        })
    }

    /// The single top-level key holding a ResNet state_dict, when the root is not one.
    fn wrapped_state_dict(&self) -> Option<String> {
        if self.tensors.contains_key("conv1.weight") {
            return None;
        }
        self.tensors.keys().find_map(|k| {
            let (top, rest) = k.split_once('.')?;
            matches!(rest, "conv1.weight" | "module.conv1.weight").then(|| top.to_string())
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

    /// The top-level key the state_dict was read from, if any.
    pub fn top_level_key(&self) -> Option<&str> {
        self.top_level_key.as_deref()
    }

    /// Tensor names (torchvision's) and shapes as stored, sorted by name.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors
            .iter()
            .map(|(k, s)| (keymap::burn_to_torchvision(k, Vec::new()).0, s.clone()))
            .collect()
    }

    fn shape(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(Vec::as_slice)
    }

    /// The architecture the file's tensor names and shapes describe: depth per stage, block
    /// kind, stage widths, stem, input channels and number of classes (`--arch auto`).
    pub fn infer_config(&self) -> Result<ResNetConfig> {
        let fail = |reason: String| WeightsError::UnknownArchitecture {
            path: self.path.clone(),
            reason,
        };
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
        let fc = self
            .shape("fc.weight")
            .ok_or_else(|| fail("no fc.weight (a headless file: build the model yourself and use LoadOptions::backbone_only())".into()))?;
        let [num_classes, features] = *fc else {
            return Err(fail(format!("fc.weight has shape {fc:?}, expected 2 dims")).into());
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

    /// Loads the file into `model` (see [`LoadOptions`]). On error the model is unchanged.
    pub fn load_into(&mut self, model: &mut ResNet, options: &LoadOptions) -> Result<LoadReport> {
        let filter = if options.backbone_only {
            PathFilter::new().with_predicate(not_head)
        } else {
            PathFilter::new()
        };
        let mut candidate = independent_copy(model);
        let store = self.store.take();
        let (store, result) = match store {
            Some(Store::Pytorch(store)) => {
                let mut store = store.filter(filter);
                let result = candidate.load_from(&mut store);
                (
                    Store::Pytorch(store),
                    result.map_err(|e| diagnose_pytorch(&self.path, e)),
                )
            }
            Some(Store::Safetensors(store)) => {
                let mut store = store.filter(filter);
                let result = candidate.load_from(&mut store);
                (
                    Store::Safetensors(store),
                    result.map_err(|e| WeightsError::Corrupt {
                        path: self.path.clone(),
                        format: "safetensors",
                        reason: e.to_string(),
                    }),
                )
            }
            None => {
                // Only reachable after a panic inside a previous load: reopen.
                let reopened = WeightsFile::open_with(
                    &self.path,
                    &LoadOptions::default().with_top_level_key_opt(self.top_level_key.clone()),
                )?;
                *self = reopened;
                return self.load_into(model, options);
            }
        };
        self.store = Some(store);
        let mut result: ApplyResult = result?;
        if options.backbone_only {
            // A headless file (timm's `num_classes=0`) has no fc at all: that is fine too.
            let (head, rest): (Vec<_>, Vec<_>) = result
                .missing
                .into_iter()
                .partition(|(p, _)| !not_head(p, ""));
            result.missing = rest;
            result.skipped.extend(head.into_iter().map(|(p, _)| p));
            result.skipped.sort();
            result.skipped.dedup();
        }
        match LoadReport::strict(result, &[IGNORED_SUFFIX]) {
            Ok(report) => {
                // burn-store keeps a tensor's stored precision: an f16 or f64 file would give
                // f16/f64 parameters, and the first forward pass with f32 inputs would panic.
                *model = candidate.map(&mut DeviceFloatDType);
                Ok(report)
            }
            Err(mismatch) => Err(self.explain(model, mismatch).into()),
        }
    }

    /// Turns a strict-load failure into the most useful error: a different architecture, a
    /// different head, or the full list of disagreeing tensors (in torchvision's names).
    fn explain(&self, model: &ResNet, mismatch: LoadMismatch) -> WeightsError {
        let ours = model.config();
        if let Ok(theirs) = self.infer_config()
            && !same_backbone(ours, &theirs)
        {
            return WeightsError::WrongArchitecture {
                path: self.path.clone(),
                file_arch: describe(&theirs),
                file_arch_name: match theirs.arch_name() {
                    Some(name) if theirs.widths == [64, 128, 256, 512] => name.to_string(),
                    _ => "auto".to_string(),
                },
                model_arch: describe(ours),
            };
        }
        let head_only = mismatch.missing.is_empty()
            && mismatch.unused.is_empty()
            && mismatch.other.is_empty()
            && mismatch
                .mismatched
                .iter()
                .all(|(p, _, _)| p == "fc.weight" || p == "fc.bias");
        if head_only && let Some(&[file_classes, _]) = self.shape("fc.weight") {
            return WeightsError::HeadMismatch {
                path: self.path.clone(),
                file_classes,
                model_classes: model.num_classes(),
            };
        }
        let tv = |p: &String| keymap::burn_to_torchvision(p, Vec::new()).0;
        WeightsError::Mismatch {
            path: self.path.clone(),
            mismatch: LoadMismatch {
                missing: mismatch.missing.iter().map(tv).collect(),
                unused: mismatch.unused.iter().map(tv).collect(),
                mismatched: mismatch
                    .mismatched
                    .into_iter()
                    .map(|(p, m, f)| {
                        let (key, m) = keymap::burn_to_torchvision(&p, m);
                        let (_, f) = keymap::burn_to_torchvision(&p, f);
                        (key, m, f)
                    })
                    .collect(),
                other: mismatch.other,
            },
        }
    }
}

impl LoadOptions {
    fn with_top_level_key_opt(mut self, key: Option<String>) -> Self {
        self.top_level_key = key;
        self
    }
}

/// A copy of `model` that shares no mutable state with it, so that a refused load leaves the
/// original untouched. `Module::clone` shares parameter tensors (immutable, so harmless) but
/// also BatchNorm running statistics, whose `RunningState` is an `Arc<Mutex<_>>` that loading
/// (and training) writes in place.
fn independent_copy(model: &ResNet) -> ResNet {
    /// The id and value of a running state, read through `Module::visit`.
    struct Read(Option<ParamId>);
    impl ModuleVisitor for Read {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.get_or_insert(param.id);
        }
    }
    fn copy(state: &RunningState<Tensor<1>>) -> RunningState<Tensor<1>> {
        let mut id = Read(None);
        state.visit(&mut id);
        let value = state.value();
        match id.0 {
            Some(id) => RunningState::with_id(id, value),
            None => RunningState::new(value),
        }
    }
    fn fresh(bn: &mut BatchNorm) {
        bn.running_mean = copy(&bn.running_mean);
        bn.running_var = copy(&bn.running_var);
    }
    let mut copy = model.clone();
    fresh(&mut copy.bn1);
    for block in copy
        .layer1
        .iter_mut()
        .chain(copy.layer2.iter_mut())
        .chain(copy.layer3.iter_mut())
        .chain(copy.layer4.iter_mut())
    {
        fresh(&mut block.bn1);
        fresh(&mut block.bn2);
        if let Some(bn3) = block.bn3.as_mut() {
            fresh(bn3);
        }
        if let Some(ds) = block.downsample.as_mut() {
            fresh(&mut ds.bn);
        }
    }
    copy
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

/// Same network apart from the number of classes.
fn same_backbone(a: &ResNetConfig, b: &ResNetConfig) -> bool {
    a.layers == b.layers
        && a.block == b.block
        && a.widths == b.widths
        && a.stem == b.stem
        && a.in_channels == b.in_channels
}

/// `resnet34`, or `ResNet (Basic [2, 2, 2, 2], widths [4, 8, 8, 16])` for custom shapes.
pub fn describe(config: &ResNetConfig) -> String {
    let standard = config.widths == [64, 128, 256, 512]
        && config.stem == Stem::ImageNet
        && config.in_channels == 3;
    match config.arch_name() {
        Some(name) if standard => name.to_string(),
        _ => format!(
            "ResNet ({:?} {:?}, widths {:?}, {:?} stem, {} input channels)",
            config.block, config.layers, config.widths, config.stem, config.in_channels
        ),
    }
}

/// Maps a `PytorchStore` failure to a typed error, looking at the pickle's root to recognise a
/// whole pickled module.
fn diagnose_pytorch(path: &Path, error: PytorchStoreError) -> WeightsError {
    let reader_error = match error {
        PytorchStoreError::Reader(e) => e,
        PytorchStoreError::Io(source) => {
            return WeightsError::Io {
                path: path.to_path_buf(),
                source,
            };
        }
        other => {
            return WeightsError::Corrupt {
                path: path.to_path_buf(),
                format: "PyTorch checkpoint",
                reason: other.to_string(),
            };
        }
    };
    match reader_error {
        PytorchError::Io(source) => {
            return WeightsError::Io {
                path: path.to_path_buf(),
                source,
            };
        }
        PytorchError::KeyNotFound(reason) => {
            return WeightsError::NotAResNet {
                path: path.to_path_buf(),
                keys: reason,
            };
        }
        _ => {}
    }
    if let Ok(root) = PytorchReader::read_pickle_data(path, None)
        && let Some(found) = python_type(&root)
    {
        return WeightsError::NotAStateDict {
            path: path.to_path_buf(),
            found,
        };
    }
    WeightsError::Corrupt {
        path: path.to_path_buf(),
        format: "PyTorch checkpoint",
        reason: reader_error.to_string(),
    }
}

impl ResNet {
    /// Loads a torchvision/timm state_dict (`.pth` or `.safetensors`) into this model, strictly
    /// or backbone only (see [`LoadOptions`]). On error the model is unchanged.
    pub fn load_weights(
        &mut self,
        path: impl AsRef<Path>,
        options: &LoadOptions,
    ) -> Result<LoadReport> {
        WeightsFile::open_with(path, options)?.load_into(self, options)
    }

    /// Loads everything but the `fc` head (fastai / timm's pretrained-backbone start): the
    /// file's head, whatever its number of classes, is not used; the report lists `fc.*` as
    /// skipped.
    pub fn load_backbone(&mut self, path: impl AsRef<Path>) -> Result<LoadReport> {
        self.load_weights(path, &LoadOptions::backbone_only())
    }

    /// Builds the model a weights file describes ([`WeightsFile::infer_config`]) and loads it
    /// strictly.
    pub fn from_weights_file(
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<(ResNet, LoadReport)> {
        let mut file = WeightsFile::open(path)?;
        let config = file.infer_config()?;
        let mut model = config.try_init(device)?;
        let report = file.load_into(&mut model, &LoadOptions::strict())?;
        Ok((model, report))
    }
}
