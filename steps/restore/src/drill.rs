//! The restore drill: the verified snapshot restored into a throw-away node (the Task's
//! sidecar, never the production cluster), unsealed with the source cluster's keys, logged in
//! to with the backup's own login, and checked: its raft index, and the canary the snapshot
//! step wrote just before the snapshot.

use std::time::{Duration, Instant};

use std::path::Path;
use url::Url;

use vault_backup_common::Secret;
use vault_backup_common::artifact::Canary;
use vault_backup_common::env::ConfigError;
use vault_backup_vault::{Auth, RecoveryProof, Unseal, Vault};

use crate::cluster::POLICY;
use crate::config::read_keys;
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

/// The scratch node as found before anything is fetched: fresh, with its seal.
#[derive(Debug)]
pub struct Scratch {
    /// The seal type the node reports (`shamir`, `transit`, ...).
    pub seal_type: String,
    /// The source cluster's unseal keys: read for a Shamir seal only.
    unseal_keys: Vec<Secret>,
    /// The source cluster's recovery keys (`DRILL_RECOVERY_KEYS_FILE`), for an auto-unseal
    /// only and only when the file exists: proven on the restored data.
    recovery_keys: Option<Vec<Secret>>,
}

impl Scratch {
    /// Whether the node's seal is Shamir (unseal keys), not an auto-unseal.
    #[must_use]
    pub fn shamir(&self) -> bool {
        self.seal_type == "shamir"
    }

    /// The keys that make a root token on the restored data: the unseal keys of a Shamir
    /// seal, the recovery keys of an auto-unseal (`None` when its file does not exist).
    #[must_use]
    pub fn root_keys(&self) -> Option<&[Secret]> {
        if self.shamir() {
            Some(&self.unseal_keys)
        } else {
            self.recovery_keys.as_deref()
        }
    }
}

/// How an auto-unseal node's restored data is told from the throw-away keyring it was
/// initialized with, which stays unsealed until the restore is applied.
#[derive(Debug, Clone, Copy)]
pub enum RestoredBy<'a> {
    /// The backup's own login works: it exists only in the restored data (the drill).
    Login(&'a Auth),
    /// The throw-away root token is refused (403): it exists only in the throw-away keyring
    /// (the recovery, which has no login of the restored data).
    ThrowAwayTokenRefused,
}

/// The cheap checks of a drill, before any byte is fetched: the scratch node answers, is
/// fresh, and says its seal (`sys/seal-status` `type` and `recovery_seal`). The unseal keys are
/// read only for a Shamir seal; with an auto-unseal the node unseals itself after the restore
/// and `DRILL_UNSEAL_KEYS_FILE` is not read (the drill Task always sets it, its Secret is
/// optional, so the file may be absent).
///
/// # Errors
/// [`Error::Timeout`] when the node does not answer, [`Error::NotFresh`], or a configuration
/// error (exit 2) naming `DRILL_UNSEAL_KEYS_FILE` when the node's seal is Shamir and the file
/// is not set, absent, unreadable or empty.
pub async fn prepare(
    vault: &Vault,
    addr: &Url,
    unseal_keys_file: Option<&Path>,
    recovery_keys_file: Option<&Path>,
    timeout: Duration,
) -> Result<Scratch> {
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
    let seal_type = status
        .seal_type
        .clone()
        .unwrap_or_else(|| "shamir".to_owned());
    let shamir = seal_type == "shamir" && !status.recovery_seal;
    tracing::info!(node = %addr, seal = %seal_type, recovery_seal = status.recovery_seal, "scratch node is fresh");
    if !shamir {
        if let Some(p) = unseal_keys_file.filter(|p| p.exists()) {
            tracing::info!(file = %p.display(), seal = %seal_type, "the scratch node auto-unseals: DRILL_UNSEAL_KEYS_FILE is not read");
        }
        let recovery_keys = match recovery_keys_file {
            Some(p) => read_keys("DRILL_RECOVERY_KEYS_FILE", p)?,
            None => None,
        };
        if recovery_keys.is_none() {
            tracing::info!(
                "no recovery keys file: the drill does not prove the source cluster's recovery keys (set DRILL_RECOVERY_KEYS_FILE and mount them to prove them)"
            );
        }
        return Ok(Scratch {
            seal_type,
            unseal_keys: Vec::new(),
            recovery_keys,
        });
    }
    // Exit 2 naming the variable and the file, not exit 1: a Shamir drill without the source's
    // keys is a Task that lacks its Secret, found before anything is fetched or sent.
    let missing = |detail: String| {
        Error::Config(ConfigError::new(
            "DRILL_UNSEAL_KEYS_FILE",
            format!(
                "the scratch node at {addr} has a shamir seal, so the drill (and the recovery) needs the source cluster's unseal keys (one per line), but {detail}; mount the unseal keys Secret, or give the scratch node the source cluster's auto-unseal seal stanza"
            ),
        ))
    };
    let Some(path) = unseal_keys_file else {
        return Err(missing("the variable is not set".to_owned()));
    };
    let Some(unseal_keys) = read_keys("DRILL_UNSEAL_KEYS_FILE", path)? else {
        return Err(missing(format!("{} does not exist", path.display())));
    };
    Ok(Scratch {
        seal_type,
        unseal_keys,
        recovery_keys: None,
    })
}

