//! Saving one snapshot from the leader under its final name: the routine the snapshot step runs
//! and the restore runs for its safety snapshot, so both leave exactly the same artifact.
//!
//! The body is received once (hashed and archive-checked as it streams, see [`download`]),
//! renamed into place without overwriting anything, then given its manifest and, last, its
//! `.sha256`; if the sidecars cannot be written the `.snap` is removed again, because a snapshot
//! without its checksum file is incomplete by definition.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use vault_backup_common::Secret;
use vault_backup_common::artifact::{
    self, Artifact, Canary, ClusterHealth, MANIFEST_VERSION, Manifest,
};
use vault_backup_common::fsutil;

use crate::client::{Leader, Vault};
use crate::download;
use crate::error::{Error, Result};

/// Where a snapshot goes and what its manifest records besides the snapshot itself.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The directory it is saved in.
    pub dir: &'a Path,
    /// The name prefix: the name is `<prefix>-<UTC timestamp of the transfer's start>`.
    pub prefix: &'a str,
    /// The manifest's `tool`, e.g. `vault-snapshot 0.1.0`.
    pub tool: &'a str,
    /// The canary written just before, if any.
    pub canary: Option<Canary>,
    /// The cluster's health read just before, if it was asked.
    pub health: Option<ClusterHealth>,
}

/// A snapshot saved under its final name with its manifest and checksum file.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Its name and file names.
    pub artifact: Artifact,
    /// The `.snap` file.
    pub path: PathBuf,
    /// The origin of the node that served it.
    pub served_by: String,
    /// The manifest written beside it (size, SHA-256, raft index and term).
    pub manifest: Manifest,
    /// From the start of the transfer to the checksum file.
    pub elapsed: Duration,
}

/// Takes a snapshot on `leader` and saves it into `target.dir`, all within `timeout` (the
/// client's timeout variable, `SNAPSHOT_TIMEOUT` or `RESTORE_TIMEOUT`): a leader that accepts
/// the request and then stalls ends in [`Error::Timeout`] naming that variable, with nothing
/// left behind.
///
/// # Errors
/// Any [`Error`] of the request or the transfer; [`Error::Timeout`]; [`Error::Exists`] if a
/// snapshot of that name is already there (nothing is overwritten); [`Error::Io`] or
/// [`Error::Artifact`] if the file or its sidecars cannot be written (nothing is left under
/// the final name).
pub async fn save_snapshot(
    vault: &Vault,
    leader: &Leader,
    token: &Secret,
    timeout: Duration,
    target: Target<'_>,
) -> Result<Saved> {
    // Dropping the transfer on the deadline drops its temp file too.
    tokio::time::timeout(timeout, save(vault, leader, token, timeout, target))
        .await
        .map_err(|_| Error::Timeout {
            addr: leader.addr.as_str().trim_end_matches('/').to_owned(),
            after: timeout,
            variable: Some(vault.timeout_variable()),
        })?
}

async fn save(
    vault: &Vault,
    leader: &Leader,
    token: &Secret,
    timeout: Duration,
    target: Target<'_>,
) -> Result<Saved> {
    let (served_by, response) = vault.open_snapshot(&leader.addr, token, timeout).await?;
    // Named when the transfer starts, not when the run started: after long retries, a name
    // from the run's start could sort before a snapshot another run took in the meantime.
    let created_at = Utc::now();
    let artifact = Artifact::timestamped(target.prefix, created_at);
    let dir = target.dir;
    let final_path = dir.join(artifact.snap_file());
    if final_path.exists() {
        return Err(Error::Exists { path: final_path });
    }
    let served = served_by.origin().ascii_serialization();
    tracing::info!(leader = %served, version = leader.version.as_deref().unwrap_or("unknown"), name = artifact.name(), "leader is serving the snapshot");
    let started = Instant::now();
    let got = download::receive(response, dir, &served).await?;
    let path = fsutil::persist(got.file, dir, &artifact.snap_file(), false).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Exists {
                path: final_path.clone(),
            }
        } else {
            Error::Io {
                path: final_path.clone(),
                source,
            }
        }
    })?;
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        name: artifact.name().to_owned(),
        file: artifact.snap_file(),
        bytes: got.bytes,
        sha256: got.sha256,
        created_at,
        leader_address: served.clone(),
        server_version: leader.version.clone(),
        raft_index: got.info.index,
        raft_term: got.info.term,
        tool: target.tool.to_owned(),
        canary: target.canary,
        cluster_name: leader.cluster.as_ref().map(|c| c.cluster_name.clone()),
        cluster_id: leader.cluster.as_ref().map(|c| c.cluster_id.clone()),
        // The snapshot's own data says which seal its keyring needs; the leader's answer is
        // the same for a whole archive and stands in where the data does not say.
        seal_type: got
            .info
            .seal_type
            .clone()
            .or_else(|| leader.seal_type.clone()),
        health: target.health,
    };
    if let Err(e) = artifact::write_sidecars(dir, &artifact, &manifest) {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(dir.join(artifact.manifest_file()));
        return Err(e.into());
    }
    Ok(Saved {
        artifact,
        path,
        served_by: served,
        manifest,
        elapsed: started.elapsed(),
    })
}
