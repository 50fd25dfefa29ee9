//! Verified downloads into a local cache, for pretrained weights and datasets.
//!
//! The rules, for every file this crate fetches:
//! - Cache directory: `$FINETUNE_CACHE` if set, otherwise the platform cache directory
//!   (`~/.cache/finetune` on Linux, via the `dirs` crate).
//! - A file is downloaded to a fresh, exclusively created `.<name>.<random>.partial`, its
//!   checksum (sha256 prefix, or md5) is verified, and only then is it renamed into place: an
//!   interrupted or corrupt download never leaves a file that looks valid. A cached file is
//!   verified again before use (re-hashed whenever its size or modification time changed since
//!   the last verification, which `<name>.verified` records, itself written atomically).
//!   Concurrent downloads of one file are serialised by a lock on `<name>.lock`, which is never
//!   truncated. No file is ever written through a symlink planted in the cache (see the crate's
//!   file rules in `DEVELOPING.md`).
//! - `FINETUNE_OFFLINE=1` never touches the network.
//! - [`Cache`] takes the directory and the offline switch explicitly, for callers (and tests)
//!   that must not depend on process-wide environment variables.
//! - Every network failure names the URL and the exact path where the file can be placed by hand.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use md5::Md5;
use sha2::{Digest, Sha256};

/// Environment variable that overrides the cache directory.
pub const CACHE_ENV: &str = "FINETUNE_CACHE";
/// Environment variable that, set to `1` (or `true`), forbids all network access.
pub const OFFLINE_ENV: &str = "FINETUNE_OFFLINE";

/// The checksum a downloaded file must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// The first hex digits of the file's SHA-256 (torchvision puts 8 of them in file names).
    Sha256Prefix(String),
    /// The full hex MD5 (the CIFAR archives publish these).
    Md5(String),
    /// No verification (only for files the caller verifies itself).
    None,
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksum::Sha256Prefix(p) => write!(f, "sha256 {p}…"),
            Checksum::Md5(m) => write!(f, "md5 {m}"),
            Checksum::None => write!(f, "no checksum"),
        }
    }
}

impl Checksum {
    /// Computes the digest of `path` in the same algorithm and checks it.
    /// Returns the actual digest (hex) on mismatch.
    pub fn verify_file(&self, path: &Path) -> Result<(), DownloadError> {
        let actual = match self {
            Checksum::None => return Ok(()),
            Checksum::Sha256Prefix(_) => hex_digest::<Sha256>(path)?,
            Checksum::Md5(_) => hex_digest::<Md5>(path)?,
        };
        if self.matches(&actual) {
            Ok(())
        } else {
            Err(DownloadError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected: self.to_string(),
                actual,
                url: None,
            })
        }
    }

    fn matches(&self, actual_hex: &str) -> bool {
        match self {
            Checksum::None => true,
            Checksum::Sha256Prefix(prefix) => {
                !prefix.is_empty() && actual_hex.starts_with(&prefix.to_ascii_lowercase())
            }
            Checksum::Md5(md5) => actual_hex.eq_ignore_ascii_case(md5),
        }
    }
}

fn hex_digest<D: Digest>(path: &Path) -> Result<String, DownloadError> {
    file_digest::<D>(path).map_err(|e| DownloadError::io("reading", path, e))
}

/// The hex digest of the file at `path`, read in 1 MiB blocks.
fn file_digest<D: Digest>(path: &Path) -> std::io::Result<String> {
    let mut reader = File::open(path)?;
    let mut hasher = D::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The hex SHA-256 of the file at `path` (checkpoints and Hub files are checked with it).
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    file_digest::<Sha256>(path)
}

