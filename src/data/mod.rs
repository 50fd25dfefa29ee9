//! Data: items, batches. (Placeholder until the data layer lands.)

use burn::tensor::{Int, Tensor};

/// One labelled image: 8-bit RGB pixels in HWC order and a class index.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageItem {
    /// The pixels.
    pub image: image::RgbImage,
    /// The class index.
    pub label: usize,
}

/// A batch: `[B, 3, H, W]` f32 images and `[B]` class indices.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    /// Images.
    pub images: Tensor<4>,
    /// Class indices.
    pub targets: Tensor<1, Int>,
}
