//! Restores a vault-backup snapshot, or proves that one restores.
//!
//! A backup is only proven by a restore, and the day a restore is needed is the worst day to
//! learn the commands. This step fetches a snapshot from a store the sync step writes (S3 or a
//! directory), streams it into the scratch workspace while hashing it and checking the archive's
//! own `SHA256SUMS` (the snapshot step's receive), and compares it with its `.sha256`; nothing
//! is sent to any Vault before both checks pass. Then, by `RESTORE_MODE`:
//! - `cluster` (disaster recovery): the leader is found, its identity logged, the login and its
//!   capabilities checked before any byte is fetched; `RESTORE_CONFIRM` must name the snapshot
//!   (and, for a forced restore into another cluster than the snapshot's source, the target:
//!   `<snapshot>@<target cluster_name>`); a safety snapshot
//!   of the target's current state goes into the workspace first (so the restore can be
//!   undone; if it fails nothing is restored), then the snapshot is POSTed to the leader
//!   (`snapshot-force` with `RESTORE_FORCE=true`), and the step waits for a leader and says
//!   whether the cluster is sealed.
//! - `drill`: the snapshot goes into a fresh throw-away node (the Task's sidecar), which says
//!   its seal (`sys/seal-status`); it is initialized, restored with `snapshot-force`, then
//!   unsealed with the source cluster's keys (Shamir) or left to unseal itself (an
//!   auto-unseal, whose recovery keys are proven when `DRILL_RECOVERY_KEYS_FILE` exists), and
//!   logged in to with the backup's own login; the canary is checked (required when
//!   `CANARY_PATH` is set) and the raft index reported.
//! - `recover`: the snapshot goes into the throw-away node as in the drill (at
//!   `RECOVER_SCRATCH_ADDR`), a root token is made there from the source's keys, and the KV v2
//!   secrets at `RECOVER_PATHS` are written back into the cluster at `VAULT_ADDR` as new
//!   versions, check-and-set against the version read there ([`recover`]); `RESTORE_CONFIRM`
//!   must name the snapshot.
//!
//! A snapshot whose seal (its manifest's `seal_type`, or its own data's `core/seal-config`)
//! differs from the target's is refused before anything is sent: its keyring would never open.
//!
//! Modules: [`config`], [`error`], [`fetch`] (the stores), [`cluster`], [`drill`] and
//! [`recover`] (Vault), [`metrics`] (what a run pushes to a Pushgateway).

pub mod cluster;
pub mod config;
pub mod drill;
pub mod error;
pub mod fetch;
pub mod metrics;
pub mod recover;
pub mod report;

use std::time::{Duration, Instant};

use vault_backup_common::exit::one_line;
use vault_backup_vault::Vault;

pub use config::{Config, Mode, RawConfig, Source};
pub use error::{Error, Result};
pub use report::{Recovered, Summary};

use crate::config::{
    RESULT_CANARY, RESULT_RAFT_INDEX, RESULT_RECOVERED_PATHS, RESULT_RESTORE_SECONDS,
    RESULT_RESTORED_SNAPSHOT, RESULT_SAFETY_SNAPSHOT, RESULT_SEALED, RESULT_UNCHANGED_PATHS,
};

