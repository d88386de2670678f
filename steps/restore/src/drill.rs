//! The restore drill: the verified snapshot restored into a throw-away node (the Task's
//! sidecar, never the production cluster), unsealed with the source cluster's keys, logged in
//! to with the backup's own login, and checked: its raft index, and the canary the snapshot
//! step wrote just before the snapshot.

use std::time::{Duration, Instant};

use url::Url;
use vault_backup_common::Secret;
use vault_backup_common::artifact::Canary;
use vault_backup_vault::{Auth, Unseal, Vault};

use crate::cluster::POLICY;
use crate::error::{Error, Result};
use crate::fetch::Fetched;

/// How the canary check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryCheck {
    /// The restored canary equals the manifest's.
    Ok,
    /// The manifest records no canary.
    Skipped,
}

impl CanaryCheck {
    /// The `canary` result's value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Skipped => "skipped",
        }
    }
}

/// What the drill proved.
#[derive(Debug, Clone)]
pub struct Proved {
    /// The restored node's committed raft index.
    pub raft_index: u64,
    /// The canary check.
    pub canary: CanaryCheck,
}

/// Polls `check` once a second until it gives `Some`, or fails with `what` after `timeout`.
async fn wait_for<T, F, Fut>(what: String, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what,
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_active(vault: &Vault, addr: &Url, timeout: Duration) -> Result<()> {
    wait_for(
        format!("the scratch node at {addr} did not become active"),
        timeout,
        || async {
            vault
                .leader_info(addr)
                .await
                .ok()
                .filter(|i| i.is_self)
                .map(drop)
        },
    )
    .await
}

/// Unseals with `keys` in order until the node is unsealed.
async fn unseal(vault: &Vault, addr: &Url, keys: &[Secret]) -> Result<()> {
    if keys.is_empty() {
        return Err(Error::NoUnsealKeys {
            addr: addr.to_string(),
        });
    }
    let mut last = None;
    for key in keys {
        match vault.unseal(addr, key).await? {
            Unseal::WrongKey { detail } => {
                return Err(Error::WrongUnsealKeys {
                    addr: addr.to_string(),
                    detail,
                });
            }
            Unseal::Accepted(status) if !status.sealed => return Ok(()),
            Unseal::Accepted(status) => last = Some(status),
        }
    }
    let (t, p) = last.map_or((0, 0), |s| (s.threshold, s.progress));
    Err(Error::WrongUnsealKeys {
        addr: addr.to_string(),
        detail: format!(
            "{} key(s) given, still sealed with {p} of {t} key shares entered",
            keys.len()
        ),
    })
}

/// Runs the drill against the fresh node at `addr` with the verified snapshot `fetched`.
///
/// # Errors
/// [`Error::NotFresh`], [`Error::NoUnsealKeys`], [`Error::WrongUnsealKeys`],
/// [`Error::Timeout`], [`Error::CanaryNotRecorded`], [`Error::CanaryMissing`],
/// [`Error::CanaryMismatch`], or the Vault errors of each request.
pub async fn run(
    vault: &Vault,
    addr: &Url,
    auth: &Auth,
    keys: &[Secret],
    canary_configured: bool,
    fetched: &Fetched,
    timeout: Duration,
) -> Result<Proved> {
    let status = wait_for(
        format!("the scratch node at {addr} did not answer"),
        timeout,
        || async { vault.seal_status(addr).await.ok() },
    )
    .await?;
    if status.initialized {
        return Err(Error::NotFresh {
            addr: addr.to_string(),
        });
    }
    let shamir = status.seal_type.as_deref().is_none_or(|t| t == "shamir");
    let init = vault.init(addr, !shamir).await?;
    tracing::info!(node = %addr, seal = status.seal_type.as_deref().unwrap_or("shamir"), "scratch node initialized with a throw-away root token");
    if shamir && vault.seal_status(addr).await?.sealed {
        // The throw-away key of the throw-away keyring; it is replaced by the restore.
        for key in &init.keys {
            if let Unseal::Accepted(s) = vault.unseal(addr, key).await?
                && !s.sealed
            {
                break;
            }
        }
    }
    wait_active(vault, addr, timeout).await?;
    vault
        .restore(addr, &init.root_token, &fetched.path, true, timeout, POLICY)
        .await?;
    drop(init);
    tracing::info!(node = %addr, name = %fetched.name, "snapshot restored into the scratch node (snapshot-force)");
    if shamir || !keys.is_empty() {
        // The restored keyring is the source cluster's: the node seals until its keys come.
        let sealed = wait_for(
            format!("the scratch node at {addr} did not seal after the restore"),
            timeout,
            || async {
                vault
                    .seal_status(addr)
                    .await
                    .ok()
                    .filter(|s| s.sealed)
                    .map(drop)
            },
        )
        .await;
        if sealed.is_ok() {
            unseal(vault, addr, keys).await?;
            tracing::info!(node = %addr, "unsealed with the source cluster's keys");
        } else if shamir {
            sealed?;
        }
    }
    wait_active(vault, addr, timeout).await?;
    let token = vault.login(addr, auth).await?;
    tracing::info!(node = %addr, auth = %auth.describe(), "logged in to the restored data with the backup's login");
    // Information, not a check: raft's Restore (hashicorp/raft restoreUserSnapshot) installs
    // the snapshot at max(last index, the snapshot's index) + 1, so after a 2xx restore the
    // node's index is past the snapshot's whatever data it holds; the canary is the proof.
    let manifest_index = fetched
        .manifest
        .as_ref()
        .map_or(fetched.info.index, |m| m.raft_index);
    let restored = vault
        .leader_info(addr)
        .await?
        .raft_committed_index
        .unwrap_or_default();
    tracing::info!(
        raft_index = restored,
        snapshot_raft_index = manifest_index,
        "raft index of the restored node (information: a restore always moves it past the snapshot's)"
    );
    let canary = if let Some(c) = fetched.manifest.as_ref().and_then(|m| m.canary.as_ref()) {
        check_canary(vault, addr, &token, c, &fetched.name).await?;
        CanaryCheck::Ok
    } else if canary_configured {
        // Checked before the fetch as well; kept here so the drill cannot pass without it.
        return Err(Error::CanaryNotRecorded {
            name: fetched.name.clone(),
        });
    } else {
        tracing::info!("no canary in the manifest; canary skipped");
        CanaryCheck::Skipped
    };
    Ok(Proved {
        raft_index: restored,
        canary,
    })
}

async fn check_canary(
    vault: &Vault,
    addr: &Url,
    token: &Secret,
    canary: &Canary,
    name: &str,
) -> Result<()> {
    let path = canary.data_path();
    let Some(value) = vault.read_kv2(addr, token, &path).await? else {
        return Err(Error::CanaryMissing {
            name: name.to_owned(),
            path,
        });
    };
    let mut differences = Vec::new();
    for (field, want) in [
        ("taskrun", &canary.taskrun),
        ("written_at", &canary.written_at),
    ] {
        let got = value[field].as_str().unwrap_or("(absent)");
        if got != want {
            differences.push(format!(
                "{field} is {got:?} restored, {want:?} in the manifest"
            ));
        }
    }
    if !differences.is_empty() {
        return Err(Error::CanaryMismatch {
            name: name.to_owned(),
            path,
            differences: differences.join("; "),
        });
    }
    tracing::info!(path = %path, taskrun = %canary.taskrun, written_at = %canary.written_at, "canary ok: the restored data holds the run's canary");
    Ok(())
}
