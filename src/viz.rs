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
pub use plot::{save_confusion, save_curves, save_lr_find};

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

impl VizError {
    /// What went wrong without the file's path, for messages that name the file already.
    pub fn reason(&self) -> String {
        match self {
            VizError::Io { source, .. } => source.to_string(),
            VizError::Encode { reason, .. } => reason.clone(),
            VizError::Input(reason) => reason.clone(),
        }
    }
}

/// Writes `image` to `path` as PNG, atomically (a fresh temporary file in the same directory,
/// then a rename; never through a symlink planted at `path`): an existing picture is never left
/// half-written.
pub fn save_png(path: impl AsRef<Path>, image: &image::RgbImage) -> Result<(), VizError> {
    use image::ImageEncoder;
    use std::io::Write;

    let path = path.as_ref();
    let io = |action, source| VizError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let dir = crate::fsutil::parent_dir(path);
    std::fs::create_dir_all(&dir).map_err(|e| io("creating the directory of", e))?;
    let mut encoded = Ok(());
    crate::fsutil::write_atomic_with(path, |file| {
        let mut writer = std::io::BufWriter::new(file);
        encoded = image::codecs::png::PngEncoder::new(&mut writer).write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        );
        match &encoded {
            Ok(()) => writer.flush(),
            Err(_) => Err(std::io::Error::other("PNG encoding failed")),
        }
    })
    .map_err(|e| match encoded {
        Err(err) => VizError::Encode {
            path: path.to_path_buf(),
            reason: err.to_string(),
        },
        Ok(()) => io("writing", e),
    })
}
