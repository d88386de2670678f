//! What can stop the sync step, and its exit code.

use std::path::PathBuf;

use vault_backup_common::artifact::ArtifactError;
use vault_backup_common::env::ConfigError;
use vault_backup_common::exit::{CONFIG, ExitStatus, FAILED};

use crate::report::Summary;

/// Everything that can stop the step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No snapshot to sync.
    #[error(
        "no complete snapshot named {prefix}-<timestamp> (with its .sha256) in {}; run the snapshot step first, or check SNAPSHOT_DIR and SNAPSHOT_PREFIX",
        dir.display()
    )]
    NoSnapshot {
        /// The workspace.
        dir: PathBuf,
        /// The prefix looked for.
        prefix: String,
    },
    /// The snapshot in the workspace is incomplete, unreadable or does not match its checksum.
    #[error("snapshot {name} in the workspace failed verification; nothing was uploaded")]
    Workspace {
        /// The snapshot.
        name: String,
        /// Why.
        #[source]
        source: ArtifactError,
    },
    /// Some stores failed; the others were done.
    #[error("{} of {} stores failed: {}", failed.len(), summary.stores.len(), failed.join(", "))]
    StoresFailed {
        /// The names of the stores that failed.
        failed: Vec<&'static str>,
        /// What was done.
        summary: Box<Summary>,
    },
    /// `S3_OBJECT_LOCK_MODE` asks for a lock the bucket cannot give: nothing was uploaded.
    #[error(
        "S3_OBJECT_LOCK_MODE asks for Object Lock but bucket {bucket} has none enabled ({protection}); nothing was uploaded. Object Lock is enabled when a bucket is created (aws s3api create-bucket --object-lock-enabled-for-bucket) or, on AWS, on a versioned bucket (put-object-lock-configuration); see the README, or unset S3_OBJECT_LOCK_MODE and S3_OBJECT_LOCK_DAYS"
    )]
    LockUnavailable {
        /// The bucket, as a URL.
        bucket: String,
        /// What the bucket does have.
        protection: String,
    },
    /// The bucket's Object Lock configuration could not be read while a lock is asked for.
    #[error(
        "cannot read the Object Lock configuration of {bucket}, which S3_OBJECT_LOCK_MODE asks to lock; nothing was uploaded (the key needs s3:GetBucketObjectLockConfiguration and s3:GetBucketVersioning)"
    )]
    LockUnknown {
        /// The bucket, as a URL.
        bucket: String,
        /// Why.
        #[source]
        source: vault_backup_stores::store::Error,
    },
    /// SIGTERM or SIGINT arrived; uploads in flight were aborted.
    #[error(
        "interrupted by a signal: uploads in flight were aborted and nothing is left under a final name"
    )]
    Interrupted,
}

impl ExitStatus for Error {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => CONFIG,
            _ => FAILED,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