/// Why a file could not be obtained. Every variant that involves the network names the URL
/// and the path where the file can be placed by hand.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// `FINETUNE_OFFLINE` is set and the file is not in the cache.
    #[error(
        "offline ({OFFLINE_ENV}=1) and '{}' is not cached: download {url} yourself and place it at {}",
        path.display(), path.display()
    )]
    Offline {
        /// The URL that would have been fetched.
        url: String,
        /// Where the file is expected.
        path: PathBuf,
    },
    /// The request failed (DNS, connection, TLS, timeout, interrupted body).
    #[error("downloading {url} failed: {reason}. Download it by other means and place it at {}", path.display())]
    Network {
        /// The URL.
        url: String,
        /// Where the file is expected.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The server answered with an HTTP error status.
    #[error("downloading {url} failed: the server answered HTTP {status}. Download it by other means and place it at {}", path.display())]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// Where the file is expected.
        path: PathBuf,
    },
    /// Fewer bytes arrived than the server announced.
    #[error("downloading {url} stopped after {received} of {expected} bytes. Try again, or place the file at {}", path.display())]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes announced by `Content-Length`.
        expected: u64,
        /// Bytes received.
        received: u64,
        /// Where the file is expected.
        path: PathBuf,
    },
    /// A file's checksum is not the published one: a cached file (`url` is `None`; it is kept
    /// for inspection) or a fresh download (`url` is set; nothing was kept).
    #[error("{}", checksum_message(path, expected, actual, url.as_deref()))]
    ChecksumMismatch {
        /// The file checked, or where the download would have been placed.
        path: PathBuf,
        /// The expected checksum.
        expected: String,
        /// The digest found.
        actual: String,
        /// The URL, when the file was just downloaded.
        url: Option<String>,
    },
    /// Local file-system failure.
    #[error("{action} '{}': {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No cache directory could be determined.
    #[error("no cache directory: set {CACHE_ENV} to a writable directory")]
    NoCacheDir,
}

fn checksum_message(path: &Path, expected: &str, actual: &str, url: Option<&str>) -> String {
    match url {
        Some(url) => format!(
            "the file downloaded from {url} is not the expected one ({expected}, got {actual}); nothing was kept. Try again, or download it by other means and place it at {}",
            path.display()
        ),
        None => format!(
            "'{}' is corrupt or not the expected file: expected {expected}, got {actual}. Delete it and download again",
            path.display()
        ),
    }
}

impl DownloadError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        DownloadError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The cache directory (`$FINETUNE_CACHE`, else `<platform cache dir>/finetune`). Not created.
pub fn cache_dir() -> Result<PathBuf, DownloadError> {
    match std::env::var_os(CACHE_ENV) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => dirs::cache_dir()
            .map(|d| d.join("finetune"))
            .ok_or(DownloadError::NoCacheDir),
    }
}

/// Whether `FINETUNE_OFFLINE` forbids network access (`1`, `true` or `yes`).
pub fn is_offline() -> bool {
    env_flag(OFFLINE_ENV)
}

/// Whether the environment variable `name` is set to `1`, `true` or `yes` (any case).
pub(crate) fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// A download cache: a directory and whether the network may be used.
///
/// [`Cache::from_env`] follows the crate's rules (`FINETUNE_CACHE`, `FINETUNE_OFFLINE`);
/// [`Cache::new`] takes both explicitly, so that code (and tests) running in parallel need not
/// touch process-wide environment variables.
///
/// ```no_run
/// use finetune::download::{Cache, Checksum};
/// let cache = Cache::new("/tmp/my-cache").offline(false);
/// let path = cache.fetch(
///     "https://download.pytorch.org/models/resnet18-f37072fd.pth",
///     "weights",
///     "resnet18-f37072fd.pth",
///     &Checksum::Sha256Prefix("f37072fd".into()),
/// )?;
/// # Ok::<(), finetune::download::DownloadError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    dir: PathBuf,
    offline: bool,
}

impl Cache {
    /// A cache in `dir` that may download.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Cache {
            dir: dir.into(),
            offline: false,
        }
    }

    /// The cache the environment describes: [`cache_dir`] and [`is_offline`].
    pub fn from_env() -> Result<Self, DownloadError> {
        Ok(Cache {
            dir: cache_dir()?,
            offline: is_offline(),
        })
    }

    /// Forbids (`true`) or allows (`false`) network access.
    pub fn offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether network access is forbidden.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// Where `<subdir>/<file_name>` lives in this cache (whether or not it exists).
    pub fn path(&self, subdir: &str, file_name: &str) -> PathBuf {
        self.dir.join(subdir).join(file_name)
    }

    /// Returns `<dir>/<subdir>/<file_name>`, downloading it from `url` first when it is not
    /// cached (see [`fetch_to_with`]).
    pub fn fetch(
        &self,
        url: &str,
        subdir: &str,
        file_name: &str,
        checksum: &Checksum,
    ) -> Result<PathBuf, DownloadError> {
        fetch_to_with(url, &self.path(subdir, file_name), checksum, self.offline)
    }
}

/// Returns `<cache>/<subdir>/<file_name>`, downloading it from `url` first when it is not
/// cached, with the cache and offline switch from the environment ([`Cache::from_env`]).
/// A cached file is verified; a cached file that fails verification is an error (it is
/// not silently replaced).
pub fn fetch_cached(
    url: &str,
    subdir: &str,
    file_name: &str,
    checksum: &Checksum,
) -> Result<PathBuf, DownloadError> {
    Cache::from_env()?.fetch(url, subdir, file_name, checksum)
}

