//! What a sync run tells the Pushgateway besides its outcome: per store, when it last received
//! a verified copy, how many complete snapshots it holds after retention, and how many bytes
//! retention deleted.
//!
//! Only a store that holds a verified copy of this run's snapshot gets a new
//! `vault_backup_store_last_success_timestamp_seconds`, also when another store failed (the step
//! then exits 1): a store that failed pushes nothing, so its series keep their last values and
//! age, which is what the "one store failing" alert watches. A store whose copy landed but
//! whose retention failed did receive the copy, so it gets the timestamp; the step's failure
//! (exit 1, `last_failure`) is what reports the retention error.
//!
//! A store with Object Lock (S3) also pushes [`STORE_OBJECT_LOCK`] (whether its bucket has
//! Object Lock enabled; an alert watches for a 1 that became 0) and, when the copy is locked,
//! [`STORE_LOCKED_UNTIL`].
//!
//! With its copy, each such store pushes [`STORE_VERIFIED_SHA256`]: 1 when the copy was checked
//! by SHA-256, 0 when only by its size (an S3 server that states no checksum), so an alert can
//! ask for SHA-256 where the README promises it.

use std::time::SystemTime;

use vault_backup_common::metrics::{
    Metrics, Report, STORE_DELETED_BYTES, STORE_LAST_SUCCESS, STORE_LOCKED_UNTIL,
    STORE_OBJECT_LOCK, STORE_SNAPSHOTS, STORE_VERIFIED_SHA256,
};

use crate::error::Error;
use crate::report::Summary;
use crate::upload::Verification;

/// The step name the sync step pushes under (the alert rules expect it).
pub const STEP: &str = "snapshot-sync";

impl Report for Summary {
    fn metrics(&self, metrics: &mut Metrics, at: SystemTime) {
        for store in self.stores.iter().filter(|s| s.synced()) {
            let label = [store.store];
            metrics.set_time(STORE_LAST_SUCCESS, &label, at);
            if let Some(v) = store.verification {
                let sha256 = if v == Verification::Sha256 { 1.0 } else { 0.0 };
                metrics.set_with(STORE_VERIFIED_SHA256, &label, sha256);
            }
            // Exact up to 2^53; no store holds that many bytes or snapshots.
            #[allow(clippy::cast_precision_loss)]
            metrics.set_with(STORE_DELETED_BYTES, &label, store.deleted_bytes as f64);
            if let Some(held) = store.held {
                #[allow(clippy::cast_precision_loss)]
                metrics.set_with(STORE_SNAPSHOTS, &label, held as f64);
            }
            if let Some(lock) = store.object_lock {
                metrics.set_with(STORE_OBJECT_LOCK, &label, if lock { 1.0 } else { 0.0 });
            }
            if let Some(until) = store.locked_until {
                metrics.set_time(STORE_LOCKED_UNTIL, &label, until.into());
            }
        }
    }
}

/// Some stores failed: the ones that succeeded still push their series. Any other failure
/// happened before a store was touched and pushes only the outcome.
impl Report for Error {
    fn metrics(&self, metrics: &mut Metrics, at: SystemTime) {
        if let Self::StoresFailed { summary, .. } = self {
            summary.metrics(metrics, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StoreReport;

    fn store(name: &'static str, upload_error: Option<&str>, held: Option<usize>) -> StoreReport {
        StoreReport {
            store: name,
            location: format!("{name}://somewhere"),
            upload_error: upload_error.map(str::to_owned),
            already_there: false,
            verification: upload_error.is_none().then_some(Verification::Sha256),
            seconds: 1.0,
            retention: None,
            deleted: vec!["vault-20261101T000000Z".into()],
            deleted_bytes: 4096,
            held,
            temp_files_removed: Vec::new(),
            retention_error: None,
            object_lock: None,
            locked_until: None,
        }
    }

    fn summary(stores: Vec<StoreReport>) -> Summary {
        Summary {
            snapshot: "vault-20261124T020000Z".into(),
            bytes: 10,
            sha256: "0".repeat(64),
            stores,
        }
    }

    #[test]
    fn each_synced_store_pushes_its_series_and_a_failed_one_nothing() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let s = summary(vec![
            store("s3", Some("s3: put failed"), Some(3)),
            store("dir", None, Some(7)),
        ]);
        let err = Error::StoresFailed {
            failed: vec!["s3"],
            summary: Box::new(s.clone()),
        };
        for report in [&s as &dyn Report, &err] {
            let mut m = Metrics::new();
            report.metrics(&mut m, at);
            let text = m.render();
            assert_eq!(
                text,
                "# HELP vault_backup_store_last_success_timestamp_seconds Unix time the store last received a complete copy of a snapshot\n\
                 # TYPE vault_backup_store_last_success_timestamp_seconds gauge\n\
                 vault_backup_store_last_success_timestamp_seconds{store=\"dir\"} 1700000000\n\
                 # HELP vault_backup_store_verified_sha256 1 if the store's last copy was checked by SHA-256, 0 if by its size only\n\
                 # TYPE vault_backup_store_verified_sha256 gauge\n\
                 vault_backup_store_verified_sha256{store=\"dir\"} 1\n\
                 # HELP vault_backup_store_deleted_bytes Bytes retention deleted from the store in the last run\n\
                 # TYPE vault_backup_store_deleted_bytes gauge\n\
                 vault_backup_store_deleted_bytes{store=\"dir\"} 4096\n\
                 # HELP vault_backup_store_snapshots Complete snapshots the store holds after retention\n\
                 # TYPE vault_backup_store_snapshots gauge\n\
                 vault_backup_store_snapshots{store=\"dir\"} 7\n"
            );
        }
    }

    #[test]
    fn a_locked_store_pushes_its_lock_and_retain_until() {
        let mut s3 = store("s3", None, Some(2));
        s3.object_lock = Some(true);
        s3.locked_until = chrono::DateTime::from_timestamp(1_700_086_400, 0);
        let mut unlocked = store("s3", None, Some(2));
        unlocked.object_lock = Some(false);
        let mut m = Metrics::new();
        summary(vec![s3, store("dir", None, Some(2))]).metrics(&mut m, SystemTime::now());
        let text = m.render();
        assert!(
            text.contains("vault_backup_store_object_lock{store=\"s3\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "vault_backup_store_locked_until_timestamp_seconds{store=\"s3\"} 1700086400\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("vault_backup_store_object_lock{store=\"dir\"}"),
            "{text}"
        );
        let mut m = Metrics::new();
        summary(vec![unlocked]).metrics(&mut m, SystemTime::now());
        let text = m.render();
        assert!(
            text.contains("vault_backup_store_object_lock{store=\"s3\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("locked_until"), "{text}");
    }

    #[test]
    fn an_unknown_count_is_not_pushed_and_other_errors_push_nothing() {
        let mut m = Metrics::new();
        summary(vec![store("s3", None, None)]).metrics(&mut m, SystemTime::now());
        assert!(!m.render().contains("vault_backup_store_snapshots"));
        assert_eq!(m.len(), 3);

        let mut m = Metrics::new();
        Error::Interrupted.metrics(&mut m, SystemTime::now());
        assert!(m.is_empty());
    }
}
