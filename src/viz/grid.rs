//! Image grids with a caption under each image: the true class, or "pred (true)" in green when
//! the prediction is right and red when it is wrong (the tutorial's `imshow` of a batch and
//! `visualize_model`).

use std::path::Path;

use image::RgbImage;

use super::VizError;
use super::canvas::{Canvas, GLYPH, colors};

/// Layout of a grid picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GridStyle {
    /// Images per row (default: about the square root of the count, at most 16).
    pub columns: Option<usize>,
    /// Images are enlarged (nearest neighbour) until their longer side reaches at least this
    /// (default 128: a 32x32 CIFAR image is shown 4x).
    pub min_image_side: u32,
    /// Optional title above the grid.
    pub title: Option<String>,
}

impl Default for GridStyle {
    fn default() -> Self {
        GridStyle {
            columns: None,
            min_image_side: 128,
            title: None,
        }
    }
}

const PAD: u32 = 12;

/// Writes a PNG grid of `images` with their captions to `path` (atomically).
///
/// Each caption is the true class name; with `predictions`, it is "pred (true)" (on two lines
/// when long), green when right and red when wrong. Labels index `class_names`.
///
/// ```no_run
/// # fn main() -> finetune::Result<()> {
/// use finetune::data::Cifar10;
/// use finetune::viz::save_grid;
///
/// let cifar = Cifar10::sample()?;
/// let test = cifar.test();
/// let images: Vec<_> = (0..16).filter_map(|i| test.item(i)).collect();
/// let pictures: Vec<_> = images.iter().map(|i| i.image.clone()).collect();
/// let labels: Vec<_> = images.iter().map(|i| i.label).collect();
/// save_grid("batch.png", &pictures, cifar.classes(), &labels, None)?;
/// # Ok(())
/// # }
/// ```
pub fn save_grid(
    path: impl AsRef<Path>,
    images: &[RgbImage],
    class_names: &[String],
    true_labels: &[usize],
    predictions: Option<&[usize]>,
) -> crate::Result<()> {
    save_grid_with(
        path,
        images,
        class_names,
        true_labels,
        predictions,
        &GridStyle::default(),
    )
}

/// [`save_grid`] with a layout.
pub fn save_grid_with(
    path: impl AsRef<Path>,
    images: &[RgbImage],
    class_names: &[String],
    true_labels: &[usize],
    predictions: Option<&[usize]>,
    style: &GridStyle,
) -> crate::Result<()> {
    let canvas = draw_grid(images, class_names, true_labels, predictions, style)?;
    canvas.save_png(path)?;
    Ok(())
}

fn check(
    images: &[RgbImage],
    class_names: &[String],
    true_labels: &[usize],
    predictions: Option<&[usize]>,
) -> Result<(), VizError> {
    if images.is_empty() {
        return Err(VizError::Input("no images".into()));
    }
    if true_labels.len() != images.len() {
        return Err(VizError::Input(format!(
            "{} images but {} true labels",
            images.len(),
            true_labels.len()
        )));
    }
    if let Some(p) = predictions
        && p.len() != images.len()
    {
        return Err(VizError::Input(format!(
            "{} images but {} predictions",
            images.len(),
            p.len()
        )));
    }
    let all = true_labels.iter().chain(predictions.unwrap_or(&[]));
    if let Some(bad) = all.into_iter().find(|&&l| l >= class_names.len()) {
        return Err(VizError::Input(format!(
            "label {bad} has no name ({} class names)",
            class_names.len()
        )));
    }
    if let Some(i) = images
        .iter()
        .position(|i| i.width() == 0 || i.height() == 0)
    {
        return Err(VizError::Input(format!("image {i} is empty")));
    }
    Ok(())
}

/// Draws the grid (see [`save_grid`]).
pub(crate) fn draw_grid(
    images: &[RgbImage],
    class_names: &[String],
    true_labels: &[usize],
    predictions: Option<&[usize]>,
    style: &GridStyle,
) -> Result<Canvas, VizError> {
    check(images, class_names, true_labels, predictions)?;
    let n = images.len();
    let cols = style
        .columns
        .unwrap_or_else(|| ((n as f64).sqrt().ceil() as usize).min(16))
        .clamp(1, n);
    let rows = n.div_ceil(cols);
    let max_w = images.iter().map(RgbImage::width).max().unwrap_or(1);
    let max_h = images.iter().map(RgbImage::height).max().unwrap_or(1);
    let scale = style.min_image_side.div_ceil(max_w.max(max_h)).max(1);
    let (img_w, img_h) = (max_w * scale, max_h * scale);
    let text_scale = if img_w >= 96 { 2 } else { 1 };
    let glyph_w = GLYPH * text_scale;

    // Captions: lines and colour per image.
    let captions: Vec<(Vec<String>, image::Rgb<u8>)> = (0..n)
        .map(|i| {
            let truth = &class_names[true_labels[i]];
            match predictions {
                None => (vec![truth.clone()], colors::BLACK),
                Some(p) => {
                    let pred = &class_names[p[i]];
                    let color = if p[i] == true_labels[i] {
                        colors::GREEN
                    } else {
                        colors::RED
                    };
                    let one = format!("{pred} ({truth})");
                    if one.chars().count() as u32 * glyph_w <= img_w {
                        (vec![one], color)
                    } else {
                        (vec![pred.clone(), format!("({truth})")], color)
                    }
                }
            }
        })
        .collect();
    let lines = captions.iter().map(|c| c.0.len()).max().unwrap_or(1) as u32;
    let widest = captions
        .iter()
        .flat_map(|c| c.0.iter())
        .map(|l| l.chars().count() as u32 * glyph_w)
        .max()
        .unwrap_or(0);
    let cell_w = img_w.max(widest) + PAD;
    let line_h = GLYPH * text_scale + 2;
    let cell_h = img_h + 4 + lines * line_h + PAD;
    let mut width = cols as u32 * cell_w + PAD;
    // The title shrinks to fit the grid (the canvas widens for a long title at the smallest size).
    let title_scale = style.title.as_ref().map(|t| {
        let fits = |s: u32| Canvas::text_size(t, s).0 + 2 * PAD <= width;
        let s = [3, 2, 1].into_iter().find(|&s| fits(s)).unwrap_or(1);
        width = width.max(Canvas::text_size(t, s).0 + 2 * PAD);
        s
    });
    let title_h = title_scale.map_or(0, |s| GLYPH * s + PAD * 2);
    let height = title_h + rows as u32 * cell_h + PAD;
    let mut canvas = Canvas::new(width, height, colors::WHITE);
    if let (Some(title), Some(s)) = (&style.title, title_scale) {
        canvas.text_centered(
            i64::from(width / 2),
            i64::from(PAD),
            title,
            s,
            colors::BLACK,
        );
    }
    for (i, (img, (lines, color))) in images.iter().zip(&captions).enumerate() {
        let (r, c) = ((i / cols) as u32, (i % cols) as u32);
        let x0 = PAD + c * cell_w;
        let y0 = title_h + PAD + r * cell_h;
        let (w, h) = (img.width() * scale, img.height() * scale);
        let ix = x0 + (cell_w - PAD - w) / 2;
        let iy = y0 + (img_h - h) / 2;
        canvas.blit(img, i64::from(ix), i64::from(iy), scale);
        for (k, line) in lines.iter().enumerate() {
            canvas.text_centered(
                i64::from(x0 + (cell_w - PAD) / 2),
                i64::from(y0 + img_h + 4 + k as u32 * line_h),
                line,
                text_scale,
                *color,
            );
        }
    }
    Ok(canvas)
}
