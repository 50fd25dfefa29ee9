//! Image-folder datasets (`root/<class>/<image>`), following torchvision's
//! `datasets.ImageFolder`: classes are the sub-directory names sorted as Python sorts them,
//! images are found recursively under each class directory (sorted paths), and the image
//! extensions are torchvision's `IMG_EXTENSIONS` (any letter case).
//!
//! Unlike torchvision, images are decoded once, in parallel, and kept in memory as `u8` RGB
//! (optionally resized at load), so an epoch never decodes. A file that cannot be decoded, or is
//! cut short (see [`read_image`](super::read_image)), is an error naming it, or — with
//! [`ImageFolderOptions::skip_invalid`] — skipped and listed ([`ImageFolder::skipped`]). A file
//! that cannot be read (permissions, I/O) is always an error. Nothing is dropped silently:
//! files without an image extension, hidden entries (names starting with `.`, which torchvision
//! would read) and files directly under the root are listed by [`ImageFolder::ignored`].
//! Greyscale, palette, 16-bit and alpha images are converted to 8-bit RGB.
//!
//! Names need not be UTF-8: a class directory named in other bytes (e.g. Latin-1 from an old
//! volume) is read through its real path; its class name shows each byte that is not UTF-8 as
//! `\xNN` (torchvision shows it as a surrogate escape, `\udcNN`), and classes are sorted by
//! the code points Python gives such names (UTF-8 characters, then `0xDC00 + byte`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataset::{Dataset, DatasetError};
use image::RgbImage;

use super::dataset::{ImageDataset, ImageItem};
use super::error::DataError;
use super::functional::{resize, shorter_side_size};
use super::image_file::{Failure, read_rgb};

/// File extensions (case-insensitive) read as images: torchvision's `IMG_EXTENSIONS`.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

/// How to load an image folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageFolderOptions {
    /// Resize every image to `(width, height)` at load (bilinear, like Pillow).
    pub resize: Option<(u32, u32)>,
    /// Resize every image at load so that its shorter side is this many pixels, keeping the
    /// aspect ratio (torchvision's `Resize(int)`, bilinear): images keep their shapes, for
    /// transforms that crop them ([`RandomResizedCrop`](super::RandomResizedCrop),
    /// [`CenterCrop`](super::CenterCrop)). Ignored when [`resize`](Self::resize) is set.
    pub resize_shorter: Option<u32>,
    /// Skip files that cannot be decoded (listed by [`ImageFolder::skipped`]) instead of failing.
    pub skip_invalid: bool,
    /// Decoding threads (default: the number of cores).
    pub num_threads: Option<usize>,
}

impl ImageFolderOptions {
    /// Resize every image to `size x size` at load.
    pub fn resize(mut self, size: u32) -> Self {
        self.resize = Some((size, size));
        self
    }

    /// Resize every image to `width x height` at load.
    pub fn resize_to(mut self, width: u32, height: u32) -> Self {
        self.resize = Some((width, height));
        self
    }

    /// Resize every image at load so that its shorter side is `size` (aspect ratio kept).
    pub fn resize_shorter(mut self, size: u32) -> Self {
        self.resize = None;
        self.resize_shorter = Some(size);
        self
    }

    /// Skip undecodable files instead of failing.
    pub fn skip_invalid(mut self, skip: bool) -> Self {
        self.skip_invalid = skip;
        self
    }

    /// Decode with `n` threads.
    pub fn num_threads(mut self, n: usize) -> Self {
        self.num_threads = Some(n.max(1));
        self
    }
}

/// A file that was skipped at load, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why: the decoder's message, or "image file is truncated: ..." for a file cut short.
    pub reason: String,
}

/// Why a directory entry was not read as an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    /// A file whose extension is not one of [`IMAGE_EXTENSIONS`].
    NotAnImageExtension,
    /// A file or directory whose name starts with `.`.
    Hidden,
    /// A file directly under the root, outside every class directory.
    OutsideClassFolder,
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IgnoreReason::NotAnImageExtension => "not an image extension",
            IgnoreReason::Hidden => "hidden",
            IgnoreReason::OutsideClassFolder => "not in a class folder",
        })
    }
}

/// A directory entry that was not read, and why (see [`ImageFolder::ignored`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoredFile {
    /// The file or directory.
    pub path: PathBuf,
    /// Why it was not read.
    pub reason: IgnoreReason,
}

