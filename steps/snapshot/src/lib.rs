//! Takes a raft snapshot of a Vault or OpenBao cluster from its leader, verified and atomic.
//!
//! `vault operator raft snapshot save` pointed at a standby fails with "incomplete snapshot,
//! unable to read SHA256SUMS.sealed file" (upstream Vault issue 15258), older versions returned
//! truncated snapshots without an error, and OpenBao standbys serve a possibly lagging copy of
//! their own. This step finds the leader itself, streams the snapshot once into the Tekton
//! workspace while hashing it and checking the archive's own `SHA256SUMS`, and only then gives
//! it its final name with a `sha256sum` checksum file and a JSON manifest beside it. A failed
//! check removes the download and retries; nothing half-written is ever left under a final name.

pub mod config;
pub mod error;
pub mod metrics;
pub mod report;

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use vault_backup_common::artifact::Canary;
use vault_backup_common::exit::one_line;
use vault_backup_common::progress::mb_per_s;

use config::CanarySpec;
pub use config::Config;
pub use error::{Error, Result};
pub use report::Summary;

use vault_backup_common::artifact::{ClusterHealth, HealthStatus};
use vault_backup_vault::{AutopilotState, Saved, Target, Vault, save_snapshot};

/// The usage text for `--help`.
pub const USAGE: &str = "Takes a verified raft snapshot from the Vault/OpenBao leader into SNAPSHOT_DIR.
Configured by environment variables: VAULT_ADDR, VAULT_CACERT, VAULT_SKIP_VERIFY, VAULT_NAMESPACE,
one login (VAULT_TOKEN | VAULT_TOKEN_FILE | VAULT_ROLE_ID + VAULT_SECRET_ID[_FILE] | VAULT_AUTH_ROLE),
SNAPSHOT_DIR, SNAPSHOT_PREFIX, SNAPSHOT_TIMEOUT, SNAPSHOT_RETRIES, SNAPSHOT_RETRY_DELAY,
CANARY_PATH, CANARY_MOUNT (default secret) and TASKRUN_NAME for the canary a restore drill checks,
RESULTS_DIR or RESULT_SNAPSHOT_NAME_PATH / RESULT_SNAPSHOT_SHA256_PATH / RESULT_SNAPSHOT_BYTES_PATH.
Exit codes: 0 done, 1 failed after retries, 2 invalid configuration. See README.md.";

/// Takes one verified snapshot, retrying transient failures, and writes its sidecars and results.
/// SIGTERM or SIGINT stop it cleanly: the partial download is removed.
///
/// # Errors
/// An [`Error`]; [`Error::GaveUp`] wraps the last failure when retries ran out.
pub async fn run(config: Config) -> Result<Summary> {
    tokio::select! {
        result = run_attempts(&config) => result,
        Some(signal) = vault_backup_common::exit::termination() => Err(Error::Interrupted(signal)),
    }
}

