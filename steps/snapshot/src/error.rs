//! What can go wrong while taking a snapshot, and which failures are worth a retry.

use std::path::PathBuf;

use vault_backup_common::ExitStatus;
use vault_backup_common::env::ConfigError;
use vault_backup_common::exit;

/// The snapshot step's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure of the snapshot step. Messages name the node, then the cause, then a hint; they
/// never contain a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (found while building the client).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Talking to Vault or receiving the snapshot failed.
    #[error(transparent)]
    Vault(#[from] vault_backup_vault::Error),
    /// A Tekton result file could not be written.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Terminated by a signal; nothing was left under a final name.
    #[error("interrupted by {0}; the partial download was removed")]
    Interrupted(&'static str),
    /// Every attempt failed.
    #[error("no verified snapshot after {attempts} attempts")]
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Box<Error>,
    },
}

impl Error {
    /// Whether another attempt might succeed: network trouble, elections, sealed nodes during a
    /// rolling restart, broken or corrupt transfers (see [`vault_backup_vault::Error::is_retryable`]).
    /// Not: permissions, TLS trust, configuration, local disk errors.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Vault(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl ExitStatus for Error {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => exit::CONFIG,
            Self::Vault(e) if e.is_config() => exit::CONFIG,
            _ => exit::FAILED,
        }
    }
}