/// An image folder loaded in memory. Implements Burn's [`Dataset<ImageItem>`](Dataset).
///
/// ```no_run
/// # fn main() -> finetune::Result<()> {
/// use finetune::data::{ImageFolder, ImageFolderOptions};
///
/// // hymenoptera_data/train/{ants,bees}/*.jpg, resized to 224x224 at load.
/// let train = ImageFolder::open_with(
///     "hymenoptera_data/train",
///     ImageFolderOptions::default().resize(224),
/// )?;
/// println!("{} images of {:?}", train.len(), train.classes());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ImageFolder {
    root: PathBuf,
    dataset: ImageDataset,
    paths: Vec<PathBuf>,
    skipped: Vec<SkippedFile>,
    ignored: Vec<IgnoredFile>,
}

impl ImageFolder {
    /// Loads `root/<class>/**/<image>` with default options (no resize, invalid files are
    /// errors).
    pub fn open(root: impl AsRef<Path>) -> Result<Self, DataError> {
        Self::open_with(root, ImageFolderOptions::default())
    }

    /// Loads `root/<class>/**/<image>`.
    ///
    /// Errors: [`DataError::MissingFile`] (no such directory), [`DataError::NoClasses`],
    /// [`DataError::EmptyClass`], [`DataError::Decode`] / [`DataError::Truncated`] (unless
    /// `skip_invalid`), [`DataError::Io`], and [`DataError::Transform`] for a resize to 0
    /// pixels.
    pub fn open_with(
        root: impl AsRef<Path>,
        options: ImageFolderOptions,
    ) -> Result<Self, DataError> {
        let root = root.as_ref();
        if options.resize.is_none() && options.resize_shorter == Some(0) {
            return Err(DataError::Transform {
                transform: "Resize",
                reason: "ImageFolderOptions resizes the shorter side to 0 pixels: give a size of \
                         at least 1 (ImageFolderOptions::resize_shorter)"
                    .into(),
            });
        }
        if let Some((w, h)) = options.resize
            && (w == 0 || h == 0)
        {
            return Err(DataError::Transform {
                transform: "Resize",
                reason: format!(
                    "ImageFolderOptions resizes to {w}x{h}: both sides must be at least 1 \
                     pixel (ImageFolderOptions::resize / resize_to)"
                ),
            });
        }
        let mut ignored = Vec::new();
        let classes = find_classes(root, &mut ignored)?;
        let names: Vec<String> = classes.iter().map(|(name, _)| name.clone()).collect();
        let mut files = Vec::new();
        for (label, (class, dir)) in classes.iter().enumerate() {
            let before = files.len();
            collect_images(dir, &mut |p| files.push((p, label)), &mut ignored)?;
            if files.len() == before {
                return Err(DataError::EmptyClass {
                    class: class.clone(),
                    dir: dir.clone(),
                });
            }
        }
        let class_dirs: Vec<PathBuf> = classes.into_iter().map(|(_, dir)| dir).collect();
        let classes = names;
        let decoded = decode_all(&files, &options)?;
        let mut images = Vec::with_capacity(files.len());
        let mut labels = Vec::with_capacity(files.len());
        let mut paths = Vec::with_capacity(files.len());
        let mut skipped = Vec::new();
        for ((path, label), result) in files.into_iter().zip(decoded) {
            match result {
                Ok(img) => {
                    images.push(img);
                    labels.push(label);
                    paths.push(path);
                }
                Err(failure) => skipped.push(SkippedFile {
                    path,
                    reason: failure.reason(),
                }),
            }
        }
        // A class whose every file was skipped is as empty as an empty folder.
        let mut seen = vec![false; classes.len()];
        for &label in &labels {
            seen[label] = true;
        }
        if let Some(label) = seen.iter().position(|s| !s) {
            return Err(DataError::EmptyClass {
                class: classes[label].clone(),
                dir: class_dirs[label].clone(),
            });
        }
        let dataset = match options.resize {
            Some((w, h)) => {
                let mut pixels = Vec::with_capacity(images.len() * w as usize * h as usize * 3);
                for img in &images {
                    pixels.extend_from_slice(img.as_raw());
                }
                ImageDataset::from_uniform(w, h, pixels, labels, classes)?
            }
            None => ImageDataset::from_images(images, labels, classes)?,
        };
        Ok(ImageFolder {
            root: root.to_path_buf(),
            dataset,
            paths,
            skipped,
            ignored,
        })
    }

