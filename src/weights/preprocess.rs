//! Inference preprocessing of pretrained weights, as torchvision's
//! `transforms._presets.ImageClassification` does it: resize the shorter side (bilinear, with
//! antialiasing), center crop (zero padding when the image is smaller), scale to `[0, 1]`,
//! normalise with the training mean/std. Kept small and private to the weights; the data
//! pipeline's general transforms live in `crate::data`.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};

use super::error::WeightsError;
use crate::error::Result;

/// How a preset resizes images (torchvision's `InterpolationMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Interpolation {
    /// Bilinear (with antialiasing when shrinking).
    #[default]
    Bilinear,
    /// Bicubic (EfficientNet B0-B7 and V2-L, ViT's SWAG weights).
    Bicubic,
}

/// Resize, crop and normalisation constants of a set of weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    /// Target length of the shorter side after resizing.
    pub resize: u32,
    /// The resampling filter of the resize.
    pub interpolation: Interpolation,
    /// Side of the square center crop.
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

    /// `(width, height)` after resizing a `width` x `height` image: the shorter side becomes
    /// `resize`, the longer one keeps the aspect ratio (truncated, as torchvision does).
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let resize = self.resize.max(1);
        let (short, long) = (width.min(height).max(1), width.max(height));
        let new_long = ((resize as u64 * long as u64) / short as u64).max(1) as u32;
        if width <= height {
            (resize, new_long)
        } else {
            (new_long, resize)
        }
    }

    /// Resized, center-cropped RGB image (`crop` x `crop`), before normalisation.
    pub fn resize_and_crop(&self, image: &DynamicImage) -> RgbImage {
        let rgb = image.to_rgb8();
        let (w, h) = self.resized_size(rgb.width(), rgb.height());
        let resized = if (w, h) == rgb.dimensions() {
            rgb
        } else {
            let filter = match self.interpolation {
                Interpolation::Bilinear => FilterType::Triangle,
                // Pillow's bicubic filter is Keys' cubic with a = -0.5 (Catmull-Rom).
                Interpolation::Bicubic => FilterType::CatmullRom,
            };
            image::imageops::resize(&rgb, w, h, filter)
        };
        let crop = self.crop.max(1);
        // torchvision: top = round((h - crop) / 2) with Python's round-half-to-even; an image
        // smaller than the crop is padded with zeros first (left/top get the smaller half).
        let offset = |size: u32| -> i64 {
            if size >= crop {
                ((size - crop) as f64 / 2.0).round_ties_even() as i64
            } else {
                -(((crop - size) / 2) as i64)
            }
        };
        let (left, top) = (offset(w), offset(h));
        let mut out = RgbImage::new(crop, crop);
        for (x, y, pixel) in out.enumerate_pixels_mut() {
            let (sx, sy) = (x as i64 + left, y as i64 + top);
            if (0..w as i64).contains(&sx) && (0..h as i64).contains(&sy) {
                *pixel = *resized.get_pixel(sx as u32, sy as u32);
            }
        }
        out
    }

    /// The normalised `[3, crop, crop]` values (channel-major) of one image.
    pub fn apply(&self, image: &DynamicImage) -> Vec<f32> {
        let cropped = self.resize_and_crop(image);
        let plane = (cropped.width() * cropped.height()) as usize;
        let mut out = vec![0.0f32; 3 * plane];
        for (i, pixel) in cropped.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (pixel[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    /// A batch `[N, 3, crop, crop]` on `device` (one host buffer, one upload).
    pub fn batch(&self, images: &[DynamicImage], device: &Device) -> Tensor<4> {
        let crop = self.crop.max(1) as usize;
        let mut data = Vec::with_capacity(images.len() * 3 * crop * crop);
        for image in images {
            data.extend(self.apply(image));
        }
        Tensor::from_data(TensorData::new(data, [images.len(), 3, crop, crop]), device)
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
