//! Durable, atomic local writes: temp file, fsync, rename, fsync the directory.
//!
//! A file under its final name is always complete: a crash leaves at most a hidden temp file
//! (`.<name>.tmp*`), never a partial file that a later step or a restore would trust.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// The prefix of temp files this project leaves in a directory while writing.
pub const TEMP_PREFIX: &str = ".vault-backup-";
/// The suffix of those temp files.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Whether `file_name` is one of this project's temp files (`.vault-backup-*.tmp`): a copy in
/// flight, or one left behind by a process that was killed before it could remove it.
#[must_use]
pub fn is_temp_name(file_name: &str) -> bool {
    file_name.len() > TEMP_PREFIX.len() + TEMP_SUFFIX.len()
        && file_name.starts_with(TEMP_PREFIX)
        && file_name.ends_with(TEMP_SUFFIX)
}

/// Flushes a directory's entries (a rename is durable only once its directory is synced).
///
/// # Errors
/// The I/O error if the directory cannot be opened or synced.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A new temp file in `dir` with mode 0600, named so it is never mistaken for a finished file.
///
/// # Errors
/// The I/O error if the file cannot be created.
pub fn temp_file_in(dir: &Path) -> std::io::Result<NamedTempFile> {
    // tempfile creates files with mode 0600 on Unix.
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
}

/// Syncs `tmp` and moves it to `dir/name`, then syncs `dir`. An existing file is replaced only
/// if `replace` is true; otherwise the move fails with `AlreadyExists`.
///
/// # Errors
/// The I/O error. On error the temp file is removed.
pub fn persist(
    tmp: NamedTempFile,
    dir: &Path,
    name: &str,
    replace: bool,
) -> std::io::Result<PathBuf> {
    tmp.as_file().sync_all()?;
    let path = dir.join(name);
    if replace {
        tmp.persist(&path).map_err(|e| e.error)?;
    } else {
        tmp.persist_noclobber(&path).map_err(|e| e.error)?;
    }
    fsync_dir(dir)?;
    Ok(path)
}

/// Writes `bytes` to `dir/name` atomically and durably; an existing file is replaced only if
/// `replace` is true.
///
/// # Errors
/// The I/O error; `AlreadyExists` if the file exists and `replace` is false.
pub fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    replace: bool,
) -> std::io::Result<PathBuf> {
    let mut tmp = temp_file_in(dir)?;
    tmp.write_all(bytes)?;
    persist(tmp, dir, name, replace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_whole_files_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_atomic(dir.path(), "a", b"one", false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let err = write_atomic(dir.path(), "a", b"two", false).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        write_atomic(dir.path(), "a", b"three", true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["a"], "no temp file is left behind");
    }

    #[test]
    fn temp_files_are_private_and_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = temp_file_in(dir.path()).unwrap();
        let name = tmp.path().file_name().unwrap().to_str().unwrap();
        assert!(is_temp_name(name), "{name}");
        for other in [
            ".vault-backup-.tmp",
            "vault-backup-x.tmp",
            ".vault-backup-x",
            "x.tmp",
        ] {
            assert!(!is_temp_name(other), "{other}");
        }
        let mode = tmp.as_file().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
