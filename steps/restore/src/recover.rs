//! Recovering single secrets (`RESTORE_MODE=recover`): yesterday's value of a few KV v2
//! secrets, written back into the cluster, and nothing else touched.
//!
//! The snapshot is brought up in the throw-away node exactly as the drill does it
//! ([`drill::bring_up`](crate::drill::bring_up)); a root token made there from the source's
//! keys reads the secrets (it is revoked before the step ends, whatever happened). Each path
//! is then compared with the cluster's current version and, where they differ, written back as
//! a new version of the same path, check-and-set against the version just read: a write that
//! lands in between makes that path fail, and the concurrent value stands. Values are compared
//! and written, never logged: a log line names the path and, where they differ, the key names.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use url::Url;
use vault_backup_common::Secret;
use vault_backup_vault::{Auth, CasWrite, KvPath, KvValue, Vault};

use crate::error::{Error, Result};

/// The cluster the secrets go back into: its leader and the recover login's token there.
#[derive(Debug)]
pub struct Target {
    /// The leader.
    pub addr: Url,
    /// The login's token.
    pub token: Secret,
}

/// Finds the leader from `addr`, logs its identity, logs in with `auth`, and asks the cluster
/// whether the login may read (and, unless `dry_run`, write) each of `paths`
/// (`sys/capabilities-self`, which the `default` policy allows), all before any byte of the
/// snapshot is fetched. A folder is asked as its prefix, which a policy's `folder/*` covers.
/// Where the question itself is refused (a token without the `default` policy) it only warns:
/// a refusal then shows at the path's read.
///
/// # Errors
/// The leader's or the login's errors, [`Error::Capabilities`] naming what is missing.
pub async fn prepare(
    vault: &Vault,
    addr: &Url,
    auth: &Auth,
    paths: &[KvPath],
    dry_run: bool,
) -> Result<Target> {
    let leader = vault.find_leader(addr).await?;
    if let Some(c) = &leader.cluster {
        tracing::info!(leader = %leader.addr, cluster_name = %c.cluster_name, cluster_id = %c.cluster_id, "recovery target");
    } else {
        tracing::info!(leader = %leader.addr, "recovery target");
    }
    let token = vault.login(&leader.addr, auth).await?;
    tracing::info!(leader = %leader.addr, auth = %auth.describe(), "logged in to the recovery target");
    let mut needs: Vec<(String, &[&str])> = Vec::new();
    for p in paths {
        needs.push((p.metadata(), &["read"]));
        needs.push((
            p.data(),
            if dry_run {
                &["read"]
            } else {
                &["read", "create", "update"]
            },
        ));
    }
    let asked: Vec<&str> = needs.iter().map(|(p, _)| p.as_str()).collect();
    match vault.capabilities_self(&leader.addr, &token, &asked).await {
        Ok(caps) => {
            for ((path, want), has) in needs.iter().zip(&caps) {
                let missing: Vec<&str> = want
                    .iter()
                    .copied()
                    .filter(|w| !has.iter().any(|h| h == w || h == "root"))
                    .collect();
                if !missing.is_empty() {
                    return Err(Error::Capabilities {
                        addr: leader.addr.to_string(),
                        what: format!("{} {path}", missing.join(", ")),
                        has: if has.is_empty() {
                            "none".to_owned()
                        } else {
                            has.join(", ")
                        },
                        needs: format!(
                            "path \"{path}{}\" {{ capabilities = [{}] }}",
                            if path.ends_with('/') { "*" } else { "" },
                            want.iter()
                                .map(|w| format!("\"{w}\""))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        policy: vault_backup_vault::kv::RECOVER_POLICY,
                    });
                }
            }
            tracing::info!(leader = %leader.addr, paths = paths.len(), "the login may {} the paths", if dry_run { "read" } else { "read and write" });
        }
        Err(e) => {
            tracing::warn!(leader = %leader.addr, "could not ask the cluster what the login may do (sys/capabilities-self); going on, a refusal will show at the path: {e}");
        }
    }
    Ok(Target {
        addr: leader.addr,
        token,
    })
}

/// What happened to the paths of one recovery.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Written back as a new version (or, in a dry run, nothing: see `would_recover`).
    pub recovered: Vec<String>,
    /// Already equal in the cluster: left alone.
    pub unchanged: Vec<String>,
    /// Dry run: the paths a recovery would write.
    pub would_recover: Vec<String>,
    /// Not recovered, each with why (never a value).
    pub failed: Vec<(String, String)>,
}

