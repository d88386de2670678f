//! What a run did, per store: the value [`crate::run`] returns and the Tekton results are
//! written from.

use crate::retention;
use crate::upload::Verification;

/// What the run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The snapshot synced.
    pub snapshot: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256 (hex).
    pub sha256: String,
    /// One report per store, in configuration order (S3, then directory).
    pub stores: Vec<StoreReport>,
}

/// One store's outcome.
#[derive(Debug, Clone)]
pub struct StoreReport {
    /// `s3` or `dir`.
    pub store: &'static str,
    /// Where the snapshot is (URL or path).
    pub location: String,
    /// The upload's error, if it failed (then retention did not run).
    pub upload_error: Option<String>,
    /// The store already held this snapshot (same `.sha256`, `.snap` of the right size), so
    /// nothing was copied.
    pub already_there: bool,
    /// How the copy in the store was checked; `None` if the store holds no verified copy.
    pub verification: Option<Verification>,
    /// Seconds the upload took.
    pub seconds: f64,
    /// The retention plan carried out (or, on a dry run, logged); `None` if retention did not run.
    pub retention: Option<Vec<retention::Decision>>,
    /// Snapshots deleted by retention.
    pub deleted: Vec<String>,
    /// Bytes of the files retention deleted.
    pub deleted_bytes: u64,
    /// Complete snapshots the store holds after retention; `None` when unknown (the upload
    /// failed, the step was stopped, or the store could not be listed).
    pub held: Option<usize>,
    /// Temp files (`.vault-backup-*.tmp`) older than the limit that were removed (on a dry
    /// run: that would be).
    pub temp_files_removed: Vec<String>,
    /// The retention error, if deleting (snapshots or stale temp files) failed.
    pub retention_error: Option<String>,
    /// Whether the store's bucket has Object Lock enabled; `None` for a store without locks
    /// (a directory) or whose configuration could not be read.
    pub object_lock: Option<bool>,
    /// Until when the snapshot this run synced is locked against deletion, if it is.
    pub locked_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl Summary {
    /// How each store that holds a verified copy had it checked, as the
    /// `store-verification` result says it: `s3=sha256,dir=size-only`.
    #[must_use]
    pub fn verification(&self) -> String {
        self.stores
            .iter()
            .filter_map(|r| r.verification.map(|v| format!("{}={v}", r.store)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl StoreReport {
    /// The store holds a verified copy.
    #[must_use]
    pub fn synced(&self) -> bool {
        self.upload_error.is_none()
    }

    /// Upload and retention both succeeded.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.upload_error.is_none() && self.retention_error.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &'static str, verification: Option<Verification>) -> StoreReport {
        StoreReport {
            store: name,
            location: String::new(),
            upload_error: verification.is_none().then(|| "failed".to_owned()),
            already_there: false,
            verification,
            seconds: 0.0,
            retention: None,
            deleted: Vec::new(),
            deleted_bytes: 0,
            held: None,
            temp_files_removed: Vec::new(),
            retention_error: None,
            object_lock: None,
            locked_until: None,
        }
    }

    #[test]
    fn the_verification_result_names_each_store_that_holds_a_copy() {
        let summary = |stores| Summary {
            snapshot: "vault-20261124T060000Z".into(),
            bytes: 1,
            sha256: String::new(),
            stores,
        };
        let both = summary(vec![
            store("s3", Some(Verification::SizeOnly)),
            store("dir", Some(Verification::Sha256)),
        ]);
        assert_eq!(both.verification(), "s3=size-only,dir=sha256");
        let one_failed = summary(vec![
            store("s3", None),
            store("dir", Some(Verification::Sha256)),
        ]);
        assert_eq!(one_failed.verification(), "dir=sha256");
        assert_eq!(summary(Vec::new()).verification(), "");
    }
}
