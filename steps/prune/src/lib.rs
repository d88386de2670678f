//! Caps the TaskRuns that backup runs leave behind, through the Kubernetes API.
//!
//! Every backup run leaves a TaskRun and its pod in the namespace. This step lists the runs of
//! the backup Task (by label, page by page), decides with a pure [`policy`] which old finished
//! runs to delete, logs that plan, and deletes them with background propagation so their pods
//! go too. It never deletes a run that has not finished, nor the run it runs in, nor a run whose
//! age it cannot tell. It needs only `list` and `delete` on `taskruns` (see `tekton/rbac.yaml`).
//!
//! Configuration (environment):
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `PRUNE_NAMESPACE` | the service account's namespace, else the kubeconfig context's | where the TaskRuns are |
//! | `KUBECONFIG` | unset: in-cluster service account (or `~/.kube/config`) | kubeconfig file(s) for local use |
//! | `PRUNE_SELECTOR` | `tekton.dev/task=vault-backup` | label selector of the runs to consider |
//! | `PRUNE_KEEP` | `10` | newest finished runs to keep (succeeded only, with `PRUNE_KEEP_FAILED`) |
//! | `PRUNE_KEEP_FAILED` | unset | count failed runs apart and keep the newest this many |
//! | `PRUNE_MAX_AGE` | unset | also delete kept runs that completed longer ago (`30d`, `720h`) |
//! | `PRUNE_CURRENT` | unset | the TaskRun this step runs in: never deleted |
//! | `PRUNE_DRY_RUN` | `false` | log the plan ("would delete N TaskRuns") and delete nothing |
//! | `PRUNE_PAGE_SIZE` | `500` | TaskRuns per list request (`limit`) |

pub mod config;
pub mod error;
pub mod kube;
pub mod outcome;
pub mod policy;

use std::path::Path;

use chrono::Utc;
use futures::StreamExt;
use tracing::{debug, error, info, warn};

pub use config::{Config, RawConfig};
pub use error::{Error, Result};
pub use outcome::Summary;

use crate::config::{SERVICE_ACCOUNT_NAMESPACE, resolve_namespace};
use crate::kube::{Deleted, TaskRuns};

/// `--help` text.
pub const USAGE: &str = "\
Deletes old finished TaskRuns of the backup Task through the Kubernetes API.

Configuration comes from environment variables:
  PRUNE_NAMESPACE    namespace of the TaskRuns (default: the service account's namespace,
                     else the kubeconfig context's)
  KUBECONFIG         kubeconfig file(s) for local use (default: in-cluster service account)
  PRUNE_SELECTOR     label selector (default: tekton.dev/task=vault-backup)
  PRUNE_KEEP         newest finished runs to keep (default: 10)
  PRUNE_KEEP_FAILED  count failed runs apart and keep the newest this many (default: unset)
  PRUNE_MAX_AGE      also delete kept runs that completed longer ago, e.g. 30d (default: unset)
  PRUNE_CURRENT      the TaskRun this step runs in, never deleted ($(context.taskRun.name))
  PRUNE_DRY_RUN      true: log what would be deleted and delete nothing (default: false)
  PRUNE_PAGE_SIZE    TaskRuns per list request (default: 500)

Runs that have not finished, and finished runs missing a timestamp, are never deleted.
Exit codes: 0 done, 1 a list or some deletes failed, 2 invalid configuration.";

/// Deletes in flight at once: enough to clear a backlog of thousands in seconds, few enough not
/// to crowd the API server.
const DELETE_CONCURRENCY: usize = 4;

/// Lists the selected TaskRuns, plans, logs the plan and (unless a dry run) deletes.
///
/// # Errors
/// Exit-2 errors for an unusable kubeconfig, namespace file or selector; [`Error::List`] if
/// listing fails (nothing is deleted then); [`Error::Incomplete`] if some deletes failed, after
/// all the others were carried out.
pub async fn run(config: Config) -> Result<Summary> {
    let client_config = kube::client_config(&config.kubeconfig).await?;
    let namespace = resolve_namespace(
        config.namespace.as_deref(),
        Path::new(SERVICE_ACCOUNT_NAMESPACE),
        &client_config.default_namespace,
    )?;
    let taskruns = TaskRuns::new(kube::client(client_config)?, &namespace);

    let listing = taskruns.list(&config.selector, config.page_size).await?;
    info!(
        namespace = %namespace,
        selector = %config.selector,
        listed = listing.runs.len(),
        pages = listing.pages,
        "listed TaskRuns"
    );
    let decisions = policy::plan(&listing.runs, &config.policy, Utc::now());
    // Oldest first, so that a step cut short by its timeout has removed the oldest runs.
    let mut doomed: Vec<_> = listing
        .runs
        .iter()
        .zip(&decisions)
        .filter(|(_, d)| d.delete)
        .collect();
    doomed.sort_by(|(a, _), (b, _)| {
        (a.completed, a.created, &a.name).cmp(&(b.completed, b.created, &b.name))
    });
    for d in decisions.iter().filter(|d| !d.delete) {
        debug!(taskrun = %d.name, reason = %d.reason, "keep");
    }

    let mut summary = Summary {
        namespace: namespace.clone(),
        listed: listing.runs.len(),
        pages: listing.pages,
        planned: doomed.len(),
        kept: decisions.len() - doomed.len(),
        dry_run: config.dry_run,
        ..Summary::default()
    };
    if config.dry_run {
        for (_, d) in &doomed {
            info!(taskrun = %d.name, reason = %d.reason, "would delete");
        }
        info!(
            namespace = %namespace,
            kept = summary.kept,
            "would delete {} TaskRuns (dry run: nothing deleted)",
            doomed.len()
        );
        return Ok(summary);
    }

    info!(namespace = %namespace, kept = summary.kept, "deleting {} TaskRuns", doomed.len());
    let mut results = futures::stream::iter(doomed.iter().map(|(_, d)| {
        let taskruns = taskruns.clone();
        async move { (d, taskruns.delete(&d.name).await) }
    }))
    .buffer_unordered(DELETE_CONCURRENCY);
    while let Some((d, result)) = results.next().await {
        match result {
            Ok(Deleted::Now) => {
                summary.deleted += 1;
                info!(taskrun = %d.name, reason = %d.reason, "deleted");
            }
            Ok(Deleted::AlreadyGone) => {
                summary.already_gone += 1;
                info!(taskrun = %d.name, "already gone");
            }
            Err(e) => {
                error!(taskrun = %d.name, error = %e, "delete failed; carrying on with the rest");
                summary.failed.push(d.name.clone());
            }
        }
    }
    summary.failed.sort();
    info!(
        namespace = %namespace,
        deleted = summary.deleted,
        already_gone = summary.already_gone,
        kept = summary.kept,
        failed = summary.failed.len(),
        "pruned TaskRuns"
    );
    if summary.failed.is_empty() {
        Ok(summary)
    } else {
        warn!("{} deletes failed", summary.failed.len());
        Err(Error::Incomplete { summary })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_backup_common::env;

    #[test]
    fn usage_and_docs_list_every_variable_read() {
        let names = env::variables::<RawConfig>();
        assert_eq!(names.len(), 9, "{names:?}");
        for name in names {
            assert!(
                USAGE.contains(&format!("  {name} ")),
                "{name} missing from USAGE"
            );
        }
    }
}
