//! The step against the Kubernetes stand-in, in process: the real kube client, the real HTTP
//! protocol (paging, label selectors, delete options), thousands of runs.
//!
//! No API server installs here, so `vault_backup_testbed::kube_standin` serves TaskRuns instead;
//! its module documentation lists what it does not model (watch, resourceVersion consistency,
//! field selectors, RBAC, finalizers: background propagation is recorded, no pods exist).

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use taskrun_prune::kube::{Deleted, TaskRuns};
use taskrun_prune::{Config, Error, Summary, run};
use vault_backup_common::ExitStatus;
use vault_backup_testbed::kube_standin::{KubeStandIn, RunState, TaskRun};

const TASKS: [&str; 3] = ["vault-backup", "lint", "image-build"];
const KEEP: usize = 10;

/// 2,500 runs of three Tasks, interleaved in name order (the order the API pages in) and with
/// names unrelated to age, so that neither paging nor name order can stand in for time order.
/// Of the backup Task's 834 runs: the newest four are still running, 21 failed, and two
/// finished runs lack a completion time.
fn seed(standin: &KubeStandIn) -> Vec<TaskRun> {
    let base = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let mut runs = Vec::new();
    for i in 0..2500_usize {
        let task = TASKS[i % 3];
        let name = format!("run-{:04}-{task}", (i * 7919) % 10_000);
        let created = base + TimeDelta::minutes(i64::try_from(i).unwrap() * 10);
        let completed = created + TimeDelta::minutes(7);
        let run = TaskRun::new(name).task(task).created(Some(created));
        let run = match i {
            _ if i >= 2490 => run.running(),
            // Two finished runs without completionTime: never deleted.
            300 | 1203 => run.succeeded(None),
            _ if i % 40 == 0 => run.failed(Some(completed)),
            _ => run.succeeded(Some(completed)),
        };
        runs.push(run);
    }
    // A backup run in another namespace: out of reach.
    runs.push(
        TaskRun::new("run-elsewhere")
            .task("vault-backup")
            .namespace("other")
            .created(Some(base))
            .succeeded(Some(base)),
    );
    standin.add_taskruns(&runs);
    runs
}

/// What the policy should delete, worked out here from the seed, not by the step's code.
fn expected_deletions(runs: &[TaskRun], current: &str) -> BTreeSet<String> {
    let mut finished: Vec<&TaskRun> = runs
        .iter()
        .filter(|r| r.namespace.is_none() && r.labels["tekton.dev/task"] == "vault-backup")
        .filter(|r| matches!(r.state, RunState::Succeeded | RunState::Failed))
        .filter(|r| r.completed.is_some() && r.name != current)
        .collect();
    finished.sort_by_key(|r| std::cmp::Reverse(r.completed));
    finished[KEEP..].iter().map(|r| r.name.clone()).collect()
}

fn config(standin: &KubeStandIn, extra: &[(&str, &str)]) -> Config {
    let kubeconfig = standin.kubeconfig_path().display().to_string();
    let mut vars = vec![
        ("KUBECONFIG", kubeconfig.as_str()),
        ("PRUNE_KEEP", "10"),
        ("PRUNE_PAGE_SIZE", "100"),
    ];
    vars.extend_from_slice(extra);
    Config::from_vars(vars).unwrap()
}

