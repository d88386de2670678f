//! What a snapshot run tells the Pushgateway besides its outcome: the snapshot's size and raft
//! index, so that an alert can see a snapshot shrink (data lost in Vault is backed up
//! faithfully too) or stop advancing.

use std::time::SystemTime;

use vault_backup_common::metrics::{
    CLUSTER_FAILURE_TOLERANCE, CLUSTER_HEALTHY, CLUSTER_VOTERS, Metrics, Report, SNAPSHOT_BYTES,
    SNAPSHOT_RAFT_INDEX,
};

use crate::error::Error;
use crate::report::Summary;

/// The step name the snapshot step pushes under (the alert rules expect it).
pub const STEP: &str = "vault-snapshot";

impl Report for Summary {
    fn metrics(&self, metrics: &mut Metrics, _at: SystemTime) {
        // Exact up to 2^53 bytes and raft entries; neither comes near it.
        #[allow(clippy::cast_precision_loss)]
        metrics
            .set(SNAPSHOT_BYTES, self.bytes as f64)
            .set(SNAPSHOT_RAFT_INDEX, self.manifest.raft_index as f64);
        // An unknown health pushes neither: "unknown" is not "healthy", nor "tolerates 0".
        if let Some(h) = &self.manifest.health
            && let (Some(healthy), Some(tolerance)) = (h.healthy, h.failure_tolerance)
        {
            #[allow(clippy::cast_precision_loss)]
            metrics
                .set(CLUSTER_HEALTHY, if healthy { 1.0 } else { 0.0 })
                .set(CLUSTER_FAILURE_TOLERANCE, tolerance as f64)
                .set(CLUSTER_VOTERS, h.voters.len() as f64);
        }
    }
}

/// A failed run saved no snapshot: its outcome is all it pushes, and the last snapshot's size
/// and index stay as they were.
impl Report for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_backup_common::artifact::{MANIFEST_VERSION, Manifest};

    #[test]
    fn a_snapshot_pushes_its_size_and_raft_index() {
        let manifest = Manifest {
            manifest_version: MANIFEST_VERSION,
            name: "vault-20261124T020000Z".into(),
            file: "vault-20261124T020000Z.snap".into(),
            bytes: 251_658_240,
            sha256: "0".repeat(64),
            created_at: chrono::Utc::now(),
            leader_address: "https://vault-0:8200".into(),
            server_version: None,
            raft_index: 98_765,
            raft_term: 4,
            tool: "test".into(),
            canary: None,
            cluster_name: None,
            cluster_id: None,
            seal_type: None,
            health: None,
        };
        let summary = Summary {
            name: manifest.name.clone(),
            path: manifest.file.clone().into(),
            bytes: manifest.bytes,
            sha256: manifest.sha256.clone(),
            leader: manifest.leader_address.clone(),
            attempt: 1,
            manifest,
        };
        let mut m = Metrics::new();
        summary.metrics(&mut m, SystemTime::now());
        let text = m.render();
        assert!(
            text.contains("vault_backup_snapshot_bytes 251658240\n"),
            "{text}"
        );
        assert!(
            text.contains("vault_backup_snapshot_raft_index 98765\n"),
            "{text}"
        );
        assert_eq!(m.len(), 2, "an unrecorded health pushes no cluster gauge");

        let mut degraded = summary.clone();
        degraded.manifest.health = Some(vault_backup_common::artifact::ClusterHealth {
            status: vault_backup_common::artifact::HealthStatus::Unhealthy,
            healthy: Some(false),
            failure_tolerance: Some(0),
            leader_id: Some("node1".into()),
            leader_term: Some(3),
            leader_last_index: Some(98_765),
            voters: vec!["node1".into(), "node2".into(), "node3".into()],
            reason: None,
        });
        let mut m = Metrics::new();
        degraded.metrics(&mut m, SystemTime::now());
        let text = m.render();
        assert!(text.contains("vault_backup_cluster_healthy 0\n"), "{text}");
        assert!(
            text.contains("vault_backup_cluster_failure_tolerance 0\n"),
            "{text}"
        );
        assert!(text.contains("vault_backup_cluster_voters 3\n"), "{text}");
        let mut unknown = summary.clone();
        unknown.manifest.health =
            Some(vault_backup_common::artifact::ClusterHealth::unknown("403"));
        let mut m = Metrics::new();
        unknown.metrics(&mut m, SystemTime::now());
        assert_eq!(m.len(), 2, "an unknown health pushes no cluster gauge");

        let mut m = Metrics::new();
        Error::Interrupted("SIGTERM").metrics(&mut m, SystemTime::now());
        assert!(m.is_empty());
    }
}
