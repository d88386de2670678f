//! Restoring into the cluster at `VAULT_ADDR`: a safety snapshot of its current state first,
//! then the restore, then a wait for a leader and an honest word about the seal.

use std::path::Path;
use std::time::{Duration, Instant};

use url::Url;
use vault_backup_common::Secret;
use vault_backup_common::artifact::Manifest;
use vault_backup_vault::{ClusterIdentity, Leader, Target, Vault, save_snapshot};

use crate::config::SAFETY_PREFIX;
use crate::error::{Error, Result};

/// The policy file a 403 on the restore points to.
pub const POLICY: &str = "tekton/vault-restore-policy.hcl";

/// The target, found and logged in to before any byte of the snapshot is fetched.
#[derive(Debug)]
pub struct Prepared {
    /// The leader that gets the safety snapshot's request and the restore.
    pub leader: Leader,
    /// The login's token there.
    pub token: Secret,
}

/// The cheap checks first, before a multi-GB fetch: finds the leader from `addr`, logs the
/// target's identity, logs in, and asks the target whether the login may take the safety
/// snapshot and restore (`sys/capabilities-self`, which the `default` policy allows). With a
/// static token that request is the first to prove the token, so its 403 stops the run; any
/// other failure to ask (an older server, a proxy) only warns, and a refusal then shows at the
/// safety snapshot.
///
/// # Errors
/// The leader's or the login's errors, [`Error::LoginRefused`] on a 403 from
/// `sys/capabilities-self`, [`Error::Capabilities`] naming what is missing.
pub async fn prepare(
    vault: &Vault,
    addr: &Url,
    auth: &vault_backup_vault::Auth,
    force: bool,
) -> Result<Prepared> {
    let leader = vault.find_leader(addr).await?;
    match &leader.cluster {
        Some(c) => {
            tracing::info!(leader = %leader.addr, cluster_name = %c.cluster_name, cluster_id = %c.cluster_id, version = leader.version.as_deref().unwrap_or("unknown"), seal = leader.seal_type.as_deref().unwrap_or("unknown"), "restore target");
        }
        None => {
            tracing::warn!(leader = %leader.addr, "restore target: it does not say which cluster it is (sys/health)");
        }
    }
    let token = vault.login(&leader.addr, auth).await?;
    let restore_path = if force {
        "sys/storage/raft/snapshot-force"
    } else {
        "sys/storage/raft/snapshot"
    };
    let paths = ["sys/storage/raft/snapshot", restore_path];
    match vault.capabilities_self(&leader.addr, &token, &paths).await {
        Ok(caps) => {
            let needs = [
                (
                    "read",
                    "take the safety snapshot through sys/storage/raft/snapshot",
                ),
                (
                    "update",
                    if force {
                        "restore through sys/storage/raft/snapshot-force"
                    } else {
                        "restore through sys/storage/raft/snapshot"
                    },
                ),
            ];
            for ((path, has), (cap, what)) in paths.iter().zip(&caps).zip(needs) {
                let ok = has.iter().any(|c| c == cap || c == "root");
                if !ok {
                    return Err(Error::Capabilities {
                        addr: leader.addr.to_string(),
                        what: what.to_owned(),
                        has: if has.is_empty() {
                            "none".to_owned()
                        } else {
                            has.join(", ")
                        },
                        needs: format!("path \"{path}\" {{ capabilities = [\"{cap}\"] }}"),
                        policy: POLICY,
                    });
                }
            }
            tracing::info!(leader = %leader.addr, "the login may take the safety snapshot and restore");
        }
        Err(vault_backup_vault::Error::Forbidden { .. }) => {
            return Err(Error::LoginRefused {
                addr: leader.addr.to_string(),
            });
        }
        Err(e) => {
            tracing::warn!(leader = %leader.addr, "could not ask the target what the login may do (sys/capabilities-self); going on, a refusal will show at the safety snapshot: {e}");
        }
    }
    Ok(Prepared { leader, token })
}

/// Fails when the snapshot's source seal (`source`: the manifest's, or the snapshot data's own
/// `core/seal-config`) is of another kind than the target's: the restored keyring would open
/// with neither, and a forced restore would leave the cluster sealed for good. `done` says
/// what has been done so far (nothing sent to the target either way).
///
/// # Errors
/// [`Error::SealsDiffer`].
pub fn check_seal(name: &str, source: Option<&str>, leader: &Leader, done: &str) -> Result<()> {
    match (source, leader.seal_type.as_deref()) {
        (Some(source), Some(target)) if source != target => Err(Error::SealsDiffer {
            name: name.to_owned(),
            source_seal: source.to_owned(),
            target: format!("the cluster at {}", leader.addr),
            target_seal: target.to_owned(),
            hint: format!(
                "{done}; restore it into a cluster with the source's seal (for an auto-unseal, the same KMS key)"
            ),
        }),
        _ => Ok(()),
    }
}

