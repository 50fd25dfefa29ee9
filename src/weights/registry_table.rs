//! Every registered set of pretrained weights as one type, [`Weights`] (torchvision's
//! `WeightsEnum` members: URL, checksum, preprocessing, documented accuracy): the ResNets of
//! [`ResNetWeights`] and the table of the ConvNeXt, EfficientNet, MobileNetV3 and ViT weights
//! generated from torchvision's own metadata ([`super::table`]).

use std::fmt;
use std::path::Path;

use burn::tensor::Device;

use super::bundled::{BUNDLED, BundledWeights};
use super::error::WeightsError;
use super::import::{LoadOptions, WeightsFile};
pub use super::preprocess::Interpolation;
use super::preprocess::Preprocess;
use super::registry::{ResNetWeights, WEIGHTS_SUBDIR, imagenet_classes};
use super::report::LoadReport;
use super::table::TORCHVISION;
use crate::download::{Cache, Checksum};
use crate::error::Result;
use crate::model::{AnyConfig, AnyModel, ModelConfig, arch_of};

/// One member of a torchvision weights enum, as `make_weights_table.py` reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entry {
    /// torchvision's name: `ConvNeXt_Tiny_Weights.IMAGENET1K_V1`.
    pub enum_name: &'static str,
    /// The architecture: `convnext_tiny`.
    pub arch: &'static str,
    /// timm-style tag: `tv_in1k` (V1), `tv2_in1k` (V2), `swag_e2e_in1k`, `swag_linear_in1k`.
    pub tag: &'static str,
    /// Download URL.
    pub url: &'static str,
    /// First 8 hex digits of the file's SHA-256 (the suffix of its name).
    pub sha256_prefix: &'static str,
    /// Parameters, as torchvision documents them.
    pub num_params: u64,
    /// ImageNet-1k validation top-1 accuracy (%).
    pub top1: f64,
    /// ImageNet-1k validation top-5 accuracy (%).
    pub top5: f64,
    /// Shorter side after resizing.
    pub resize: u32,
    /// Center crop side.
    pub crop: u32,
    /// Resize filter.
    pub interpolation: Interpolation,
    /// The input size the model is built for (a ViT's position embeddings).
    pub image_size: u32,
    /// The training recipe torchvision links.
    pub recipe: &'static str,
    /// Normalisation mean (RGB).
    pub mean: [f32; 3],
    /// Normalisation standard deviation (RGB).
    pub std: [f32; 3],
    /// Whether these are the architecture's `DEFAULT` weights.
    pub is_default: bool,
}

