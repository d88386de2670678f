//! Receiving the snapshot body once: to a private temp file, hashed, and checked as a raft
//! archive as it streams past.
//!
//! Where the time went (profiled with `perf` and `strace -c` on a 251 MB snapshot, issue 9):
//! the server's gzip takes one of the two cores, so the step has the other for everything it
//! does, and each cost on it shows in the wall time. It was 16k writes of the ~16 KB network
//! chunks, each a round trip through tokio's blocking pool, one more channel hop per chunk to
//! the archive check, and both SHA-256 passes (the file, and `state.bin` inside it) on the same
//! threads as the network. Then chunks held across threads kept the HTTP client allocating
//! fresh read buffers (16k page faults, 65k with musl's allocator), and the final fsync waited
//! for all 251 MB at once.
//!
//! Now the body is copied once, as it arrives, into buffers of 256 KB taken from a pool and
//! returned to it when both threads are done with them, so neither the client's read buffer
//! nor these are ever allocated afresh. Each full buffer goes, reference-counted, to two
//! dedicated threads through bounded channels: one hashes the file and writes it in pieces of
//! 64 KiB (see [`WRITE_BYTES`] for why not bigger), asking a third thread to flush the file's data to disk every
//! 16 MiB so the fsync before the rename only waits for the tail; the other runs the archive
//! check, whose gzip decoder reads the buffers in place. The two SHA-256 passes (at ~1.8 GB/s
//! each with SHA-NI, what remains of the step's user CPU) thus run in parallel, and memory
//! stays bounded by the channels whatever the snapshot's size.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::sync::mpsc;
use vault_backup_common::fsutil;
use vault_backup_common::progress::Progress;

use crate::archive::{self, ArchiveError, ArchiveInfo};
use crate::error::{Error, Result};

/// The body is copied into buffers of this size, each sent on once full (OpenBao's chunks are
/// ~16 KB).
const BATCH_BYTES: usize = 256 << 10;

/// Batches in flight to each thread: with [`BATCH_BYTES`], at most ~2 MiB each.
const CHANNEL_BATCHES: usize = 8;

/// The file is written in pieces of this size. Bigger writes made the kernel back the page
/// cache with large folios, whose allocation was the costliest part of the step on this
/// machine's kernel (6.18, a VM that hands freed 2 MiB blocks back to its host): with 1 MiB
/// writes, 42% of the samples at 1 GB were in `copy_folio_from_iter_atomic`, and the step's
/// system CPU was 1.5-2.0 s against 0.6-0.8 s with 64 KiB writes.
const WRITE_BYTES: usize = 64 << 10;

/// Batches hashed before they are written together: writing 1 MiB at a time rather than each
/// 256 KiB batch as it comes measured 0.70 s of system CPU at 1 GB against 0.96 s.
const PENDING_BATCHES: usize = 4;

/// Every time this many more bytes are written, the file's dirty pages are flushed to disk in
/// the background, so the fsync before the rename waits only for the tail.
const FLUSH_BYTES: u64 = 16 << 20;

/// Consecutive bytes of the body, shared by the two threads and returned to the pool it came
/// from once both are done with it.
struct Batch {
    data: Vec<u8>,
    pool: std::sync::mpsc::Sender<Vec<u8>>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        // The pool is gone once the body has been forwarded; the buffer is then just freed.
        let _ = self.pool.send(std::mem::take(&mut self.data));
    }
}

/// A batch as both threads hold it.
type Shared = Arc<Batch>;

/// Buffers for batches, reused once both threads have dropped them. Copying the body once
/// into them costs less than what it replaces: the HTTP client's read buffer can be reused at
/// once instead of being held until both threads are done, which made it allocate fresh memory
/// (page faults, and with musl's allocator an mmap and munmap per buffer) for every read.
struct Pool {
    returned: std::sync::mpsc::Receiver<Vec<u8>>,
    returns: std::sync::mpsc::Sender<Vec<u8>>,
}

impl Pool {
    fn new() -> Self {
        let (returns, returned) = std::sync::mpsc::channel();
        Self { returned, returns }
    }

