//! What a restore run tells the Pushgateway besides its outcome: for a drill, when it last
//! proved a snapshot restorable and how long that took.
//!
//! Both modes push under [`STEP`]; the drill and a disaster-recovery restore run in Tasks of
//! their own (`METRICS_TASK` is the Task's name), so their series never overwrite each other
//! or the backup's. Only a drill that passed sets the drill gauges: a failed drill pushes its
//! failure, and the last passing drill's time stays for the "drill too old" alert.

use std::time::SystemTime;

use vault_backup_common::metrics::{
    Metrics, RESTORE_DRILL_DURATION, RESTORE_DRILL_LAST_SUCCESS, Report,
};

use crate::error::Error;
use crate::report::Summary;

/// The step name the restore step pushes under (the alert rules expect it).
pub const STEP: &str = "vault-restore";

impl Report for Summary {
    fn metrics(&self, metrics: &mut Metrics, at: SystemTime) {
        if self.drill {
            metrics
                .set_time(RESTORE_DRILL_LAST_SUCCESS, &[], at)
                .set(RESTORE_DRILL_DURATION, self.seconds);
        }
    }
}

/// A failed restore or drill proved nothing: its outcome is all it pushes.
impl Report for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(drill: bool) -> Summary {
        Summary {
            name: "vault-20261124T020000Z".into(),
            seconds: 12.5,
            raft_index: 42,
            canary: drill.then_some("ok"),
            sealed: (!drill).then_some(false),
            safety_snapshot: None,
            drill,
            recovered: None,
        }
    }

    #[test]
    fn a_passed_drill_pushes_its_time_and_duration_and_a_cluster_restore_only_its_outcome() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut m = Metrics::new();
        summary(true).metrics(&mut m, at);
        let text = m.render();
        assert!(
            text.contains("vault_backup_restore_drill_last_success_timestamp_seconds 1700000000\n"),
            "{text}"
        );
        assert!(
            text.contains("vault_backup_restore_drill_duration_seconds 12.5\n"),
            "{text}"
        );

        let mut m = Metrics::new();
        summary(false).metrics(&mut m, at);
        assert!(m.is_empty());
    }
}
