//! Checks that a batch fits a model before any kernel runs, so that a mismatch between weights,
//! configuration and data (a 1-channel stem fed RGB images, a flattened batch) is a typed error
//! naming both sides, never a panic inside a convolution.

use crate::error::{Error, Result};
use crate::model::ResNet;
use crate::model::VisionModel;

impl ResNet {
    /// Checks that an image batch of shape `[N, C, H, W]` can go through
    /// [`forward`](crate::model::VisionModel::forward): `C` must be the stem's input channels (`config().in_channels`, 3
    /// for RGB weights), and `N`, `H` and `W` at least 1.
    ///
    /// # Errors
    /// [`Error::InputShape`] saying what the model expects, what the data has and what to do.
    pub(crate) fn check_stem_input(&self, dims: [usize; 4]) -> Result<()> {
        let [n, c, h, w] = dims;
        let expected = self.config().in_channels;
        if c != expected {
            let plural = |k: usize| if k == 1 { "" } else { "s" };
            return Err(Error::InputShape(format!(
                "the model's stem (conv1) takes {expected} input channel{} but the images have {c} channel{}: use weights made for {c}-channel images (`in_channels: {c}`), or convert the images to {expected} channel{}",
                plural(expected),
                plural(c),
                plural(expected)
            )));
        }
        if n == 0 || h == 0 || w == 0 {
            return Err(Error::InputShape(format!(
                "an empty batch of shape [{n}, {c}, {h}, {w}]: every dimension must be at least 1"
            )));
        }
        Ok(())
    }
}

/// The shared input check of every family: `C` must be `in_channels` (the stem `stem` takes),
/// `N` at least 1, and `H`, `W` at least `min_side` (the smallest size whose feature maps stay
/// non-empty through the network's downsampling) and, when `multiple` is given, multiples of
/// it (a ViT's patch size).
///
/// # Errors
/// [`Error::InputShape`] saying what the model expects, what the data has and what to do.
pub(crate) fn check_image_input(
    dims: [usize; 4],
    in_channels: usize,
    stem: &str,
    min_side: usize,
    multiple: Option<usize>,
) -> Result<()> {
    let [n, c, h, w] = dims;
    let plural = |k: usize| if k == 1 { "" } else { "s" };
    if c != in_channels {
        return Err(Error::InputShape(format!(
            "the model's stem ({stem}) takes {in_channels} input channel{} but the images have {c} channel{}: use weights made for {c}-channel images (`in_channels: {c}`), or convert the images to {in_channels} channel{}",
            plural(in_channels),
            plural(c),
            plural(in_channels)
        )));
    }
    if n == 0 || h == 0 || w == 0 {
        return Err(Error::InputShape(format!(
            "an empty batch of shape [{n}, {c}, {h}, {w}]: every dimension must be at least 1"
        )));
    }
    if h < min_side || w < min_side {
        return Err(Error::InputShape(format!(
            "{h}x{w} images are too small for this model: its downsampling needs at least {min_side}x{min_side}; resize the images to at least that (the examples' --image-size or --upsample)"
        )));
    }
    if let Some(m) = multiple
        && (h % m != 0 || w % m != 0)
    {
        return Err(Error::InputShape(format!(
            "{h}x{w} images do not divide into {m}x{m} patches: resize them to a multiple of {m} (the examples' --image-size or --upsample)"
        )));
    }
    Ok(())
}
