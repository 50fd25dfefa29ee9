//! CIFAR-10 and CIFAR-100 (Krizhevsky, 2009, "Learning Multiple Layers of Features from Tiny
//! Images") from the official binary archives, with torchvision's `datasets.CIFAR10` /
//! `CIFAR100` contract: `train` / `test` splits, `classes`, `class_to_idx`.
//!
//! The archives are downloaded with the crate's download rules (cache directory, `.partial`
//! then rename, md5 verification, `FINETUNE_OFFLINE`), then extracted into a temporary directory
//! next to the target (a fresh random name, created exclusively) and renamed into place, so an
//! interrupted extraction never leaves a directory that looks complete. Only the dataset's known
//! members are extracted, and each member's size declared in the archive is checked against the
//! official one before anything is written (batch files: a whole number of records, at most the
//! official count; text files: at most 64 KiB), so a crafted archive can never make the
//! extraction write or read more than the official dataset's size. File-system failures while
//! extracting (disk full, permissions) are [`DataError::Io`] naming the file and the action,
//! never reported as a bad archive.
//!
//! Binary format: records of 1 label byte (CIFAR-100: coarse then fine label byte) followed by
//! 3072 pixel bytes, the R, G and B planes of a 32x32 image, each row-major. Pixels are
//! converted to HWC once, at load.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::download::{Checksum, cache_dir, fetch_to};
use crate::error::Result;

use super::dataset::{ImageDataset, class_to_idx};
use super::error::DataError;

/// URL of the official CIFAR-10 binary archive.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// MD5 of the official CIFAR-10 binary archive.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// URL of the official CIFAR-100 binary archive.
pub const CIFAR100_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz";
/// MD5 of the official CIFAR-100 binary archive.
pub const CIFAR100_MD5: &str = "03b5dce01913d631647c71ecec9e9cb8";

/// Side of a CIFAR image in pixels.
pub const CIFAR_SIZE: u32 = 32;
const PIXELS: usize = 32 * 32;

/// Directory (under the cache directory) where datasets are downloaded and extracted.
pub const DATASETS_SUBDIR: &str = "datasets";

/// Layout of one of the two datasets.
struct Spec {
    name: &'static str,
    archive_file: &'static str,
    dir_name: &'static str,
    train_files: &'static [&'static str],
    test_file: &'static str,
    /// `(file, number of names)`: the first one names the labels used as `label`.
    names_files: &'static [(&'static str, usize)],
    /// Other members extracted when present.
    optional_members: &'static [&'static str],
    /// Label bytes before the pixels (1 for CIFAR-10, 2 for CIFAR-100: coarse, fine).
    label_bytes: usize,
    /// Number of classes of each label byte.
    label_classes: &'static [usize],
    /// Records of each official training batch file.
    train_records: u64,
    /// Records of the official test batch file.
    test_records: u64,
}

/// The largest text member (label names, readme) accepted from an archive; the official ones
/// are under 1 KiB.
const MAX_TEXT_MEMBER: u64 = 64 << 10;

impl Spec {
    fn record_size(&self) -> usize {
        self.label_bytes + 3 * PIXELS
    }
    fn required_members(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.train_files
            .iter()
            .copied()
            .chain(std::iter::once(self.test_file))
            .chain(self.names_files.iter().map(|(f, _)| *f))
    }

    /// Checks the size an archive declares for `member` against the official archive's:
    /// batch files hold a whole, non-zero number of records, at most the official count; text
    /// files at most [`MAX_TEXT_MEMBER`] bytes. Returns what is wrong.
    fn check_member_size(&self, member: &str, size: u64) -> Result<(), String> {
        let record = self.record_size() as u64;
        let records = if self.train_files.contains(&member) {
            Some(self.train_records)
        } else if member == self.test_file {
            Some(self.test_records)
        } else {
            None
        };
        match records {
            Some(max) if size == 0 || !size.is_multiple_of(record) || size > max * record => {
                Err(format!(
                    "declares {size} bytes, but a {} batch file is a whole number of {record}-byte \
                 records, at most {max} ({} bytes)",
                    self.name,
                    max * record
                ))
            }
            None if size > MAX_TEXT_MEMBER => Err(format!(
                "declares {size} bytes, but the official file is under {MAX_TEXT_MEMBER} bytes"
            )),
            _ => Ok(()),
        }
    }
}

