//! Caps the TaskRuns that backup runs leave behind, and keeps two runs from overlapping,
//! through the Kubernetes API.
//!
//! Every backup run leaves a TaskRun and its pod in the namespace. In prune mode (the default)
//! this step lists the runs of the backup Task (by label, page by page), decides with a pure
//! [`policy`] which old finished runs to delete, logs that plan, and deletes them with
//! background propagation so their pods go too. It never deletes a run that has not finished,
//! nor the run it runs in, nor a run that belongs to a PipelineRun, nor a run whose age it
//! cannot tell. It needs only `list` and `delete` on `taskruns` (see `tekton/rbac.yaml`).
//!
//! In guard mode (`PRUNE_MODE=guard`) it deletes nothing: it lists the same runs and fails
//! (exit 1, naming the other run) if an older run of the Task is still running, so that a
//! second run stops before it snapshots or uploads anything; the rules are in [`guard`]. It
//! fails closed: a run that cannot list the runs stops too.
//!
//! Every list and delete is bounded by `PRUNE_TIMEOUT`. SIGTERM or SIGINT stop it: no new
//! delete starts, those in flight get a few seconds, it logs what was and was not done and
//! exits 1. Each mode leaves a one-line outcome as a Tekton result, on success and on failure.
//!
//! Configuration (environment):
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `PRUNE_MODE` | `prune` | `prune`: delete old runs; `guard`: delete nothing, exit 1 if an older run is still running |
//! | `PRUNE_NAMESPACE` | the service account's namespace, else the kubeconfig context's | where the TaskRuns are |
//! | `KUBECONFIG` | unset: in-cluster service account (or `~/.kube/config`) | kubeconfig file(s) for local use |
//! | `PRUNE_SELECTOR` | `tekton.dev/task=vault-backup` | label selector of the runs to consider |
//! | `PRUNE_KEEP` | `10` | newest finished runs to keep (succeeded only, with `PRUNE_KEEP_FAILED`) |
//! | `PRUNE_KEEP_FAILED` | unset | count failed runs apart and keep the newest this many |
//! | `PRUNE_MAX_AGE` | unset | also delete kept runs that completed longer ago (`30d`, `720h`) |
//! | `PRUNE_CURRENT` | unset (required in guard mode) | the TaskRun this step runs in: never deleted, and the run the guard decides for |
//! | `PRUNE_DRY_RUN` | `false` | log the plan ("would delete N TaskRuns") and delete nothing |
//! | `PRUNE_PAGE_SIZE` | `500` | TaskRuns per list request (`limit`) |
//! | `PRUNE_TIMEOUT` | `30s` | bound on each list or delete request |
//! | `RESULT_PRUNE_OUTCOME_PATH` | unset | file for the `prune-outcome` result: `deleted 3, kept 10`, `dry run: would delete 3, kept 10` or `failed: <error>` |
//! | `RESULT_GUARD_OUTCOME_PATH` | unset | file for the `guard-outcome` result: `clear`, `blocked by <name>` or `failed: <error>` |
//! | `RESULTS_DIR` | unset | directory to write results to, one file per result, where no own path is given |
//!
//! The `METRICS_*` variables of [`vault_backup_common::metrics`] push each prune run's outcome
//! and its TaskRuns deleted and kept to a Prometheus Pushgateway; guard mode pushes nothing
//! (see [`metrics`]).

pub mod config;
pub mod error;
pub mod guard;
pub mod kube;
pub mod metrics;
pub mod outcome;
pub mod policy;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use vault_backup_common::exit::one_line;

pub use config::{Config, Mode, RawConfig};
pub use error::{Error, Result};
pub use outcome::{Clear, Outcome, Summary};

use crate::config::{SERVICE_ACCOUNT_NAMESPACE, resolve_namespace};
use crate::guard::Verdict;
use crate::kube::{Deleted, Listing, TaskRuns};

/// `--help` text.
pub const USAGE: &str = "\
Deletes old finished TaskRuns of the backup Task through the Kubernetes API, or (guard mode)
stops a run while an older run of the Task is still running.

