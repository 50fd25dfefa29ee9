//! Errors of the data layer: datasets on disk, archives, image folders, splits and transforms.

use std::io;
use std::path::PathBuf;

/// What went wrong while reading, splitting or transforming data. Every variant names the file
/// or value at fault and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// Local file-system failure.
    #[error("{action} '{}': {source}", path.display())]
    Io {
        /// What was being done ("reading", "creating", ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A file the dataset layout requires is not there.
    #[error("'{}' is missing: {hint}", path.display())]
    MissingFile {
        /// The expected file.
        path: PathBuf,
        /// What to do about it.
        hint: String,
    },

    /// A CIFAR file is larger than the official one: refused before it is read.
    #[error(
        "'{}' is {len} bytes, more than the official {dataset} file ({max} bytes): it is not a \
         {dataset} file. Delete the directory and extract the archive again",
        path.display()
    )]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
        /// The official file's size (batch files) or a bound on it (text files), in bytes.
        max: u64,
        /// "CIFAR-10" or "CIFAR-100".
        dataset: &'static str,
    },

    /// A CIFAR batch file's size is not a whole number of records.
    #[error(
        "'{}' is {len} bytes, not a whole number of {record_size}-byte records: the file is \
         truncated or not a {dataset} batch. Delete the directory and extract the archive again",
        path.display()
    )]
    RecordSize {
        /// The batch file.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
        /// The record size of the format (3073 for CIFAR-10, 3074 for CIFAR-100).
        record_size: usize,
        /// "CIFAR-10" or "CIFAR-100".
        dataset: &'static str,
    },

    /// A CIFAR batch file holds fewer (or more) records than the other batches of its set.
    #[error(
        "'{}' holds {found} records but {expected} were expected ({reference}): the file is \
         truncated. Delete the directory and extract the archive again",
        path.display()
    )]
    RecordCount {
        /// The batch file.
        path: PathBuf,
        /// Records found.
        found: usize,
        /// Records expected.
        expected: usize,
        /// Where the expectation comes from.
        reference: String,
    },

    /// A record's label is out of range.
    #[error(
        "'{}', record {record}: label {label} is out of range (the dataset has {num_classes} \
         classes): not a {dataset} batch file",
        path.display()
    )]
    BadLabel {
        /// The batch file.
        path: PathBuf,
        /// Index of the record in the file.
        record: usize,
        /// The label found.
        label: usize,
        /// Number of classes.
        num_classes: usize,
        /// "CIFAR-10" or "CIFAR-100".
        dataset: &'static str,
    },

    /// A label-names file does not list the expected number of classes.
    #[error("'{}' lists {found} class names, expected {expected}", path.display())]
    BadClassNames {
        /// The names file.
        path: PathBuf,
        /// Names found.
        found: usize,
        /// Names expected.
        expected: usize,
    },

    /// A downloaded archive could not be read.
    #[error(
        "'{}' is not a valid dataset archive ({reason}). It passed its checksum, so the URL and \
         checksum it was fetched with do not name the official archive: check the mirror URL and \
         md5 given to download_from (the defaults are the official archive's)",
        path.display()
    )]
    Archive {
        /// The archive.
        path: PathBuf,
        /// The underlying problem.
        reason: String,
    },

    /// A downloaded archive lacks a member of the dataset.
    #[error(
        "the archive '{}' has no member '{member}': it is not the official archive, although it \
         passed its checksum. Check the mirror URL and md5 given to download_from (the defaults \
         are the official archive's)",
        path.display()
    )]
    ArchiveMissing {
        /// The archive.
        path: PathBuf,
        /// The missing member (path inside the archive).
        member: String,
    },

    /// An image file could not be decoded.
    #[error(
        "cannot decode image '{}': {reason}. Remove or fix the file, or load the folder with \
         skip_invalid(true) to skip such files",
        path.display()
    )]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },

    /// An image file is cut short (Pillow: "image file is truncated").
    #[error(
        "image file is truncated: '{}' ({detail}). Download or copy the file again, or remove \
         it (an ImageFolder skips such files with ImageFolderOptions::skip_invalid(true))",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where the data stops.
        detail: String,
    },

    /// An image-folder class directory holds no image.
    #[error(
        "class folder '{}' ({class}) has no loadable image (.jpg, .jpeg, .png, .ppm, .bmp, .pgm, \
         .tif, .tiff, .webp): add images or remove the folder",
        dir.display()
    )]
    EmptyClass {
        /// The class name.
        class: String,
        /// Its directory.
        dir: PathBuf,
    },

    /// An image-folder root has no class sub-directory.
    #[error(
        "'{}' has no class folders: expected root/<class>/<image> (e.g. root/cat/001.jpg)",
        root.display()
    )]
    NoClasses {
        /// The root directory.
        root: PathBuf,
    },

    /// A dataset has too few images to split into the parts a run needs.
    #[error(
        "{what} has {images} image(s), too few to split into {parts} (at least {needed} are \
         needed, one per part): add images{fix}"
    )]
    TooFewToSplit {
        /// The dataset, in words (e.g. the image folder's path).
        what: String,
        /// Its number of images.
        images: usize,
        /// The parts, in words ("train / validation / test").
        parts: &'static str,
        /// The smallest number of images that can be split.
        needed: usize,
        /// Other ways out, starting with ", " (or empty).
        fix: String,
    },

    /// The batch size exceeds the dataset while the last partial batch is dropped: an epoch
    /// would have no batch at all.
    #[error(
        "the batch size ({batch_size}) is larger than the {items} images of the {what} and the \
         last partial batch is dropped, so an epoch has no batch: {fix}"
    )]
    BatchLargerThanData {
        /// Images per batch asked for.
        batch_size: usize,
        /// Items in the dataset.
        items: usize,
        /// The dataset, in words ("training set").
        what: &'static str,
        /// What to do, naming the options.
        fix: String,
    },

    /// Split lengths are inconsistent with the dataset.
    #[error("invalid split: {0}")]
    Split(String),

    /// A transform cannot be applied to an image of this size, or its parameters are invalid.
    #[error("transform {transform}: {reason}")]
    Transform {
        /// The transform's name (torchvision's).
        transform: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// The images of one batch do not have the same size after the transforms.
    #[error(
        "the images of a batch have different sizes after the transforms ({first_w}x{first_h} and \
         {w}x{h}, dataset item {index}): add Resize and/or CenterCrop to the pipeline, or load \
         the image folder with a fixed resize"
    )]
    MixedSizes {
        /// Width of the batch's first image.
        first_w: u32,
        /// Height of the batch's first image.
        first_h: u32,
        /// Width of the offending image.
        w: u32,
        /// Height of the offending image.
        h: u32,
        /// Dataset index of the offending item.
        index: usize,
    },

    /// A dataset item could not be read.
    #[error("dataset item {index}: {reason}")]
    Item {
        /// The item's index.
        index: usize,
        /// What went wrong.
        reason: String,
    },

    /// A loader setting is invalid.
    #[error("invalid loader configuration: {0}")]
    Config(String),

    /// A batch could not be produced (the error a loader's iterator yields, see
    /// [`ImageLoader::epoch`](super::ImageLoader::epoch)).
    #[error("data loader: {0}")]
    Batch(#[from] burn::data::dataset::DatasetError),

    /// A loader worker thread stopped without producing its batches.
    #[error("data loader worker {0} stopped unexpectedly (panicked)")]
    Worker(usize),
}

impl DataError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        DataError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Lets `?` turn a loader iterator's error into the crate's error.
impl From<burn::data::dataset::DatasetError> for crate::Error {
    fn from(e: burn::data::dataset::DatasetError) -> Self {
        crate::Error::Data(DataError::Batch(e))
    }
}
