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
