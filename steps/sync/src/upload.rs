//! One verified snapshot into one store: snapshot, `.json`, `.sha256` last, then read back.
//!
//! The snapshot is streamed in the store's chunk size, so memory stays bounded whatever its size
//! (the S3 store keeps a few parts in flight). Every byte sent is hashed again on the way: if
//! the workspace file changed after it was verified, the copy is refused. A cancellation
//! (SIGTERM) aborts the upload, so nothing appears under the snapshot's name, and an upload
//! that completed just as the signal came is removed again.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vault_backup_common::artifact::{self, Artifact, ArtifactError};
use vault_backup_common::exit::one_line;
use vault_backup_common::progress::Progress;

use vault_backup_stores::checksum::{self, PartDigests};
use vault_backup_stores::store::{self, Store, Writer};

/// A snapshot in the workspace that matched its `.sha256`, with its sidecars in memory.
#[derive(Debug, Clone)]
pub struct Source {
    /// The workspace directory.
    pub dir: PathBuf,
    /// The snapshot.
    pub artifact: Artifact,
    /// Its SHA-256 (hex), as verified.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// The manifest's bytes, if the workspace has one.
    pub manifest: Option<Vec<u8>>,
    /// The checksum file's bytes, uploaded unchanged so `sha256sum -c` works in every store.
    pub checksum: Vec<u8>,
}

impl Source {
    /// Verifies `dir/<name>.snap` against its `.sha256` and reads the sidecars.
    ///
    /// # Errors
    /// [`ArtifactError`] if the snapshot is incomplete, unreadable or does not match.
    pub fn verified(dir: &Path, artifact: &Artifact) -> Result<Self, ArtifactError> {
        let v = artifact::verify_in_dir(dir, artifact)?;
        let read = |file: String| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(|source| ArtifactError::Io { path, source })
        };
        let checksum = read(artifact.sha256_file())?;
        let manifest = match read(artifact.manifest_file()) {
            Ok(m) => Some(m),
            Err(ArtifactError::Io { source, path })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                warn!(path = %path.display(), "the snapshot has no manifest; copying it without one");
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            dir: dir.to_owned(),
            artifact: artifact.clone(),
            sha256: v.sha256,
            bytes: v.bytes,
            manifest,
            checksum,
        })
    }
}

/// Why one store did not get its copy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The workspace file could not be read while uploading.
    #[error("reading {} from the workspace", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The copy differs from what was verified.
    #[error("{location}: {what} is {actual} but should be {expected}; the copy is not trusted")]
    Mismatch {
        /// The copy.
        location: String,
        /// What was compared.
        what: &'static str,
        /// What the copy has.
        actual: String,
        /// What it should have.
        expected: String,
    },
    /// The `.snap` was gone or changed when checked again after the `.sha256` was written.
    #[error(
        "{location}: the snapshot is {actual} after its .sha256 was written (another run's retention may have removed it); this store holds no verified copy"
    )]
    Vanished {
        /// The copy.
        location: String,
        /// What was found: `missing` or its size.
        actual: String,
    },
    /// Cancelled by a signal; the upload was aborted.
    #[error("{location}: interrupted, upload aborted")]
    Interrupted {
        /// The copy that was being written.
        location: String,
    },
}

/// What [`upload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The snapshot was copied and verified, its `.sha256` written last.
    Uploaded,
    /// The store already held this snapshot: the same `.sha256`, byte for byte, and a `.snap` of
    /// the right size. Nothing was written.
    AlreadyThere,
}