#[tokio::test]
async fn prunes_only_the_selected_tasks_old_finished_runs_across_pages() {
    let standin = KubeStandIn::start();
    let runs = seed(&standin);
    let current = runs[2496].name.clone();
    assert_eq!(runs[2496].state, RunState::Running);
    let want_deleted = expected_deletions(&runs, &current);
    let before: BTreeSet<String> = standin.taskruns().into_iter().collect();

    // No PRUNE_NAMESPACE: the namespace comes from the kubeconfig context.
    let summary = run(config(&standin, &[("PRUNE_CURRENT", &current)]))
        .await
        .unwrap();

    let backup_runs = runs
        .iter()
        .filter(|r| r.namespace.is_none() && r.labels["tekton.dev/task"] == "vault-backup")
        .count();
    assert_eq!(backup_runs, 834);
    assert_eq!(
        want_deleted.len(),
        834 - 4 - 10 - 2,
        "4 running, 10 kept, 2 undated"
    );
    assert_eq!(
        summary,
        Summary {
            namespace: "backups".to_owned(),
            listed: backup_runs,
            pages: 9,
            planned: want_deleted.len(),
            deleted: want_deleted.len(),
            already_gone: 0,
            kept: backup_runs - want_deleted.len(),
            failed: vec![],
            dry_run: false,
        }
    );

    let after: BTreeSet<String> = standin.taskruns().into_iter().collect();
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(gone, want_deleted);
    // Every other Task's run is still there, and so is the other namespace.
    for r in runs
        .iter()
        .filter(|r| r.labels["tekton.dev/task"] != "vault-backup")
    {
        assert!(after.contains(&r.name), "{} was deleted", r.name);
    }
    assert_eq!(standin.taskruns_in("other"), ["run-elsewhere"]);
    // The newest KEEP finished backup runs, the running ones and the undated ones stay.
    let kept_backup: Vec<&TaskRun> = runs
        .iter()
        .filter(|r| r.namespace.is_none() && r.labels["tekton.dev/task"] == "vault-backup")
        .filter(|r| after.contains(&r.name))
        .collect();
    assert_eq!(kept_backup.len(), 16);
    assert_eq!(
        kept_backup
            .iter()
            .filter(|r| r.state == RunState::Running)
            .count(),
        4,
        "every running run stays"
    );
    let oldest_kept = kept_backup
        .iter()
        .filter_map(|r| r.completed)
        .min()
        .unwrap();
    for name in &want_deleted {
        let r = runs.iter().find(|r| &r.name == name).unwrap();
        assert!(
            r.completed.unwrap() < oldest_kept,
            "{name} newer than a kept run"
        );
    }

    let deletions = standin.deletions();
    assert_eq!(deletions.len(), want_deleted.len(), "one DELETE per run");
    for d in &deletions {
        assert_eq!(d.propagation_policy.as_deref(), Some("Background"), "{d:?}");
        assert_eq!((d.namespace.as_str(), d.status), ("backups", 200), "{d:?}");
    }

    let lists = standin.list_requests();
    assert_eq!(lists.len(), 9, "834 matching runs at 100 a page");
    assert!(!lists[0].continued && lists[1..].iter().all(|l| l.continued));
    for l in &lists {
        assert_eq!(
            l.label_selector.as_deref(),
            Some("tekton.dev/task=vault-backup")
        );
        assert_eq!(
            (l.namespace.as_str(), l.limit, l.status),
            ("backups", Some(100), 200)
        );
    }
    assert_eq!(lists.iter().map(|l| l.returned).sum::<usize>(), 834);

    // A second run finds nothing more to do.
    let again = run(config(&standin, &[("PRUNE_CURRENT", &current)]))
        .await
        .unwrap();
    assert_eq!((again.planned, again.deleted, again.kept), (0, 0, 16));
}

#[tokio::test]
async fn one_failed_delete_does_not_stop_the_others_and_exits_1() {
    let standin = KubeStandIn::start();
    let runs = seed(&standin);
    let want_deleted = expected_deletions(&runs, "");
    let victim = want_deleted.iter().nth(100).unwrap().clone();
    standin.fail_delete(&victim);

    let err = run(config(&standin, &[("PRUNE_NAMESPACE", "backups")]))
        .await
        .unwrap_err();

    assert_eq!(err.exit_code(), 1);
    let Error::Incomplete { summary } = &err else {
        panic!("expected Incomplete, got {err:?}");
    };
    assert_eq!(summary.failed, std::slice::from_ref(&victim));
    assert_eq!(summary.deleted, want_deleted.len() - 1);
    assert!(
        err.to_string()
            .starts_with("1 of 818 TaskRun deletions failed in namespace backups: "),
        "{err}"
    );
    assert!(err.to_string().contains(&victim), "{err}");

    let after: BTreeSet<String> = standin.taskruns().into_iter().collect();
    for name in &want_deleted {
        assert_eq!(after.contains(name), *name == victim, "{name}");
    }
    let deletions = standin.deletions();
    assert_eq!(deletions.len(), want_deleted.len());
    assert!(
        deletions
            .iter()
            .all(|d| d.propagation_policy.as_deref() == Some("Background"))
    );
    assert_eq!(
        deletions
            .iter()
            .filter(|d| d.status == 500)
            .map(|d| &d.name)
            .collect::<Vec<_>>(),
        [&victim]
    );
}

