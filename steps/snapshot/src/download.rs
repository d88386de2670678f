//! Receiving the snapshot body once: to a private temp file, hashed, and checked as a raft
//! archive on another thread as it streams past. Memory stays bounded by the channel between
//! the two (a few chunks), whatever the snapshot's size.

use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use vault_backup_common::fsutil;
use vault_backup_common::progress::Progress;

use crate::archive::{self, ArchiveInfo};
use crate::error::{Error, Result};

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

/// Reads chunks from the channel as one byte stream.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Streams `response` into a temp file in `dir`, hashing it and verifying the archive.
pub async fn receive(response: reqwest::Response, dir: &Path, addr: &str) -> Result<Received> {
    let io = |source| Error::Io {
        path: dir.to_owned(),
        source,
    };
    let tmp = fsutil::temp_file_in(dir).map_err(io)?;
    let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(io)?);
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let checker = tokio::task::spawn_blocking(move || {
        archive::verify(ChannelReader {
            rx,
            current: Bytes::new(),
        })
    });

    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut progress = Progress::start();
    let mut stream = response.bytes_stream();
    let mut stream_error = None;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                stream_error = Some(e);
                break;
            }
        };
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io)?;
        // A closed channel means the checker already failed; its error is reported below.
        if tx.send(chunk).await.is_err() {
            break;
        }
        if let Some(rate) = progress.due(bytes) {
            tracing::info!(bytes, mb_per_s = format!("{rate:.1}"), "receiving snapshot");
        }
    }
    drop(tx);
    let verdict = checker.await.map_err(|e| io(std::io::Error::other(e)))?;
    if let Some(source) = stream_error {
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
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    Ok(Received {
        file: tmp,
        sha256: hex::encode(hasher.finalize()),
        bytes,
        info,
    })
}
