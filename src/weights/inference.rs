//! Classification with pretrained weights, as in torchvision's "Classify an image" recipe
//! (`weights.transforms()`, `model(batch).softmax(1)`, `weights.meta["categories"]`): the logic
//! behind `examples/predict.rs`, kept in the library so that it is tested.

use crate::model::VisionModel;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use image::DynamicImage;
use safetensors::{Dtype, SafeTensors};

use super::error::WeightsError;
use super::import::{LoadOptions, WeightsFile};
use super::preprocess::Preprocess;
use super::registry::imagenet_classes;
use super::registry_table::Weights;
use super::report::LoadReport;
use crate::download::Cache;
use crate::error::{Error, Result};
use crate::model::{AnyConfig, AnyModel, ModelConfig, infer_architecture};

/// Where weights come from: a registry entry or a local file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsSource {
    /// torchvision's published weights (downloaded into the cache).
    Registry(Weights),
    /// A local `.pth` / `.safetensors` file.
    File(PathBuf),
    /// A timm repository on the Hugging Face Hub (`hf-hub:timm/resnet50.a1_in1k`).
    Hub(super::HubWeights),
}

fn is_auto(arch: Option<&str>) -> bool {
    arch.is_none_or(|a| a.eq_ignore_ascii_case("auto"))
}

impl WeightsSource {
    /// A weights specification given as an OS string (a command-line argument): [`parse`](Self::parse) when it is UTF-8, a
    /// file path otherwise (a directory or a missing file is an error).
    pub fn parse_os(spec: &std::ffi::OsStr, arch: Option<&str>) -> Result<Self> {
        match spec.to_str() {
            Some(spec) => Self::parse(spec, arch),
            // Not UTF-8: not a registry name, so a file path.
            None => {
                let path = Path::new(spec);
                if path.is_dir() {
                    Err(WeightsError::IsADirectory {
                        path: path.to_path_buf(),
                    }
                    .into())
                } else if path.is_file() {
                    Ok(WeightsSource::File(path.to_path_buf()))
                } else {
                    Err(WeightsError::NotFound {
                        path: path.to_path_buf(),
                    }
                    .into())
                }
            }
        }
    }

