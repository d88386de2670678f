//! Restoring into the cluster at `VAULT_ADDR`: a safety snapshot of its current state first,
//! then the restore, then a wait for a leader and an honest word about the seal.

use std::path::Path;
use std::time::{Duration, Instant};

use url::Url;
use vault_backup_common::Secret;
use vault_backup_vault::{Target, Vault, save_snapshot};

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
/// its `.sha256` and manifest, by the very routine the snapshot step saves one with.
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
    let target = Target {
        dir,
        prefix: SAFETY_PREFIX,
        tool: concat!("vault-restore ", env!("CARGO_PKG_VERSION")),
        canary: None,
    };
    let saved = save_snapshot(vault, leader, token, timeout, target).await?;
    tracing::info!(
        name = saved.artifact.name(),
        path = %saved.path.display(),
        bytes = saved.manifest.bytes,
        sha256 = %saved.manifest.sha256,
        raft_index = saved.manifest.raft_index,
        "safety snapshot of the target's current state saved; restore it to undo this restore"
    );
    Ok(Safety {
        name: saved.artifact.name().to_owned(),
        path: saved.path,
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
