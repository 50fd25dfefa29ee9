//! Inference preprocessing of pretrained weights: torchvision's
//! `transforms._presets.ImageClassification` (`weights.transforms()`), built from the data
//! pipeline's own transforms — [`Resize`] of the shorter side (bilinear or bicubic, Pillow's
//! resampling with antialiasing), [`CenterCrop`] (zero padding when the image is smaller),
//! `ToTensor` and [`Normalize`] — so that `predict` ([`Classifier`](super::Classifier)) and the
//! training pipelines share one pixel-exact implementation ([`Preprocess::pipeline`]).

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::DynamicImage;

use super::error::WeightsError;
pub use crate::data::Interpolation;
use crate::data::{
    CenterCrop, Normalize, Pipeline, Resize, TransformCache, rng::SeededRng, to_chw,
};
use crate::error::Result;

/// Resize, crop and normalisation constants of a set of weights (torchvision's
/// `ImageClassification(crop_size, resize_size, mean, std, interpolation)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    /// Target length of the shorter side after resizing, pixels.
    pub resize: u32,
    /// The resampling filter of the resize.
    pub interpolation: Interpolation,
    /// Side of the square center crop, pixels.
    pub crop: u32,
    /// Per-channel mean (RGB, on `[0, 1]` values).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB).
    pub std: [f32; 3],
}

impl Preprocess {
    /// torchvision's ImageNet evaluation preset: resize 256, crop 224, ImageNet mean/std.
    pub const IMAGENET: Preprocess = Preprocess {
        resize: 256,
        interpolation: Interpolation::Bilinear,
        crop: 224,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// The preset as a data pipeline: `Resize(resize, interpolation)`, `CenterCrop(crop)`,
    /// `Normalize(mean, std)` — what [`Classifier`](super::Classifier) and `predict` run.
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new()
            .then(Resize::new(self.resize).with_interpolation(self.interpolation))
            .then(CenterCrop::new(self.crop))
            .normalize(self.normalize())
    }

    /// The preset's [`Normalize`].
    pub fn normalize(&self) -> Normalize {
        Normalize::new(self.mean, self.std)
    }

    /// The preset with another resize, crop or interpolation where given (the examples'
    /// `--resize`, `--crop`, `--interpolation`).
    pub fn with(
        self,
        resize: Option<u32>,
        crop: Option<u32>,
        interpolation: Option<Interpolation>,
    ) -> Self {
        Preprocess {
            resize: resize.unwrap_or(self.resize),
            crop: crop.unwrap_or(self.crop),
            interpolation: interpolation.unwrap_or(self.interpolation),
            ..self
        }
    }

    /// `(width, height)` after resizing a `width` x `height` image: the shorter side becomes
    /// `resize`, the longer one keeps the aspect ratio (truncated, as torchvision does).
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        Resize::new(self.resize).output_size(width, height)
    }

    /// The normalised `[3, crop, crop]` values (channel-major) of one image.
    ///
    /// # Errors
    /// [`Error::Data`](crate::Error::Data) when a size is 0.
    pub fn apply(&self, image: &DynamicImage) -> Result<Vec<f32>> {
        self.apply_all(std::slice::from_ref(image))
    }

    /// A batch `[N, 3, crop, crop]` on `device` (one host buffer, one upload).
    ///
    /// # Errors
    /// As [`apply`](Self::apply).
    pub fn batch(&self, images: &[DynamicImage], device: &Device) -> Result<Tensor<4>> {
        let crop = self.crop as usize;
        let data = self.apply_all(images)?;
        Ok(Tensor::from_data(
            TensorData::new(data, [images.len(), 3, crop, crop]),
            device,
        ))
    }

    fn apply_all(&self, images: &[DynamicImage]) -> Result<Vec<f32>> {
        let pipeline = self.pipeline();
        pipeline.validate()?;
        let lut = pipeline.lut();
        let plane = self.crop as usize * self.crop as usize;
        let mut out = vec![0.0f32; images.len() * 3 * plane];
        let mut cache = TransformCache::default();
        // The preset draws no random numbers; the generator is never used.
        let mut rng = SeededRng::new(0);
        for (image, chunk) in images.iter().zip(out.chunks_exact_mut(3 * plane)) {
            let rgb = pipeline.apply_cached(image.to_rgb8(), &mut rng, &mut cache)?;
            to_chw(&rgb, &lut, chunk);
        }
        Ok(out)
    }
}

/// Decodes an image file (JPEG, PNG, BMP, WebP), with a typed error naming it.
pub fn open_image(path: impl AsRef<Path>) -> Result<DynamicImage> {
    let path = path.as_ref();
    let bad = |reason: String| WeightsError::Image {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(bad("no such file".into()).into());
    }
    let reader = image::ImageReader::open(path)
        .map_err(|e| bad(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    Ok(reader.decode().map_err(|e| bad(e.to_string()))?)
}