/// Copies `source` into `store`: snapshot, manifest, checksum file last; then reads it back.
///
/// A store that already holds this snapshot (an identical `.sha256` and a `.snap` of the right
/// size) is left as it is. Otherwise nothing of an earlier copy under the same name is touched
/// until the new `.snap` is complete and verified: the new `.snap` replaces the old one in one
/// step (S3 completes a multipart upload atomically; the directory renames a synced temp file),
/// and only then are the `.json` and the `.sha256` replaced. So a failed upload (a full PVC, an
/// S3 error) leaves an earlier good copy complete, and no DeleteObject is needed. Between the
/// `.snap` and the `.sha256` an old checksum may sit beside new bytes for a moment; `sha256sum
/// -c` then fails rather than trusts them.
///
/// # Errors
/// [`Error`]; the store then holds no new file under the snapshot's name that was not checked,
/// and never a `.sha256` for a copy that is not whole.
pub async fn upload(
    store: &dyn Store,
    source: &Source,
    cancel: &CancellationToken,
) -> Result<Outcome, Error> {
    let a = &source.artifact;
    let snap = a.snap_file();
    let location = store.location(&snap);
    if already_there(store, source).await? {
        info!(
            store = store.name(),
            location = %location,
            bytes = source.bytes,
            "already in the store: the same .sha256 and a .snap of the right size; not copied again"
        );
        return Ok(Outcome::AlreadyThere);
    }

    let writer = store.begin(&snap).await?;
    info!(store = store.name(), location = %location, bytes = source.bytes, "upload started");
    let sent = stream(store, writer, source, cancel, &location).await?;
    if cancel.is_cancelled() {
        // Completed in the instant the signal came: take it back rather than leave a copy
        // nobody checked.
        store.delete(&snap).await?;
        return Err(Error::Interrupted { location });
    }
    if let Some(problem) = check_copy(store, source, &snap, sent).await? {
        // Not left behind as an incomplete copy that looks like a snapshot.
        store.delete(&snap).await?;
        return Err(problem);
    }

    if let Some(manifest) = &source.manifest {
        put_checked(store, &a.manifest_file(), manifest.clone()).await?;
    }
    put_checked(store, &a.sha256_file(), source.checksum.clone()).await?;
    // Another run's retention may have taken the .snap between its upload and the .sha256
    // (overlapping runs): then this store holds no copy, whatever the checksum file says.
    let size = store.size(&snap).await?;
    if size != Some(source.bytes) {
        return Err(Error::Vanished {
            location,
            actual: size.map_or_else(|| "missing".to_owned(), |s| format!("{s} bytes")),
        });
    }
    Ok(Outcome::Uploaded)
}

/// Whether the store already holds this snapshot: its `.sha256` is byte-equal to the
/// workspace's and its `.snap` has the verified size.
async fn already_there(store: &dyn Store, source: &Source) -> Result<bool, Error> {
    let a = &source.artifact;
    if store.read(&a.sha256_file()).await?.as_deref() != Some(source.checksum.as_slice()) {
        return Ok(false);
    }
    Ok(store.size(&a.snap_file()).await? == Some(source.bytes))
}

/// Compares what was sent and what the store reads back with the verified snapshot; returns
/// the first difference.
async fn check_copy(
    store: &dyn Store,
    source: &Source,
    snap: &str,
    sent: Sent,
) -> Result<Option<Error>, Error> {
    let location = store.location(snap);
    if let Some(sent) = sent.sha256
        && sent != source.sha256
    {
        return Ok(Some(Error::Mismatch {
            location,
            what: "the SHA-256 of the bytes sent (the workspace file changed after it was verified)",
            actual: sent,
            expected: source.sha256.clone(),
        }));
    }
    let size = store.size(snap).await?;
    if size != Some(source.bytes) {
        return Ok(Some(Error::Mismatch {
            location,
            what: "the size read back",
            actual: size.map_or_else(|| "missing".to_owned(), |s| s.to_string()),
            expected: source.bytes.to_string(),
        }));
    }
    if let Some(composite) = sent.composite {
        // The server checked each part's SHA-256 as it arrived; what it states for the whole
        // must be what was computed here over the same parts (or, for a full-object checksum,
        // over the verified file).
        let Some(stated) = store.server_checksum(snap).await? else {
            info!(
                store = store.name(),
                location = %location,
                "the server states no SHA-256 checksum for the copy (x-amz-checksum-mode); it is checked by its size only"
            );
            return Ok(None);
        };
        let (kind, expected) = if stated.contains('-') {
            ("composite", composite)
        } else {
            (
                "full-object",
                checksum::full_object(&source.sha256).unwrap_or_default(),
            )
        };
        if stated != expected {
            return Ok(Some(Error::Mismatch {
                location,
                what: "the SHA-256 checksum the server states",
                actual: stated,
                expected,
            }));
        }
        info!(store = store.name(), location = %location, checksum = %stated, kind, "the server's SHA-256 checksum matches the one computed while sending");
    }
    if store.reads_back_sha256() {
        let stored = store.sha256(snap).await?.unwrap_or_default();
        if stored != source.sha256 {
            return Ok(Some(Error::Mismatch {
                location,
                what: "the SHA-256 read back",
                actual: stored,
                expected: source.sha256.clone(),
            }));
        }
    }
    Ok(None)
}

async fn put_checked(store: &dyn Store, file: &str, body: Vec<u8>) -> Result<(), Error> {
    let len = body.len() as u64;
    store.put(file, body).await?;
    let size = store.size(file).await?;
    if size == Some(len) {
        Ok(())
    } else {
        Err(Error::Mismatch {
            location: store.location(file),
            what: "the size read back",
            actual: size.map_or_else(|| "missing".to_owned(), |s| s.to_string()),
            expected: len.to_string(),
        })
    }
}