Configuration comes from environment variables:
  PRUNE_MODE         prune (default): delete old runs; guard: delete nothing, exit 1 if an
                     older run of the Task is still running (needs PRUNE_CURRENT)
  PRUNE_NAMESPACE    namespace of the TaskRuns (default: the service account's namespace,
                     else the kubeconfig context's)
  KUBECONFIG         kubeconfig file(s) for local use (default: in-cluster service account)
  PRUNE_SELECTOR     label selector (default: tekton.dev/task=vault-backup)
  PRUNE_KEEP         newest finished runs to keep (default: 10)
  PRUNE_KEEP_FAILED  count failed runs apart and keep the newest this many (default: unset)
  PRUNE_MAX_AGE      also delete kept runs that completed longer ago, e.g. 30d (default: unset)
  PRUNE_CURRENT      the TaskRun this step runs in ($(context.taskRun.name)): never deleted;
                     required in guard mode
  PRUNE_DRY_RUN      true: log what would be deleted and delete nothing (default: false)
  PRUNE_PAGE_SIZE    TaskRuns per list request (default: 500)
  PRUNE_TIMEOUT      bound on each list or delete request (default: 30s)
  RESULT_PRUNE_OUTCOME_PATH  file for the prune-outcome result: \"deleted 3, kept 10\",
                     \"dry run: would delete 3, kept 10\" or \"failed: <error>\"
  RESULT_GUARD_OUTCOME_PATH  file for the guard-outcome result: \"clear\", \"blocked by <name>\"
                     or \"failed: <error>\"
  RESULTS_DIR        directory for results without their own path (one file per result)

Runs that have not finished, runs that belong to a PipelineRun, and finished runs missing a
timestamp, are never deleted. SIGTERM/SIGINT: no new deletes start, the step reports what it did
and exits 1.
Exit codes: 0 done (guard: no older run is running); 1 a list or some deletes failed, the step
was stopped, or (guard) an older run is running or the runs cannot be listed; 2 invalid
configuration.";

/// Deletes in flight at once: enough to clear a backlog of thousands in seconds, few enough not
/// to crowd the API server.
const DELETE_CONCURRENCY: usize = 4;

/// How long deletes already in flight may still finish after SIGTERM: well inside the 30 s a pod
/// gets between SIGTERM and SIGKILL by default.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(5);

/// Runs the mode the configuration asks for, stopping cleanly on SIGTERM or SIGINT, and writes
/// its outcome result whether it succeeds or fails.
///
/// # Errors
/// As [`run_until`].
pub async fn run(config: Config) -> Result<Outcome> {
    run_until(config, vault_backup_common::exit::cancel_on_termination()).await
}

/// Like [`run`], stopping when `cancel` is cancelled instead of on a signal.
///
/// # Errors
/// Exit-2 errors for an unusable kubeconfig, namespace file or selector. Prune mode:
/// [`Error::List`] or [`Error::Timeout`] if listing fails (nothing is deleted then);
/// [`Error::Incomplete`] if some deletes failed or timed out; [`Error::Interrupted`] if
/// stopped. Guard mode: [`Error::Blocked`] if an older run is running, [`Error::GuardUnsure`]
/// if the runs cannot be listed.
pub async fn run_until(config: Config, cancel: CancellationToken) -> Result<Outcome> {
    let result = match config.mode {
        Mode::Prune => prune(&config, &cancel).await.map(Outcome::Pruned),
        Mode::Guard => guard(&config, &cancel).await.map(Outcome::Clear),
    };
    let value = match &result {
        Ok(outcome) => outcome.result_value(),
        Err(Error::Blocked { name, .. }) => format!("blocked by {name}"),
        Err(e) => outcome::failed_value(&one_line(e)),
    };
    outcome::write(&config.results, config.mode, &value);
    result
}

/// Connects, resolves the namespace and lists the selected runs, or stops on `cancel`.
async fn list(config: &Config, cancel: &CancellationToken) -> Result<(TaskRuns, Listing)> {
    let client_config = kube::client_config(&config.kubeconfig, config.timeout).await?;
    let namespace = resolve_namespace(
        config.namespace.as_deref(),
        Path::new(SERVICE_ACCOUNT_NAMESPACE),
        &client_config.default_namespace,
    )?;
    let taskruns = TaskRuns::new(kube::client(client_config)?, &namespace, config.timeout);
    let listing = tokio::select! {
        listing = taskruns.list(&config.selector, config.page_size) => listing?,
        () = cancel.cancelled() => return Err(Error::InterruptedListing),
    };
    info!(
        namespace = %namespace,
        selector = %config.selector,
        listed = listing.runs.len(),
        pages = listing.pages,
        "listed TaskRuns"
    );
    Ok((taskruns, listing))
}

/// Guard mode: lets this run go ahead only if no older run of the Task is still running.
async fn guard(config: &Config, cancel: &CancellationToken) -> Result<Clear> {
    let current = config
        .policy
        .current
        .as_deref()
        .expect("the configuration requires PRUNE_CURRENT in guard mode");
    let (taskruns, listing) = list(config, cancel).await.map_err(|e| match e {
        Error::List { .. }
        | Error::ListLoop { .. }
        | Error::Timeout { .. }
        | Error::Client { .. } => Error::GuardUnsure {
            source: Box::new(e),
        },
        e => e,
    })?;
    if !listing.runs.iter().any(|r| r.name == current) {
        warn!(
            current,
            selector = %config.selector,
            "the current run is not among the listed runs; any other running run blocks it"
        );
    }
    match guard::check(&listing.runs, current) {
        Verdict::Blocked { by } => Err(Error::Blocked {
            name: by.name,
            started: by.created,
        }),
        Verdict::Clear { newer_running } => {
            info!(
                namespace = taskruns.namespace(),
                current,
                newer_running,
                "no other run of this Task is active ahead of this one; going on"
            );
            Ok(Clear {
                namespace: taskruns.namespace().to_owned(),
                listed: listing.runs.len(),
                newer_running,
            })
        }
    }
}

/// Prune mode: lists the selected TaskRuns, plans, logs the plan and (unless a dry run)
/// deletes, oldest first, until done or stopped.
async fn prune(config: &Config, cancel: &CancellationToken) -> Result<Summary> {
    let (taskruns, listing) = list(config, cancel).await?;
    let namespace = taskruns.namespace().to_owned();
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
        in_pipeline_runs: decisions
            .iter()
            .filter(|d| matches!(d.reason, policy::Reason::InPipelineRun(_)))
            .count(),
        dry_run: config.dry_run,
        ..Summary::default()
    };
    if summary.in_pipeline_runs > 0 {
        info!(
            count = summary.in_pipeline_runs,
            "kept TaskRuns that belong to PipelineRuns (they go with their PipelineRun)"
        );
    }
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
    let interrupted = delete_all(
        &taskruns,
        doomed.iter().map(|(_, d)| *d).collect(),
        cancel,
        &mut summary,
    )
    .await;
    summary.failed.sort();
    summary.abandoned.sort();
    info!(
        namespace = %namespace,
        deleted = summary.deleted,
        already_gone = summary.already_gone,
        kept = summary.kept,
        failed = summary.failed.len(),
        not_started = summary.not_started,
        abandoned = summary.abandoned.len(),
        "pruned TaskRuns"
    );
    if interrupted {
        Err(Error::Interrupted {
            summary: Box::new(summary),
        })
    } else if summary.failed.is_empty() && summary.not_started == 0 {
        Ok(summary)
    } else {
        warn!("{} deletes failed", summary.failed.len());
        Err(Error::Incomplete {
            summary: Box::new(summary),
        })
    }
}

