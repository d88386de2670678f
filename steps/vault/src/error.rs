//! What can go wrong when talking to Vault or receiving a snapshot, and which failures are worth
//! a retry. Every step that speaks Vault wraps this enum in its own.

use std::path::PathBuf;
use std::time::Duration;

use vault_backup_common::artifact::ArtifactError;
use vault_backup_common::env::ConfigError;

use crate::archive::ArchiveError;

/// The Vault client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure talking to Vault. Messages name the node, then the cause, then a hint; they never
/// contain a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (found while building the client).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No connection could be made (refused, DNS, reset).
    #[error("vault at {addr} is unreachable; check VAULT_ADDR and that the node is running")]
    Unreachable {
        /// The node.
        addr: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The TLS handshake failed: usually an untrusted or mismatched certificate.
    #[error(
        "TLS with vault at {addr} failed; set VAULT_CACERT to the CA that signed its certificate"
    )]
    Tls {
        /// The node.
        addr: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A request or the whole attempt took too long.
    #[error("vault at {addr} did not answer within {after:?}; {}", raise(*.variable))]
    Timeout {
        /// The node.
        addr: String,
        /// The limit that passed.
        after: Duration,
        /// The variable that sets the limit (`SNAPSHOT_TIMEOUT`, `RESTORE_TIMEOUT`), or `None`
        /// for a fixed limit of a short request, which no variable changes.
        variable: Option<&'static str>,
    },
    /// The node is sealed (503).
    #[error("vault at {addr} is sealed; unseal it first")]
    Sealed {
        /// The node.
        addr: String,
    },
    /// A standby that names no leader (no election yet, or HA off).
    #[error(
        "vault at {addr} is a standby and gave no leader address; check VAULT_ADDR and the cluster's health"
    )]
    NoLeader {
        /// The node asked.
        addr: String,
    },
    /// The node named as leader does not say it leads (an election is under way).
    #[error(
        "vault at {addr} was named leader but is not the active node (an election may be under way)"
    )]
    NotLeader {
        /// The node.
        addr: String,
    },
    /// A standby named a leader on another scheme than `VAULT_ADDR`'s; nothing was sent to it.
    #[error(
        "vault at {asked} names the leader {leader}, whose scheme differs from VAULT_ADDR's; no credential was sent to it. Point VAULT_ADDR at the Service of the active node (or fix the nodes' api_addr)"
    )]
    SchemeMismatch {
        /// The node asked (`VAULT_ADDR`).
        asked: String,
        /// The leader it named.
        leader: String,
    },
    /// The snapshot request was redirected somewhere other than the leader `sys/leader` named.
    #[error(
        "vault at {from} redirected the snapshot to {to}, not to the leader {leader} that sys/leader named; the token was not sent there"
    )]
    Redirect {
        /// The node that redirected.
        from: String,
        /// Where it pointed.
        to: String,
        /// The leader `sys/leader` named.
        leader: String,
    },
    /// 429 Too Many Requests: a rate limit (or lease count) quota refused the request. On the
    /// endpoints the steps call, 429 means only that; "standby" is sys/health's meaning of it,
    /// which the steps do not call.
    #[error(
        "vault at {addr} refused {what} with 429 Too Many Requests (a rate limit or lease count quota): {detail}"
    )]
    RateLimited {
        /// The node.
        addr: String,
        /// What was asked.
        what: &'static str,
        /// What Vault said.
        detail: String,
    },
    /// 403 on the snapshot path.
    #[error(
        "vault at {addr} denied the snapshot (403 permission denied): the token's policy needs `read` on sys/storage/raft/snapshot (see tekton/vault-policy.hcl)"
    )]
    PermissionDenied {
        /// The node.
        addr: String,
    },
    /// 403 on another path than the snapshot's: names what was asked and the policy it needs.
    #[error(
        "vault at {addr} denied {what} (403 permission denied): the token's policy needs {needs}"
    )]
    Forbidden {
        /// The node.
        addr: String,
        /// What was asked, e.g. `the canary write to secret/data/vault-backup/canary`.
        what: String,
        /// The capability and path it needs, and the policy file that grants it.
        needs: String,
    },
    /// The cluster does not use integrated storage.
    #[error(
        "vault at {addr} does not use integrated storage (raft): {detail}; this tool backs up raft clusters only"
    )]
    NotRaft {
        /// The node.
        addr: String,
        /// What it said.
        detail: String,
    },
    /// Login failed.
    #[error("login with {method} at {addr} failed ({status}): {detail}")]
    Login {
        /// The node.
        addr: String,
        /// The auth method, e.g. `approle at auth/approle`.
        method: String,
        /// The HTTP status.
        status: u16,
        /// What Vault said.
        detail: String,
    },
    /// Any other unexpected answer.
    #[error("vault at {addr} answered {status} to {what}: {detail}")]
    Http {
        /// The node.
        addr: String,
        /// What was asked.
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// What Vault said.
        detail: String,
    },
    /// The body stream broke before its end.
    #[error("the snapshot stream from {addr} broke after {bytes} bytes")]
    Stream {
        /// The node.
        addr: String,
        /// Bytes received.
        bytes: u64,
        /// The transport or store error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The archive failed its own checks.
    #[error("the snapshot from {addr} is not a whole raft snapshot ({bytes} bytes received)")]
    Archive {
        /// The node.
        addr: String,
        /// Bytes received.
        bytes: u64,
        /// What is wrong.
        #[source]
        source: ArchiveError,
    },
    /// A local file could not be written.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The sidecars of a saved snapshot could not be written (the `.snap` was removed again).
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// A snapshot with this name already exists: two runs in the same second, or a reused prefix.
    #[error("{} already exists; not overwriting a finished snapshot", path.display())]
    Exists {
        /// The snapshot file.
        path: PathBuf,
    },
}

/// The hint of a timeout: the variable that really sets the limit that expired, and never one
/// that does not (a fixed limit on a short request is not raised by `RESTORE_TIMEOUT`).
fn raise(variable: Option<&'static str>) -> String {
    match variable {
        Some(v) => format!("raise {v} for very large snapshots"),
        None => "this is the step's fixed limit for a short request (no variable changes it): check the node's health and the network to it".to_owned(),
    }
}

impl Error {
    /// Whether another attempt might succeed: network trouble, elections, sealed nodes during a
    /// rolling restart, broken or corrupt transfers. Not: permissions, TLS trust, configuration,
    /// local disk errors.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. }
            | Self::Timeout { .. }
            | Self::Sealed { .. }
            | Self::NoLeader { .. }
            | Self::NotLeader { .. }
            | Self::Redirect { .. }
            | Self::RateLimited { .. }
            | Self::Stream { .. }
            | Self::Archive { .. } => true,
            Self::Http { status, .. } | Self::Login { status, .. } => {
                *status >= 500 || *status == 429
            }
            _ => false,
        }
    }

    /// Whether this is a configuration error (exit 2).
    #[must_use]
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config(_))
    }
}