    /// An empty buffer of [`BATCH_BYTES`] capacity: a returned one if any, else a new one.
    /// How many exist is bounded by the channels, not by the pool.
    fn take(&self) -> Vec<u8> {
        let mut buffer = self
            .returned
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH_BYTES));
        buffer.clear();
        buffer
    }

    fn share(&self, data: Vec<u8>) -> Shared {
        Arc::new(Batch {
            data,
            pool: self.returns.clone(),
        })
    }
}

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
    rx: mpsc::Receiver<Shared>,
    batch: Option<Shared>,
    pos: usize,
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
        while self.batch.as_ref().is_none_or(|b| self.pos >= b.data.len()) {
            // Dropped before waiting, so its buffer goes back to the pool now.
            self.batch = None;
            self.pos = 0;
            match self.rx.blocking_recv() {
                Some(batch) => self.batch = Some(batch),
                None => return Ok(&[]),
            }
        }
        Ok(self.batch.as_ref().map_or(&[], |b| &b.data[self.pos..]))
    }

    fn consume(&mut self, amount: usize) {
        self.pos += amount;
    }
}

/// Flushes a file's data to disk on a thread of its own while it is still being written, so the
/// writeback overlaps the download instead of all of it waiting for the final fsync. A request
/// made while a flush is running is merged into the next one; the first error is kept and
/// returned by [`Flusher::finish`], since a failed flush may have lost written pages.
struct Flusher {
    requests: Option<std::sync::mpsc::SyncSender<()>>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Flusher {
    fn start(file: File) -> std::io::Result<Self> {
        let (requests, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("snapshot-flush".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    file.sync_data()?;
                }
                Ok(())
            })?;
        Ok(Self {
            requests: Some(requests),
            thread,
        })
    }

    /// Asks for a flush of everything written so far, without waiting for it.
    fn request(&self) {
        if let Some(requests) = &self.requests {
            // Full: a flush is already queued and will cover these pages too. Disconnected:
            // the thread stopped on an error, which `finish` returns.
            let _ = requests.try_send(());
        }
    }

    /// Waits for the flush in progress, if any; returns the first flush error.
    fn finish(mut self) -> std::io::Result<()> {
        self.requests = None;
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the flush thread panicked")))
    }
}

/// Writes `pending` to `file` in pieces of [`WRITE_BYTES`] and empties it; returns the bytes
/// written.
fn write_pending(file: &mut File, pending: &mut Vec<Shared>) -> std::io::Result<u64> {
    let mut written = 0u64;
    for piece in pending.iter().flat_map(|b| b.data.chunks(WRITE_BYTES)) {
        file.write_all(piece)?;
        written += piece.len() as u64;
    }
    pending.clear();
    Ok(written)
}

