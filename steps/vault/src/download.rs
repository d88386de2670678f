//! Receiving the snapshot body once: to a private temp file, hashed, and checked as a raft
//! archive as it streams past.
//!
//! Where the time went before (profiled on a 251 MB snapshot, see issue 9): 16k writes of the
//! ~16 KB network chunks, each a round trip through tokio's blocking pool, one more channel hop
//! per chunk to the archive check, a copy of every chunk into the gzip decoder's buffer, and
//! both SHA-256 passes (the file, and `state.bin` inside it) on the same threads as the
//! network. Now a task beside the connection gathers chunks into batches of about 256 KB and
//! moves them (reference-counted, never copied) to two dedicated threads through bounded
//! channels: one hashes the file and writes it with `writev` in pieces of about 1 MiB, the other
//! runs the archive check, whose gzip decoder reads the chunks in place. The two SHA-256 passes
//! thus run in parallel, and memory stays bounded by the channels whatever the snapshot's size.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, IoSlice, Read, Write};
use std::path::Path;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::sync::mpsc;
use vault_backup_common::fsutil;
use vault_backup_common::progress::Progress;

use crate::archive::{self, ArchiveError, ArchiveInfo};
use crate::error::{Error, Result};

/// A batch is sent on once it holds this many bytes (OpenBao's chunks are ~16 KB).
const BATCH_BYTES: usize = 256 << 10;

/// Batches in flight to each thread: with [`BATCH_BYTES`], at most ~2 MiB each.
const CHANNEL_BATCHES: usize = 8;

/// The file is written in pieces of at least this size.
const WRITE_BYTES: usize = 1 << 20;

/// Chunks of the body, in order.
type Batch = Vec<Bytes>;

/// A received and verified snapshot, still under its temp name.
pub struct Received {
    /// The temp file (removed if dropped).
    pub file: NamedTempFile,
    /// Its SHA-256 (hex).
    pub sha256: String,
    /// Its length.
    pub bytes: u64,
    /// What the archive says about itself.
    pub info: ArchiveInfo,
}

/// The body as one byte stream for the archive check, read in place from the batches.
struct BatchReader {
    rx: mpsc::Receiver<Batch>,
    chunks: VecDeque<Bytes>,
}

impl Read for BatchReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for BatchReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.chunks.front().is_none_or(Bytes::is_empty) {
            if self.chunks.pop_front().is_none() {
                match self.rx.blocking_recv() {
                    Some(batch) => self.chunks.extend(batch),
                    None => return Ok(&[]),
                }
            }
        }
        Ok(self.chunks.front().map_or(&[], |c| &c[..]))
    }

    fn consume(&mut self, amount: usize) {
        if let Some(chunk) = self.chunks.front_mut() {
            chunk.advance(amount);
        }
    }
}