    /// The class names (sorted sub-directory names), indexed by label.
    pub fn classes(&self) -> &[String] {
        self.dataset.classes()
    }

    /// Class name to label.
    pub fn class_to_idx(&self) -> BTreeMap<String, usize> {
        self.dataset.class_to_idx()
    }

    /// The file of each item, in item order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Files skipped at load (only with `skip_invalid`): undecodable or truncated images.
    pub fn skipped(&self) -> &[SkippedFile] {
        &self.skipped
    }

    /// Entries that were not read: files without an image extension, hidden entries, files
    /// outside the class folders (sorted by path within each directory).
    pub fn ignored(&self) -> &[IgnoredFile] {
        &self.ignored
    }

    /// One line saying what was ignored and skipped (counts by reason and the first few paths),
    /// or `None` when every entry was loaded. For the examples and logs.
    pub fn load_summary(&self) -> Option<String> {
        const SHOWN: usize = 3;
        let mut parts = Vec::new();
        for reason in [
            IgnoreReason::NotAnImageExtension,
            IgnoreReason::OutsideClassFolder,
            IgnoreReason::Hidden,
        ] {
            let paths: Vec<&PathBuf> = self
                .ignored
                .iter()
                .filter(|i| i.reason == reason)
                .map(|i| &i.path)
                .collect();
            if !paths.is_empty() {
                parts.push(format!(
                    "{} ignored ({reason}: {})",
                    paths.len(),
                    listing(&paths, SHOWN)
                ));
            }
        }
        if !self.skipped.is_empty() {
            let paths: Vec<&PathBuf> = self.skipped.iter().map(|s| &s.path).collect();
            parts.push(format!(
                "{} skipped as invalid ({}; first: {})",
                paths.len(),
                listing(&paths, SHOWN),
                self.skipped[0].reason
            ));
        }
        (!parts.is_empty()).then(|| format!("{}: {}", self.root.display(), parts.join("; ")))
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.dataset.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.dataset.is_empty()
    }

    /// The in-memory dataset (cheap clone).
    pub fn dataset(&self) -> ImageDataset {
        self.dataset.clone()
    }
}

impl Dataset<ImageItem> for ImageFolder {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        self.dataset.get(index)
    }

    fn len(&self) -> usize {
        self.dataset.len()
    }
}

fn listing(paths: &[&PathBuf], shown: usize) -> String {
    let mut s: Vec<String> = paths
        .iter()
        .take(shown)
        .map(|p| p.display().to_string())
        .collect();
    if paths.len() > shown {
        s.push(format!("and {} more", paths.len() - shown));
    }
    s.join(", ")
}

/// The code points Python gives a file name (`os.fsdecode`: UTF-8, each other byte as the
/// surrogate `0xDC00 + byte`), so that sorting matches `sorted()` on the names.
fn python_sort_key(name: &OsStr) -> Vec<u32> {
    let mut key = Vec::with_capacity(name.len());
    for chunk in name.as_encoded_bytes().utf8_chunks() {
        key.extend(chunk.valid().chars().map(u32::from));
        key.extend(chunk.invalid().iter().map(|&b| 0xDC00 + u32::from(b)));
    }
    key
}

/// The name shown for a directory: UTF-8 as is, each other byte as `\xNN`.
fn display_name(name: &OsStr) -> String {
    let mut s = String::with_capacity(name.len());
    for chunk in name.as_encoded_bytes().utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02X}"));
        }
    }
    s
}

struct Entry {
    path: PathBuf,
    is_dir: bool,
    hidden: bool,
}