async fn run_attempts(config: &Config) -> Result<Summary> {
    let vault = Vault::new(
        &config.vault.tls,
        config.vault.namespace.clone(),
        Duration::from_secs(10),
        concat!("vault-snapshot/", env!("CARGO_PKG_VERSION")),
        "SNAPSHOT_TIMEOUT",
    )?;
    tracing::info!(
        vault_addr = %config.vault.addr,
        auth = %config.vault.auth.describe(),
        dir = %config.snapshot_dir.display(),
        "taking a raft snapshot"
    );
    let attempts = config.retries + 1;
    let mut delay = config.retry_delay;
    for attempt in 1..=attempts {
        let result =
            match tokio::time::timeout(config.timeout, attempt_once(config, &vault, attempt)).await
            {
                Ok(r) => r,
                Err(_) => Err(Error::Vault(vault_backup_vault::Error::Timeout {
                    addr: config.vault.addr.to_string(),
                    after: config.timeout,
                    variable: Some("SNAPSHOT_TIMEOUT"),
                })),
            };
        match result {
            Ok(summary) => return Ok(summary),
            Err(e) if e.is_retryable() && attempt < attempts => {
                tracing::warn!(attempt, of = attempts, "attempt failed: {}", one_line(&e));
                tracing::info!(
                    "backing off {:.1}s, retry {attempt} of {}",
                    delay.as_secs_f64(),
                    config.retries
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) if attempt > 1 => {
                return Err(Error::GaveUp {
                    attempts: attempt,
                    last: Box::new(e),
                });
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns on the last attempt")
}

/// Writes this run's canary to the leader just before the snapshot, so the snapshot holds it
/// and the manifest can say what it must read back as.
async fn write_canary(
    vault: &Vault,
    leader: &url::Url,
    token: &vault_backup_common::Secret,
    spec: &CanarySpec,
) -> Result<Canary> {
    let canary = Canary {
        mount: spec.mount.clone(),
        path: spec.path.clone(),
        taskrun: spec.taskrun.clone(),
        written_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    let value = serde_json::json!({ "taskrun": canary.taskrun, "written_at": canary.written_at });
    vault
        .write_kv2(leader, token, &canary.data_path(), &value)
        .await?;
    tracing::info!(path = %canary.data_path(), taskrun = %canary.taskrun, written_at = %canary.written_at, "canary written");
    Ok(canary)
}

/// The policy line that lets the snapshot step read the cluster's health.
pub const AUTOPILOT_POLICY: &str =
    "path \"sys/storage/raft/autopilot/state\" { capabilities = [\"read\"] }";

/// The cluster's health from `sys/storage/raft/autopilot/state` at the leader, and the state
/// itself. Never fails: a cluster whose health cannot be read is backed up all the same, with
/// its health recorded as unknown and one warning.
async fn read_health(
    vault: &Vault,
    leader: &url::Url,
    token: &vault_backup_common::Secret,
) -> (ClusterHealth, Option<AutopilotState>) {
    match vault.autopilot_state(leader, token).await {
        Ok(state) => (health_of(&state), Some(state)),
        Err(vault_backup_vault::Error::Forbidden { .. }) => {
            tracing::warn!(leader = %leader, "the cluster's health is unknown: the login may not read sys/storage/raft/autopilot/state (403); add {AUTOPILOT_POLICY} to its policy (see tekton/vault-policy.hcl). The snapshot goes on");
            (
                ClusterHealth::unknown("403 permission denied on sys/storage/raft/autopilot/state"),
                None,
            )
        }
        Err(e) => {
            tracing::warn!(leader = %leader, "the cluster's health is unknown: {}. The snapshot goes on", one_line(&e));
            (ClusterHealth::unknown(one_line(&e)), None)
        }
    }
}

/// What the manifest records of an autopilot state.
#[must_use]
pub fn health_of(state: &AutopilotState) -> ClusterHealth {
    let leader = state.leader_server();
    ClusterHealth {
        status: if state.healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        },
        healthy: Some(state.healthy),
        failure_tolerance: Some(state.failure_tolerance),
        leader_id: Some(state.leader.clone()).filter(|l| !l.is_empty()),
        leader_term: leader.map(|s| s.last_term),
        leader_last_index: leader.map(|s| s.last_index),
        voters: state.voters.clone(),
        reason: None,
    }
}

/// The one warning a degraded cluster gets, or `None`: unhealthy, or no failure tolerance
/// in a cluster of three or more voters (one that cannot lose one more). A cluster of one or
/// two voters has no failure tolerance by design and is not warned about every night.
#[must_use]
pub fn health_warning(h: &ClusterHealth) -> Option<String> {
    let mut said = Vec::new();
    if h.healthy == Some(false) {
        said.push("autopilot says the cluster is unhealthy".to_owned());
    }
    // One or two voters tolerate no failure by design; from three on, 0 means one is gone.
    if h.failure_tolerance == Some(0) && h.voters.len() >= 3 {
        said.push(format!(
            "its failure tolerance is 0 ({} voter(s): {}): losing one more voter loses quorum",
            h.voters.len(),
            h.voters.join(", ")
        ));
    }
    (!said.is_empty()).then(|| said.join("; "))
}

/// Whether the leader changed term (or the leader changed) between two reads of the state:
/// an election happened while the snapshot streamed.
#[must_use]
pub fn term_changed(before: &AutopilotState, after: &AutopilotState) -> bool {
    let term = |s: &AutopilotState| s.leader_server().map(|l| l.last_term);
    before.leader != after.leader || term(before) != term(after)
}

async fn attempt_once(config: &Config, vault: &Vault, attempt: u32) -> Result<Summary> {
    let mut leader = vault.find_leader(&config.vault.addr).await?;
    let token = vault.login(&leader.addr, &config.vault.auth).await?;
    let canary = match &config.canary {
        Some(spec) => Some(write_canary(vault, &leader.addr, &token, spec).await?),
        None => None,
    };
    let (mut health, mut before) = read_health(vault, &leader.addr, &token).await;
    match (&health.status, health_warning(&health)) {
        (_, Some(warning)) => {
            tracing::warn!(leader = %leader.addr, healthy = ?health.healthy, failure_tolerance = ?health.failure_tolerance, "the cluster is degraded: {warning}; taking the snapshot all the same (the manifest records its state)");
        }
        (HealthStatus::Healthy, None) => {
            tracing::info!(leader = %leader.addr, leader_id = health.leader_id.as_deref().unwrap_or("-"), failure_tolerance = ?health.failure_tolerance, voters = health.voters.len(), "cluster healthy");
        }
        _ => {}
    }
    let mut retaken = false;
    let saved = loop {
        let saved = save_snapshot(
            vault,
            &leader,
            &token,
            config.timeout,
            Target {
                dir: &config.snapshot_dir,
                prefix: &config.prefix,
                tool: concat!("vault-snapshot ", env!("CARGO_PKG_VERSION")),
                canary: canary.clone(),
                health: Some(health.clone()),
            },
        )
        .await?;
        let Some(b) = &before else { break saved };
        let Ok(after) = vault.autopilot_state(&leader.addr, &token).await else {
            break saved;
        };
        if retaken || !term_changed(b, &after) {
            break saved;
        }
        // An election while the snapshot streamed: the node that served it may have been
        // deposed mid-stream. Once more, from the leader as it is now.
        tracing::warn!(
            before = %b.leader, after = %after.leader,
            "the leader's raft term changed while the snapshot streamed; taking it again (once)"
        );
        for f in saved.artifact.files_in_write_order() {
            let _ = std::fs::remove_file(config.snapshot_dir.join(f));
        }
        health = health_of(&after);
        before = Some(after);
        leader = vault.find_leader(&config.vault.addr).await?;
        retaken = true;
        // Names have a one-second resolution: the second snapshot must not take the first's.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    };
    let Saved {
        artifact,
        path,
        served_by: served,
        manifest,
        elapsed,
    } = saved;
    let write = |name: &str, value: &str| {
        config
            .results
            .write(name, value)
            .map_err(|source| Error::Io {
                path: config.results.path(name).unwrap_or_default(),
                source,
            })
    };
    write("snapshot-name", artifact.name())?;
    write("snapshot-sha256", &manifest.sha256)?;
    write("snapshot-bytes", &manifest.bytes.to_string())?;
    let secs = elapsed.as_secs_f64();
    let mb_per_s = mb_per_s(manifest.bytes, elapsed);
    tracing::info!(
        name = artifact.name(),
        path = %path.display(),
        bytes = manifest.bytes,
        sha256 = %manifest.sha256,
        leader = %served,
        raft_index = manifest.raft_index,
        raft_term = manifest.raft_term,
        cluster_name = manifest.cluster_name.as_deref().unwrap_or("-"),
        seconds = format!("{secs:.2}"),
        mb_per_s = format!("{mb_per_s:.1}"),
        attempt,
        "snapshot saved and verified"
    );
    Ok(Summary {
        name: artifact.name().to_owned(),
        path,
        bytes: manifest.bytes,
        sha256: manifest.sha256.clone(),
        leader: served,
        attempt,
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_backup_vault::AutopilotServer;

    fn state(
        leader: &str,
        term: u64,
        healthy: bool,
        tolerance: u64,
        voters: usize,
    ) -> AutopilotState {
        let ids: Vec<String> = (1..=voters).map(|i| format!("node{i}")).collect();
        AutopilotState {
            healthy,
            failure_tolerance: tolerance,
            leader: leader.to_owned(),
            voters: ids.clone(),
            servers: ids
                .iter()
                .map(|id| {
                    (
                        id.clone(),
                        AutopilotServer {
                            last_term: term,
                            last_index: 100,
                            healthy: true,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn an_election_while_streaming_is_a_term_or_leader_change() {
        let before = state("node1", 3, true, 1, 3);
        assert!(!term_changed(&before, &state("node1", 3, true, 1, 3)));
        assert!(term_changed(&before, &state("node1", 4, true, 1, 3)));
        assert!(term_changed(&before, &state("node2", 3, true, 1, 3)));
    }

    #[test]
    fn one_warning_for_a_degraded_cluster_none_for_one_or_two_voters() {
        let h = health_of(&state("node1", 3, false, 0, 3));
        assert_eq!(h.status, HealthStatus::Unhealthy);
        assert_eq!(
            (h.leader_id.as_deref(), h.leader_term, h.leader_last_index),
            (Some("node1"), Some(3), Some(100))
        );
        let w = health_warning(&h).expect("a warning");
        assert!(
            w.contains("unhealthy")
                && w.contains("failure tolerance is 0 (3 voter(s): node1, node2, node3)"),
            "{w}"
        );
        assert!(health_warning(&health_of(&state("node1", 3, true, 1, 3))).is_none());
        assert!(health_warning(&health_of(&state("node1", 3, true, 0, 1))).is_none());
        assert!(health_warning(&health_of(&state("node1", 3, true, 0, 2))).is_none());
        let w = health_warning(&health_of(&state("node1", 3, true, 0, 5))).expect("a warning");
        assert!(!w.contains("unhealthy"), "{w}");
        assert!(health_warning(&ClusterHealth::unknown("403")).is_none());
    }
}
