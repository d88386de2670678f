//! The stores a snapshot is copied to, behind one trait: S3, GCS and Azure Blob (through
//! `object_store`, in `object.rs`, `s3.rs`, `gcs.rs`, `azure.rs`) and a directory (a PVC
//! mounted as a Tekton workspace, `dir.rs`).
//!
//! Uploading, verifying and retention are written once against [`Store`] and [`Writer`]; each
//! store supplies only what is particular to it:
//! - S3: the snapshot goes up as a multipart upload in [`OBJECT_PART_SIZE`] parts, at most
//!   [`OBJECT_PARTS_IN_FLIGHT`] at a time, each with its SHA-256 in `x-amz-checksum-sha256` so
//!   the server checks every part; an aborted upload is aborted on the server too, so no object
//!   ever appears. After completion the copy is checked by its size and, where the server
//!   states one, by the SHA-256 checksum it keeps (see [`crate::checksum`]).
//! - Azure Blob: the same multipart upload (Put Block, then Put Block List, which commits the
//!   blob whole); GCS: a resumable upload of [`OBJECT_PART_SIZE`] chunks, whose last chunk
//!   makes the object appear whole (`gcs.rs` says why not the XML multipart API). Neither
//!   states a checksum that proves the copy is the verified bytes, so the copy is read back
//!   and hashed ([`Store::reads_back_sha256`]).
//! - A directory, written with `std::fs` and the common crate's `fsutil` rather than
//!   `object_store`'s `LocalFileSystem`: that one renames its staging file into place without
//!   syncing it first, so a power cut could leave a complete-looking name over missing data. The
//!   contract here is temp file, fsync, rename, fsync the directory.

use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub use crate::azure::azure;
pub use crate::dir::dir;
pub use crate::gcs::gcs;
pub use crate::lock::{ObjectRetention, ObjectVersion, Protection};
pub use crate::s3::s3;

/// Part size of multipart uploads: large enough for few requests, small enough to bound memory.
pub const OBJECT_PART_SIZE: usize = 8 << 20;
/// Parts uploaded at once; with the part being read, memory stays near 4 × 8 MiB.
pub const OBJECT_PARTS_IN_FLIGHT: usize = 3;
/// Part size of ranged reads: each part is one request, within the client's timeout.
pub const READ_PART_SIZE: u64 = 8 << 20;
/// Write size for the directory store.
pub const DIR_CHUNK_SIZE: usize = 4 << 20;

/// A store operation that failed (after the retries `object_store` does itself).
#[derive(Debug, thiserror::Error)]
#[error("{store}: {action} {target} failed")]
pub struct Error {
    store: &'static str,
    action: &'static str,
    target: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
    /// The server refused (403) an operation on an object it holds under Object Lock.
    refused: bool,
}

impl Error {
    /// An error of `store` while doing `action` to `target`.
    pub(crate) fn new(
        store: &'static str,
        action: &'static str,
        target: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            store,
            action,
            target: target.into(),
            source: source.into(),
            refused: false,
        }
    }

    /// The same error, marked as a refusal (403) of a store whose objects may be locked.
    #[must_use]
    pub(crate) fn refused(mut self) -> Self {
        self.refused = true;
        self
    }

    /// Whether the server refused the operation (403) in a bucket with Object Lock: for a
    /// delete, the object is still under its retention, which is no failure of retention.
    #[must_use]
    pub fn is_refused(&self) -> bool {
        self.refused
    }
}

/// `Result` with a store [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A file as a store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file name (no directory or key prefix).
    pub name: String,
    /// When it was last written (an object's `Last-Modified`, a file's mtime).
    pub modified: DateTime<Utc>,
}

impl Entry {
    /// An entry named `name`, written at `modified`.
    pub fn new(name: impl Into<String>, modified: DateTime<Utc>) -> Self {
        Self {
            name: name.into(),
            modified,
        }
    }
}