const CIFAR10: Spec = Spec {
    name: "CIFAR-10",
    archive_file: "cifar-10-binary.tar.gz",
    dir_name: "cifar-10-batches-bin",
    train_files: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ],
    test_file: "test_batch.bin",
    names_files: &[("batches.meta.txt", 10)],
    optional_members: &["readme.html"],
    label_bytes: 1,
    label_classes: &[10],
    train_records: 10_000,
    test_records: 10_000,
};

const CIFAR100: Spec = Spec {
    name: "CIFAR-100",
    archive_file: "cifar-100-binary.tar.gz",
    dir_name: "cifar-100-binary",
    train_files: &["train.bin"],
    test_file: "test.bin",
    names_files: &[
        ("fine_label_names.txt", 100),
        ("coarse_label_names.txt", 20),
    ],
    optional_members: &[],
    label_bytes: 2,
    label_classes: &[20, 100],
    train_records: 50_000,
    test_records: 10_000,
};

/// One parsed split: HWC pixels and the labels of every label byte.
struct Split {
    pixels: Vec<u8>,
    /// `labels[k]` holds the k-th label byte of every record.
    labels: Vec<Vec<usize>>,
}

struct Parsed {
    dir: PathBuf,
    /// One list of names per label byte, in `names_files` order.
    names: Vec<Vec<String>>,
    train: Split,
    test: Split,
}

/// The CIFAR-10 dataset: 50,000 training and 10,000 test images of 32x32 pixels in 10 classes.
///
/// ```no_run
/// # fn main() -> finetune::Result<()> {
/// use burn::data::dataset::Dataset;
/// use finetune::data::Cifar10;
///
/// let cifar = Cifar10::download()?; // or Cifar10::from_dir("data/cifar-10-batches-bin")?
/// let train = cifar.train();
/// let item = train.get(0).unwrap();
/// println!("{} images, first is a {}", train.len(), cifar.classes()[item.label]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Cifar10 {
    dir: PathBuf,
    classes: Vec<String>,
    train: ImageDataset,
    test: ImageDataset,
}