    /// `auto` (the default weights of `arch`, ResNet-18 when `arch` is `auto` or absent), a
    /// registry name (`resnet50.v2`, `convnext_tiny.tv_in1k`, `ResNet50_Weights.IMAGENET1K_V2`,
    /// ...), a Hub repository (`hf-hub:timm/resnet50.a1_in1k`) or an existing file.
    /// An existing file wins over a registry name.
    pub fn parse(spec: &str, arch: Option<&str>) -> Result<Self> {
        if spec.starts_with(super::HUB_PREFIX) {
            return spec.parse().map(WeightsSource::Hub);
        }
        if spec.eq_ignore_ascii_case("auto") {
            let arch = if is_auto(arch) {
                "resnet18"
            } else {
                arch.unwrap_or("resnet18")
            };
            return Ok(WeightsSource::Registry(Weights::default_for(arch)?));
        }
        let path = Path::new(spec);
        if path.is_file() {
            return Ok(WeightsSource::File(path.to_path_buf()));
        }
        if path.is_dir() {
            return Err(WeightsError::IsADirectory {
                path: path.to_path_buf(),
            }
            .into());
        }
        match Weights::parse(spec) {
            Ok(weights) => Ok(WeightsSource::Registry(weights)),
            Err(e) => {
                let looks_like_path = spec.contains(['/', '\\'])
                    || [".pth", ".pt", ".safetensors", ".bin"]
                        .iter()
                        .any(|ext| spec.ends_with(ext));
                if looks_like_path {
                    Err(WeightsError::NotFound {
                        path: path.to_path_buf(),
                    }
                    .into())
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// One predicted class.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub name: String,
    /// Softmax probability.
    pub probability: f32,
}

/// A model ready for inference, with its class names and preprocessing.
#[derive(Debug)]
pub struct Classifier {
    /// The network (any registered architecture).
    pub model: AnyModel,
    /// Class names, by index (ImageNet's for 1000-class files, `class N` otherwise).
    pub class_names: Vec<String>,
    /// The preprocessing images go through.
    pub preprocess: Preprocess,
    /// What the weights load applied.
    pub report: LoadReport,
    /// What was loaded, for display (`ResNet18_Weights.IMAGENET1K_V1`, or the file and its
    /// architecture).
    pub description: String,
}

fn class_names(num_classes: usize) -> Vec<String> {
    if num_classes == imagenet_classes().len() {
        imagenet_classes().iter().map(|s| s.to_string()).collect()
    } else {
        (0..num_classes).map(|i| format!("class {i}")).collect()
    }
}

impl Classifier {
    /// Loads `source` for inference. For a file, `arch` (`None` or `auto`: read from the file)
    /// and `num_classes` (`None`: the file's) choose the architecture; a file that does not fit
    /// them is an error. For a registry entry they must agree with it, if given.
    pub fn load(
        source: &WeightsSource,
        arch: Option<&str>,
        num_classes: Option<usize>,
        cache: &Cache,
        device: &Device,
    ) -> Result<Self> {
        Self::load_with(
            source,
            arch,
            num_classes,
            &LoadOptions::strict(),
            cache,
            device,
        )
    }

    /// [`load`](Self::load) with `options` for a file: [`LoadOptions::key`] picks the
    /// state_dict of a checkpoint holding several (the examples' `--weights-key`). Loading is always strict;
    /// registry entries ignore `options`.
    pub fn load_with(
        source: &WeightsSource,
        arch: Option<&str>,
        num_classes: Option<usize>,
        options: &LoadOptions,
        cache: &Cache,
        device: &Device,
    ) -> Result<Self> {
        let strict = match options.state_dict_key() {
            Some(key) => LoadOptions::strict().key(key),
            None => LoadOptions::strict(),
        };
        match source {
            WeightsSource::Registry(weights) => {
                if !is_auto(arch) {
                    let wanted = arch.unwrap_or_default();
                    // An unknown name is an error listing the registered architectures.
                    AnyConfig::from_name(wanted, 1000)?;
                    if crate::model::arch_of(wanted) != weights.arch() {
                        return Err(Error::InvalidConfig(format!(
                            "{weights} are {} weights, not {}: leave the `arch` of `Classifier::load` unset (or `auto`), or choose {} weights",
                            weights.arch(),
                            arch.unwrap_or_default(),
                            weights.arch()
                        )));
                    }
                }
                if let Some(n) = num_classes.filter(|&n| n != weights.num_classes()) {
                    return Err(Error::InvalidConfig(format!(
                        "{weights} predict {} classes, not {n}: leave the `num_classes` of `Classifier::load` unset",
                        weights.num_classes()
                    )));
                }
                let (model, report) = weights.load(cache, device)?;
                Ok(Classifier {
                    model,
                    class_names: weights.categories().iter().map(|s| s.to_string()).collect(),
                    preprocess: weights.preprocess(),
                    report,
                    description: format!(
                        "{weights} ({}, top-1 {:.3}%, top-5 {:.3}%)",
                        weights.arch(),
                        weights.top1(),
                        weights.top5()
                    ),
                })
            }
            WeightsSource::Hub(hub) => {
                let loaded = super::load_hub(hub, device)?;
                let config = loaded.model.config();
                if !is_auto(arch)
                    && crate::model::arch_of(arch.unwrap_or_default()) != loaded.model.arch()
                {
                    return Err(Error::InvalidConfig(format!(
                        "{hub} holds a {}, not a {}: leave the `arch` of `Classifier::load` unset (or `auto`)",
                        loaded.model.arch(),
                        arch.unwrap_or_default()
                    )));
                }
                if let Some(n) = num_classes.filter(|&n| n != loaded.model.num_classes()) {
                    return Err(Error::InvalidConfig(format!(
                        "{hub} predicts {} classes, not {n}: leave the `num_classes` of `Classifier::load` unset",
                        loaded.model.num_classes()
                    )));
                }
                Ok(Classifier {
                    class_names: class_names(loaded.model.num_classes()),
                    description: format!("{hub} ({}, timm's preprocessing)", config.label()),
                    model: loaded.model,
                    preprocess: loaded.preprocess,
                    report: loaded.report,
                })
            }
            WeightsSource::File(path) => {
                let mut file = WeightsFile::open_with(path, &strict)?;
                let inferred = infer_architecture(&file).ok();
                let mut config = match (arch.filter(|a| !is_auto(Some(a))), inferred.clone()) {
                    (None, Some(inferred)) => inferred,
                    (None, None) => infer_architecture(&file)?,
                    // The file's shape when it is the architecture asked for (a ViT's image
                    // size, a ResNet's widths); the registered shape otherwise, which the
                    // strict load then compares with the file.
                    (Some(wanted), Some(inferred))
                        if inferred.arch_name().as_deref()
                            == Some(crate::model::arch_of(wanted).as_str()) =>
                    {
                        inferred
                    }
                    (Some(wanted), inferred) => AnyConfig::from_name(
                        wanted,
                        inferred.as_ref().map_or(1000, AnyConfig::num_classes),
                    )?,
                };
                if let Some(n) = num_classes {
                    config = config.with_num_classes(n)?;
                }
                let mut model = config.try_init(device)?;
                let report = file.load_into(&mut model, &strict)?;
                // A file outside the registry gets the preset of its architecture's weights.
                let preprocess = Weights::preset_for(&config);
                Ok(Classifier {
                    class_names: class_names(model.num_classes()),
                    description: format!(
                        "{} ({}, {} classes)",
                        path.display(),
                        config.label(),
                        model.num_classes()
                    ),
                    model,
                    preprocess,
                    report,
                })
            }
        }
    }

    /// The top `k` classes of each image, most probable first.
    ///
    /// # Errors
    /// [`Error::InputShape`] when the model does not take RGB images (a stem with
    /// `in_channels` other than 3), before any kernel runs.
    pub fn classify(&self, images: &[DynamicImage], k: usize) -> Result<Vec<Vec<Prediction>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.top_k(self.logits(images)?, k))
    }

    /// The logits `[N, classes]` of `images` after [`preprocess`](Self::preprocess) (the
    /// weights' preset: one pixel-exact path with the data pipeline).
    ///
    /// # Errors
    /// As [`classify`](Self::classify); [`Error::Data`] for a preset with a size of 0.
    pub fn logits(&self, images: &[DynamicImage]) -> Result<Tensor<2>> {
        if images.is_empty() {
            return Err(Error::InvalidConfig(
                "no images to classify: give at least one".into(),
            ));
        }
        let batch = self.preprocess.batch(images, &self.model.device())?;
        self.model.check_input(batch.dims())?;
        Ok(self.model.forward(batch))
    }

    /// Softmax and the top `k` classes of each row of `logits` `[N, classes]`.
    pub fn top_k(&self, logits: Tensor<2>, k: usize) -> Vec<Vec<Prediction>> {
        let [rows, cols] = logits.dims();
        let values = to_vec(logits);
        (0..rows)
            .map(|r| {
                let row = &values[r * cols..(r + 1) * cols];
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exp: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
                let sum: f64 = exp.iter().sum();
                let mut order: Vec<usize> = (0..cols).collect();
                order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]).then(a.cmp(&b)));
                order
                    .into_iter()
                    .take(k)
                    .map(|class| Prediction {
                        class,
                        name: self
                            .class_names
                            .get(class)
                            .cloned()
                            .unwrap_or_else(|| format!("class {class}")),
                        probability: (exp[class] / sum) as f32,
                    })
                    .collect()
            })
            .collect()
    }

    /// `{"logits": [[...]], "features": [[...]]}` for an already normalised input `[N, C, H, W]`.
    ///
    /// # Errors
    /// [`Error::InputShape`] when `C` is not the model's input channels, before any kernel runs.
    pub fn logits_and_features_json(&self, input: Tensor<4>) -> Result<String> {
        self.model.check_input(input.dims())?;
        let features = self.model.forward_pre_logits(input);
        let logits = self.model.forward_classifier(features.clone());
        Ok(serde_json::json!({ "logits": rows(logits), "features": rows(features) }).to_string())
    }
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    // Any float width converts to f32 first; the conversion cannot then fail.
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

