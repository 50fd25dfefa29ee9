//! The pretrained weights registry ([`pretrained`], [`pretrained_names`]) and the ResNet
//! weights torchvision publishes, after torchvision's multi-weight API
//! (`torchvision.models.ResNet50_Weights.IMAGENET1K_V2`): URL, checksum, architecture, classes,
//! inference preprocessing and documented accuracy, copied from `torchvision.models.resnet`
//! (torchvision 0.29). The 1000 ImageNet class names are torchvision's
//! `_meta._IMAGENET_CATEGORIES`, embedded.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

use burn::tensor::Device;

use super::error::WeightsError;
use super::import::{LoadOptions, WeightsFile};
use super::preprocess::Preprocess;
use super::registry_table::Weights;
use super::report::LoadReport;
use crate::download::{Cache, Checksum};
use crate::error::Result;
use crate::model::{AnyModel, ResNet, ResNetConfig};

/// The 1000 ImageNet-1k class names, in class-index order (torchvision's).
pub fn imagenet_classes() -> &'static [&'static str] {
    static CLASSES: OnceLock<Vec<&'static str>> = OnceLock::new();
    CLASSES.get_or_init(|| include_str!("imagenet_classes.txt").lines().collect())
}

/// Pretrained ResNet weights published by torchvision (all ImageNet-1k, 1000 classes).
///
/// ```
/// use finetune::weights::ResNetWeights;
/// let w: ResNetWeights = "ResNet50_Weights.IMAGENET1K_V2".parse()?;
/// assert_eq!(w, ResNetWeights::ResNet50ImageNet1kV2);
/// assert_eq!(w.sha256_prefix(), "11ad3fa6");
/// assert_eq!(w.preprocess().resize, 232);
/// assert_eq!(ResNetWeights::default_for("resnet18")?, ResNetWeights::ResNet18ImageNet1kV1);
/// assert_eq!(w.categories()[0], "tench");
/// # Ok::<(), finetune::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResNetWeights {
    /// `ResNet18_Weights.IMAGENET1K_V1`: 69.758 / 89.078.
    ResNet18ImageNet1kV1,
    /// `ResNet34_Weights.IMAGENET1K_V1`: 73.314 / 91.42.
    ResNet34ImageNet1kV1,
    /// `ResNet50_Weights.IMAGENET1K_V1`: 76.13 / 92.862.
    ResNet50ImageNet1kV1,
    /// `ResNet50_Weights.IMAGENET1K_V2` (torchvision's new recipe): 80.858 / 95.434.
    ResNet50ImageNet1kV2,
    /// `ResNet101_Weights.IMAGENET1K_V1`: 77.374 / 93.546.
    ResNet101ImageNet1kV1,
    /// `ResNet101_Weights.IMAGENET1K_V2`: 81.886 / 95.78.
    ResNet101ImageNet1kV2,
    /// `ResNet152_Weights.IMAGENET1K_V1`: 78.312 / 94.046.
    ResNet152ImageNet1kV1,
    /// `ResNet152_Weights.IMAGENET1K_V2`: 82.284 / 96.002.
    ResNet152ImageNet1kV2,
}

/// The facts torchvision records for one set of weights.
struct Meta {
    arch: &'static str,
    version: u8,
    url: &'static str,
    sha256_prefix: &'static str,
    num_params: usize,
    top1: f32,
    top5: f32,
    resize: u32,
    recipe: &'static str,
}

const V1_RECIPE: &str =
    "https://github.com/pytorch/vision/tree/main/references/classification#resnet";

impl ResNetWeights {
    /// Every entry, in registry order.
    pub const ALL: [ResNetWeights; 8] = [
        ResNetWeights::ResNet18ImageNet1kV1,
        ResNetWeights::ResNet34ImageNet1kV1,
        ResNetWeights::ResNet50ImageNet1kV1,
        ResNetWeights::ResNet50ImageNet1kV2,
        ResNetWeights::ResNet101ImageNet1kV1,
        ResNetWeights::ResNet101ImageNet1kV2,
        ResNetWeights::ResNet152ImageNet1kV1,
        ResNetWeights::ResNet152ImageNet1kV2,
    ];

