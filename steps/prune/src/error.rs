//! What can go wrong while pruning or guarding, and the exit code each failure deserves.
//!
//! Configuration errors (exit 2) are one line each: what kube reported is folded into the
//! message rather than printed as `caused by:` lines. Runtime failures (exit 1) keep their
//! causes as sources, printed once each by `main`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use vault_backup_common::ExitStatus;
use vault_backup_common::env::ConfigError;
use vault_backup_common::exit::{CONFIG, FAILED};

use crate::outcome::{Summary, timestamp};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable or file of the configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `KUBECONFIG` names files that cannot be read or used.
    #[error("KUBECONFIG: cannot use {paths} ({detail}); check the file(s) it names")]
    Kubeconfig {
        /// The files, as given.
        paths: String,
        /// What kube reported, on one line.
        detail: String,
    },
    /// Neither a kubeconfig nor the in-cluster service account is available.
    #[error(
        "no Kubernetes client configuration: not in a pod with a service account, and no usable ~/.kube/config ({detail}); set KUBECONFIG for local use"
    )]
    NoClusterConfig {
        /// What kube reported for both, on one line.
        detail: String,
    },
    /// The client could not be built from a configuration that loaded.
    #[error("cannot build the Kubernetes client")]
    Client {
        /// What kube reported.
        #[source]
        source: Box<kube::Error>,
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
        source: Box<kube::Error>,
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
    /// A request got no answer within `PRUNE_TIMEOUT`.
    #[error(
        "the API server did not answer {what} within {}s; check the API server's health, or raise PRUNE_TIMEOUT",
        .after.as_secs_f64()
    )]
    Timeout {
        /// The request, e.g. `the list of TaskRuns in namespace backups`.
        what: String,
        /// The bound that passed.
        after: Duration,
    },
    /// A delete failed.
    #[error("cannot delete TaskRun {name}")]
    Delete {
        /// The TaskRun.
        name: String,
        /// What kube reported.
        #[source]
        source: Box<kube::Error>,
    },
    /// Some deletes failed or were never started; the others went ahead.
    #[error("{}", incomplete(summary))]
    Incomplete {
        /// What was done.
        summary: Box<Summary>,
    },
    /// SIGTERM or SIGINT before any delete was started.
    #[error("stopped by SIGTERM or SIGINT while listing TaskRuns; nothing was deleted")]
    InterruptedListing,
    /// SIGTERM or SIGINT while deleting.
    #[error("{}", interrupted(summary))]
    Interrupted {
        /// What was done before the step stopped.
        summary: Box<Summary>,
    },
    /// Guard mode: an older run of the Task is still running.
    #[error(
        "another run of this Task is running: {name} (started {}); this run stops before it snapshots or uploads anything",
        timestamp(*started)
    )]
    Blocked {
        /// The other run.
        name: String,
        /// Its creation time.
        started: Option<DateTime<Utc>>,
    },
    /// Guard mode: the runs could not be listed, so the guard fails closed.
    #[error(
        "cannot tell whether another run is active; this run stops before it snapshots or uploads anything"
    )]
    GuardUnsure {
        /// Why the runs could not be listed.
        #[source]
        source: Box<Error>,
    },
}

fn incomplete(s: &Summary) -> String {
    let mut text = format!(
        "{} of {} TaskRun deletions failed in namespace {}: {}",
        s.failed.len(),
        s.planned,
        s.namespace,
        s.failed.join(", ")
    );
    if s.not_started == 0 {
        text.push_str("; the step carried on with the rest and will retry them next run");
    } else {
        text.push_str(&format!(
            "; {} more not started once a delete timed out (the API server is not answering); the next run retries them",
            s.not_started
        ));
    }
    text
}

fn interrupted(s: &Summary) -> String {
    let mut text = format!(
        "stopped by SIGTERM or SIGINT in namespace {}: deleted {} of {} planned TaskRuns, {} not started",
        s.namespace,
        s.deleted + s.already_gone,
        s.planned,
        s.not_started
    );
    if !s.failed.is_empty() {
        text.push_str(&format!(", {} failed", s.failed.len()));
    }
    if !s.abandoned.is_empty() {
        text.push_str(&format!(
            ", {} still in flight and may or may not be gone ({})",
            s.abandoned.len(),
            s.abandoned.join(", ")
        ));
    }
    text.push_str("; the next run carries on");
    text
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
            | Self::Timeout { .. }
            | Self::Delete { .. }
            | Self::Incomplete { .. }
            | Self::InterruptedListing
            | Self::Interrupted { .. }
            | Self::Blocked { .. }
            | Self::GuardUnsure { .. } => FAILED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_message_names_the_other_run_and_when_it_started() {
        let e = Error::Blocked {
            name: "vault-backup-run-a1".to_owned(),
            started: DateTime::parse_from_rfc3339("2025-06-30T12:00:00Z")
                .ok()
                .map(|t| t.to_utc()),
        };
        assert_eq!(
            e.to_string(),
            "another run of this Task is running: vault-backup-run-a1 (started 2025-06-30T12:00:00Z); this run stops before it snapshots or uploads anything"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn an_interruption_says_what_was_and_was_not_done() {
        let e = Error::Interrupted {
            summary: Box::new(Summary {
                namespace: "backups".to_owned(),
                planned: 25,
                deleted: 4,
                not_started: 19,
                abandoned: vec!["a".to_owned(), "b".to_owned()],
                ..Summary::default()
            }),
        };
        assert_eq!(
            e.to_string(),
            "stopped by SIGTERM or SIGINT in namespace backups: deleted 4 of 25 planned TaskRuns, 19 not started, 2 still in flight and may or may not be gone (a, b); the next run carries on"
        );
        assert_eq!(e.exit_code(), 1);
    }
}