impl Cifar10 {
    /// Opens an extracted `cifar-10-batches-bin` directory (or a directory containing one).
    ///
    /// All of `data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin` and
    /// `batches.meta.txt` must be present; every batch must be a whole number of 3073-byte
    /// records, the five training batches must hold the same number of records, and every label
    /// must name one of the 10 classes. Anything else is an error naming the file.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let p = parse(&CIFAR10, dir.as_ref())?;
        let classes = p.names[0].clone();
        let [train_labels] = take_labels::<1>(p.train.labels);
        let [test_labels] = take_labels::<1>(p.test.labels);
        Ok(Cifar10 {
            train: ImageDataset::from_uniform(
                CIFAR_SIZE,
                CIFAR_SIZE,
                p.train.pixels,
                train_labels,
                classes.clone(),
            )?,
            test: ImageDataset::from_uniform(
                CIFAR_SIZE,
                CIFAR_SIZE,
                p.test.pixels,
                test_labels,
                classes.clone(),
            )?,
            classes,
            dir: p.dir,
        })
    }

    /// Downloads (once) and extracts the official archive into
    /// `<cache>/datasets/cifar-10-batches-bin` (cache: `$FINETUNE_CACHE`, else
    /// `~/.cache/finetune`), then opens it. An already extracted directory is used without
    /// touching the network.
    pub fn download() -> Result<Self> {
        Self::download_to(cache_dir()?.join(DATASETS_SUBDIR))
    }

    /// Like [`download`](Self::download), into `root/cifar-10-batches-bin` (the archive is kept
    /// as `root/cifar-10-binary.tar.gz`).
    pub fn download_to(root: impl AsRef<Path>) -> Result<Self> {
        Self::download_from(CIFAR10_URL, CIFAR10_MD5, root)
    }

    /// Like [`download_to`](Self::download_to), from another URL (a mirror) with the archive's
    /// md5.
    pub fn download_from(url: &str, md5: &str, root: impl AsRef<Path>) -> Result<Self> {
        let dir = download_and_extract(&CIFAR10, url, md5, root.as_ref())?;
        Self::from_dir(dir)
    }

    /// Directory of the small real sample shipped with the crate (1,000 training images, 100
    /// per class, in five batches of 200, and 200 test images; CIFAR-10 training images decoded
    /// from JPEG). See `data/cifar10-sample/README.md`.
    pub fn sample_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/cifar10-sample/cifar-10-batches-bin")
    }

    /// Opens the sample shipped with the crate ([`sample_dir`](Self::sample_dir)), for examples
    /// and demos that must run offline. It is far too small to train a good model.
    pub fn sample() -> Result<Self> {
        Self::from_dir(Self::sample_dir())
    }

    /// The training split (50,000 images for the full dataset).
    pub fn train(&self) -> ImageDataset {
        self.train.clone()
    }

    /// The test split (10,000 images for the full dataset).
    pub fn test(&self) -> ImageDataset {
        self.test.clone()
    }

    /// The class names, indexed by label (`airplane`, `automobile`, ... `truck`).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Class name to label.
    pub fn class_to_idx(&self) -> BTreeMap<String, usize> {
        class_to_idx(&self.classes)
    }

    /// The directory the data was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The CIFAR-100 dataset: 50,000 training and 10,000 test images of 32x32 pixels in 100 fine
/// classes (grouped in 20 coarse superclasses). Items carry the fine label; the coarse labels
/// are available through [`train_coarse`](Self::train_coarse) / [`test_coarse`](Self::test_coarse).
#[derive(Clone, Debug)]
pub struct Cifar100 {
    dir: PathBuf,
    classes: Vec<String>,
    coarse_classes: Vec<String>,
    train: ImageDataset,
    test: ImageDataset,
    train_coarse: ImageDataset,
    test_coarse: ImageDataset,
}

impl Cifar100 {
    /// Opens an extracted `cifar-100-binary` directory (or a directory containing one):
    /// `train.bin`, `test.bin`, `fine_label_names.txt` and `coarse_label_names.txt`, with
    /// 3074-byte records.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let p = parse(&CIFAR100, dir.as_ref())?;
        let mut names = p.names.into_iter();
        let classes = names.next().unwrap_or_default();
        let coarse_classes = names.next().unwrap_or_default();
        let [train_coarse, train_fine] = take_labels::<2>(p.train.labels);
        let [test_coarse, test_fine] = take_labels::<2>(p.test.labels);
        let train = ImageDataset::from_uniform(
            CIFAR_SIZE,
            CIFAR_SIZE,
            p.train.pixels,
            train_fine,
            classes.clone(),
        )?;
        let test = ImageDataset::from_uniform(
            CIFAR_SIZE,
            CIFAR_SIZE,
            p.test.pixels,
            test_fine,
            classes.clone(),
        )?;
        Ok(Cifar100 {
            train_coarse: train.relabel(train_coarse, coarse_classes.clone())?,
            test_coarse: test.relabel(test_coarse, coarse_classes.clone())?,
            train,
            test,
            classes,
            coarse_classes,
            dir: p.dir,
        })
    }

    /// Downloads (once) and extracts the official archive into
    /// `<cache>/datasets/cifar-100-binary`, then opens it.
    pub fn download() -> Result<Self> {
        Self::download_to(cache_dir()?.join(DATASETS_SUBDIR))
    }

    /// Like [`download`](Self::download), into `root/cifar-100-binary`.
    pub fn download_to(root: impl AsRef<Path>) -> Result<Self> {
        Self::download_from(CIFAR100_URL, CIFAR100_MD5, root)
    }

    /// Like [`download_to`](Self::download_to), from another URL with the archive's md5.
    pub fn download_from(url: &str, md5: &str, root: impl AsRef<Path>) -> Result<Self> {
        let dir = download_and_extract(&CIFAR100, url, md5, root.as_ref())?;
        Self::from_dir(dir)
    }

    /// The training split, fine labels.
    pub fn train(&self) -> ImageDataset {
        self.train.clone()
    }

    /// The test split, fine labels.
    pub fn test(&self) -> ImageDataset {
        self.test.clone()
    }

    /// The training split with the 20 coarse labels (same images, shared memory).
    pub fn train_coarse(&self) -> ImageDataset {
        self.train_coarse.clone()
    }

    /// The test split with the 20 coarse labels.
    pub fn test_coarse(&self) -> ImageDataset {
        self.test_coarse.clone()
    }

    /// The 100 fine class names, indexed by label.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The 20 coarse class names.
    pub fn coarse_classes(&self) -> &[String] {
        &self.coarse_classes
    }

    /// Fine class name to label.
    pub fn class_to_idx(&self) -> BTreeMap<String, usize> {
        class_to_idx(&self.classes)
    }

    /// The directory the data was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn take_labels<const N: usize>(labels: Vec<Vec<usize>>) -> [Vec<usize>; N] {
    let mut it = labels.into_iter();
    std::array::from_fn(|_| it.next().unwrap_or_default())
}