    fn meta(self) -> Meta {
        use ResNetWeights::*;
        let v2 = "https://github.com/pytorch/vision/issues/3995#new-recipe";
        match self {
            ResNet18ImageNet1kV1 => Meta {
                arch: "resnet18",
                version: 1,
                url: "https://download.pytorch.org/models/resnet18-f37072fd.pth",
                sha256_prefix: "f37072fd",
                num_params: 11_689_512,
                top1: 69.758,
                top5: 89.078,
                resize: 256,
                recipe: V1_RECIPE,
            },
            ResNet34ImageNet1kV1 => Meta {
                arch: "resnet34",
                version: 1,
                url: "https://download.pytorch.org/models/resnet34-b627a593.pth",
                sha256_prefix: "b627a593",
                num_params: 21_797_672,
                top1: 73.314,
                top5: 91.42,
                resize: 256,
                recipe: V1_RECIPE,
            },
            ResNet50ImageNet1kV1 => Meta {
                arch: "resnet50",
                version: 1,
                url: "https://download.pytorch.org/models/resnet50-0676ba61.pth",
                sha256_prefix: "0676ba61",
                num_params: 25_557_032,
                top1: 76.13,
                top5: 92.862,
                resize: 256,
                recipe: V1_RECIPE,
            },
            ResNet50ImageNet1kV2 => Meta {
                arch: "resnet50",
                version: 2,
                url: "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
                sha256_prefix: "11ad3fa6",
                num_params: 25_557_032,
                top1: 80.858,
                top5: 95.434,
                resize: 232,
                recipe: "https://github.com/pytorch/vision/issues/3995#issuecomment-1013906621",
            },
            ResNet101ImageNet1kV1 => Meta {
                arch: "resnet101",
                version: 1,
                url: "https://download.pytorch.org/models/resnet101-63fe2227.pth",
                sha256_prefix: "63fe2227",
                num_params: 44_549_160,
                top1: 77.374,
                top5: 93.546,
                resize: 256,
                recipe: V1_RECIPE,
            },
            ResNet101ImageNet1kV2 => Meta {
                arch: "resnet101",
                version: 2,
                url: "https://download.pytorch.org/models/resnet101-cd907fc2.pth",
                sha256_prefix: "cd907fc2",
                num_params: 44_549_160,
                top1: 81.886,
                top5: 95.78,
                resize: 232,
                recipe: v2,
            },
            ResNet152ImageNet1kV1 => Meta {
                arch: "resnet152",
                version: 1,
                url: "https://download.pytorch.org/models/resnet152-394f9c45.pth",
                sha256_prefix: "394f9c45",
                num_params: 60_192_808,
                top1: 78.312,
                top5: 94.046,
                resize: 256,
                recipe: V1_RECIPE,
            },
            ResNet152ImageNet1kV2 => Meta {
                arch: "resnet152",
                version: 2,
                url: "https://download.pytorch.org/models/resnet152-f82ba261.pth",
                sha256_prefix: "f82ba261",
                num_params: 60_192_808,
                top1: 82.284,
                top5: 96.002,
                resize: 232,
                recipe: v2,
            },
        }
    }

    /// torchvision's name: `ResNet50_Weights.IMAGENET1K_V2`.
    pub fn name(self) -> String {
        let m = self.meta();
        let depth = &m.arch["resnet".len()..];
        format!("ResNet{depth}_Weights.IMAGENET1K_V{}", m.version)
    }

    /// Short name: `resnet50.v2`.
    pub fn short_name(self) -> String {
        let m = self.meta();
        format!("{}.v{}", m.arch, m.version)
    }

    /// timm's name for these weights: `resnet50.tv_in1k` (V1), `resnet50.tv2_in1k` (V2).
    pub fn timm_name(self) -> String {
        let m = self.meta();
        let tag = if m.version == 1 { "tv" } else { "tv2" };
        format!("{}.{tag}_in1k", m.arch)
    }

