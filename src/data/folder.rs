//! Image-folder datasets (`root/<class>/<image>`), following torchvision's
//! `datasets.ImageFolder`: classes are the sub-directory names sorted by name, images are found
//! recursively under each class directory (sorted paths), files without an image extension are
//! ignored.
//!
//! Unlike torchvision, images are decoded once, in parallel, and kept in memory as `u8` RGB
//! (optionally resized at load), so an epoch never decodes. A file that cannot be decoded is an
//! error naming it, or — with [`ImageFolderOptions::skip_invalid`] — skipped and listed.
//! Greyscale, palette, 16-bit and alpha images are converted to 8-bit RGB.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataset::{Dataset, DatasetError};
use image::RgbImage;

use super::dataset::{ImageDataset, ImageItem};
use super::error::DataError;
use super::functional::resize;

/// File extensions (case-insensitive) read as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "webp"];

/// How to load an image folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageFolderOptions {
    /// Resize every image to `(width, height)` at load (bilinear, like Pillow).
    pub resize: Option<(u32, u32)>,
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
    /// The decoder's message.
    pub reason: String,
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
}

impl ImageFolder {
    /// Loads `root/<class>/**/<image>` with default options (no resize, invalid files are
    /// errors).
    pub fn open(root: impl AsRef<Path>) -> Result<Self, DataError> {
        Self::open_with(root, ImageFolderOptions::default())
    }

    /// Loads `root/<class>/**/<image>`.
    pub fn open_with(
        root: impl AsRef<Path>,
        options: ImageFolderOptions,
    ) -> Result<Self, DataError> {
        let root = root.as_ref();
        let classes = find_classes(root)?;
        let mut files = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let before = files.len();
            collect_images(&dir, &mut |p| files.push((p, label)))?;
            if files.len() == before {
                return Err(DataError::EmptyClass {
                    class: class.clone(),
                    dir,
                });
            }
        }
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
                Err(reason) => skipped.push(SkippedFile { path, reason }),
            }
        }
        // A class whose every file was skipped is as empty as an empty folder.
        for (label, class) in classes.iter().enumerate() {
            if !labels.contains(&label) {
                return Err(DataError::EmptyClass {
                    class: class.clone(),
                    dir: root.join(class),
                });
            }
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

    /// Files skipped at load (only with `skip_invalid`).
    pub fn skipped(&self) -> &[SkippedFile] {
        &self.skipped
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

fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, DataError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::io("reading directory", dir, e))? {
        let entry = entry.map_err(|e| DataError::io("reading directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links, like torchvision (os.walk(followlinks=True)).
        let is_dir = path.is_dir();
        out.push((name, path, is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The sorted names of the sub-directories of `root`.
fn find_classes(root: &Path) -> Result<Vec<String>, DataError> {
    if !root.is_dir() {
        return Err(DataError::MissingFile {
            path: root.to_path_buf(),
            hint: "expected a directory with one sub-directory of images per class".into(),
        });
    }
    let classes: Vec<String> = sorted_entries(root)?
        .into_iter()
        .filter(|(_, _, is_dir)| *is_dir)
        .map(|(name, _, _)| name)
        .collect();
    if classes.is_empty() {
        return Err(DataError::NoClasses {
            root: root.to_path_buf(),
        });
    }
    Ok(classes)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Image files under `dir`, recursively, in sorted order.
fn collect_images(dir: &Path, push: &mut dyn FnMut(PathBuf)) -> Result<(), DataError> {
    for (_, path, is_dir) in sorted_entries(dir)? {
        if is_dir {
            collect_images(&path, push)?;
        } else if has_image_extension(&path) {
            push(path);
        }
    }
    Ok(())
}

fn decode_one(path: &Path, resize_to: Option<(u32, u32)>) -> Result<RgbImage, String> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let img = reader.decode().map_err(|e| e.to_string())?.into_rgb8();
    Ok(match resize_to {
        Some((w, h)) => resize(&img, w, h),
        None => img,
    })
}

type Decoded = Vec<Result<RgbImage, String>>;

/// Decodes every file on a pool of threads; the first failure is an error unless skipping.
fn decode_all(
    files: &[(PathBuf, usize)],
    options: &ImageFolderOptions,
) -> Result<Decoded, DataError> {
    let threads = options
        .num_threads
        .unwrap_or_else(super::loader::default_workers)
        .clamp(1, files.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<RgbImage, String>>>> =
        Mutex::new((0..files.len()).map(|_| None).collect());
    let first_error = AtomicUsize::new(usize::MAX);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= files.len() {
                        break;
                    }
                    if !options.skip_invalid && first_error.load(Ordering::Relaxed) < i {
                        break;
                    }
                    let r = decode_one(&files[i].0, options.resize);
                    if r.is_err() {
                        first_error.fetch_min(i, Ordering::Relaxed);
                    }
                    if let Ok(mut slots) = results.lock() {
                        slots[i] = Some(r);
                    }
                }
            });
        }
    });
    let slots = results.into_inner().unwrap_or_else(|p| p.into_inner());
    if !options.skip_invalid {
        let first = first_error.load(Ordering::Relaxed);
        if first != usize::MAX {
            let reason = match &slots[first] {
                Some(Err(r)) => r.clone(),
                _ => "unknown error".into(),
            };
            return Err(DataError::Decode {
                path: files[first].0.clone(),
                reason,
            });
        }
    }
    Ok(slots
        .into_iter()
        .map(|s| s.unwrap_or_else(|| Err("not decoded".into())))
        .collect())
}