/// The dataset directory: `dir` itself, or `dir/<dir_name>` when `dir` only contains it.
fn resolve_dir(spec: &Spec, dir: &Path) -> PathBuf {
    let first = spec.test_file;
    let nested = dir.join(spec.dir_name);
    if !dir.join(first).exists() && nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// Checks presence and sizes of every file without reading them; returns the records per file
/// (train files, then test file).
fn check_layout(spec: &Spec, dir: &Path) -> Result<Vec<usize>, DataError> {
    if !dir.is_dir() {
        return Err(DataError::MissingFile {
            path: dir.to_path_buf(),
            hint: format!(
                "expected the extracted {} directory ({}), e.g. from {}",
                spec.name, spec.dir_name, spec.archive_file
            ),
        });
    }
    for member in spec.required_members() {
        let path = dir.join(member);
        if !path.is_file() {
            return Err(DataError::MissingFile {
                path,
                hint: format!(
                    "the {} directory is incomplete. Delete it and extract {} again",
                    spec.name, spec.archive_file
                ),
            });
        }
    }
    let record = spec.record_size();
    let mut counts = Vec::new();
    for file in spec
        .train_files
        .iter()
        .chain(std::iter::once(&spec.test_file))
    {
        let path = dir.join(file);
        let len = fs::metadata(&path)
            .map_err(|e| DataError::io("reading", &path, e))?
            .len();
        if len == 0 || len % record as u64 != 0 {
            return Err(DataError::RecordSize {
                path,
                len,
                record_size: record,
                dataset: spec.name,
            });
        }
        let official = if file == &spec.test_file {
            spec.test_records
        } else {
            spec.train_records
        } * record as u64;
        if len > official {
            // Never read (nor allocate for) more than the official archive holds.
            return Err(DataError::FileTooLarge {
                path,
                len,
                max: official,
                dataset: spec.name,
            });
        }
        let count = (len / record as u64) as usize;
        if let Some(&first) = counts.first()
            && counts.len() < spec.train_files.len()
            && count != first
        {
            return Err(DataError::RecordCount {
                path,
                found: count,
                expected: first,
                reference: format!("as many as {}", spec.train_files[0]),
            });
        }
        counts.push(count);
    }
    Ok(counts)
}

fn read_names(
    path: &Path,
    expected: usize,
    dataset: &'static str,
) -> Result<Vec<String>, DataError> {
    let len = fs::metadata(path)
        .map_err(|e| DataError::io("reading", path, e))?
        .len();
    if len > MAX_TEXT_MEMBER {
        return Err(DataError::FileTooLarge {
            path: path.to_path_buf(),
            len,
            max: MAX_TEXT_MEMBER,
            dataset,
        });
    }
    let text = fs::read_to_string(path).map_err(|e| DataError::io("reading", path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != expected {
        return Err(DataError::BadClassNames {
            path: path.to_path_buf(),
            found: names.len(),
            expected,
        });
    }
    Ok(names)
}

/// Reads batch files into one split, planes converted to HWC.
fn read_split(
    spec: &Spec,
    dir: &Path,
    files: &[&str],
    counts: &[usize],
) -> Result<Split, DataError> {
    let record = spec.record_size();
    let total: usize = counts.iter().sum();
    let mut pixels = Vec::with_capacity(total * 3 * PIXELS);
    let mut labels = vec![Vec::with_capacity(total); spec.label_bytes];
    for file in files {
        let path = dir.join(file);
        let bytes = fs::read(&path).map_err(|e| DataError::io("reading", &path, e))?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(DataError::RecordSize {
                path,
                len: bytes.len() as u64,
                record_size: record,
                dataset: spec.name,
            });
        }
        let start = pixels.len();
        pixels.resize(start + bytes.len() / record * 3 * PIXELS, 0);
        let out = pixels[start..].chunks_exact_mut(3 * PIXELS);
        for (r, (rec, dst)) in bytes.chunks_exact(record).zip(out).enumerate() {
            let (label_bytes, planes) = rec.split_at(spec.label_bytes);
            for (k, (&l, &num_classes)) in label_bytes.iter().zip(spec.label_classes).enumerate() {
                if usize::from(l) >= num_classes {
                    return Err(DataError::BadLabel {
                        path,
                        record: r,
                        label: usize::from(l),
                        num_classes,
                        dataset: spec.name,
                    });
                }
                labels[k].push(usize::from(l));
            }
            planes_to_hwc(planes, dst);
        }
    }
    Ok(Split { pixels, labels })
}

/// `[R plane | G plane | B plane]` (each 32x32) to interleaved RGB.
fn planes_to_hwc(planes: &[u8], dst: &mut [u8]) {
    let (r, gb) = planes.split_at(PIXELS);
    let (g, b) = gb.split_at(PIXELS);
    for (((px, &r), &g), &b) in dst.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
        px[0] = r;
        px[1] = g;
        px[2] = b;
    }
}

fn parse(spec: &Spec, dir: &Path) -> Result<Parsed, DataError> {
    let dir = resolve_dir(spec, dir);
    let counts = check_layout(spec, &dir)?;
    let names = spec
        .names_files
        .iter()
        .map(|(file, n)| read_names(&dir.join(file), *n, spec.name))
        .collect::<Result<Vec<_>, _>>()?;
    let (train_counts, test_count) = counts.split_at(spec.train_files.len());
    let train = read_split(spec, &dir, spec.train_files, train_counts)?;
    let test = read_split(spec, &dir, &[spec.test_file], test_count)?;
    Ok(Parsed {
        dir,
        names,
        train,
        test,
    })
}

/// Returns `root/<dir_name>`, downloading and extracting the archive first when needed.
fn download_and_extract(spec: &Spec, url: &str, md5: &str, root: &Path) -> Result<PathBuf> {
    let target = root.join(spec.dir_name);
    if target.is_dir() {
        return Ok(target);
    }
    let archive = fetch_to(
        url,
        &root.join(spec.archive_file),
        &Checksum::Md5(md5.into()),
    )?;
    extract(spec, &archive, root)?;
    Ok(target)
}

/// Extracts the dataset's members of `archive` into `root/<dir_name>`, atomically: into a
/// fresh temporary sibling directory first (random name, created exclusively), checked, then
/// renamed.
fn extract(spec: &Spec, archive: &Path, root: &Path) -> Result<(), DataError> {
    let target = root.join(spec.dir_name);
    let tmp = crate::fsutil::create_temp_dir_beside(&target, "partial")
        .map_err(|e| DataError::io("creating a temporary directory beside", &target, e))?;
    let result = unpack_members(spec, archive, &tmp).and_then(|()| check_layout(spec, &tmp));
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_dir_all(&tmp);
        // Another process may have finished the same extraction first.
        if !target.is_dir() {
            return Err(DataError::io("renaming", &tmp, e));
        }
    }
    Ok(())
}