    /// Architecture name (`resnet18`, ...).
    pub fn arch(self) -> &'static str {
        self.meta().arch
    }

    /// Download URL.
    pub fn url(self) -> &'static str {
        self.meta().url
    }

    /// File name in the cache (the URL's last segment, `resnet18-f37072fd.pth`).
    pub fn file_name(self) -> &'static str {
        let url = self.meta().url;
        url.rsplit('/').next().unwrap_or(url)
    }

    /// The first 8 hex digits of the file's SHA-256 (the suffix of torchvision's file name).
    pub fn sha256_prefix(self) -> &'static str {
        self.meta().sha256_prefix
    }

    /// The checksum the download is verified against.
    pub fn checksum(self) -> Checksum {
        Checksum::Sha256Prefix(self.sha256_prefix().to_string())
    }

    /// Number of classes of the head (1000).
    pub fn num_classes(self) -> usize {
        1000
    }

    /// Number of parameters, as torchvision documents it.
    pub fn num_params(self) -> usize {
        self.meta().num_params
    }

    /// The model configuration these weights fit (1000 classes).
    pub fn config(self) -> ResNetConfig {
        // The registry's architectures are all known names.
        ResNetConfig::from_name(self.arch(), self.num_classes())
            .unwrap_or_else(|_| ResNetConfig::resnet18(self.num_classes()))
    }

    /// Class names, in class-index order.
    pub fn categories(self) -> &'static [&'static str] {
        imagenet_classes()
    }

    /// Documented ImageNet-1k validation top-1 accuracy (%).
    pub fn top1(self) -> f32 {
        self.meta().top1
    }

    /// Documented ImageNet-1k validation top-5 accuracy (%).
    pub fn top5(self) -> f32 {
        self.meta().top5
    }

    /// The training recipe torchvision links.
    pub fn recipe(self) -> &'static str {
        self.meta().recipe
    }

    /// Inference preprocessing (torchvision's `weights.transforms()`): bilinear resize of the
    /// shorter side to 256 (232 for the V2 weights), 224 center crop, ImageNet mean/std.
    pub fn preprocess(self) -> Preprocess {
        Preprocess {
            resize: self.meta().resize,
            ..Preprocess::IMAGENET
        }
    }

    /// torchvision's `DEFAULT` weights for an architecture: V2 where it exists.
    pub fn default_for(arch: &str) -> Result<Self> {
        let arch = ResNetConfig::from_name(arch, 1000)?
            .arch_name()
            .unwrap_or("resnet18");
        Self::ALL
            .into_iter()
            .rev()
            .find(|w| w.arch() == arch)
            .ok_or_else(|| {
                WeightsError::UnknownWeights {
                    name: arch.to_string(),
                    known: Self::ALL
                        .iter()
                        .map(|w| w.short_name())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
                .into()
            })
    }

    /// Parses `resnet18` (the architecture's default weights), `resnet50.v1`, `resnet50_v2`,
    /// `ResNet50_Weights.IMAGENET1K_V2`, `ResNet50_Weights.DEFAULT`, timm's
    /// `resnet50.tv_in1k` / `resnet50.tv2_in1k`, or the variant name `ResNet50ImageNet1kV2`.
    pub fn parse(name: &str) -> Result<Self> {
        let unknown = || WeightsError::UnknownWeights {
            name: name.to_string(),
            known: Self::ALL
                .iter()
                .map(|w| w.short_name())
                .collect::<Vec<_>>()
                .join(", ")
                + " (or an architecture name for its default, or torchvision's ResNet50_Weights.IMAGENET1K_V2 form)",
        };
        let lower = name.trim().to_ascii_lowercase().replace('-', "");
        // Split "resnet50_weights.imagenet1k_v2", "resnet50.v2", "resnet50imagenet1kv2".
        let digits_end = lower
            .strip_prefix("resnet")
            .map(|rest| 6 + rest.chars().take_while(char::is_ascii_digit).count())
            .ok_or_else(unknown)?;
        let arch = &lower[..digits_end];
        let rest = lower[digits_end..]
            .trim_start_matches("_weights")
            .trim_start_matches(['.', '_']);
        let version = match rest {
            "" | "default" => return Self::default_for(arch).map_err(|_| unknown().into()),
            "v1" | "imagenet1k_v1" | "imagenet1kv1" | "tv_in1k" => 1,
            "v2" | "imagenet1k_v2" | "imagenet1kv2" | "tv2_in1k" => 2,
            _ => return Err(unknown().into()),
        };
        Self::ALL
            .into_iter()
            .find(|w| w.arch() == arch && w.meta().version == version)
            .ok_or_else(|| unknown().into())
    }

    /// The cache path of this file under `cache` (whether or not it is there yet).
    pub fn cache_path(self, cache: &Cache) -> std::path::PathBuf {
        cache.path(WEIGHTS_SUBDIR, self.file_name())
    }
}

/// Subdirectory of the cache where weights are stored.
pub const WEIGHTS_SUBDIR: &str = "weights";

impl FromStr for ResNetWeights {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for ResNetWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl ResNet {
    /// The model with torchvision's pretrained weights, downloaded (once, verified) into the
    /// cache that `FINETUNE_CACHE` / `FINETUNE_OFFLINE` describe. Combine with
    /// [`reset_classifier`](crate::model::VisionModel::reset_classifier) for transfer learning
    /// ([`pretrained`] takes any registered architecture by name).
    ///
    /// ```no_run
    /// use burn::tensor::Device;
    /// use finetune::{ResNet, VisionModel};
    /// use finetune::weights::ResNetWeights;
    ///
    /// let model = ResNet::pretrained(ResNetWeights::ResNet18ImageNet1kV1, &Device::default())?
    ///     .with_num_classes(2)
    ///     .freeze_backbone();
    /// # Ok::<(), finetune::Error>(())
    /// ```
    pub fn pretrained(weights: ResNetWeights, device: &Device) -> Result<ResNet> {
        let cache = Cache::from_env()?;
        Self::pretrained_in(weights, &cache, device).map(|(model, _)| model)
    }

