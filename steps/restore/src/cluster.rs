//! Restoring into the cluster at `VAULT_ADDR`: a safety snapshot of its current state first,
//! then the restore, then a wait for a leader and an honest word about the seal.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use url::Url;
use vault_backup_common::Secret;
use vault_backup_common::artifact::{self, Artifact, MANIFEST_VERSION, Manifest};
use vault_backup_common::fsutil;
use vault_backup_vault::{Vault, download};

use crate::config::SAFETY_PREFIX;
use crate::error::{Error, Result};

/// The policy file a 403 on the restore points to.
pub const POLICY: &str = "tekton/vault-restore-policy.hcl";

/// The safety snapshot written before the restore.
#[derive(Debug, Clone)]
pub struct Safety {
    /// Its name (`pre-restore-<timestamp>`).
    pub name: String,
    /// The `.snap` file.
    pub path: std::path::PathBuf,
}

/// Takes a snapshot of the leader's current state into `dir` as `pre-restore-<timestamp>`, with
/// its `.sha256` and manifest, exactly as the snapshot step saves one (the shared client,
/// receive and archive check, temp + fsync + rename, sidecars last).
///
/// # Errors
/// Any failure of the snapshot, as the snapshot step would report it.
pub async fn safety_snapshot(
    vault: &Vault,
    leader: &vault_backup_vault::Leader,
    token: &Secret,
    dir: &Path,
    timeout: Duration,
) -> Result<Safety> {
    let (served_by, response) = vault.open_snapshot(&leader.addr, token, timeout).await?;
    let created_at = Utc::now();
    let a = Artifact::timestamped(SAFETY_PREFIX, created_at);
    let served = served_by.origin().ascii_serialization();
    let got = download::receive(response, dir, &served).await?;
    let path =
        fsutil::persist(got.file, dir, &a.snap_file(), false).map_err(|source| Error::Io {
            path: dir.join(a.snap_file()),
            source,
        })?;
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        name: a.name().to_owned(),
        file: a.snap_file(),
        bytes: got.bytes,
        sha256: got.sha256.clone(),
        created_at,
        leader_address: served.clone(),
        server_version: leader.version.clone(),
        raft_index: got.info.index,
        raft_term: got.info.term,
        tool: concat!("vault-restore ", env!("CARGO_PKG_VERSION")).to_owned(),
        canary: None,
    };
    if let Err(e) = artifact::write_sidecars(dir, &a, &manifest) {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(dir.join(a.manifest_file()));
        return Err(e.into());
    }
    tracing::info!(
        name = a.name(),
        path = %path.display(),
        bytes = got.bytes,
        sha256 = %got.sha256,
        raft_index = got.info.index,
        "safety snapshot of the target's current state saved; restore it to undo this restore"
    );
    Ok(Safety {
        name: a.name().to_owned(),
        path,
    })
}

/// After a restore: waits until the node at `addr` is either sealed (a restore from another
/// cluster seals it) or unsealed with a leader. Returns whether it is sealed.
///
/// # Errors
/// [`Error::Timeout`] if neither happens within `timeout`.
pub async fn wait_for_leader_or_seal(vault: &Vault, addr: &Url, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut led_before = false;
    loop {
        match vault.seal_status(addr).await {
            Ok(status) if status.sealed => return Ok(true),
            Ok(_) => match vault.leader_info(addr).await {
                Ok(info) if info.is_self || !info.leader_address.is_empty() => {
                    // Twice in a row, a second apart: the restore may still be settling.
                    if led_before {
                        return Ok(false);
                    }
                    led_before = true;
                }
                Ok(_) | Err(_) => led_before = false,
            },
            Err(e) => {
                tracing::debug!("waiting for the cluster after the restore: {e}");
                led_before = false;
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!(
                    "vault at {addr} reported neither a leader nor a sealed state after the restore"
                ),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