/// An error reading the archive: a damaged stream (gzip or tar data) is [`DataError::Archive`],
/// anything else (permissions, I/O) [`DataError::Io`].
/// An error reading the archive: an I/O error when reading the file itself failed (`failure`),
/// otherwise the gzip or TAR layer found damaged data.
fn read_error(
    archive: &Path,
    failure: &crate::fsutil::ReadFailure,
    context: &str,
    e: io::Error,
) -> DataError {
    if failure.happened() {
        return DataError::io("reading archive", archive, e);
    }
    DataError::Archive {
        path: archive.to_path_buf(),
        reason: if context.is_empty() {
            e.to_string()
        } else {
            format!("{context}: {e}")
        },
    }
}

fn unpack_members(spec: &Spec, archive: &Path, tmp: &Path) -> Result<(), DataError> {
    let bad = |reason: String| DataError::Archive {
        path: archive.to_path_buf(),
        reason,
    };
    let failure = crate::fsutil::ReadFailure::default();
    let file = failure
        .open(archive)
        .map_err(|e| DataError::io("reading archive", archive, e))?;
    let gz = flate2::read::GzDecoder::new(BufReader::with_capacity(1 << 20, file));
    let mut tar = tar::Archive::new(gz);
    let wanted: Vec<&str> = spec
        .required_members()
        .chain(spec.optional_members.iter().copied())
        .collect();
    let mut found = vec![false; wanted.len()];
    for entry in tar
        .entries()
        .map_err(|e| read_error(archive, &failure, "", e))?
    {
        let mut entry = entry.map_err(|e| read_error(archive, &failure, "", e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| read_error(archive, &failure, "a member's name", e))?
            .into_owned();
        let mut parts = path
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        let (Some(dir), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if dir != spec.dir_name {
            continue;
        }
        let Some(i) = wanted.iter().position(|w| *w == name) else {
            continue;
        };
        let member = format!("{}/{}", spec.dir_name, wanted[i]);
        if found[i] {
            return Err(bad(format!(
                "the member {member} appears twice; the official archive has it once"
            )));
        }
        // The size the header declares (PAX size included), checked before anything is written.
        let size = entry.size();
        spec.check_member_size(wanted[i], size)
            .map_err(|why| bad(format!("the member {member} {why}")))?;
        let dest = tmp.join(wanted[i]);
        copy_member(&mut entry, size, archive, &failure, &member, &dest)?;
        found[i] = true;
    }
    let required = wanted.len() - spec.optional_members.len();
    if let Some(i) = found[..required].iter().position(|f| !f) {
        return Err(DataError::ArchiveMissing {
            path: archive.to_path_buf(),
            member: format!("{}/{}", spec.dir_name, wanted[i]),
        });
    }
    Ok(())
}

/// Copies exactly `size` bytes of a member into a new file `dest` (created exclusively): a
/// member shorter than its header says is a damaged archive; a failed write is an I/O error
/// naming `dest`.
fn copy_member(
    entry: &mut impl Read,
    size: u64,
    archive: &Path,
    failure: &crate::fsutil::ReadFailure,
    member: &str,
    dest: &Path,
) -> Result<(), DataError> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| DataError::io("creating", dest, e))?;
    let mut reader = entry.take(size);
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(read_error(
                    archive,
                    failure,
                    &format!("extracting {member}"),
                    e,
                ));
            }
        };
        out.write_all(&buf[..n])
            .map_err(|e| DataError::io("writing", dest, e))?;
        copied += n as u64;
    }
    if copied != size {
        return Err(DataError::Archive {
            path: archive.to_path_buf(),
            reason: format!(
                "the member {member} declares {size} bytes but the archive ends after {copied}"
            ),
        });
    }
    out.sync_all()
        .map_err(|e| DataError::io("writing", dest, e))?;
    Ok(())
}