    /// [`pretrained`](Self::pretrained) with an explicit cache (directory and offline switch);
    /// also returns the load report.
    pub fn pretrained_in(
        weights: ResNetWeights,
        cache: &Cache,
        device: &Device,
    ) -> Result<(ResNet, LoadReport)> {
        let path = cache.fetch(
            weights.url(),
            WEIGHTS_SUBDIR,
            weights.file_name(),
            &weights.checksum(),
        )?;
        Self::load_pretrained_file(&weights.config(), &path, device)
    }

    /// [`pretrained`](Self::pretrained) from a file downloaded by hand: its checksum is verified
    /// against the registry's before loading.
    pub fn pretrained_from_file(
        weights: ResNetWeights,
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<(ResNet, LoadReport)> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(WeightsError::NotFound {
                path: path.to_path_buf(),
            }
            .into());
        }
        weights.checksum().verify_file(path)?;
        Self::load_pretrained_file(&weights.config(), path, device)
    }

    /// Downloads (or finds in `cache`) any torchvision-style weights file described by `url`
    /// and its SHA-256 prefix, and loads it strictly into a model built from `config`. The
    /// registry entries go through this; it also serves self-hosted weights.
    pub fn pretrained_url(
        config: &ResNetConfig,
        url: &str,
        sha256_prefix: &str,
        cache: &Cache,
        device: &Device,
    ) -> Result<(ResNet, LoadReport)> {
        let file_name = url
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("weights.pth");
        let path = cache.fetch(
            url,
            WEIGHTS_SUBDIR,
            file_name,
            &Checksum::Sha256Prefix(sha256_prefix.to_string()),
        )?;
        Self::load_pretrained_file(config, &path, device)
    }

    fn load_pretrained_file(
        config: &ResNetConfig,
        path: &Path,
        device: &Device,
    ) -> Result<(ResNet, LoadReport)> {
        let mut model = config.try_init(device)?;
        let report = WeightsFile::open(path)?.load_into(&mut model, &LoadOptions::strict())?;
        Ok((model, report))
    }
}

/// Every pretrained weights name [`pretrained`] accepts, in timm's spelling
/// (`resnet50.tv2_in1k`, `convnext_tiny.tv_in1k`); a bare architecture name (`resnet50`) picks
/// its default weights.
pub fn pretrained_names() -> Vec<String> {
    Weights::all().iter().map(Weights::timm_name).collect()
}

/// Any registered architecture with pretrained weights, by timm / torchvision name:
/// `resnet50` (its default weights, torchvision's `DEFAULT`), `resnet50.tv2_in1k`,
/// `convnext_tiny.tv_in1k`, `vit_b_16.swag_e2e_in1k` (timm's spelling),
/// `ResNet50_Weights.IMAGENET1K_V2` (torchvision's). Downloaded once into the verified cache
/// (`FINETUNE_CACHE`, `FINETUNE_OFFLINE`), loaded strictly. Replace the head with
/// [`VisionModel::reset_classifier`](crate::model::VisionModel::reset_classifier).
///
/// ```no_run
/// use burn::tensor::Device;
/// use finetune::model::VisionModel;
///
/// let model = finetune::weights::pretrained("convnext_tiny.tv_in1k", &Device::flex())?
///     .reset_classifier(10)?
///     .freeze_backbone();
/// # Ok::<(), finetune::Error>(())
/// ```
///
/// # Errors
/// [`Error::UnknownModel`](crate::Error::UnknownModel) for a name no family knows; download,
/// checksum and import errors otherwise.
pub fn pretrained(name: &str, device: &Device) -> Result<AnyModel> {
    let cache = Cache::from_env()?;
    pretrained_in(name, &cache, device).map(|(model, _)| model)
}

/// [`pretrained`] with an explicit cache; also returns the load report.
///
/// # Errors
/// As [`pretrained`].
pub fn pretrained_in(name: &str, cache: &Cache, device: &Device) -> Result<(AnyModel, LoadReport)> {
    let unknown = || crate::Error::UnknownModel {
        name: name.to_string(),
        known: format!(
            "{} (weights: {})",
            crate::model::architectures().join(", "),
            pretrained_names().join(", ")
        ),
    };
    let weights = Weights::parse(name).map_err(|_| unknown())?;
    weights.load(cache, device)
}