/// The usage text for `--help`.
pub const USAGE: &str = "Restores a verified vault-backup snapshot into a Vault/OpenBao cluster (RESTORE_MODE=cluster),
proves it restores in a throw-away node (RESTORE_MODE=drill), or writes single KV v2 secrets from it
back into the cluster (RESTORE_MODE=recover). Configured by environment variables:
RESTORE_MODE, SNAPSHOT_DIR, SNAPSHOT_NAME, SNAPSHOT_PREFIX, RESTORE_FROM (s3 | gcs | azure | dir), BACKUP_DIR
or BUCKET_HOST, BUCKET_PORT, BUCKET_NAME, BUCKET_REGION, BUCKET_SSL, BUCKET_SUBREGION, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, S3_ENDPOINT, S3_BUCKET, S3_PREFIX, S3_TLS, S3_CACERT, or GOOGLE_BUCKET, GCS_PREFIX
and the GOOGLE_* credentials, or AZURE_CONTAINER_NAME, AZURE_PREFIX and the AZURE_* credentials; VAULT_ADDR, VAULT_CACERT,
VAULT_SKIP_VERIFY, VAULT_NAMESPACE, one login (VAULT_TOKEN | VAULT_TOKEN_FILE | VAULT_ROLE_ID +
VAULT_SECRET_ID[_FILE] | VAULT_AUTH_ROLE); cluster: RESTORE_CONFIRM (the snapshot's exact name, and
@<target cluster_name> for a forced restore into another cluster than the snapshot's source),
RESTORE_FORCE; drill: DRILL_UNSEAL_KEYS_FILE (read for a Shamir scratch node only),
DRILL_RECOVERY_KEYS_FILE (auto-unseal: proven when the file exists), CANARY_PATH, CANARY_MOUNT; recover:
RECOVER_PATHS (mount/path, or mount/folder/, comma-separated), RECOVER_DRY_RUN, RECOVER_SCRATCH_ADDR
(default http://127.0.0.1:8200), RESTORE_CONFIRM, DRILL_UNSEAL_KEYS_FILE or DRILL_RECOVERY_KEYS_FILE
(they make a root token on the scratch node); RESTORE_TIMEOUT (each phase:
the fetch, each wait, the safety snapshot, the restore request; default 5m); RESULTS_DIR
or RESULT_<NAME>_PATH for restored-snapshot, restore-seconds, canary, raft-index, sealed, safety-snapshot,
recovered-paths, unchanged-paths.
Exit codes: 0 done, 1 failed, 2 invalid configuration (or RESTORE_CONFIRM not naming the snapshot).";

/// Fetches, verifies and restores (or drills) one snapshot, and writes the results.
/// SIGTERM or SIGINT stop it; a partial download is removed.
///
/// # Errors
/// An [`Error`]; see its variants for what each says.
pub async fn run(config: Config) -> Result<Summary> {
    tokio::select! {
        result = run_inner(&config) => result,
        Some(signal) = vault_backup_common::exit::termination() => Err(Error::Interrupted(signal)),
    }
}

// One run in order, cheap checks first; splitting it would hide that order.
#[allow(clippy::too_many_lines)]
async fn run_inner(config: &Config) -> Result<Summary> {
    let started = Instant::now();
    let (store, name) = fetch::locate(
        fetch::open(&config.source)?,
        config.snapshot_name.as_deref(),
        &config.prefix,
    )
    .await?;
    let confirmed_target = confirmation(config, &name, store.as_ref())?;
    let mode = match &config.mode {
        Mode::Cluster { force, .. } => format!("cluster (force: {force})"),
        Mode::Drill { .. } => "drill".to_owned(),
        Mode::Recover { dry_run, .. } => format!("recover (dry run: {dry_run})"),
    };
    tracing::info!(name = %name, store = %store.location(""), vault_addr = %config.vault.addr, auth = %config.vault.auth.describe(), mode = %mode, "restoring");
    let vault = Vault::new(
        &config.vault.tls,
        config.vault.namespace.clone(),
        Duration::from_secs(10),
        concat!("vault-restore/", env!("CARGO_PKG_VERSION")),
        "RESTORE_TIMEOUT",
    )?;
    // The cheap checks first: a wrong login or policy shows before a multi-GB fetch.
    let target = match &config.mode {
        Mode::Recover { paths, dry_run, .. } => Some(
            recover::prepare(
                &vault,
                &config.vault.addr,
                &config.vault.auth,
                paths,
                *dry_run,
            )
            .await?,
        ),
        _ => None,
    };
    let (prepared, scratch) = match &config.mode {
        Mode::Cluster { force, .. } => (
            Some(cluster::prepare(&vault, &config.vault.addr, &config.vault.auth, *force).await?),
            None,
        ),
        Mode::Drill {
            unseal_keys_file,
            recovery_keys_file,
            ..
        } => (
            None,
            Some(
                drill::prepare(
                    &vault,
                    &config.vault.addr,
                    unseal_keys_file.as_deref(),
                    recovery_keys_file.as_deref(),
                    config.timeout,
                )
                .await?,
            ),
        ),
        Mode::Recover {
            scratch_addr,
            unseal_keys_file,
            recovery_keys_file,
            ..
        } => {
            let scratch = drill::prepare(
                &vault,
                scratch_addr,
                unseal_keys_file.as_deref(),
                recovery_keys_file.as_deref(),
                config.timeout,
            )
            .await?;
            if scratch.root_keys().is_none() {
                // Exit 2 before anything is fetched: without the recovery keys no root token
                // can be made on an auto-unsealed node, and nothing could be read there.
                return Err(Error::Config(vault_backup_common::env::ConfigError::new(
                    "DRILL_RECOVERY_KEYS_FILE",
                    format!(
                        "the scratch node at {scratch_addr} auto-unseals ({}), so the recovery needs the source cluster's recovery keys to make a root token there, but the file is not set or does not exist; mount the recovery keys Secret",
                        scratch.seal_type
                    ),
                )));
            }
            (None, Some(scratch))
        }
    };
    let sidecars = fetch::sidecars(store.as_ref(), &name).await?;
    match (&config.mode, &prepared) {
        (Mode::Cluster { force, .. }, Some(p)) => {
            cluster::confirm_target(
                &name,
                confirmed_target.as_deref(),
                *force,
                sidecars.manifest.as_ref(),
                &p.leader,
            )?;
            let source = sidecars
                .manifest
                .as_ref()
                .and_then(|m| m.seal_type.as_deref());
            if source.is_none() {
                tracing::info!(
                    target_seal = p.leader.seal_type.as_deref().unwrap_or("unknown"),
                    "the manifest does not record the source cluster's seal; it is read from the snapshot's data once fetched"
                );
            }
            cluster::check_seal(&name, source, &p.leader, "Nothing was fetched or restored")?;
        }
        (
            Mode::Drill {
                canary: Some(_), ..
            },
            _,
        ) if sidecars
            .manifest
            .as_ref()
            .is_none_or(|m| m.canary.is_none()) =>
        {
            return Err(Error::CanaryNotRecorded { name });
        }
        _ => {}
    }
    let scratch_addr = match &config.mode {
        Mode::Recover { scratch_addr, .. } => scratch_addr,
        _ => &config.vault.addr,
    };
    if let Some(scratch) = &scratch {
        drill::check_seal(
            scratch,
            sidecars
                .manifest
                .as_ref()
                .and_then(|m| m.seal_type.as_deref()),
            &name,
            scratch_addr,
        )?;
    }
    let fetched = fetch::fetch(
        store.as_ref(),
        &name,
        &config.snapshot_dir,
        sidecars,
        config.timeout,
    )
    .await?;
    // The snapshot's own data says which seal opens its keyring (manifests written before the
    // seal was recorded do not): checked again before anything is sent.
    let data_seal = fetched.info.seal_type.as_deref();
    if let Some(seal) = data_seal {
        tracing::info!(
            seal,
            "the snapshot's data was sealed by this kind of seal (its core/seal-config)"
        );
    }
    match (&prepared, &scratch) {
        (Some(p), _) => cluster::check_seal(
            &name,
            data_seal,
            &p.leader,
            "The snapshot was fetched into SNAPSHOT_DIR, but nothing was sent to the cluster",
        )?,
        (None, Some(s)) => drill::check_seal(s, data_seal, &name, scratch_addr)?,
        (None, None) => {}
    }
    let mut summary = Summary {
        name: name.clone(),
        seconds: 0.0,
        raft_index: fetched
            .manifest
            .as_ref()
            .map_or(fetched.info.index, |m| m.raft_index),
        canary: None,
        sealed: None,
        safety_snapshot: None,
        drill: matches!(config.mode, Mode::Drill { .. }),
        recovered: None,
    };
    match &config.mode {
        Mode::Cluster { force, .. } => {
            let prepared = prepared.expect("prepared in cluster mode");
            restore_cluster(config, &vault, prepared, &fetched, *force, &mut summary).await?;
        }
        Mode::Drill { canary, .. } => {
            let proved = drill::run(
                &vault,
                &config.vault.addr,
                &config.vault.auth,
                scratch.as_ref().expect("prepared in drill mode"),
                canary.is_some(),
                &fetched,
                config.timeout,
            )
            .await?;
            summary.raft_index = proved.raft_index;
            summary.canary = Some(proved.canary.as_str());
        }
        Mode::Recover { paths, dry_run, .. } => {
            let target = target.expect("prepared in recover mode");
            let scratch = scratch.as_ref().expect("prepared in recover mode");
            let outcome = recover_from(
                config,
                &vault,
                scratch_addr,
                scratch,
                &fetched,
                &target,
                paths,
                *dry_run,
            )
            .await?;
            summary.recovered = Some(Recovered {
                paths: outcome.recovered,
                unchanged: outcome.unchanged,
                would_recover: outcome.would_recover,
                dry_run: *dry_run,
            });
            summary.seconds = started.elapsed().as_secs_f64();
            finish(config, &summary)?;
            if !outcome.failed.is_empty() {
                return Err(Error::RecoverFailed {
                    count: outcome.failed.len(),
                    paths: outcome
                        .failed
                        .iter()
                        .map(|(p, why)| format!("{p} ({why})"))
                        .collect::<Vec<_>>()
                        .join("; "),
                });
            }
            return Ok(summary);
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    finish(config, &summary)?;
    Ok(summary)
}

/// Recover mode after the fetch: the snapshot up in the scratch node, a root token there from
/// the source's keys, the paths recovered, and the token revoked whatever happened to them.
#[allow(clippy::too_many_arguments)]
async fn recover_from(
    config: &Config,
    vault: &Vault,
    scratch_addr: &url::Url,
    scratch: &drill::Scratch,
    fetched: &fetch::Fetched,
    target: &recover::Target,
    paths: &[config::KvPath],
    dry_run: bool,
) -> Result<recover::Outcome> {
    drill::bring_up(
        vault,
        scratch_addr,
        scratch,
        fetched,
        drill::RestoredBy::ThrowAwayTokenRefused,
        config.timeout,
    )
    .await?;
    let (variable, kind) = if scratch.shamir() {
        ("DRILL_UNSEAL_KEYS_FILE", "unseal")
    } else {
        ("DRILL_RECOVERY_KEYS_FILE", "recovery")
    };
    let keys = scratch.root_keys().unwrap_or_default();
    let root = match vault.generate_root(scratch_addr, keys).await? {
        Ok(token) => token,
        Err(refused) => {
            return Err(Error::RootTokenRefused {
                addr: scratch_addr.to_string(),
                variable,
                kind,
                detail: match refused {
                    vault_backup_vault::RootRefused::Refused { detail } => detail,
                    vault_backup_vault::RootRefused::Incomplete { progress, required } => {
                        format!(
                            "{} key(s) given, {progress} of {required} entered",
                            keys.len()
                        )
                    }
                },
            });
        }
    };
    // The accessor names the token in the log without being able to use it.
    let accessor = vault
        .token_accessor(scratch_addr, &root)
        .await
        .unwrap_or_else(|e| format!("(unknown: {e})"));
    tracing::info!(node = %scratch_addr, accessor = %accessor, keys = variable, "root token made on the scratch node from the source's {kind} keys; it is revoked before the step ends");
    let outcome = recover::run(vault, scratch_addr, &root, target, paths, dry_run).await;
    match vault.revoke_self(scratch_addr, &root).await {
        Ok(()) => {
            tracing::info!(node = %scratch_addr, accessor = %accessor, "scratch root token revoked");
        }
        Err(source) => {
            return Err(Error::ScratchTokenNotRevoked {
                addr: scratch_addr.to_string(),
                source: Box::new(source),
            });
        }
    }
    Ok(outcome)
}

/// Writes the results and logs the run's last line.
fn finish(config: &Config, summary: &Summary) -> Result<()> {
    write(config, RESULT_RESTORED_SNAPSHOT, &summary.name)?;
    write(
        config,
        RESULT_RESTORE_SECONDS,
        &format!("{:.1}", summary.seconds),
    )?;
    write(config, RESULT_RAFT_INDEX, &summary.raft_index.to_string())?;
    if let Some(c) = summary.canary {
        write(config, RESULT_CANARY, c)?;
    }
    if let Some(s) = summary.sealed {
        write(config, RESULT_SEALED, if s { "true" } else { "false" })?;
    }
    if let Some(r) = &summary.recovered {
        write(config, RESULT_RECOVERED_PATHS, &r.paths.join(","))?;
        write(config, RESULT_UNCHANGED_PATHS, &r.unchanged.join(","))?;
        tracing::info!(
            name = %summary.name,
            seconds = format!("{:.1}", summary.seconds),
            recovered = %r.paths.join(","),
            unchanged = %r.unchanged.join(","),
            would_recover = %r.would_recover.join(","),
            "{}",
            if r.dry_run {
                "recovery dry run done: nothing was written"
            } else {
                "recovery finished"
            }
        );
        return Ok(());
    }
    tracing::info!(
        name = %summary.name,
        seconds = format!("{:.1}", summary.seconds),
        raft_index = summary.raft_index,
        canary = summary.canary.unwrap_or("-"),
        sealed = ?summary.sealed,
        safety_snapshot = summary.safety_snapshot.as_deref().unwrap_or("-"),
        "{}",
        match config.mode {
            Mode::Cluster { .. } => "restore done",
            Mode::Drill { .. } => "restore drill passed",
            Mode::Recover { .. } => "recovery done",
        }
    );
    Ok(())
}

/// Cluster mode: checks that `RESTORE_CONFIRM` (`<snapshot>` or `<snapshot>@<target
/// cluster_name>`) names snapshot `name`, and returns its target part. `None` in drill mode.
fn confirmation(
    config: &Config,
    name: &str,
    store: &dyn vault_backup_stores::Store,
) -> Result<Option<String>> {
    let confirm = match &config.mode {
        Mode::Cluster { confirm, .. } | Mode::Recover { confirm, .. } => confirm,
        Mode::Drill { .. } => return Ok(None),
    };
    let (snapshot, target) = match confirm.split_once('@') {
        Some((s, t)) => (s, Some(t.to_owned())),
        None => (confirm.as_str(), None),
    };
    if snapshot != name {
        return Err(Error::NotConfirmed {
            confirm: confirm.clone(),
            name: name.to_owned(),
            store: store.location(""),
        });
    }
    Ok(target)
}

/// Cluster mode after the fetch: safety snapshot, restore, leader or seal.
async fn restore_cluster(
    config: &Config,
    vault: &Vault,
    prepared: cluster::Prepared,
    fetched: &fetch::Fetched,
    force: bool,
    summary: &mut Summary,
) -> Result<()> {
    let name = &fetched.name;
    let cluster::Prepared { leader, token } = prepared;
    let safety =
        cluster::safety_snapshot(vault, &leader, &token, &config.snapshot_dir, config.timeout)
            .await
            .map_err(|e| Error::SafetySnapshot {
                addr: leader.addr.to_string(),
                source: Box::new(e),
            })?;
    summary.safety_snapshot = Some(safety.name.clone());
    write(config, RESULT_SAFETY_SNAPSHOT, &safety.name)?;
    vault
        .restore(
            &leader.addr,
            &token,
            &fetched.path,
            force,
            config.timeout,
            cluster::POLICY,
        )
        .await
        .map_err(|mut e| {
            if let vault_backup_vault::Error::Http {
                status: 400,
                detail,
                ..
            } = &mut e
                && detail.contains("could not verify hash file")
            {
                let hint = cluster::hash_file_hint(
                    name,
                    fetched.manifest.as_ref(),
                    leader.cluster.as_ref(),
                );
                detail.push_str(&format!(" ({hint})"));
                // OpenBao says "different set of unseal keys" (a Shamir target) or "different
                // autoseal key" (an auto-unseal target) whatever the snapshot's seal was.
                detail.push_str(&format!(
                    "; the target's seal is {}, the snapshot's source seal {}: if the two differ, the seals differ and no restore can open the snapshot's keyring there",
                    leader.seal_type.as_deref().unwrap_or("unknown"),
                    fetched
                        .manifest
                        .as_ref()
                        .and_then(|m| m.seal_type.as_deref())
                        .or(fetched.info.seal_type.as_deref())
                        .unwrap_or("is recorded neither in its manifest nor in its data"),
                ));
            }
            e
        })?;
    tracing::info!(leader = %leader.addr, name = %name, force, "snapshot restored");
    let sealed = cluster::wait_for_leader_or_seal(vault, &leader.addr, config.timeout).await?;
    let target_seal = leader.seal_type.as_deref().unwrap_or("shamir");
    if sealed && target_seal != "shamir" {
        // An auto-unseal target reloads a restored keyring through its own seal; sealed, it
        // could not: no key the operator holds opens it (recovery keys do not unseal).
        summary.sealed = Some(true);
        write(config, RESULT_SEALED, "true")?;
        return Err(Error::SealedAfterRestore {
            addr: leader.addr.to_string(),
            name: name.clone(),
            target_seal: target_seal.to_owned(),
            source_seal: fetched
                .manifest
                .as_ref()
                .and_then(|m| m.seal_type.clone())
                .or_else(|| fetched.info.seal_type.clone())
                .unwrap_or_else(|| "(unrecorded)".to_owned()),
            safety: safety.name.clone(),
        });
    }
    if sealed {
        tracing::warn!(
            leader = %leader.addr,
            "the cluster is sealed after the restore: the snapshot came from another cluster; unseal with the source cluster's keys (a snapshot of an auto-unsealed cluster opens with no unseal key: the seals would differ)"
        );
    } else {
        tracing::info!(leader = %leader.addr, "the cluster has a leader and is unsealed");
    }
    summary.sealed = Some(sealed);
    Ok(())
}

fn write(config: &Config, name: &str, value: &str) -> Result<()> {
    config
        .results
        .write(name, value)
        .map(drop)
        .map_err(|source| {
            tracing::error!("cannot write result {name}: {}", one_line(&source));
            Error::Io {
                path: config.results.path(name).unwrap_or_default(),
                source,
            }
        })
}
