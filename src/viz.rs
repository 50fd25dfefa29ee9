//! Pictures: image grids with captions (the tutorial's `imshow` and `visualize_model`),
//! training curves and confusion matrices, drawn
//! with a small raster [`Canvas`] (rectangles, lines, text in the public-domain 8x8 bitmap font
//! of the `font8x8` crate, after IBM's PC BIOS font) and written as PNG atomically. No system
//! fonts, no plotting library.

mod canvas;
mod grid;
mod plot;

use std::path::{Path, PathBuf};

pub use canvas::{Canvas, Color, colors};
pub use grid::{GridStyle, save_grid, save_grid_with};
pub use plot::{save_confusion, save_curves};

/// Why a picture could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VizError {
    /// Writing the file failed.
    #[error("{action} '{}': {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The PNG encoder failed.
    #[error("encoding '{}' as PNG: {reason}", path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// What the encoder said.
        reason: String,
    },
    /// The inputs are inconsistent (lengths, label ranges).
    #[error("cannot draw the picture: {0}")]
    Input(String),
}

/// Writes `image` to `path` as PNG, atomically (a temporary file in the same directory, then
/// a rename): an existing picture is never left half-written.
pub fn save_png(path: impl AsRef<Path>, image: &image::RgbImage) -> Result<(), VizError> {
    use image::ImageEncoder;
    use std::io::Write;

    let path = path.as_ref();
    let io = |action, source| VizError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io("creating the directory of", e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "picture.png".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
        let mut writer = std::io::BufWriter::new(file);
        image::codecs::png::PngEncoder::new(&mut writer)
            .write_image(
                image.as_raw(),
                image.width(),
                image.height(),
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| VizError::Encode {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        writer.flush().map_err(|e| io("writing", e))?;
        let file = writer
            .into_inner()
            .map_err(|e| io("writing", e.into_error()))?;
        file.sync_all().map_err(|e| io("writing", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("renaming a temporary file onto", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
