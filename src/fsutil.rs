//! How the crate creates files a user keeps: downloads, lock files, checkpoints, run outputs.
//!
//! - Temporary files and directories get fresh random names and are created exclusively
//!   (`O_CREAT | O_EXCL`, which never follows a symlink): a symlink planted where a temporary
//!   file will be is never written through, and two writers never share a temporary file.
//! - Finished files are published with a rename, which replaces a symlink at the destination
//!   instead of following it, and is atomic: readers see the old file or the new one, never a
//!   half-written one.
//! - Lock files are opened without truncation and, on Unix, with `O_NOFOLLOW`: a symlink
//!   planted at a lock path is an error, never a file truncated or written elsewhere.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How many fresh names are tried before giving up (each collision is a 2^-64 event unless
/// someone is guessing names, which `O_EXCL` makes harmless anyway).
const ATTEMPTS: usize = 16;

/// 16 random hex digits (std's per-process random hash keys, fresh for every call).
fn random_suffix() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", hasher.finish())
}

/// `<dir>/.<name>.<random>.<tag>`: a hidden temporary name beside the file it will become.
fn temp_name(dir: &Path, name: &OsStr, tag: &str) -> PathBuf {
    let mut file = std::ffi::OsString::from(".");
    file.push(name);
    file.push(format!(".{}.{tag}", random_suffix()));
    dir.join(file)
}

/// The directory a file lives in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes what an interrupted writer left beside `path` with `tag` (`.<name>.<16 hex>.<tag>`,
/// files or directories; symlinks themselves, never their targets). Best effort; call it only
/// while holding the lock that serialises writers of `path`, so that no live writer's temporary
/// is removed.
pub(crate) fn remove_stale_temps(path: &Path, tag: &str) {
    let dir = parent_dir(path);
    let Some(name) = path.file_name() else {
        return;
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let (prefix, suffix) = (prefix.as_encoded_bytes().to_vec(), format!(".{tag}"));
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let bytes = file_name.as_encoded_bytes();
        let middle = bytes
            .strip_prefix(prefix.as_slice())
            .and_then(|rest| rest.strip_suffix(suffix.as_bytes()));
        if middle.is_some_and(|m| m.len() == 16 && m.iter().all(u8::is_ascii_hexdigit)) {
            let stale = entry.path();
            let _ = match fs::symlink_metadata(&stale) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(&stale),
                _ => fs::remove_file(&stale),
            };
        }
    }
}

/// Creates a new file beside `path` under a fresh random name (`.<name>.<random>.<tag>`),
/// exclusively. Returns its path and the open file.
pub(crate) fn create_temp_beside(path: &Path, tag: &str) -> io::Result<(PathBuf, File)> {
    create_fresh(path, tag, |tmp| {
        OpenOptions::new().write(true).create_new(true).open(tmp)
    })
}

/// Creates a new directory beside `path` under a fresh random name, exclusively.
pub(crate) fn create_temp_dir_beside(path: &Path, tag: &str) -> io::Result<PathBuf> {
    create_fresh(path, tag, |tmp| fs::create_dir(tmp)).map(|(tmp, ())| tmp)
}

/// Tries fresh names beside `path` until `create` (which must fail with `AlreadyExists` on an
/// existing name) succeeds.
fn create_fresh<T>(
    path: &Path,
    tag: &str,
    create: impl Fn(&Path) -> io::Result<T>,
) -> io::Result<(PathBuf, T)> {
    let dir = parent_dir(path);
    let name = path.file_name().unwrap_or(OsStr::new("file"));
    for _ in 0..ATTEMPTS {
        let tmp = temp_name(&dir, name, tag);
        match create(&tmp) {
            Ok(created) => return Ok((tmp, created)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "could not find a free temporary name",
    ))
}

/// Writes a file atomically: `write` fills a fresh temporary file beside `path`, which is
/// flushed to disk and renamed onto `path`. On any failure the temporary file is removed and
/// `path` is untouched. The parent directory must exist.
pub(crate) fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let (tmp, mut file) = create_temp_beside(path, "tmp")?;
    let result = write(&mut file)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            fs::rename(&tmp, path)
        });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic_with`] for a byte buffer.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Opens (creating if needed) a lock file for [`File::lock`]: never truncated, and never
/// through a symlink (`O_NOFOLLOW` on Unix; elsewhere a symlink is refused by a check first).
pub(crate) fn open_lock_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    #[cfg(not(unix))]
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(symlink_refused());
    }
    let file = options.open(path).map_err(|e| {
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            symlink_refused()
        } else {
            e
        }
    })?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file: remove it",
        ));
    }
    Ok(file)
}

fn symlink_refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "is a symbolic link, which is never followed for a lock file: remove it",
    )
}

/// Tells a failure of a file itself (an I/O error: permissions, a bad disk) from an error that
/// a decoder layered on top of it (ZIP, gzip, TAR) raises about the data, which arrives as an
/// `io::Error` too: every file opened through [`ReadFailure::open`] records its own failures.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReadFailure(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl ReadFailure {
    /// Opens `path` for reading; opening and reading failures are recorded.
    pub(crate) fn open(&self, path: &Path) -> io::Result<TrackedFile> {
        File::open(path)
            .map(|file| TrackedFile {
                file,
                failure: self.clone(),
            })
            .map_err(|e| self.record(e))
    }

    /// Whether a file opened through this has failed.
    pub(crate) fn happened(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn record(&self, e: io::Error) -> io::Error {
        if e.kind() != io::ErrorKind::Interrupted {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        e
    }
}

/// A file whose read and seek failures are recorded in a [`ReadFailure`].
#[derive(Debug)]
pub(crate) struct TrackedFile {
    file: File,
    failure: ReadFailure,
}

impl io::Read for TrackedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf).map_err(|e| self.failure.record(e))
    }
}

impl io::Seek for TrackedFile {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.file.seek(pos).map_err(|e| self.failure.record(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_fresh_and_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.bin");
        let (a, _) = create_temp_beside(&target, "tmp").unwrap();
        let (b, _) = create_temp_beside(&target, "tmp").unwrap();
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".x.bin.") && name.ends_with(".tmp"),
            "{name}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn atomic_writes_replace_a_planted_symlink_and_leave_its_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let target = dir.path().join("out.json");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_atomic(&target, b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert!(
            !fs::symlink_metadata(&target)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // Nothing but the two files is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("w.pth");
        let (stale, _) = create_temp_beside(&target, "partial").unwrap();
        let stale_dir = create_temp_dir_beside(&target, "partial").unwrap();
        fs::write(stale_dir.join("x"), b"x").unwrap();
        let (other_tag, _) = create_temp_beside(&target, "tmp").unwrap();
        let (other_file, _) = create_temp_beside(&dir.path().join("v.pth"), "partial").unwrap();
        let keep = dir.path().join(".w.pth.not-hex-digits!.partial");
        fs::write(&keep, b"keep").unwrap();
        remove_stale_temps(&target, "partial");
        assert!(!stale.exists() && !stale_dir.exists());
        assert!(other_tag.exists() && other_file.exists() && keep.exists());
    }

    #[cfg(unix)]
    #[test]
    fn lock_files_never_follow_a_symlink_nor_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let lock = dir.path().join("a.lock");
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        let err = open_lock_file(&lock).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");

        let plain = dir.path().join("b.lock");
        fs::write(&plain, b"pid 1").unwrap();
        drop(open_lock_file(&plain).unwrap());
        assert_eq!(fs::read(&plain).unwrap(), b"pid 1");
    }
}
