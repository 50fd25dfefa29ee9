//! The item type every dataset of this crate yields, and the in-memory dataset behind CIFAR and
//! image folders (torchvision's `(PIL image, target)` pairs, kept as `u8` RGB).

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::data::dataset::{Dataset, DatasetError};
use image::RgbImage;

use super::error::DataError;

/// One labelled image: `u8` RGB pixels in HWC order, and the class index.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageItem {
    /// The pixels (height x width x 3, row-major).
    pub image: RgbImage,
    /// The class index, in `0..num_classes`.
    pub label: usize,
}

#[derive(Clone, Debug)]
enum Storage {
    /// All images share one size: one contiguous buffer of `len * h * w * 3` bytes.
    Uniform {
        width: u32,
        height: u32,
        pixels: Arc<[u8]>,
    },
    /// Images of any size.
    Images(Arc<[RgbImage]>),
}

/// A labelled image dataset held in memory as `u8` (CIFAR-10's 50,000 training images take
/// 154 MB). Cloning is cheap (the pixels are shared). Implements Burn's
/// [`Dataset<ImageItem>`](Dataset).
#[derive(Clone, Debug)]
pub struct ImageDataset {
    storage: Storage,
    labels: Arc<[usize]>,
    classes: Arc<[String]>,
}

impl ImageDataset {
    /// A dataset from one HWC buffer of equally sized images (`pixels.len()` must be
    /// `labels.len() * width * height * 3`).
    pub fn from_uniform(
        width: u32,
        height: u32,
        pixels: Vec<u8>,
        labels: Vec<usize>,
        classes: Vec<String>,
    ) -> Result<Self, DataError> {
        let per = width as usize * height as usize * 3;
        if pixels.len() != per * labels.len() {
            return Err(DataError::Item {
                index: 0,
                reason: format!(
                    "{} pixel bytes for {} images of {width}x{height}",
                    pixels.len(),
                    labels.len()
                ),
            });
        }
        check_labels(&labels, classes.len())?;
        Ok(ImageDataset {
            storage: Storage::Uniform {
                width,
                height,
                pixels: pixels.into(),
            },
            labels: labels.into(),
            classes: classes.into(),
        })
    }

    /// A dataset from separate images (any sizes).
    pub fn from_images(
        images: Vec<RgbImage>,
        labels: Vec<usize>,
        classes: Vec<String>,
    ) -> Result<Self, DataError> {
        if images.len() != labels.len() {
            return Err(DataError::Item {
                index: images.len().min(labels.len()),
                reason: format!("{} images but {} labels", images.len(), labels.len()),
            });
        }
        check_labels(&labels, classes.len())?;
        Ok(ImageDataset {
            storage: Storage::Images(images.into()),
            labels: labels.into(),
            classes: classes.into(),
        })
    }

    /// The same images with other labels (e.g. CIFAR-100's coarse labels); pixels are shared.
    pub fn relabel(&self, labels: Vec<usize>, classes: Vec<String>) -> Result<Self, DataError> {
        if labels.len() != self.len() {
            return Err(DataError::Item {
                index: labels.len().min(self.len()),
                reason: format!("{} labels for {} images", labels.len(), self.len()),
            });
        }
        check_labels(&labels, classes.len())?;
        Ok(ImageDataset {
            storage: self.storage.clone(),
            labels: labels.into(),
            classes: classes.into(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset has no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The class names, indexed by label.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Class name to label (torchvision's `class_to_idx`).
    pub fn class_to_idx(&self) -> BTreeMap<String, usize> {
        class_to_idx(&self.classes)
    }

    /// The label of every image, in order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// `(width, height)` when all images have the same size.
    pub fn image_size(&self) -> Option<(u32, u32)> {
        match &self.storage {
            Storage::Uniform { width, height, .. } => Some((*width, *height)),
            Storage::Images(images) => {
                let first = images.first()?.dimensions();
                images
                    .iter()
                    .all(|i| i.dimensions() == first)
                    .then_some(first)
            }
        }
    }

    /// The raw pixels of image `index` (HWC) and its size, without copying.
    pub fn pixels(&self, index: usize) -> Option<(&[u8], u32, u32)> {
        match &self.storage {
            Storage::Uniform {
                width,
                height,
                pixels,
            } => {
                let per = *width as usize * *height as usize * 3;
                let start = index.checked_mul(per)?;
                pixels.get(start..start + per).map(|p| (p, *width, *height))
            }
            Storage::Images(images) => images
                .get(index)
                .map(|i| (i.as_raw().as_slice(), i.width(), i.height())),
        }
    }

    /// Image `index` with its label, or `None` past the end.
    pub fn item(&self, index: usize) -> Option<ImageItem> {
        let label = *self.labels.get(index)?;
        let image = match &self.storage {
            Storage::Uniform { width, height, .. } => {
                let (pixels, _, _) = self.pixels(index)?;
                RgbImage::from_raw(*width, *height, pixels.to_vec())?
            }
            Storage::Images(images) => images.get(index)?.clone(),
        };
        Some(ImageItem { image, label })
    }
}

impl Dataset<ImageItem> for ImageDataset {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        self.item(index).ok_or_else(|| {
            DatasetError::new(DataError::Item {
                index,
                reason: format!("out of range (the dataset has {} items)", self.len()),
            })
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

/// `name -> index` for a list of class names.
pub(crate) fn class_to_idx(classes: &[String]) -> BTreeMap<String, usize> {
    classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.clone(), i))
        .collect()
}

fn check_labels(labels: &[usize], num_classes: usize) -> Result<(), DataError> {
    match labels.iter().position(|&l| l >= num_classes) {
        Some(index) => Err(DataError::Item {
            index,
            reason: format!(
                "label {} is out of range for {num_classes} classes",
                labels[index]
            ),
        }),
        None => Ok(()),
    }
}
