//! Fetching a snapshot back from a store: its `.sha256` and manifest first, then the `.snap`
//! streamed into the scratch workspace while it is hashed and its archive checked (the snapshot
//! step's own receive), under a temp name until both checks pass.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vault_backup_common::artifact::{self, Artifact, Manifest, Part};
use vault_backup_common::fsutil;
use vault_backup_stores::Store;
use vault_backup_vault::archive::ArchiveInfo;
use vault_backup_vault::download;

use crate::config::Source;
use crate::error::{Error, Result};

/// A snapshot fetched and verified, under its final name in the workspace.
#[derive(Debug)]
pub struct Fetched {
    /// Its name.
    pub name: String,
    /// The `.snap` file in the workspace.
    pub path: PathBuf,
    /// Its SHA-256 (hex), equal to its `.sha256`.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// What the archive says about itself.
    pub info: ArchiveInfo,
    /// Its manifest, when the store holds one.
    pub manifest: Option<Manifest>,
    /// Where it came from (`s3://...`, a path).
    pub location: String,
}

/// Opens the configured store.
///
/// # Errors
/// [`Error::Config`] if the S3 client cannot be set up.
pub fn open(source: &Source) -> Result<Box<dyn Store>> {
    Ok(match source {
        Source::S3(s3) => vault_backup_stores::store::s3(s3)?,
        Source::Gcs(gcs) => vault_backup_stores::store::gcs(gcs)?,
        Source::Azure(azure) => vault_backup_stores::store::azure(azure)?,
        Source::Dir(dir) => vault_backup_stores::store::dir(dir),
    })
}

/// The newest complete snapshot (one with its `.snap` and `.sha256`) named `<prefix>-<time>`.
///
/// # Errors
/// [`Error::Store`] if the listing fails, [`Error::NoSnapshot`] if there is none.
pub async fn newest(store: &dyn Store, prefix: &str) -> Result<String> {
    let entries = store.list().await?;
    let mut snaps = std::collections::BTreeSet::new();
    let mut sums = std::collections::BTreeSet::new();
    for entry in &entries {
        if let Some((a, part)) = Artifact::classify(&entry.name, prefix) {
            match part {
                Part::Snapshot => snaps.insert(a.name().to_owned()),
                Part::Checksum => sums.insert(a.name().to_owned()),
                Part::Manifest => false,
            };
        }
    }
    snaps
        .intersection(&sums)
        .filter_map(|n| Artifact::new(n.as_str()).timestamp(prefix).map(|t| (t, n)))
        .max()
        .map(|(_, n)| n.clone())
        .ok_or_else(|| Error::NoSnapshot {
            store: store.location(""),
            prefix: prefix.to_owned(),
        })
}

/// What a store says about a snapshot besides the snapshot itself: read before any byte of
/// the `.snap` is fetched, so the checks that need them cost nothing.
#[derive(Debug, Clone)]
pub struct Sidecars {
    /// The SHA-256 its `.sha256` records.
    pub expected: String,
    /// Its manifest, when the store holds one.
    pub manifest: Option<Manifest>,
}

/// Reads the `.sha256` and manifest of snapshot `name` from `store`.
///
/// # Errors
/// [`Error::Missing`], [`Error::BadSidecar`] or [`Error::Store`].
pub async fn sidecars(store: &dyn Store, name: &str) -> Result<Sidecars> {
    let a = Artifact::new(name);
    let (snap, sha_file, json) = (a.snap_file(), a.sha256_file(), a.manifest_file());
    let text = store.read(&sha_file).await?.ok_or_else(|| Error::Missing {
        object: store.location(&sha_file),
    })?;
    let expected =
        artifact::parse_checksum(&String::from_utf8_lossy(&text), &snap).map_err(|detail| {
            Error::BadSidecar {
                object: store.location(&sha_file),
                detail,
            }
        })?;
    let manifest = match store.read(&json).await? {
        None => {
            tracing::warn!(object = %store.location(&json), "no manifest beside the snapshot; the archive's own raft index is used");
            None
        }
        Some(bytes) => {
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::BadSidecar {
                object: store.location(&json),
                detail: format!("not a vault-backup manifest: {e}"),
            })?;
            if m.sha256 != expected {
                return Err(Error::BadSidecar {
                    object: store.location(&json),
                    detail: format!(
                        "it records sha256 {} but {} says {expected}",
                        m.sha256, sha_file
                    ),
                });
            }
            Some(m)
        }
    };
    Ok(Sidecars { expected, manifest })
}

/// Fetches snapshot `name` from `store` into `dir`, within `timeout` (`RESTORE_TIMEOUT`), and
/// verifies it against its `.sha256` (read before by [`sidecars`]) and its archive's own
/// `SHA256SUMS`. Nothing is under the final name unless both pass.
///
/// # Errors
/// [`Error::Missing`], [`Error::ChecksumMismatch`], [`Error::Timeout`], a
/// [`vault_backup_vault::Error::Archive`] or `Stream` naming the object, [`Error::Store`] or
/// [`Error::Io`].
pub async fn fetch(
    store: &dyn Store,
    name: &str,
    dir: &Path,
    sidecars: Sidecars,
    timeout: Duration,
) -> Result<Fetched> {
    let Sidecars { expected, manifest } = sidecars;
    let snap = Artifact::new(name).snap_file();
    let location = store.location(&snap);
    let stream = store.open(&snap).await?.ok_or_else(|| Error::Missing {
        object: location.clone(),
    })?;
    tracing::info!(object = %location, "fetching the snapshot");
    let started = std::time::Instant::now();
    // The whole fetch has one bound the user can raise; each part of an S3 read has its own
    // (the store's), so a slow but moving transfer is never cut by a per-request limit.
    let got = tokio::time::timeout(timeout, download::receive_stream(stream, dir, &location))
        .await
        .map_err(|_| Error::Timeout {
            what: format!("fetching {location} did not finish"),
            after: timeout,
        })??;
    if got.sha256 != expected {
        return Err(Error::ChecksumMismatch {
            object: location,
            expected,
            actual: got.sha256,
        });
    }
    let path = fsutil::persist(got.file, dir, &snap, true).map_err(|source| Error::Io {
        path: dir.join(&snap),
        source,
    })?;
    let elapsed = started.elapsed();
    tracing::info!(
        object = %location,
        path = %path.display(),
        bytes = got.bytes,
        sha256 = %got.sha256,
        raft_index = got.info.index,
        seconds = format!("{:.2}", elapsed.as_secs_f64()),
        mb_per_s = format!("{:.1}", vault_backup_common::progress::mb_per_s(got.bytes, elapsed)),
        "snapshot fetched; it matches its .sha256 and its archive's SHA256SUMS"
    );
    Ok(Fetched {
        name: name.to_owned(),
        path,
        sha256: got.sha256,
        bytes: got.bytes,
        info: got.info,
        manifest,
        location,
    })
}