#[tokio::test]
async fn set_based_selector_and_keep_failed() {
    let standin = KubeStandIn::start();
    let runs = seed(&standin);
    // Two of the three Tasks, by a set-based selector; failed runs kept apart (newest 2).
    let summary = run(config(
        &standin,
        &[
            (
                "PRUNE_SELECTOR",
                "tekton.dev/task in (vault-backup,lint),tekton.dev/task notin (lint)",
            ),
            ("PRUNE_KEEP_FAILED", "2"),
        ],
    ))
    .await
    .unwrap();
    let after: BTreeSet<String> = standin.taskruns().into_iter().collect();
    let backup: Vec<&TaskRun> = runs
        .iter()
        .filter(|r| r.namespace.is_none() && r.labels["tekton.dev/task"] == "vault-backup")
        .collect();
    let newest = |state: RunState, n: usize| {
        let mut v: Vec<&&TaskRun> = backup
            .iter()
            .filter(|r| r.state == state && r.completed.is_some())
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.completed));
        v.into_iter()
            .take(n)
            .map(|r| r.name.clone())
            .collect::<BTreeSet<_>>()
    };
    let mut want: BTreeSet<String> = newest(RunState::Succeeded, 10);
    want.extend(newest(RunState::Failed, 2));
    want.extend(
        backup
            .iter()
            .filter(|r| r.state == RunState::Running || r.completed.is_none())
            .map(|r| r.name.clone()),
    );
    let kept: BTreeSet<String> = backup
        .iter()
        .filter(|r| after.contains(&r.name))
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(kept, want);
    assert_eq!(summary.kept, want.len());
    assert_eq!(after.len(), 2500 - summary.deleted);
}

#[tokio::test]
async fn a_selector_the_server_rejects_is_a_configuration_error() {
    let standin = KubeStandIn::start();
    seed(&standin);
    let err = run(config(
        &standin,
        &[("PRUNE_SELECTOR", "tekton.dev/task in (vault-backup")],
    ))
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string()
            .starts_with("PRUNE_SELECTOR: the API server rejected"),
        "{err}"
    );
    assert!(standin.deletions().is_empty());
}

#[tokio::test]
async fn a_run_already_gone_is_fine() {
    let standin = KubeStandIn::start();
    standin.add_taskrun(&TaskRun::new("here").succeeded(Some(Utc::now())));
    let kubeconfig = kube::config::Kubeconfig::read_from(standin.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let taskruns = TaskRuns::new(kube::Client::try_from(config).unwrap(), "backups");
    assert_eq!(taskruns.delete("here").await.unwrap(), Deleted::Now);
    assert_eq!(taskruns.delete("here").await.unwrap(), Deleted::AlreadyGone);
    assert_eq!(
        taskruns.delete("never-was").await.unwrap(),
        Deleted::AlreadyGone
    );
    standin.add_taskrun(&TaskRun::new("stuck").succeeded(Some(Utc::now())));
    standin.fail_delete("stuck");
    let err = taskruns.delete("stuck").await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 500),
        "{err:?}"
    );
    let codes: Vec<u16> = standin.deletions().iter().map(|d| d.status).collect();
    assert_eq!(codes, [200, 404, 404, 500]);
}

#[tokio::test]
async fn a_wrong_token_is_refused() {
    let standin = KubeStandIn::start();
    let text = std::fs::read_to_string(standin.kubeconfig_path())
        .unwrap()
        .replace(standin.token(), "not-the-token");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    let config = Config::from_vars([("KUBECONFIG", path.display().to_string())]).unwrap();
    let err = run(config).await.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(matches!(err, Error::List { .. }), "{err:?}");
    assert_eq!(
        standin.list_requests().len(),
        0,
        "refused before reaching the list"
    );
}