/// Returns `dest`, downloading it from `url` first when it does not exist, honouring
/// `FINETUNE_OFFLINE` (same rules as [`fetch_cached`]).
pub fn fetch_to(url: &str, dest: &Path, checksum: &Checksum) -> Result<PathBuf, DownloadError> {
    fetch_to_with(url, dest, checksum, is_offline())
}

/// Returns `dest`, downloading it from `url` first when it does not exist; `offline` forbids
/// the download. An existing file is verified against `checksum` (the digest is recomputed
/// whenever the file's size or modification time differ from its last successful verification,
/// recorded in `<dest>.verified`); one that fails is an error, never silently replaced.
///
/// Concurrent calls for the same `dest` (threads or processes) are serialised by an advisory
/// lock on `<dest>.lock`: one downloads, the others then find the verified file.
pub fn fetch_to_with(
    url: &str,
    dest: &Path,
    checksum: &Checksum,
    offline: bool,
) -> Result<PathBuf, DownloadError> {
    if dest.is_file() {
        verify_cached(dest, checksum)?;
        return Ok(dest.to_path_buf());
    }
    if offline {
        return Err(DownloadError::Offline {
            url: url.to_string(),
            path: dest.to_path_buf(),
        });
    }
    create_parent(dest)?;
    let _lock = lock_download(dest)?;
    // Another thread or process may have finished the download while we waited.
    if dest.is_file() {
        verify_cached(dest, checksum)?;
        return Ok(dest.to_path_buf());
    }
    download_unlocked(url, dest, checksum)?;
    Ok(dest.to_path_buf())
}

/// `<dest><suffix>` next to `dest`.
fn sibling(dest: &Path, suffix: &str) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dest.with_file_name(name)
}

fn create_parent(dest: &Path) -> Result<(), DownloadError> {
    match dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => {
            fs::create_dir_all(parent).map_err(|e| DownloadError::io("creating", parent, e))
        }
        None => Ok(()),
    }
}

/// `(size, modification time in ns since the epoch)` of a file, the key of a verification stamp.
fn file_key(path: &Path) -> Option<(u64, u128)> {
    let meta = fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some((meta.len(), mtime))
}

fn stamp_line(checksum: &Checksum, key: (u64, u128)) -> String {
    format!("{checksum:?} {} {}", key.0, key.1)
}

/// Verifies a cached file, skipping the digest when `<dest>.verified` records a successful
/// verification against the same checksum of a file with the same size and modification time.
fn verify_cached(dest: &Path, checksum: &Checksum) -> Result<(), DownloadError> {
    if *checksum == Checksum::None {
        return Ok(());
    }
    let stamp = sibling(dest, ".verified");
    if let Some(key) = file_key(dest)
        && fs::read_to_string(&stamp).is_ok_and(|s| s == stamp_line(checksum, key))
    {
        return Ok(());
    }
    checksum.verify_file(dest)?;
    write_stamp(dest, checksum);
    Ok(())
}

/// Records a successful verification (best effort: a read-only cache only costs a re-hash).
fn write_stamp(dest: &Path, checksum: &Checksum) {
    if let Some(key) = file_key(dest) {
        let stamp = sibling(dest, ".verified");
        let _ = crate::fsutil::write_atomic(&stamp, stamp_line(checksum, key).as_bytes());
    }
}

/// Takes the exclusive `<dest>.lock` that serialises downloads of one file across threads and
/// processes; released when the returned file is dropped. The lock file is never truncated and
/// never opened through a symlink.
fn lock_download(dest: &Path) -> Result<File, DownloadError> {
    let lock_path = sibling(dest, ".lock");
    let lock = crate::fsutil::open_lock_file(&lock_path)
        .map_err(|e| DownloadError::io("opening the lock file", &lock_path, e))?;
    lock.lock()
        .map_err(|e| DownloadError::io("locking", &lock_path, e))?;
    Ok(lock)
}

/// Downloads `url` to `dest` unconditionally (replacing it): to a fresh `.<name>.<random>.partial`, verified, then
/// renamed. Refuses when `FINETUNE_OFFLINE` is set.
pub fn download(url: &str, dest: &Path, checksum: &Checksum) -> Result<(), DownloadError> {
    if is_offline() {
        return Err(DownloadError::Offline {
            url: url.to_string(),
            path: dest.to_path_buf(),
        });
    }
    create_parent(dest)?;
    let _lock = lock_download(dest)?;
    download_unlocked(url, dest, checksum)
}