/// Writes all of `chunks` with as few `writev` calls as the kernel allows.
fn write_chunks(file: &mut File, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let n = file.write_vectored(slices)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// The writer thread: hashes every batch and appends it to `file`. Returns the hex SHA-256.
fn hash_and_write(mut rx: mpsc::Receiver<Batch>, mut file: File) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_bytes = 0;
    while let Some(batch) = rx.blocking_recv() {
        for chunk in batch {
            hasher.update(&chunk);
            pending_bytes += chunk.len();
            pending.push(chunk);
        }
        if pending_bytes >= WRITE_BYTES {
            write_chunks(&mut file, &pending)?;
            pending.clear();
            pending_bytes = 0;
        }
    }
    write_chunks(&mut file, &pending)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Aborts a spawned task when dropped, so a cancelled attempt (SIGTERM, timeout) stops reading.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A broken body: the transport's or the store's error.
type StreamError = Box<dyn std::error::Error + Send + Sync>;

/// What the receiving task saw of the body.
struct Body {
    bytes: u64,
    error: Option<StreamError>,
}

/// Reads the body and sends it on in batches to both threads, until it ends, breaks, or a
/// thread stops taking it.
async fn forward<S, E>(
    mut stream: S,
    to_writer: mpsc::Sender<Batch>,
    to_checker: mpsc::Sender<Batch>,
) -> Body
where
    S: futures::Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: Into<StreamError> + Send,
{
    let mut bytes = 0u64;
    let mut progress = Progress::start();
    let mut batch: Batch = Vec::new();
    let mut batch_bytes = 0;
    let mut error = None;
    loop {
        let next = stream.next().await;
        let last = match next {
            Some(Ok(chunk)) => {
                bytes += chunk.len() as u64;
                batch_bytes += chunk.len();
                batch.push(chunk);
                false
            }
            Some(Err(e)) => {
                error = Some(e.into());
                true
            }
            None => true,
        };
        if (batch_bytes >= BATCH_BYTES || last) && !batch.is_empty() {
            let full = std::mem::take(&mut batch);
            batch_bytes = 0;
            // A closed channel means that thread stopped; its reason is reported by the caller.
            if to_checker.send(full.clone()).await.is_err() || to_writer.send(full).await.is_err() {
                break;
            }
        }
        if last {
            break;
        }
        if let Some(rate) = progress.due(bytes) {
            tracing::info!(bytes, mb_per_s = format!("{rate:.1}"), "receiving snapshot");
        }
    }
    Body { bytes, error }
}

/// Streams `response` into a temp file in `dir`, hashing it and verifying the archive. The
/// file is not yet synced: [`fsutil::persist`] does that before the rename.
///
/// # Errors
/// [`Error::Io`] for the temp file, [`Error::Stream`] if the body broke off,
/// [`Error::Archive`] if the archive fails its checks.
pub async fn receive(response: reqwest::Response, dir: &Path, addr: &str) -> Result<Received> {
    receive_stream(response.bytes_stream(), dir, addr).await
}

/// Like [`receive`], from any byte stream: a snapshot read back from a store. `source` names
/// where it comes from in errors (`s3://bucket/prefix/vault-....snap`, a path).
///
/// # Errors
/// As [`receive`].
pub async fn receive_stream<S, E>(stream: S, dir: &Path, source: &str) -> Result<Received>
where
    S: futures::Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<StreamError> + Send + 'static,
{
    let addr = source;
    let io = |source| Error::Io {
        path: dir.to_owned(),
        source,
    };
    let tmp = fsutil::temp_file_in(dir).map_err(io)?;
    let file = tmp.reopen().map_err(io)?;
    let (to_writer, writer_rx) = mpsc::channel::<Batch>(CHANNEL_BATCHES);
    let (to_checker, checker_rx) = mpsc::channel::<Batch>(CHANNEL_BATCHES);
    let writer = tokio::task::spawn_blocking(move || hash_and_write(writer_rx, file));
    let checker = tokio::task::spawn_blocking(move || {
        archive::verify(BatchReader {
            rx: checker_rx,
            chunks: VecDeque::new(),
        })
    });
    // A task of its own, so it runs beside the connection task rather than waking this one's
    // thread for every chunk; aborted if this attempt is dropped.
    let mut forwarder = AbortOnDrop(tokio::spawn(forward(stream, to_writer, to_checker)));

    let body = (&mut forwarder.0)
        .await
        .map_err(|e| io(std::io::Error::other(e)))?;
    let written = writer.await.map_err(|e| io(std::io::Error::other(e)))?;
    let verdict: std::result::Result<ArchiveInfo, ArchiveError> =
        checker.await.map_err(|e| io(std::io::Error::other(e)))?;
    let sha256 = written.map_err(io)?;
    let bytes = body.bytes;
    if let Some(source) = body.error {
        return Err(Error::Stream {
            addr: addr.to_owned(),
            bytes,
            source,
        });
    }
    let info = verdict.map_err(|source| Error::Archive {
        addr: addr.to_owned(),
        bytes,
        source,
    })?;
    if info.trailing_bytes > 0 {
        tracing::warn!(
            trailing_bytes = info.trailing_bytes,
            "bytes after the end of the gzip stream; kept as served"
        );
    }
    Ok(Received {
        file: tmp,
        sha256,
        bytes,
        info,
    })
}