/// Deletes `doomed` in order, [`DELETE_CONCURRENCY`] at a time. Stops starting new deletes when
/// `cancel` fires (then waits at most [`IN_FLIGHT_GRACE`] for those in flight, and returns true)
/// or when a delete times out (the API server is not answering; returns false). Fills in the
/// counts of `summary`.
async fn delete_all(
    taskruns: &TaskRuns,
    doomed: Vec<&policy::Decision>,
    cancel: &CancellationToken,
    summary: &mut Summary,
) -> bool {
    let mut queue = doomed.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut names_in_flight = BTreeSet::new();
    let mut stop_starting = false;
    let mut grace_until = None;
    loop {
        while !stop_starting && in_flight.len() < DELETE_CONCURRENCY {
            let Some(d) = queue.next() else { break };
            names_in_flight.insert(d.name.as_str());
            in_flight.push(async move { (d, taskruns.delete(&d.name).await) });
        }
        if in_flight.is_empty() {
            break;
        }
        let deadline = grace_until;
        let grace = async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((d, result)) = in_flight.next() => {
                names_in_flight.remove(d.name.as_str());
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
                        if matches!(e, Error::Timeout { .. }) && !stop_starting {
                            stop_starting = true;
                            warn!("a delete timed out; starting no more deletes, the API server is not answering");
                        }
                        error!(taskrun = %d.name, error = %one_line(&e), "delete failed");
                        summary.failed.push(d.name.clone());
                    }
                }
            }
            () = cancel.cancelled(), if grace_until.is_none() => {
                stop_starting = true;
                grace_until = Some(tokio::time::Instant::now() + IN_FLIGHT_GRACE);
                warn!(
                    in_flight = in_flight.len(),
                    "stopping: no new deletes; waiting up to {}s for those in flight",
                    IN_FLIGHT_GRACE.as_secs()
                );
            }
            () = grace => break,
        }
    }
    summary.not_started = queue.len();
    summary.abandoned = names_in_flight.into_iter().map(str::to_owned).collect();
    grace_until.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_backup_common::env;

    #[test]
    fn usage_and_docs_list_every_variable_read() {
        let names = env::variables::<RawConfig>();
        assert_eq!(names.len(), 14, "{names:?}");
        let crate_doc = include_str!("lib.rs");
        for name in names {
            assert!(
                USAGE.contains(&format!("  {name} ")),
                "{name} missing from USAGE"
            );
            assert!(
                crate_doc.contains(&format!("//! | `{name}` |")),
                "{name} missing from the crate documentation's table"
            );
        }
    }
}
