//! Reading one image file, with the check Pillow makes and the `image` crate does not: a file
//! cut short is an error ("image file is truncated", Pillow's words), never an image whose
//! missing part is filled in.
//!
//! Measured on every truncation of small files of each format (`image` 0.25): the JPEG decoder
//! (zune-jpeg) decodes any file cut inside its scan data and fills the rest with grey; the PNG
//! decoder accepts a file whose `IEND` chunk is cut; the WebP decoder accepts a lossy stream
//! missing its last bytes. TIFF, BMP (RLE included) and PNM decoders report every truncation
//! themselves. So before decoding, the container is walked:
//! - JPEG: the marker segments (each declared length must fit), and after each start-of-scan the
//!   entropy-coded data up to the next marker that is neither a stuffed `FF00` nor a restart
//!   marker; the stream must reach its end-of-image marker (`FFD9`). This is stricter than
//!   Pillow for one kind of file: a JPEG missing only its final 2-byte `FFD9` (Pillow accepts
//!   it; its pixels may be complete, but no check can tell without the marker).
//! - PNG: the chunks (length, type, data, CRC) up to a complete `IEND` (also slightly stricter
//!   than Pillow, which accepts a file cut after its last `IDAT`).
//! - WebP: the RIFF container's declared size must fit in the file.
//!
//! Greyscale, palette, 16-bit and alpha images are converted to 8-bit RGB.

use std::fs;
use std::io;
use std::path::Path;

use image::{ImageFormat, RgbImage};

use super::error::DataError;

/// Why a file could not be read as an image.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Reading the file failed (permissions, I/O): not a property of the image.
    Io(io::Error),
    /// The file is cut short; the detail says where.
    Truncated(String),
    /// The decoder rejected the file.
    Decode(String),
}

impl Failure {
    /// The error naming `path`.
    pub(crate) fn into_error(self, path: &Path) -> DataError {
        match self {
            Failure::Io(e) => DataError::io("reading image", path, e),
            Failure::Truncated(detail) => DataError::Truncated {
                path: path.to_path_buf(),
                detail,
            },
            Failure::Decode(reason) => DataError::Decode {
                path: path.to_path_buf(),
                reason,
            },
        }
    }

    /// The reason, in words (for the list of skipped files).
    pub(crate) fn reason(&self) -> String {
        match self {
            Failure::Io(e) => format!("reading: {e}"),
            Failure::Truncated(detail) => format!("image file is truncated: {detail}"),
            Failure::Decode(reason) => reason.clone(),
        }
    }
}

/// Reads and decodes the image at `path` as 8-bit RGB. A file cut short is
/// [`DataError::Truncated`], one the decoder rejects [`DataError::Decode`], a file that cannot
/// be read [`DataError::Io`]. The format is recognised from the file's first bytes (the
/// extension only when they match no format).
///
/// ```no_run
/// let img = finetune::data::read_image("cat.jpg")?;
/// println!("{}x{}", img.width(), img.height());
/// # Ok::<(), finetune::data::DataError>(())
/// ```
pub fn read_image(path: impl AsRef<Path>) -> Result<RgbImage, DataError> {
    let path = path.as_ref();
    if path.is_dir() {
        return Err(DataError::io(
            "reading image",
            path,
            io::Error::other("is a directory, not an image file"),
        ));
    }
    read_rgb(path).map_err(|f| f.into_error(path))
}

pub(crate) fn read_rgb(path: &Path) -> Result<RgbImage, Failure> {
    let bytes = fs::read(path).map_err(Failure::Io)?;
    decode_rgb(&bytes, path)
}

/// Decodes `bytes` (the content of `path`, used for the format when the bytes match none).
pub(crate) fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage, Failure> {
    let format = image::guess_format(bytes)
        .ok()
        .or_else(|| ImageFormat::from_path(path).ok())
        .ok_or_else(|| {
            Failure::Decode("the content is not a supported image format".to_string())
        })?;
    if let Some(detail) = truncation(bytes, format) {
        return Err(Failure::Truncated(detail));
    }
    let img = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| Failure::Decode(e.to_string()))?;
    Ok(img.into_rgb8())
}