/// Whether the snapshot in `manifest` comes from another cluster than `target`: `None` where
/// either does not say (a manifest written before it recorded its source).
#[must_use]
pub fn other_cluster(
    manifest: Option<&Manifest>,
    target: Option<&ClusterIdentity>,
) -> Option<bool> {
    let source = manifest?.cluster_id.as_deref()?;
    Some(source != target?.cluster_id)
}

fn source_text(manifest: Option<&Manifest>) -> String {
    match manifest.and_then(|m| m.cluster_name.as_deref().zip(m.cluster_id.as_deref())) {
        Some((name, id)) => format!("{name} (cluster_id {id})"),
        None => "an unrecorded cluster".to_owned(),
    }
}

/// Checks `RESTORE_CONFIRM`'s target part: a forced restore into a cluster other than the
/// snapshot's source must be confirmed as `<snapshot>@<target cluster_name>`, and an `@name`
/// must name the target. The snapshot part was checked before.
///
/// # Errors
/// [`Error::TargetNotConfirmed`] (exit 2).
pub fn confirm_target(
    name: &str,
    confirmed_target: Option<&str>,
    force: bool,
    manifest: Option<&Manifest>,
    leader: &Leader,
) -> Result<()> {
    let target = leader.cluster.as_ref();
    let target_name = target.map_or_else(
        || "<target cluster_name>".to_owned(),
        |t| t.cluster_name.clone(),
    );
    let refuse = |problem: String| Error::TargetNotConfirmed {
        problem,
        name: name.to_owned(),
        target_name: target_name.clone(),
        addr: leader.addr.to_string(),
    };
    let other = other_cluster(manifest, target);
    match (confirmed_target, target) {
        (Some(said), Some(t)) if said != t.cluster_name => {
            return Err(refuse(format!(
                "names the target cluster {said:?}, but VAULT_ADDR leads {t}"
            )));
        }
        (Some(said), None) => {
            return Err(refuse(format!(
                "names the target cluster {said:?}, but the target does not say its cluster_name (sys/health), so that cannot be checked"
            )));
        }
        (None, Some(t)) if force && other == Some(true) => {
            return Err(refuse(format!(
                "names only the snapshot, but {name} was taken from {} and VAULT_ADDR leads another cluster, {t}",
                source_text(manifest)
            )));
        }
        _ => {}
    }
    match other {
        Some(true) => {
            tracing::warn!(source = %source_text(manifest), target = %target_name, force, "the snapshot comes from another cluster than the target{}", if force { "; confirmed with @<target>" } else { "; without RESTORE_FORCE=true the target will refuse it" });
        }
        Some(false) => {
            tracing::info!(cluster = %target_name, "the snapshot comes from the target cluster itself");
        }
        None if force => {
            tracing::warn!(
                "cannot tell whether the target is the snapshot's source cluster (the manifest or the target does not record its identity): RESTORE_CONFIRM confirms the snapshot only"
            );
        }

        None => {}
    }
    Ok(())
}