/// Any registered pretrained weights.
///
/// ```
/// use finetune::weights::Weights;
/// let w = Weights::parse("convnext_tiny")?; // the architecture's default weights
/// assert_eq!(w.name(), "ConvNeXt_Tiny_Weights.IMAGENET1K_V1");
/// assert_eq!(w.timm_name(), "convnext_tiny.tv_in1k");
/// assert_eq!((w.preprocess().resize, w.preprocess().crop), (236, 224));
/// assert_eq!(Weights::parse("EfficientNet_B1_Weights.IMAGENET1K_V2")?.preprocess().resize, 255);
/// # Ok::<(), finetune::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub enum Weights {
    /// torchvision's ResNet weights.
    ResNet(ResNetWeights),
    /// A row of the generated table (ConvNeXt, EfficientNet, MobileNetV3, ViT).
    Table(&'static Entry),
    /// Weights shipped in the crate's package (`finetune_mini.rotation`).
    Bundled(&'static BundledWeights),
}

impl PartialEq for Weights {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Weights {}

impl Weights {
    /// Every registered weights, ResNets first, the bundled ones last.
    pub fn all() -> Vec<Weights> {
        ResNetWeights::ALL
            .into_iter()
            .map(Weights::ResNet)
            .chain(TORCHVISION.iter().map(Weights::Table))
            .chain(BUNDLED.iter().map(Weights::Bundled))
            .collect()
    }

    /// The registered weights other than the ResNets' (which [`ResNetWeights::parse`] reads).
    fn others() -> impl Iterator<Item = Weights> {
        TORCHVISION
            .iter()
            .map(Weights::Table)
            .chain(BUNDLED.iter().map(Weights::Bundled))
    }

    /// Whether these weights ship with the crate (no download).
    pub fn is_bundled(&self) -> bool {
        matches!(self, Weights::Bundled(_))
    }

    /// The default weights of an architecture (torchvision's `DEFAULT`).
    ///
    /// # Errors
    /// [`WeightsError::UnknownWeights`] when no weights are registered for `arch`.
    pub fn default_for(arch: &str) -> Result<Self> {
        let arch = arch_of(arch);
        if arch.starts_with("resnet") {
            return ResNetWeights::default_for(&arch).map(Weights::ResNet);
        }
        Self::others()
            .find(|w| match w {
                Weights::Table(e) => e.arch == arch && e.is_default,
                _ => w.arch() == arch,
            })
            .ok_or_else(|| unknown(&arch))
    }

    /// The registered weights whose preprocessing fits a model of `config`: its architecture's
    /// default weights, or, for a ViT built for another image size, that architecture's weights
    /// made for it (SWAG's 384 / 512). `None` for a custom shape.
    pub fn for_config(config: &AnyConfig) -> Option<Self> {
        let arch = config.arch_name()?;
        if let AnyConfig::VisionTransformer(c) = config
            && let Some(e) = TORCHVISION.iter().find(|e| {
                e.arch == arch
                    && e.image_size as usize == c.image_size
                    && e.tag.starts_with("swag_e2e")
            })
        {
            return Some(Weights::Table(e));
        }
        Self::default_for(&arch).ok()
    }

    /// The preprocessing for a model of `config`: [`for_config`](Self::for_config)'s preset,
    /// with a ViT's crop set to its image size when no registered weights are made for it
    /// (the resize scaled alike), ImageNet's preset for a custom shape.
    pub fn preset_for(config: &AnyConfig) -> Preprocess {
        let mut preset = Self::for_config(config).map_or(Preprocess::IMAGENET, |w| w.preprocess());
        if let AnyConfig::VisionTransformer(c) = config
            && c.image_size as u32 != preset.crop
        {
            let size = c.image_size as u32;
            preset.resize =
                (u64::from(size) * u64::from(preset.resize) / u64::from(preset.crop.max(1))) as u32;
            preset.crop = size;
        }
        preset
    }

    /// Parses any registered name: an architecture (its default weights), timm's spelling
    /// (`convnext_tiny.tv_in1k`, `vit_b_16.swag_e2e_in1k`), torchvision's
    /// (`ConvNeXt_Tiny_Weights.IMAGENET1K_V1`, `ViT_B_16_Weights.DEFAULT`), or, for ResNets,
    /// the forms [`ResNetWeights::parse`] takes.
    ///
    /// # Errors
    /// [`WeightsError::UnknownWeights`] listing the registered names.
    pub fn parse(name: &str) -> Result<Self> {
        let trimmed = name.trim();
        let arch = arch_of(trimmed);
        if arch.starts_with("resnet") {
            return ResNetWeights::parse(trimmed).map(Weights::ResNet);
        }
        // torchvision's enum spelling: `ConvNeXt_Tiny_Weights.IMAGENET1K_V1` / `.DEFAULT`.
        if let Some((enum_part, member)) = trimmed.split_once('.')
            && enum_part.to_ascii_lowercase().ends_with("_weights")
        {
            if member.eq_ignore_ascii_case("default") {
                let arch = enum_part[..enum_part.len() - "_weights".len()].to_ascii_lowercase();
                return Self::default_for(&arch);
            }
            return Self::others()
                .find(|w| w.name().eq_ignore_ascii_case(trimmed))
                .ok_or_else(|| unknown(trimmed));
        }
        let tag = trimmed.split_once('.').map(|(_, t)| t.to_ascii_lowercase());
        match tag {
            None => Self::default_for(&arch),
            Some(tag) => Self::others()
                .find(|w| w.timm_name() == format!("{arch}.{tag}"))
                .ok_or_else(|| unknown(trimmed)),
        }
    }

    /// torchvision's name: `ResNet50_Weights.IMAGENET1K_V2`, `ConvNeXt_Tiny_Weights.IMAGENET1K_V1`.
    pub fn name(&self) -> String {
        match self {
            Weights::ResNet(w) => w.name(),
            Weights::Table(e) => e.enum_name.to_string(),
            Weights::Bundled(b) => b.enum_name.to_string(),
        }
    }

    /// timm's spelling: `resnet50.tv2_in1k`, `convnext_tiny.tv_in1k`.
    pub fn timm_name(&self) -> String {
        match self {
            Weights::ResNet(w) => w.timm_name(),
            Weights::Table(e) => format!("{}.{}", e.arch, e.tag),
            Weights::Bundled(b) => format!("{}.{}", b.arch, b.tag),
        }
    }

    /// The architecture: `convnext_tiny`.
    pub fn arch(&self) -> &'static str {
        match self {
            Weights::ResNet(w) => w.arch(),
            Weights::Table(e) => e.arch,
            Weights::Bundled(b) => b.arch,
        }
    }

    /// Download URL; for bundled weights, the file's path relative to the crate's root
    /// (`data/weights/...`; [`BundledWeights::path`] is the full path).
    pub fn url(&self) -> &'static str {
        match self {
            Weights::ResNet(w) => w.url(),
            Weights::Table(e) => e.url,
            Weights::Bundled(b) => b.file,
        }
    }

    /// The file's name in the cache (the URL's last segment; a bundled file's name).
    pub fn file_name(&self) -> &'static str {
        let url = self.url();
        url.rsplit('/').next().unwrap_or(url)
    }

    /// The first 8 hex digits of the file's SHA-256.
    pub fn sha256_prefix(&self) -> &'static str {
        match self {
            Weights::ResNet(w) => w.sha256_prefix(),
            Weights::Table(e) => e.sha256_prefix,
            Weights::Bundled(b) => b.sha256.get(..8).unwrap_or(b.sha256),
        }
    }

    /// The checksum the download is verified against (SHA-256 prefix).
    pub fn checksum(&self) -> Checksum {
        match self {
            Weights::ResNet(w) => w.checksum(),
            Weights::Table(e) => Checksum::Sha256Prefix(e.sha256_prefix.to_string()),
            // The whole digest: a prefix of 64 digits.
            Weights::Bundled(b) => Checksum::Sha256Prefix(b.sha256.to_string()),
        }
    }

    /// Number of classes of the head (1000 for ImageNet-1k; 4 rotations for
    /// `finetune_mini.rotation`).
    pub fn num_classes(&self) -> usize {
        self.categories().len()
    }

    /// Class names, in class-index order.
    pub fn categories(&self) -> &'static [&'static str] {
        match self {
            Weights::Bundled(b) => b.categories,
            _ => imagenet_classes(),
        }
    }

    /// Documented top-1 accuracy (%): ImageNet-1k validation; for bundled weights, their
    /// pretraining task's held-out images.
    pub fn top1(&self) -> f64 {
        match self {
            Weights::ResNet(w) => f64::from(w.top1()),
            Weights::Table(e) => e.top1,
            Weights::Bundled(b) => b.top1,
        }
    }

    /// Documented top-5 accuracy (%), as [`top1`](Self::top1) (100 for a head of at most 5
    /// classes).
    pub fn top5(&self) -> f64 {
        match self {
            Weights::ResNet(w) => f64::from(w.top5()),
            Weights::Table(e) => e.top5,
            Weights::Bundled(b) if b.categories.len() <= 5 => 100.0,
            Weights::Bundled(b) => b.top1,
        }
    }

    /// Parameters, as torchvision documents them.
    pub fn num_params(&self) -> u64 {
        match self {
            Weights::ResNet(w) => w.num_params() as u64,
            Weights::Table(e) => e.num_params,
            Weights::Bundled(b) => b.num_params,
        }
    }

    /// The inference preprocessing of torchvision's `weights.transforms()`: resize, crop,
    /// filter, mean and standard deviation.
    pub fn preprocess(&self) -> Preprocess {
        match self {
            Weights::ResNet(w) => w.preprocess(),
            Weights::Table(e) => Preprocess {
                resize: e.resize,
                interpolation: e.interpolation,
                crop: e.crop,
                mean: e.mean,
                std: e.std,
            },
            Weights::Bundled(b) => b.preprocess,
        }
    }

    /// The model configuration these weights fit (their head's classes; a ViT's image size).
    pub fn config(&self) -> Result<AnyConfig> {
        let mut config = AnyConfig::from_name(self.arch(), self.num_classes())?;
        if let (AnyConfig::VisionTransformer(c), Weights::Table(e)) = (&mut config, self) {
            c.image_size = e.image_size as usize;
        }
        Ok(config)
    }

    /// Downloads (or finds in `cache`) the verified file and loads it strictly; bundled weights
    /// are read from the crate's package (checksum verified, `cache` unused).
    ///
    /// # Errors
    /// Download, checksum and import errors.
    pub fn load(&self, cache: &Cache, device: &Device) -> Result<(AnyModel, LoadReport)> {
        if let Weights::Bundled(b) = self {
            return self.load_from_file(b.path(), device);
        }
        let path = cache.fetch(
            self.url(),
            WEIGHTS_SUBDIR,
            self.file_name(),
            &self.checksum(),
        )?;
        self.load_file(&path, device)
    }

    /// Loads a file downloaded by hand, after checking it against the registry's checksum.
    ///
    /// # Errors
    /// [`WeightsError::NotFound`], checksum and import errors.
    pub fn load_from_file(
        &self,
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<(AnyModel, LoadReport)> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(WeightsError::NotFound {
                path: path.to_path_buf(),
            }
            .into());
        }
        self.checksum().verify_file(path)?;
        self.load_file(path, device)
    }

    fn load_file(&self, path: &Path, device: &Device) -> Result<(AnyModel, LoadReport)> {
        let mut model = self.config()?.try_init(device)?;
        let report = WeightsFile::open(path)?.load_into(&mut model, &LoadOptions::strict())?;
        Ok((model, report))
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::str::FromStr for Weights {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

fn unknown(name: &str) -> crate::Error {
    WeightsError::UnknownWeights {
        name: name.to_string(),
        known: Weights::all()
            .iter()
            .map(Weights::timm_name)
            .collect::<Vec<_>>()
            .join(", ")
            + " (or an architecture name for its default, or torchvision's ConvNeXt_Tiny_Weights.IMAGENET1K_V1 form)",
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_parses_back_under_each_of_its_names() {
        for w in Weights::all() {
            assert_eq!(Weights::parse(&w.timm_name()).unwrap(), w);
            assert_eq!(Weights::parse(&w.name()).unwrap(), w);
            assert!(w.url().ends_with(".pth") || w.is_bundled(), "{w}");
            assert!(w.file_name().contains(w.sha256_prefix()), "{w}");
            assert!(w.config().is_ok(), "{w}");
        }
        // One default per architecture.
        for &arch in crate::model::architectures() {
            let w = Weights::default_for(arch).unwrap();
            assert_eq!(w.arch(), arch);
        }
    }

    #[test]
    fn vit_swag_weights_build_for_their_image_size() {
        let w = Weights::parse("vit_b_16.swag_e2e_in1k").unwrap();
        match w.config().unwrap() {
            AnyConfig::VisionTransformer(c) => assert_eq!(c.image_size, 384),
            other => panic!("{other:?}"),
        }
        assert_eq!(w.preprocess().interpolation, Interpolation::Bicubic);
        assert_eq!(
            Weights::parse("ViT_B_16_Weights.DEFAULT")
                .unwrap()
                .timm_name(),
            "vit_b_16.tv_in1k"
        );
    }
}