/// How a secret's value in the cluster stands against the snapshot's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// Equal: nothing to do.
    Equal,
    /// The cluster has no such secret (never written, or its metadata deleted).
    MissingInCluster,
    /// The cluster's current version was deleted or destroyed.
    DeletedInCluster,
    /// Both hold data that differs, in these keys (names only).
    Differs {
        /// Keys whose values differ.
        changed: Vec<String>,
        /// Keys only the snapshot has.
        only_in_snapshot: Vec<String>,
        /// Keys only the cluster has.
        only_in_cluster: Vec<String>,
    },
}

impl Comparison {
    /// One phrase for the log: what differs, by key names only.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Equal => "equal".to_owned(),
            Self::MissingInCluster => "missing in production".to_owned(),
            Self::DeletedInCluster => {
                "missing in production (its current version is deleted)".to_owned()
            }
            Self::Differs {
                changed,
                only_in_snapshot,
                only_in_cluster,
            } => {
                let mut parts = Vec::new();
                if !changed.is_empty() {
                    parts.push(format!("changed keys: {}", changed.join(", ")));
                }
                if !only_in_snapshot.is_empty() {
                    parts.push(format!(
                        "keys only in the snapshot: {}",
                        only_in_snapshot.join(", ")
                    ));
                }
                if !only_in_cluster.is_empty() {
                    parts.push(format!(
                        "keys only in production: {}",
                        only_in_cluster.join(", ")
                    ));
                }
                format!("differs ({})", parts.join("; "))
            }
        }
    }
}

/// Compares the snapshot's data with the cluster's value: a pure decision, by whole maps (a
/// secret is equal only if every key and value is).
#[must_use]
pub fn compare(snapshot: &Map<String, Value>, cluster: &KvValue) -> Comparison {
    let current = match cluster {
        KvValue::Missing => return Comparison::MissingInCluster,
        KvValue::Deleted => return Comparison::DeletedInCluster,
        KvValue::Data(d) => d,
    };
    if snapshot == current {
        return Comparison::Equal;
    }
    let keys = |m: &Map<String, Value>| m.keys().cloned().collect::<BTreeSet<_>>();
    let (ours, theirs) = (keys(snapshot), keys(current));
    Comparison::Differs {
        changed: ours
            .intersection(&theirs)
            .filter(|k| snapshot[*k] != current[*k])
            .cloned()
            .collect(),
        only_in_snapshot: ours.difference(&theirs).cloned().collect(),
        only_in_cluster: theirs.difference(&ours).cloned().collect(),
    }
}

/// The secrets `paths` name in the restored data: a secret as named, a folder's secrets
/// listed recursively (`LIST <mount>/metadata/<folder>`). A folder with nothing under it is a
/// failure of that folder.
async fn expand(
    vault: &Vault,
    scratch: &Url,
    root: &Secret,
    paths: &[KvPath],
    outcome: &mut Outcome,
) -> Vec<(KvPath, bool)> {
    let mut out: Vec<(KvPath, bool)> = Vec::new();
    for path in paths {
        if !path.is_folder() {
            if !out.iter().any(|(p, _)| p == path) {
                out.push((path.clone(), true));
            }
            continue;
        }
        match vault.kv2_list(scratch, root, path).await {
            Ok(found) if found.is_empty() => outcome.failed.push((
                path.to_string(),
                "no secret under it in the snapshot".to_owned(),
            )),
            Ok(found) => {
                tracing::info!(folder = %path, secrets = found.len(), "secrets under the folder in the snapshot");
                for p in found {
                    if !out.iter().any(|(q, _)| *q == p) {
                        out.push((p, false));
                    }
                }
            }
            Err(e) => outcome
                .failed
                .push((path.to_string(), format!("listing it in the snapshot: {e}"))),
        }
    }
    out
}

/// Recovers `paths` from the restored data at `scratch` (read with `root`) into `target`: each
/// secret whose value there differs from the snapshot's (or is missing or deleted) is written
/// as a new version, check-and-set against the version read; equal ones are left alone. With
/// `dry_run` nothing is written. A path that fails is recorded and the others carried on.
pub async fn run(
    vault: &Vault,
    scratch: &Url,
    root: &Secret,
    target: &Target,
    paths: &[KvPath],
    dry_run: bool,
) -> Outcome {
    let mut outcome = Outcome::default();
    for (path, named) in expand(vault, scratch, root, paths, &mut outcome).await {
        let name = path.to_string();
        if let Err(why) = one(
            vault,
            scratch,
            root,
            target,
            &path,
            named,
            dry_run,
            &mut outcome,
        )
        .await
        {
            tracing::error!(path = %name, "not recovered: {why}");
            outcome.failed.push((name, why));
        }
    }
    outcome
}