/// The hint for OpenBao's 400 "could not verify hash file": which case it is.
#[must_use]
pub fn hash_file_hint(
    name: &str,
    manifest: Option<&Manifest>,
    target: Option<&ClusterIdentity>,
) -> String {
    let target_name = target.map_or("<target cluster_name>", |t| t.cluster_name.as_str());
    match other_cluster(manifest, target) {
        Some(true) => format!(
            "{name} was taken from {}, another cluster than the target {target_name}: a restore into another cluster needs RESTORE_FORCE=true and RESTORE_CONFIRM={name}@{target_name}",
            source_text(manifest)
        ),
        Some(false) => format!(
            "{name} was taken from this very cluster (same cluster_id), so this is not a cross-cluster restore and RESTORE_FORCE is not the fix: its SHA256SUMS.sealed does not verify with the target's keyring (was it re-keyed, or the snapshot altered?); find out why before forcing"
        ),
        None => format!(
            "a snapshot of another cluster needs RESTORE_FORCE=true and RESTORE_CONFIRM={name}@{target_name}; the manifest does not record its source cluster, so check that it is the one you mean"
        ),
    }
}

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
        health: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use vault_backup_common::ExitStatus;

    fn manifest(source: Option<(&str, &str)>) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "manifest_version": 1, "name": "vault-20261124T063700Z",
            "file": "vault-20261124T063700Z.snap", "bytes": 1, "sha256": "0".repeat(64),
            "created_at": "2026-11-24T06:37:00Z", "leader_address": "http://127.0.0.1:8200",
            "server_version": null, "raft_index": 1, "raft_term": 1, "tool": "test"
        }))
        .unwrap();
        m.cluster_name = source.map(|s| s.0.to_owned());
        m.cluster_id = source.map(|s| s.1.to_owned());
        m
    }

    fn leader(target: Option<(&str, &str)>) -> Leader {
        Leader {
            addr: Url::parse("http://127.0.0.1:8200").unwrap(),
            version: None,
            cluster: target.map(|(n, i)| ClusterIdentity {
                cluster_name: n.into(),
                cluster_id: i.into(),
            }),
            seal_type: None,
        }
    }

    const PROD: Option<(&str, &str)> = Some(("prod", "id-prod"));
    const DR: Option<(&str, &str)> = Some(("dr", "id-dr"));

    #[rstest]
    // Into the snapshot's own cluster: the name alone, forced or not; @ its name too.
    #[case(PROD, PROD, None, true, None)]
    #[case(PROD, PROD, None, false, None)]
    #[case(PROD, PROD, Some("prod"), true, None)]
    // Into another cluster, forced: only with @ the target's name.
    #[case(
        PROD,
        DR,
        None,
        true,
        Some(
            "names only the snapshot, but vault-20261124T063700Z was taken from prod (cluster_id id-prod) and VAULT_ADDR leads another cluster, dr (cluster_id id-dr)"
        )
    )]
    #[case(PROD, DR, Some("dr"), true, None)]
    #[case(
        PROD,
        DR,
        Some("prod"),
        true,
        Some("names the target cluster \"prod\", but VAULT_ADDR leads dr (cluster_id id-dr)")
    )]
    // Unforced into another cluster: the server refuses it; the hint says why.
    #[case(PROD, DR, None, false, None)]
    // An older manifest: the snapshot alone confirms (with a warning).
    #[case(None, DR, None, true, None)]
    #[case(None, DR, Some("dr"), true, None)]
    // A target that does not say its name cannot be confirmed by name.
    #[case(
        PROD,
        None,
        Some("dr"),
        true,
        Some("but the target does not say its cluster_name")
    )]
    #[case(PROD, None, None, true, None)]
    fn a_forced_restore_into_another_cluster_names_it(
        #[case] source: Option<(&str, &str)>,
        #[case] target: Option<(&str, &str)>,
        #[case] at: Option<&str>,
        #[case] force: bool,
        #[case] refused: Option<&str>,
    ) {
        let m = manifest(source);
        let got = confirm_target(
            "vault-20261124T063700Z",
            at,
            force,
            Some(&m),
            &leader(target),
        );
        match (got, refused) {
            (Ok(()), None) => {}
            (Err(e), Some(want)) => {
                assert_eq!(e.exit_code(), 2);
                assert!(e.to_string().contains(want), "{e}");
            }
            (got, want) => panic!("{got:?}, wanted {want:?}"),
        }
    }

    #[test]
    fn the_hash_file_hint_says_which_case_it_is() {
        let ident = |t: Option<(&str, &str)>| {
            t.map(|(n, i)| ClusterIdentity {
                cluster_name: n.into(),
                cluster_id: i.into(),
            })
        };
        let other = hash_file_hint("s", Some(&manifest(PROD)), ident(DR).as_ref());
        assert!(
            other.contains("another cluster than the target dr")
                && other.contains("RESTORE_CONFIRM=s@dr"),
            "{other}"
        );
        let same = hash_file_hint("s", Some(&manifest(PROD)), ident(PROD).as_ref());
        assert!(
            same.contains("this very cluster") && same.contains("RESTORE_FORCE is not the fix"),
            "{same}"
        );
        let unknown = hash_file_hint("s", Some(&manifest(None)), ident(DR).as_ref());
        assert!(
            unknown.contains("does not record its source cluster") && unknown.contains("s@dr"),
            "{unknown}"
        );
    }
}
