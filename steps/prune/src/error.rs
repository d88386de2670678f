//! What can go wrong while pruning, and the exit code each failure deserves.

use vault_backup_common::ExitStatus;
use vault_backup_common::env::ConfigError;
use vault_backup_common::exit::{CONFIG, FAILED};

use crate::outcome::Summary;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable or file of the configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `KUBECONFIG` names files that cannot be read or used.
    #[error("KUBECONFIG: cannot use {paths}; check the file(s) it names")]
    Kubeconfig {
        /// The files, as given.
        paths: String,
        /// What kube reported.
        #[source]
        source: ::kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster service account is available.
    #[error(
        "no Kubernetes client configuration: not in a pod with a service account, and no ~/.kube/config; set KUBECONFIG for local use"
    )]
    NoClusterConfig {
        /// What kube reported for both.
        #[source]
        source: ::kube::config::InferConfigError,
    },
    /// The client could not be built from a configuration that loaded.
    #[error("cannot build the Kubernetes client")]
    Client {
        /// What kube reported.
        #[source]
        source: Box<::kube::Error>,
    },
    /// The API server refused the label selector.
    #[error("PRUNE_SELECTOR: the API server rejected the label selector {selector:?}: {message}")]
    SelectorRejected {
        /// The selector sent.
        selector: String,
        /// The server's message.
        message: String,
    },
    /// A list request failed.
    #[error(
        "cannot list TaskRuns in namespace {namespace} with selector {selector:?}; check that the service account may list taskruns there (tekton/rbac.yaml)"
    )]
    List {
        /// The namespace.
        namespace: String,
        /// The selector.
        selector: String,
        /// What kube reported.
        #[source]
        source: Box<::kube::Error>,
    },
    /// The server returned the same `continue` token it was sent.
    #[error(
        "listing TaskRuns in namespace {namespace}: the API server returned the same continue token again after {pages} pages; stopped rather than loop"
    )]
    ListLoop {
        /// The namespace.
        namespace: String,
        /// Pages read.
        pages: usize,
    },
    /// Some deletes failed; the others went ahead.
    #[error(
        "{} of {} TaskRun deletions failed in namespace {}: {}; the step carried on with the rest and will retry them next run",
        .summary.failed.len(),
        .summary.planned,
        .summary.namespace,
        .summary.failed.join(", ")
    )]
    Incomplete {
        /// What was done.
        summary: Summary,
    },
}

impl ExitStatus for Error {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_)
            | Self::Kubeconfig { .. }
            | Self::NoClusterConfig { .. }
            | Self::SelectorRejected { .. } => CONFIG,
            Self::Client { .. }
            | Self::List { .. }
            | Self::ListLoop { .. }
            | Self::Incomplete { .. } => FAILED,
        }
    }
}