/// Streams the snapshot into `writer`; returns the SHA-256 of what was sent, unless the store
/// reads its copy back whole anyway (then hashing the stream too would only cost CPU). Aborts
/// the writer on any failure or on cancellation.
async fn stream(
    store: &dyn Store,
    mut writer: Box<dyn Writer>,
    source: &Source,
    cancel: &CancellationToken,
    location: &str,
) -> Result<Sent, Error> {
    let path = source.dir.join(source.artifact.snap_file());
    let hash = !store.reads_back_sha256();
    let mut reader = match Chunks::open(&path, store.chunk_size(), hash, store.part_size()).await {
        Ok(r) => r,
        Err(e) => {
            abort(store, writer, location).await;
            return Err(e);
        }
    };
    let mut progress = Progress::start();
    let mut done = 0u64;
    loop {
        let step = async {
            let chunk = reader.next().await?;
            if let Some(chunk) = chunk.clone() {
                writer.write(chunk).await?;
            }
            Ok::<_, Error>(chunk)
        };
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            r = step => Some(r),
        };
        match outcome {
            None => {
                abort(store, writer, location).await;
                return Err(Error::Interrupted {
                    location: location.to_owned(),
                });
            }
            Some(Err(e)) => {
                abort(store, writer, location).await;
                return Err(e);
            }
            Some(Ok(None)) => break,
            Some(Ok(Some(chunk))) => done += chunk.len() as u64,
        }
        if let Some(rate) = progress.due(done) {
            info!(
                store = store.name(),
                bytes = done,
                total = source.bytes,
                percent = done * 100 / source.bytes.max(1),
                mb_per_s = format_args!("{rate:.1}"),
                "uploading"
            );
        }
    }
    if cancel.is_cancelled() {
        abort(store, writer, location).await;
        return Err(Error::Interrupted {
            location: location.to_owned(),
        });
    }
    // Not raced against the signal: completing takes the last parts in flight and one request,
    // and a completed copy is removed again by the caller if a signal came meanwhile.
    writer.finish().await?;
    Ok(reader.finish())
}

async fn abort(store: &dyn Store, writer: Box<dyn Writer>, location: &str) {
    match writer.abort().await {
        Ok(()) => info!(store = store.name(), location, "upload aborted"),
        Err(e) => warn!(
            store = store.name(),
            location,
            "could not abort the upload (a bucket lifecycle rule for incomplete multipart uploads cleans it up): {}",
            one_line(&e)
        ),
    }
}

/// Reads a file in fixed-size chunks on the blocking pool, hashing as it goes.
///
/// Chunk buffers come from a small pool and go back to it when the store is done with them
/// (the last `Bytes` referring to one drops). Allocating and freeing an 8 MiB buffer per part
/// instead makes glibc raise its mmap threshold and keep freed parts in per-thread arenas:
/// measured, peak RSS went from about 40 MiB to 140 MiB on a 500 MB upload.
struct Chunks {
    path: PathBuf,
    state: Option<(File, Hashers)>,
    chunk: usize,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// What is computed over the bytes as they are read: the whole file's SHA-256 and, for a store
/// that states composite checksums, the SHA-256 of each part.
#[derive(Default)]
struct Hashers {
    full: Option<Sha256>,
    parts: Option<PartDigests>,
}

impl Hashers {
    fn update(&mut self, bytes: &[u8]) {
        if let Some(h) = self.full.as_mut() {
            h.update(bytes);
        }
        if let Some(p) = self.parts.as_mut() {
            p.update(bytes);
        }
    }
}

/// What was computed over the bytes sent.
#[derive(Debug, Default)]
struct Sent {
    /// The SHA-256 (hex) of the whole, if hashed.
    sha256: Option<String>,
    /// The composite checksum of the parts, if the store has parts.
    composite: Option<String>,
}

/// A pooled buffer lent to a `Bytes`; returns to the pool on drop.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut pool) = self.pool.lock() {
            pool.push(buf);
        }
    }
}