/// The entries of `dir`, sorted as Python sorts their names.
fn sorted_entries(dir: &Path) -> Result<Vec<Entry>, DataError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::io("reading directory", dir, e))? {
        let entry = entry.map_err(|e| DataError::io("reading directory", dir, e))?;
        let name = entry.file_name();
        let path = entry.path();
        // Follows symbolic links, like torchvision (os.walk(followlinks=True)).
        let is_dir = path.is_dir();
        out.push((
            python_sort_key(&name),
            Entry {
                hidden: name.as_encoded_bytes().starts_with(b"."),
                path,
                is_dir,
            },
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out.into_iter().map(|(_, e)| e).collect())
}

/// The classes of `root`: (name shown, directory), sorted.
fn find_classes(
    root: &Path,
    ignored: &mut Vec<IgnoredFile>,
) -> Result<Vec<(String, PathBuf)>, DataError> {
    if !root.is_dir() {
        return Err(DataError::MissingFile {
            path: root.to_path_buf(),
            hint: "expected a directory with one sub-directory of images per class".into(),
        });
    }
    let mut classes = Vec::new();
    for entry in sorted_entries(root)? {
        let reason = if entry.hidden {
            IgnoreReason::Hidden
        } else if entry.is_dir {
            let name = entry.path.file_name().unwrap_or_default();
            classes.push((display_name(name), entry.path));
            continue;
        } else {
            IgnoreReason::OutsideClassFolder
        };
        ignored.push(IgnoredFile {
            path: entry.path,
            reason,
        });
    }
    if classes.is_empty() {
        return Err(DataError::NoClasses {
            root: root.to_path_buf(),
        });
    }
    Ok(classes)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension().is_some_and(|e| {
        IMAGE_EXTENSIONS
            .iter()
            .any(|x| e.as_encoded_bytes().eq_ignore_ascii_case(x.as_bytes()))
    })
}

/// Image files under `dir`, recursively, in sorted order; other entries go to `ignored`.
fn collect_images(
    dir: &Path,
    push: &mut dyn FnMut(PathBuf),
    ignored: &mut Vec<IgnoredFile>,
) -> Result<(), DataError> {
    for entry in sorted_entries(dir)? {
        if entry.hidden {
            ignored.push(IgnoredFile {
                path: entry.path,
                reason: IgnoreReason::Hidden,
            });
        } else if entry.is_dir {
            collect_images(&entry.path, push, ignored)?;
        } else if has_image_extension(&entry.path) {
            push(entry.path);
        } else {
            ignored.push(IgnoredFile {
                path: entry.path,
                reason: IgnoreReason::NotAnImageExtension,
            });
        }
    }
    Ok(())
}

/// The most elongated image [`ImageFolderOptions::resize_shorter`] resizes (long side over
/// short side).
const MAX_ASPECT: u64 = 64;

fn decode_one(path: &Path, options: &ImageFolderOptions) -> Result<RgbImage, Failure> {
    let img = read_rgb(path)?;
    Ok(match (options.resize, options.resize_shorter) {
        (Some((w, h)), _) => resize(&img, w, h),
        (None, Some(size)) => {
            let (w, h) = shorter_side_size(img.width(), img.height(), size);
            // A sliver (1x5000 pixels) would become gigabytes at the shorter side's size.
            if u64::from(w.max(h)) > u64::from(size) * MAX_ASPECT {
                return Err(Failure::Decode(format!(
                    "a {}x{} image is too elongated to resize its shorter side to {size} pixels \
                     (more than {MAX_ASPECT}:1); crop it, or remove it from the folder",
                    img.width(),
                    img.height()
                )));
            }
            resize(&img, w.max(1), h.max(1))
        }
        (None, None) => img,
    })
}

type Decoded = Vec<Result<RgbImage, Failure>>;

/// Decodes every file on a pool of threads. The first failure (in file order) is an error,
/// unless skipping; a file that cannot be read is an error even when skipping.
fn decode_all(
    files: &[(PathBuf, usize)],
    options: &ImageFolderOptions,
) -> Result<Decoded, DataError> {
    let threads = options
        .num_threads
        .unwrap_or_else(super::loader::default_workers)
        .clamp(1, files.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<RgbImage, Failure>>>> =
        Mutex::new((0..files.len()).map(|_| None).collect());
    let first_error = AtomicUsize::new(usize::MAX);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= files.len() || first_error.load(Ordering::Relaxed) < i {
                        break;
                    }
                    let r = decode_one(&files[i].0, options);
                    if let Err(f) = &r
                        && (!options.skip_invalid || matches!(f, Failure::Io(_)))
                    {
                        first_error.fetch_min(i, Ordering::Relaxed);
                    }
                    if let Ok(mut slots) = results.lock() {
                        slots[i] = Some(r);
                    }
                }
            });
        }
    });
    let mut slots = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let first = first_error.load(Ordering::Relaxed);
    if first != usize::MAX {
        let failure = match slots[first].take() {
            Some(Err(f)) => f,
            _ => Failure::Decode("unknown error".into()),
        };
        return Err(failure.into_error(&files[first].0));
    }
    Ok(slots
        .into_iter()
        .map(|s| s.unwrap_or_else(|| Err(Failure::Decode("not decoded".into()))))
        .collect())
}