/// Where a file of `format` is cut short, or `None` when its container is complete (or the
/// format's decoder reports truncation itself).
pub(crate) fn truncation(bytes: &[u8], format: ImageFormat) -> Option<String> {
    match format {
        ImageFormat::Jpeg => jpeg_truncation(bytes),
        ImageFormat::Png => png_truncation(bytes),
        ImageFormat::WebP => webp_truncation(bytes),
        _ => None,
    }
}

fn jpeg_truncation(b: &[u8]) -> Option<String> {
    let n = b.len();
    if n < 2 || b[0] != 0xFF || b[1] != 0xD8 {
        return None;
    }
    let mut i = 2;
    loop {
        // Bytes between segments are tolerated (libjpeg warns about "extraneous bytes"), then
        // fill bytes `FF` before the marker code.
        i += b[i..].iter().position(|&x| x == 0xFF).unwrap_or(n - i);
        i += b[i..].iter().position(|&x| x != 0xFF).unwrap_or(n - i);
        if i >= n {
            return Some(format!(
                "the JPEG stream ends at byte {n} without its end-of-image marker (FFD9)"
            ));
        }
        let marker = b[i];
        i += 1;
        match marker {
            0xD9 => return None,
            // Standalone markers (TEM, restart) and a stray stuffed zero: no length.
            0x00 | 0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        if i + 2 > n {
            return Some(format!(
                "the JPEG stream ends inside the length of marker FF{marker:02X} at byte {}",
                i - 2
            ));
        }
        let len = usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
        if len < 2 {
            // Malformed, not truncated: the decoder judges it.
            return None;
        }
        if i + len > n {
            return Some(format!(
                "JPEG segment FF{marker:02X} at byte {} declares {len} bytes but only {} remain",
                i - 2,
                n - i
            ));
        }
        i += len;
        if marker == 0xDA {
            // Entropy-coded data: up to the next marker other than a stuffed FF00, a restart
            // marker (FFD0-FFD7) or fill bytes.
            loop {
                i += b[i..].iter().position(|&x| x == 0xFF).unwrap_or(n - i);
                if i + 1 >= n {
                    return Some(format!(
                        "the JPEG stream ends at byte {n} inside its scan data, before the \
                         end-of-image marker (FFD9)"
                    ));
                }
                match b[i + 1] {
                    0x00 | 0xD0..=0xD7 => i += 2,
                    0xFF => i += 1,
                    _ => break,
                }
            }
        }
    }
}

fn png_truncation(b: &[u8]) -> Option<String> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    if !b.starts_with(&SIGNATURE) {
        return None;
    }
    let n = b.len();
    let mut i = SIGNATURE.len();
    loop {
        if i + 8 > n {
            return Some(format!(
                "the PNG stream ends at byte {n} before its IEND chunk"
            ));
        }
        let len = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let kind = String::from_utf8_lossy(&b[i + 4..i + 8]).into_owned();
        let end = i.checked_add(12).and_then(|e| e.checked_add(len));
        match end {
            Some(end) if end <= n => {
                if kind == "IEND" {
                    return None;
                }
                i = end;
            }
            _ => {
                return Some(format!(
                    "PNG chunk {kind} at byte {i} declares {len} data bytes but only {} bytes \
                     remain",
                    n - i
                ));
            }
        }
    }
}

fn webp_truncation(b: &[u8]) -> Option<String> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WEBP" {
        return None;
    }
    let declared = u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]])) + 8;
    (declared > b.len() as u64).then(|| {
        format!(
            "the WebP (RIFF) container declares {declared} bytes but the file has {}",
            b.len()
        )
    })
}