/// The download itself; the caller holds `<dest>.lock` (so temporaries an interrupted download
/// left are removed first).
fn download_unlocked(url: &str, dest: &Path, checksum: &Checksum) -> Result<(), DownloadError> {
    crate::fsutil::remove_stale_temps(dest, "partial");
    let (partial, file) = crate::fsutil::create_temp_beside(dest, "partial")
        .map_err(|e| DownloadError::io("creating a temporary file beside", dest, e))?;
    let result = download_partial(url, dest, &partial, file).and_then(|()| {
        checksum.verify_file(&partial).map_err(|e| match e {
            DownloadError::ChecksumMismatch {
                expected, actual, ..
            } => DownloadError::ChecksumMismatch {
                path: dest.to_path_buf(),
                expected,
                actual,
                url: Some(url.to_string()),
            },
            other => other,
        })
    });
    match result {
        Ok(()) => {
            fs::rename(&partial, dest).map_err(|e| DownloadError::io("renaming", &partial, e))?;
            write_stamp(dest, checksum);
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn download_partial(
    url: &str,
    dest: &Path,
    partial: &Path,
    mut file: File,
) -> Result<(), DownloadError> {
    let network = |reason: String| DownloadError::Network {
        url: url.to_string(),
        path: dest.to_path_buf(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(std::time::Duration::from_secs(30)))
        .timeout_recv_response(Some(std::time::Duration::from_secs(60)))
        // A stall, not a slow link, is a failure: a total body budget would fail every large
        // file on a slow connection (ResNet-152 is 230 MB).
        .timeout_per_read(Some(std::time::Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| network(e.to_string()))?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(DownloadError::HttpStatus {
            url: url.to_string(),
            status,
            path: dest.to_path_buf(),
        });
    }
    let expected_len = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let progress = Progress::new(url, expected_len);
    let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return match expected_len {
                    Some(expected) if received < expected => Err(DownloadError::Truncated {
                        url: url.to_string(),
                        expected,
                        received,
                        path: dest.to_path_buf(),
                    }),
                    _ => Err(network(e.to_string())),
                };
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| DownloadError::io("writing", partial, e))?;
        received += n as u64;
        progress.set(received);
    }
    drop(progress);
    if let Some(expected) = expected_len
        && received != expected
    {
        return Err(DownloadError::Truncated {
            url: url.to_string(),
            expected,
            received,
            path: dest.to_path_buf(),
        });
    }
    file.sync_all()
        .map_err(|e| DownloadError::io("writing", partial, e))?;
    Ok(())
}

/// Told about every download the crate makes (weights, datasets): the library itself prints
/// nothing, and a program that wants progress registers a reporter with [`set_progress`] (the
/// examples draw a bar on a terminal and print a line otherwise).
pub trait DownloadProgress: Send + Sync {
    /// A download of `url` begins; `bytes` is its announced size, when the server sends one.
    fn started(&self, url: &str, bytes: Option<u64>);
    /// `received` bytes of `url` have arrived so far.
    fn progressed(&self, url: &str, received: u64);
    /// The download of `url` ended (completed or failed: the caller gets the error).
    fn finished(&self, url: &str);
}

static REPORTER: RwLock<Option<Arc<dyn DownloadProgress>>> = RwLock::new(None);

/// Registers the process-wide download reporter (`None`: downloads are silent, the default),
/// like `log::set_logger`: downloads happen deep inside [`Cache::fetch`] callers such as
/// [`crate::weights::pretrained`] and [`crate::data::Cifar10::download`], which take no
/// reporter of their own.
pub fn set_progress(reporter: Option<Arc<dyn DownloadProgress>>) {
    let mut slot = REPORTER.write().unwrap_or_else(|e| e.into_inner());
    *slot = reporter;
}

/// The reporter for one download: the registered one, told `started` now and `finished` when
/// dropped.
struct Progress {
    url: String,
    reporter: Option<Arc<dyn DownloadProgress>>,
}

impl Progress {
    fn new(url: &str, len: Option<u64>) -> Self {
        let reporter = REPORTER.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(r) = &reporter {
            r.started(url, len);
        }
        Progress {
            url: url.to_string(),
            reporter,
        }
    }
    fn set(&self, pos: u64) {
        if let Some(r) = &self.reporter {
            r.progressed(&self.url, pos);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(r) = &self.reporter {
            r.finished(&self.url);
        }
    }
}