/// The writer thread: hashes every batch and appends it to `file`, [`PENDING_BATCHES`] at a
/// time, flushing it in the background as it grows. Returns the hex SHA-256.
fn hash_and_write(mut rx: mpsc::Receiver<Shared>, mut file: File) -> std::io::Result<String> {
    let flusher = Flusher::start(file.try_clone()?)?;
    let mut hasher = Sha256::new();
    let mut pending: Vec<Shared> = Vec::with_capacity(PENDING_BATCHES);
    let mut written = 0u64;
    let mut flushed_at = 0u64;
    while let Some(batch) = rx.blocking_recv() {
        hasher.update(&batch.data);
        pending.push(batch);
        if pending.len() < PENDING_BATCHES {
            continue;
        }
        written += write_pending(&mut file, &mut pending)?;
        if written - flushed_at >= FLUSH_BYTES {
            flusher.request();
            flushed_at = written;
        }
    }
    write_pending(&mut file, &mut pending)?;
    flusher.finish()?;
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
    to_writer: mpsc::Sender<Shared>,
    to_checker: mpsc::Sender<Shared>,
) -> Body
where
    S: futures::Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: Into<StreamError> + Send,
{
    let pool = Pool::new();
    let mut bytes = 0u64;
    let mut progress = Progress::start();
    let mut batch = pool.take();
    let mut error = None;
    loop {
        let next = stream.next().await;
        let (mut chunk, last) = match next {
            Some(Ok(chunk)) => (chunk, false),
            Some(Err(e)) => {
                error = Some(e.into());
                (Bytes::new(), true)
            }
            None => (Bytes::new(), true),
        };
        bytes += chunk.len() as u64;
        loop {
            let room = BATCH_BYTES - batch.len();
            let take = room.min(chunk.len());
            batch.extend_from_slice(&chunk[..take]);
            chunk.advance(take);
            let full = batch.len() == BATCH_BYTES;
            if !(full || (last && !batch.is_empty())) {
                break;
            }
            let shared = pool.share(std::mem::replace(&mut batch, pool.take()));
            // A closed channel means that thread stopped; its reason is reported by the caller.
            if to_checker.send(Arc::clone(&shared)).await.is_err()
                || to_writer.send(shared).await.is_err()
            {
                return Body { bytes, error };
            }
            if chunk.is_empty() {
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
    let (to_writer, writer_rx) = mpsc::channel::<Shared>(CHANNEL_BATCHES);
    let (to_checker, checker_rx) = mpsc::channel::<Shared>(CHANNEL_BATCHES);
    let writer = tokio::task::spawn_blocking(move || hash_and_write(writer_rx, file));
    let checker = tokio::task::spawn_blocking(move || {
        archive::verify(BatchReader {
            rx: checker_rx,
            batch: None,
            pos: 0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::whole;

    /// An archive big enough to span many batches and background flushes. Its state is
    /// pseudo-random (xorshift), as a real one is encrypted: gzip cannot shrink it, and a
    /// reordered or repeated batch shows.
    fn big_archive() -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let state: Vec<u8> = (0..FLUSH_BYTES + 3_300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32).to_le_bytes()[0]
            })
            .collect();
        whole(&state, 42, 3)
    }

    /// Cuts `body` into chunks of the given sizes, cycling: one byte, exact batches, chunks
    /// that straddle batch ends, and chunks of several batches.
    fn chunks(body: &[u8], sizes: &[usize]) -> Vec<Result<Bytes, std::io::Error>> {
        let mut out = Vec::new();
        let mut at = 0;
        for size in sizes.iter().cycle() {
            if at == body.len() {
                break;
            }
            let end = (at + size).min(body.len());
            out.push(Ok(Bytes::copy_from_slice(&body[at..end])));
            at = end;
        }
        out
    }

    const SIZES: &[usize] = &[
        1,
        16_384,
        BATCH_BYTES,
        7,
        BATCH_BYTES - 1,
        3 * BATCH_BYTES + 5,
    ];

    fn receive_chunks(dir: &Path, chunks: Vec<Result<Bytes, std::io::Error>>) -> Result<Received> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(receive_stream(futures::stream::iter(chunks), dir, "test"))
    }

    #[test]
    fn uneven_chunks_are_written_whole_hashed_and_verified() {
        let body = big_archive();
        let dir = tempfile::tempdir().unwrap();
        assert!(body.len() as u64 > FLUSH_BYTES, "{} bytes", body.len());
        // The last round of the writer is then short: batches are left pending at the end.
        assert_ne!(body.len().div_ceil(BATCH_BYTES) % PENDING_BATCHES, 0);
        let got = receive_chunks(dir.path(), chunks(&body, SIZES)).unwrap();
        assert_eq!(got.bytes, body.len() as u64);
        assert_eq!(got.sha256, hex::encode(Sha256::digest(&body)));
        assert_eq!((got.info.index, got.info.term), (42, 3));
        assert_eq!(std::fs::read(got.file.path()).unwrap(), body);
    }

    #[test]
    fn a_body_that_breaks_off_is_a_stream_error_with_the_bytes_received() {
        let body = big_archive();
        let mut parts = chunks(&body[..5_000_000], SIZES);
        parts.push(Err(std::io::Error::other("connection reset")));
        let dir = tempfile::tempdir().unwrap();
        match receive_chunks(dir.path(), parts) {
            Err(Error::Stream { bytes, .. }) => assert_eq!(bytes, 5_000_000),
            other => panic!("expected a stream error, got {:?}", other.map(|r| r.bytes)),
        }
    }

    #[test]
    fn a_byte_changed_in_flight_fails_the_archive_check() {
        let mut body = big_archive();
        let middle = body.len() / 2;
        body[middle] ^= 0x40;
        let dir = tempfile::tempdir().unwrap();
        match receive_chunks(dir.path(), chunks(&body, SIZES)) {
            Err(Error::Archive { bytes, .. }) => assert_eq!(bytes, body.len() as u64),
            other => panic!(
                "expected an archive error, got {:?}",
                other.map(|r| r.bytes)
            ),
        }
        // Nothing is left behind: the temp file went with the error.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