/// Fails when the snapshot's source seal (`source`: the manifest's, or the snapshot data's own
/// `core/seal-config`) is of another kind than the scratch node's: the restored keyring would
/// never open. Nothing has been sent to the node yet.
///
/// # Errors
/// [`Error::SealsDiffer`].
pub fn check_seal(scratch: &Scratch, source: Option<&str>, name: &str, addr: &Url) -> Result<()> {
    if let Some(source) = source
        && source != scratch.seal_type
    {
        return Err(Error::SealsDiffer {
            name: name.to_owned(),
            source_seal: source.to_owned(),
            target: format!("the scratch node at {addr}"),
            target_seal: scratch.seal_type.clone(),
            hint: "Nothing was sent to the node; give the drill's node the source cluster's seal (the same seal stanza, reaching the same key), or drill a snapshot of a cluster with this seal".to_owned(),
        });
    }
    Ok(())
}

/// Brings the verified snapshot `fetched` up in the fresh node at `addr` (found by
/// [`prepare`]): initialized with a throw-away keyring, restored with `snapshot-force`, then
/// unsealed with the source cluster's keys (Shamir) or left to unseal itself (an auto-unseal,
/// whose restored data `restored` tells from the throw-away keyring), and active.
///
/// # Errors
/// [`Error::WrongUnsealKeys`], [`Error::ScratchSealed`], [`Error::Timeout`], or the Vault
/// errors of each request.
pub async fn bring_up(
    vault: &Vault,
    addr: &Url,
    scratch: &Scratch,
    fetched: &Fetched,
    restored: RestoredBy<'_>,
    timeout: Duration,
) -> Result<()> {
    let shamir = scratch.shamir();
    // sys/init: secret shares for a Shamir seal, recovery shares for an auto-unseal (OpenBao
    // refuses secret_shares with an auto-unseal and recovery_shares with Shamir).
    let init = vault.init(addr, !shamir).await?;
    tracing::info!(node = %addr, seal = %scratch.seal_type, "scratch node initialized with a throw-away root token");
    if shamir {
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
    tracing::info!(node = %addr, name = %fetched.name, "snapshot restored into the scratch node (snapshot-force)");
    if shamir {
        drop(init);
        // The restored keyring is the source cluster's: the node seals until its keys come.
        wait_for(
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
        .await?;
        unseal(vault, addr, &scratch.unseal_keys).await?;
        tracing::info!(node = %addr, "unsealed with the source cluster's keys");
    } else {
        // OpenBao reloads the restored keyring through the auto-unseal seal itself
        // (raftSnapshotRestoreCallback: "reloading using auto seal"); where the seal cannot
        // open it (another KMS key) the node seals and stays sealed.
        wait_auto_unsealed(
            vault,
            addr,
            restored,
            &init.root_token,
            &scratch.seal_type,
            timeout,
        )
        .await?;
        drop(init);
        tracing::info!(node = %addr, seal = %scratch.seal_type, "the restored data unsealed itself with the auto-unseal seal");
    }
    wait_active(vault, addr, timeout).await
}

/// Runs the drill against the fresh node at `addr` (found by [`prepare`]) with the verified
/// snapshot `fetched`.
///
/// # Errors
/// [`Error::WrongUnsealKeys`], [`Error::WrongRecoveryKeys`], [`Error::ScratchSealed`],
/// [`Error::Timeout`],
/// [`Error::CanaryNotRecorded`],
/// [`Error::CanaryMissing`], [`Error::CanaryMismatch`], or the Vault errors of each request.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    vault: &Vault,
    addr: &Url,
    auth: &Auth,
    scratch: &Scratch,
    canary_configured: bool,
    fetched: &Fetched,
    timeout: Duration,
) -> Result<Proved> {
    bring_up(
        vault,
        addr,
        scratch,
        fetched,
        RestoredBy::Login(auth),
        timeout,
    )
    .await?;
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
    if let Some(keys) = &scratch.recovery_keys {
        prove_recovery_keys(vault, addr, keys, &token).await?;
    }
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

/// Waits until an auto-unseal scratch node has reloaded the restored keyring through its seal.
/// The restore is applied after its 204 and the throw-away keyring stays unsealed until then:
/// `restored` tells the two apart (the backup's own login, which exists only in the restored
/// data, or the throw-away root token refused, which exists only in the throw-away one). A node
/// whose seal cannot open the keyring seals for good: sealed at two polls in a row ends the
/// wait at once rather than at the timeout.
async fn wait_auto_unsealed(
    vault: &Vault,
    addr: &Url,
    restored: RestoredBy<'_>,
    throw_away: &Secret,
    seal_type: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut sealed_before = false;
    loop {
        let sealed = vault.seal_status(addr).await.ok().is_some_and(|s| s.sealed);
        if sealed && sealed_before {
            return Err(Error::ScratchSealed {
                addr: addr.to_string(),
                seal_type: seal_type.to_owned(),
            });
        }
        sealed_before = sealed;
        if !sealed
            && vault
                .leader_info(addr)
                .await
                .ok()
                .is_some_and(|i| i.is_self)
            && match restored {
                RestoredBy::Login(auth) => vault.login(addr, auth).await.is_ok(),
                RestoredBy::ThrowAwayTokenRefused => matches!(
                    vault.token_accessor(addr, throw_away).await,
                    Err(vault_backup_vault::Error::Http { status: 403, .. })
                ),
            }
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!(
                    "the scratch node at {addr} did not unseal itself with its {seal_type} seal after the restore{}",
                    match restored {
                        RestoredBy::Login(_) => ", nor did the backup's login work there",
                        RestoredBy::ThrowAwayTokenRefused =>
                            " (its throw-away root token still worked)",
                    }
                ),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The recovery keys of an auto-unsealed source are what its operators hold for the bad day
/// (a root token, a rekey): proven on the restored keyring, whose recovery configuration is
/// the source's.
async fn prove_recovery_keys(
    vault: &Vault,
    addr: &Url,
    keys: &[Secret],
    token: &Secret,
) -> Result<()> {
    let detail = match vault.prove_recovery_keys(addr, keys, token).await? {
        RecoveryProof::Proven => {
            tracing::info!(node = %addr, keys = keys.len(), "recovery keys ok: they generate a root token on the restored data (discarded undecoded, the attempt cancelled)");
            return Ok(());
        }
        RecoveryProof::Refused { detail } => detail,
        RecoveryProof::Incomplete { progress, required } => format!(
            "{} key(s) given, {progress} of {required} entered",
            keys.len()
        ),
    };
    Err(Error::WrongRecoveryKeys {
        addr: addr.to_string(),
        detail,
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