/// A place that holds snapshot files side by side, by file name.
pub trait Store: Send + Sync {
    /// The store's short name in logs and in the `synced-stores` result: `s3`, `gcs`, `azure`,
    /// `dir`.
    fn name(&self) -> &'static str;
    /// Where `file` lives, as a person would look for it (`s3://bucket/prefix/file`, a path).
    fn location(&self, file: &str) -> String;
    /// The chunk size [`Writer::write`] works best with.
    fn chunk_size(&self) -> usize;
    /// Starts writing `file`; nothing is visible under its name until [`Writer::finish`].
    fn begin<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Box<dyn Writer>>>;
    /// Writes a small file whole.
    fn put<'a>(&'a self, file: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<()>>;
    /// The whole of a small `file`, or `None` if it does not exist.
    fn read<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;
    /// The whole of `file` as a stream of chunks, or `None` if it does not exist: for a
    /// snapshot, which is never held in memory. The default reads it whole with
    /// [`Store::read`]; the stores here override it to stream.
    fn open<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<ByteStream>>> {
        Box::pin(async move {
            Ok(self.read(file).await?.map(|body| {
                futures::stream::once(futures::future::ready(Ok(Bytes::from(body)))).boxed()
            }))
        })
    }
    /// The size of `file`, or `None` if it does not exist.
    fn size<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<u64>>>;
    /// The SHA-256 (hex) of `file` as stored, where the store can tell it cheaply; `None` where
    /// it cannot (S3 keeps per-part checksums that it verified on upload, not a whole-file one).
    fn sha256<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>>;
    /// The SHA-256 checksum the server keeps for `file`, as it states it (S3: the
    /// `x-amz-checksum-sha256` header of a HEAD with `x-amz-checksum-mode: ENABLED`, a composite
    /// `<base64>-<parts>` after a multipart upload); `None` if it states none, or the store
    /// has no such thing.
    fn server_checksum<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>>;
    /// The part size of multipart uploads, for the composite checksum computed while sending;
    /// `None` for a store that does not speak server checksums.
    fn part_size(&self) -> Option<usize>;
    /// Whether [`Store::sha256`] reads the whole copy back (then the upload need not hash the
    /// bytes it sends as well).
    fn reads_back_sha256(&self) -> bool;
    /// The files directly in the store (not below), with their modification times.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Entry>>>;
    /// Whether the store may hold this project's temp files (`.vault-backup-*.tmp`) that a
    /// killed run left behind: a directory does, an object store never shows a partial upload
    /// as an object.
    fn keeps_temp_files(&self) -> bool;
    /// Deletes `file`; a file already gone is not an error. In a bucket that keeps versions
    /// this only adds a delete marker.
    fn delete<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<()>>;
    /// What the store protects against deletion (S3: versioning and Object Lock), as the
    /// server states it; `None` for a store without such a thing.
    fn protection(&self) -> BoxFuture<'_, Result<Option<Protection>>> {
        Box::pin(async { Ok(None) })
    }
    /// The lock the store holds `file` under, `None` where it holds it under none (or has no
    /// locks): what retention asks before it deletes.
    fn retention<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<ObjectRetention>>> {
        let _ = file;
        Box::pin(async { Ok(None) })
    }
    /// The version id of `file`'s current version, where the store keeps versions.
    fn version<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        let _ = file;
        Box::pin(async { Ok(None) })
    }
    /// Every version of every file (delete markers included), for a store that keeps
    /// versions; empty for one that does not.
    fn versions(&self) -> BoxFuture<'_, Result<Vec<ObjectVersion>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// This store with reads of the named files (`read`, `open`, `size`, `retention`) pinned to
    /// the given version ids, from [`Store::versions`]; `None` for a store without versions.
    fn pinned(&self, versions: Vec<(String, String)>) -> Option<Box<dyn Store>> {
        let _ = versions;
        None
    }
}

/// The bytes of a file, as a store reads them back.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A file being written to a store.
pub trait Writer: Send {
    /// Queues `chunk`, waiting first while the store has too much in flight.
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<()>>;
    /// Makes the file visible under its name, whole.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
    /// Gives up: nothing appears under the file's name and partial data is removed.
    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
    /// Whether [`Writer::copy_from`] works: the file is a local one, so bytes can be copied
    /// into it by the kernel without passing through this process.
    fn copies_files(&self) -> bool {
        false
    }
    /// Appends up to `len` bytes of `src` from its current position, copied by the kernel
    /// (`copy_file_range`, or `sendfile`/`splice` across filesystems, as `std::io::copy` picks);
    /// returns `src` and the bytes copied (0 at its end). Only where
    /// [`Writer::copies_files`] says so.
    fn copy_from(
        &mut self,
        src: std::fs::File,
        len: u64,
    ) -> BoxFuture<'_, Result<(std::fs::File, u64)>> {
        let _ = (src, len);
        Box::pin(async {
            Err(Error::new(
                "store",
                "copying a file into",
                "a store that cannot",
                "copy_from is not supported here",
            ))
        })
    }
}

impl fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Store({})", self.location(""))
    }
}