/// One secret; `named` says whether `RECOVER_PATHS` named it (else a folder listed it).
#[allow(clippy::too_many_arguments)]
async fn one(
    vault: &Vault,
    scratch: &Url,
    root: &Secret,
    target: &Target,
    path: &KvPath,
    named: bool,
    dry_run: bool,
    outcome: &mut Outcome,
) -> std::result::Result<(), String> {
    let name = path.to_string();
    let snapshot = match vault
        .kv2_read(scratch, root, path, None)
        .await
        .map_err(|e| format!("reading it in the snapshot: {e}"))?
    {
        KvValue::Data(d) => d,
        other => {
            let what = if other == KvValue::Deleted {
                "its current version is deleted in the snapshot"
            } else {
                "it does not exist in the snapshot"
            };
            if named {
                return Err(format!("{what}: there is no value to recover"));
            }
            tracing::info!(path = %name, "skipped: {what}");
            return Ok(());
        }
    };
    let version = vault
        .kv2_current_version(&target.addr, &target.token, path)
        .await
        .map_err(|e| format!("reading its metadata in production: {e}"))?
        .unwrap_or(0);
    let current = if version == 0 {
        KvValue::Missing
    } else {
        vault
            .kv2_read(&target.addr, &target.token, path, Some(version))
            .await
            .map_err(|e| format!("reading version {version} in production: {e}"))?
    };
    let comparison = compare(&snapshot, &current);
    let keys: Vec<&str> = snapshot.keys().map(String::as_str).collect();
    if comparison == Comparison::Equal {
        tracing::info!(path = %name, version, "unchanged: production already holds the snapshot's value");
        outcome.unchanged.push(name);
        return Ok(());
    }
    let status = comparison.describe();
    if dry_run {
        tracing::info!(path = %name, production_version = version, keys = %keys.join(","), status = %status, "would recover (dry run: nothing written)");
        outcome.would_recover.push(name);
        return Ok(());
    }
    match vault
        .kv2_write_cas(&target.addr, &target.token, path, &snapshot, version)
        .await
        .map_err(|e| format!("writing it in production: {e}"))?
    {
        CasWrite::Written { version: new } => {
            tracing::info!(path = %name, status = %status, keys = %keys.join(","), cas = version, version = new, "recovered: the snapshot's value written as a new version");
            outcome.recovered.push(name);
            Ok(())
        }
        CasWrite::Conflict { detail } => Err(format!(
            "it was written in production after it was read at version {version}, so the check-and-set write was refused ({detail}); the concurrent value stands: compare it and run the recovery again if the snapshot's value is still wanted"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: &Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_comparison_names_keys_never_values() {
        let snap = map(&json!({"user": "app", "password": "v1-secret", "old": "x"}));
        let cur = KvValue::Data(map(
            &json!({"user": "app", "password": "v2-secret", "new": "y"}),
        ));
        let c = compare(&snap, &cur);
        assert_eq!(
            c,
            Comparison::Differs {
                changed: vec!["password".into()],
                only_in_snapshot: vec!["old".into()],
                only_in_cluster: vec!["new".into()],
            }
        );
        let text = c.describe();
        assert!(
            text.contains("password") && !text.contains("secret"),
            "{text}"
        );
        assert_eq!(
            compare(&snap, &KvValue::Data(snap.clone())),
            Comparison::Equal
        );
        assert_eq!(
            compare(&snap, &KvValue::Missing),
            Comparison::MissingInCluster
        );
        assert_eq!(
            compare(&snap, &KvValue::Deleted),
            Comparison::DeletedInCluster
        );
    }

    #[test]
    fn key_order_does_not_make_a_difference() {
        let a = map(&json!({"a": 1, "b": {"x": [1, 2]}}));
        let b = map(&json!({"b": {"x": [1, 2]}, "a": 1}));
        assert_eq!(compare(&a, &KvValue::Data(b)), Comparison::Equal);
    }
}