impl Chunks {
    async fn open(
        path: &Path,
        chunk: usize,
        hash: bool,
        part_size: Option<usize>,
    ) -> Result<Self, Error> {
        let p = path.to_owned();
        let file = tokio::task::spawn_blocking(move || File::open(p))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|source| Error::Read {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            path: path.to_owned(),
            state: Some((
                file,
                Hashers {
                    full: hash.then(Sha256::new),
                    parts: part_size.map(PartDigests::new),
                },
            )),
            chunk,
            pool: Arc::default(),
        })
    }

    /// The next chunk, or `None` at the end of the file.
    async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        let Some((file, mut hasher)) = self.state.take() else {
            return Err(self.read_error(std::io::Error::other("reader already failed")));
        };
        let size = self.chunk as u64;
        let chunk = self.chunk;
        let spare = self.pool.lock().ok().and_then(|mut p| p.pop());
        let result = tokio::task::spawn_blocking(move || {
            let mut buf = spare.unwrap_or_else(|| Vec::with_capacity(chunk));
            buf.clear();
            let mut limited = file.take(size);
            let r = limited.read_to_end(&mut buf);
            hasher.update(&buf);
            (limited.into_inner(), hasher, r.map(|_| buf))
        })
        .await;
        match result {
            Ok((file, hasher, Ok(buf))) => {
                self.state = Some((file, hasher));
                Ok((!buf.is_empty()).then(|| {
                    Bytes::from_owner(Pooled {
                        buf,
                        pool: Arc::clone(&self.pool),
                    })
                }))
            }
            Ok((_, _, Err(e))) => Err(self.read_error(e)),
            Err(e) => Err(self.read_error(std::io::Error::other(e))),
        }
    }

    /// What was computed over everything read.
    fn finish(self) -> Sent {
        let Some((_, h)) = self.state else {
            return Sent::default();
        };
        Sent {
            sha256: h.full.map(|h| hex::encode(h.finalize())),
            composite: h.parts.map(PartDigests::composite),
        }
    }

    fn read_error(&self, source: std::io::Error) -> Error {
        Error::Read {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use vault_backup_stores::store::{Entry, Result as StoreResult};

    /// The real directory store, except that writing the `.sha256` also removes the `.snap`:
    /// another run's retention striking between the two, which no real store does on demand.
    struct RacedByRetention(Box<dyn Store>);

    impl Store for RacedByRetention {
        fn name(&self) -> &'static str {
            self.0.name()
        }
        fn location(&self, file: &str) -> String {
            self.0.location(file)
        }
        fn chunk_size(&self) -> usize {
            self.0.chunk_size()
        }
        fn begin<'a>(&'a self, file: &'a str) -> BoxFuture<'a, StoreResult<Box<dyn Writer>>> {
            self.0.begin(file)
        }
        fn put<'a>(&'a self, file: &'a str, body: Vec<u8>) -> BoxFuture<'a, StoreResult<()>> {
            Box::pin(async move {
                self.0.put(file, body).await?;
                if let Some(snap) = file.strip_suffix(".sha256") {
                    self.0.delete(snap).await?;
                }
                Ok(())
            })
        }
        fn read<'a>(&'a self, file: &'a str) -> BoxFuture<'a, StoreResult<Option<Vec<u8>>>> {
            self.0.read(file)
        }
        fn size<'a>(&'a self, file: &'a str) -> BoxFuture<'a, StoreResult<Option<u64>>> {
            self.0.size(file)
        }
        fn sha256<'a>(&'a self, file: &'a str) -> BoxFuture<'a, StoreResult<Option<String>>> {
            self.0.sha256(file)
        }
        fn reads_back_sha256(&self) -> bool {
            self.0.reads_back_sha256()
        }
        fn server_checksum<'a>(
            &'a self,
            file: &'a str,
        ) -> BoxFuture<'a, StoreResult<Option<String>>> {
            self.0.server_checksum(file)
        }
        fn part_size(&self) -> Option<usize> {
            self.0.part_size()
        }
        fn list(&self) -> BoxFuture<'_, StoreResult<Vec<Entry>>> {
            self.0.list()
        }
        fn keeps_temp_files(&self) -> bool {
            self.0.keeps_temp_files()
        }
        fn delete<'a>(&'a self, file: &'a str) -> BoxFuture<'a, StoreResult<()>> {
            self.0.delete(file)
        }
    }

    #[tokio::test]
    async fn a_snap_gone_after_its_checksum_was_written_is_not_synced() {
        let ws = tempfile::tempdir().unwrap();
        let pvc = tempfile::tempdir().unwrap();
        let a = Artifact::new("vault-20261124T060000Z");
        std::fs::write(ws.path().join(a.snap_file()), b"snapshot bytes").unwrap();
        let (sha, _) = artifact::hash_file(&ws.path().join(a.snap_file())).unwrap();
        std::fs::write(
            ws.path().join(a.sha256_file()),
            artifact::checksum_line(&sha, &a.snap_file()),
        )
        .unwrap();
        let source = Source::verified(ws.path(), &a).unwrap();
        let cancel = CancellationToken::new();

        let plain = crate::store::dir(pvc.path());
        assert_eq!(
            upload(plain.as_ref(), &source, &cancel).await.unwrap(),
            Outcome::Uploaded
        );
        std::fs::remove_file(pvc.path().join(a.sha256_file())).unwrap();

        let raced = RacedByRetention(crate::store::dir(pvc.path()));
        let err = upload(&raced, &source, &cancel).await.unwrap_err();
        assert!(matches!(err, Error::Vanished { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("is missing after its .sha256 was written"),
            "{err}"
        );
    }
}