fn rows(t: Tensor<2>) -> Vec<Vec<f32>> {
    let [_, cols] = t.dims();
    to_vec(t).chunks(cols.max(1)).map(<[f32]>::to_vec).collect()
}

/// Reads the tensor `name` of a safetensors file as `f32` values and its shape (F32, F64, F16 and
/// BF16 are accepted).
pub fn read_safetensors_f32(path: impl AsRef<Path>, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let path = path.as_ref();
    let bad = |reason: String| WeightsError::BadInput {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(bad("no such file".into()).into());
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let view = file.tensor(name).map_err(|_| {
        let mut names = file.names();
        names.sort();
        const SHOWN: usize = 8;
        let mut found = names
            .iter()
            .take(SHOWN)
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if names.len() > SHOWN {
            found.push_str(&format!(", ... and {} more", names.len() - SHOWN));
        }
        bad(format!("no tensor named `{name}` (found: {found})"))
    })?;
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        other => {
            return Err(bad(format!(
                "`{name}` has dtype {other:?}; expected a float tensor (F32)"
            ))
            .into());
        }
    };
    Ok((values, view.shape().to_vec()))
}

/// IEEE half to single precision.
fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = frac * 2^-24.
            let v = frac as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, _) => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// An input batch stored in a safetensors file (the `predict` example's `--input-tensor`): the tensor named `input`, shape `[N, channels, H, W]`,
/// already normalised.
pub fn read_input_tensor(
    path: impl AsRef<Path>,
    channels: usize,
    device: &Device,
) -> Result<Tensor<4>> {
    let path = path.as_ref();
    let (values, shape) = read_safetensors_f32(path, "input")?;
    match shape[..] {
        [n, c, h, w] if n > 0 && c == channels && h > 0 && w > 0 => Ok(Tensor::from_data(
            TensorData::new(values, [n, c, h, w]),
            device,
        )),
        _ => Err(WeightsError::BadInput {
            path: path.to_path_buf(),
            reason: format!(
                "`input` has shape {shape:?}; expected [N, {channels}, H, W] with N, H, W >= 1"
            ),
        }
        .into()),
    }
}
