//! The step against the Kubernetes stand-in, in process: the real kube client, the real HTTP
//! protocol (paging, label selectors, delete options), thousands of runs.
//!
//! No API server installs here, so `vault_backup_testbed::kube_standin` serves TaskRuns instead;
//! its module documentation lists what it does not model (watch, resourceVersion consistency,
//! field selectors, RBAC, finalizers: background propagation is recorded, no pods exist).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use taskrun_prune::kube::{Deleted, TaskRuns};
use taskrun_prune::{Config, Error, Outcome, Summary, run};
use vault_backup_common::ExitStatus;
use vault_backup_testbed::kube_standin::{KubeStandIn, RunState, TaskRun};

/// Runs the step in prune mode and returns its summary.
async fn prune(config: Config) -> Result<Summary, Error> {
    run(config).await.map(|o| match o {
        Outcome::Pruned(summary) => summary,
        Outcome::Clear(c) => panic!("a prune ended as a guard: {c:?}"),
    })
}

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
    // A variable given in `extra` replaces the default above.
    vars.retain(|(name, _)| extra.iter().all(|(n, _)| n != name));
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
    let summary = prune(config(&standin, &[("PRUNE_CURRENT", &current)]))
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
            in_pipeline_runs: 0,
            failed: vec![],
            not_started: 0,
            abandoned: vec![],
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
    let again = prune(config(&standin, &[("PRUNE_CURRENT", &current)]))
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

    let err = prune(config(&standin, &[("PRUNE_NAMESPACE", "backups")]))
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
    let summary = prune(config(
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
    let err = prune(config(
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
    let taskruns = TaskRuns::new(
        kube::Client::try_from(config).unwrap(),
        "backups",
        Duration::from_secs(5),
    );
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
        matches!(&err, Error::Delete { name, source } if name == "stuck" && matches!(**source, kube::Error::Api(ref s) if s.code == 500)),
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
    let err = prune(config).await.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(matches!(err, Error::List { .. }), "{err:?}");
    assert_eq!(
        standin.list_requests().len(),
        0,
        "refused before reaching the list"
    );
}

#[tokio::test]
async fn runs_of_pipeline_runs_are_left_to_them() {
    let standin = KubeStandIn::start();
    let base = Utc::now() - TimeDelta::days(10);
    let at = |h: i64| Some(base + TimeDelta::hours(h));
    for i in 0..20 {
        standin.add_taskrun(
            &TaskRun::new(format!("alone-{i:02}"))
                .task("vault-backup")
                .created(at(i + 100))
                .succeeded(at(i + 100)),
        );
    }
    // Older than every standalone run, so the policy would delete all of them first.
    let mut in_pipelines = Vec::new();
    for i in 0..10 {
        let name = format!("pipe-{i:02}");
        let run = TaskRun::new(&name)
            .task("vault-backup")
            .created(at(i))
            .failed(at(i));
        // As Tekton creates them; the owner reference alone; the label alone.
        let run = match i % 3 {
            0 => run.in_pipeline_run("nightly-run-1"),
            1 => run.owned_by_pipeline_run("nightly-run-2"),
            _ => run.label("tekton.dev/pipelineRun", "nightly-run-3"),
        };
        standin.add_taskrun(&run);
        in_pipelines.push(name);
    }
    let summary = prune(config(&standin, &[("PRUNE_KEEP", "5")]))
        .await
        .unwrap();
    assert_eq!(
        (summary.planned, summary.deleted, summary.in_pipeline_runs),
        (15, 15, 10)
    );
    assert_eq!(
        summary.kept, 15,
        "5 standalone runs and the 10 of pipelines"
    );
    let left = standin.taskruns();
    for name in &in_pipelines {
        assert!(left.contains(name), "{name} was deleted");
    }
    let standalone_left: Vec<&String> = left.iter().filter(|n| n.starts_with("alone-")).collect();
    assert_eq!(
        standalone_left,
        ["alone-15", "alone-16", "alone-17", "alone-18", "alone-19"]
    );
}

/// Seeds a guard scene: finished runs of all ages, `older` running since 10 minutes before
/// `current`, `newer` running since 5 minutes after it.
fn guard_scene(standin: &KubeStandIn) -> DateTime<Utc> {
    let now = Utc::now();
    for i in 0..12 {
        let at = Some(now - TimeDelta::hours(i + 1));
        standin.add_taskrun(
            &TaskRun::new(format!("done-{i:02}"))
                .task("vault-backup")
                .created(at)
                .succeeded(at),
        );
    }
    standin.add_taskrun(
        &TaskRun::new("older")
            .task("vault-backup")
            .created(Some(now - TimeDelta::minutes(10)))
            .running(),
    );
    standin.add_taskrun(
        &TaskRun::new("current")
            .task("vault-backup")
            .created(Some(now))
            .running(),
    );
    standin.add_taskrun(
        &TaskRun::new("newer")
            .task("vault-backup")
            .created(Some(now + TimeDelta::minutes(5)))
            .running(),
    );
    now - TimeDelta::minutes(10)
}

fn guard_config(standin: &KubeStandIn, current: &str, results: &std::path::Path) -> Config {
    let dir = results.display().to_string();
    let mut config = config(
        standin,
        &[
            ("PRUNE_MODE", "guard"),
            ("PRUNE_CURRENT", current),
            ("RESULTS_DIR", &dir),
        ],
    );
    // Were this a prune, it would delete every finished run.
    config.policy.keep = 0;
    config
}

fn guard_outcome(results: &std::path::Path) -> String {
    std::fs::read_to_string(results.join("guard-outcome")).unwrap()
}

#[tokio::test]
async fn guard_an_older_running_run_blocks_and_nothing_is_deleted() {
    let standin = KubeStandIn::start();
    let started = guard_scene(&standin);
    let results = tempfile::tempdir().unwrap();
    let before = standin.taskruns();

    let err = run(guard_config(&standin, "current", results.path()))
        .await
        .unwrap_err();

    assert_eq!(err.exit_code(), 1);
    assert_eq!(
        err.to_string(),
        format!(
            "another run of this Task is running: older (started {}); this run stops before it snapshots or uploads anything",
            started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    );
    assert_eq!(guard_outcome(results.path()), "blocked by older");
    assert!(!results.path().join("prune-outcome").exists());
    assert!(standin.deletions().is_empty(), "guard mode deletes nothing");
    assert_eq!(standin.taskruns(), before);
}

#[tokio::test]
async fn guard_a_newer_running_run_does_not_block_the_older() {
    let standin = KubeStandIn::start();
    guard_scene(&standin);
    let results = tempfile::tempdir().unwrap();

    let outcome = run(guard_config(&standin, "older", results.path()))
        .await
        .unwrap();

    let Outcome::Clear(clear) = outcome else {
        panic!("expected clear, got {outcome:?}");
    };
    assert_eq!((clear.listed, clear.newer_running), (15, 2));
    assert_eq!(guard_outcome(results.path()), "clear");
    assert!(standin.deletions().is_empty());
}

#[tokio::test]
async fn guard_finished_runs_do_not_block_and_the_current_run_alone_passes() {
    let standin = KubeStandIn::start();
    let now = Utc::now();
    for i in 0..5 {
        let at = Some(now - TimeDelta::hours(i + 1));
        standin.add_taskrun(
            &TaskRun::new(format!("done-{i}"))
                .task("vault-backup")
                .created(at)
                .failed(at),
        );
    }
    // A running run of another Task is not selected.
    standin.add_taskrun(
        &TaskRun::new("lint-running")
            .task("lint")
            .created(Some(now - TimeDelta::hours(2)))
            .running(),
    );
    let results = tempfile::tempdir().unwrap();
    standin.add_taskrun(&TaskRun::new("current").task("vault-backup").running());
    let outcome = run(guard_config(&standin, "current", results.path()))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Clear(_)), "{outcome:?}");
    assert_eq!(guard_outcome(results.path()), "clear");
    assert!(standin.deletions().is_empty());
}

#[tokio::test]
async fn guard_counts_runs_of_pipeline_runs_and_runs_tied_in_time() {
    let standin = KubeStandIn::start();
    let now = Utc::now();
    standin.add_taskrun(
        &TaskRun::new("nightly-run-1-backup")
            .task("vault-backup")
            .in_pipeline_run("nightly-run-1")
            .created(Some(now - TimeDelta::minutes(1)))
            .running(),
    );
    standin.add_taskrun(
        &TaskRun::new("current")
            .task("vault-backup")
            .created(Some(now))
            .running(),
    );
    let results = tempfile::tempdir().unwrap();
    let err = run(guard_config(&standin, "current", results.path()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Blocked { name, .. } if name == "nightly-run-1-backup"),
        "{err:?}"
    );

    // Same creation second: the lexically smaller name goes first.
    let standin = KubeStandIn::start();
    for name in ["run-b", "run-a"] {
        standin.add_taskrun(
            &TaskRun::new(name)
                .task("vault-backup")
                .created(Some(now))
                .running(),
        );
    }
    assert!(
        run(guard_config(&standin, "run-a", results.path()))
            .await
            .is_ok()
    );
    let err = run(guard_config(&standin, "run-b", results.path()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Blocked { name, .. } if name == "run-a"),
        "{err:?}"
    );
}

#[tokio::test]
async fn guard_fails_closed_when_it_cannot_list() {
    let standin = KubeStandIn::start();
    guard_scene(&standin);
    standin.delay_lists(Duration::from_secs(3600));
    let results = tempfile::tempdir().unwrap();
    let mut config = guard_config(&standin, "older", results.path());
    config.timeout = Duration::from_secs(1);

    let started = std::time::Instant::now();
    let err = run(config).await.unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.exit_code(), 1);
    let line = vault_backup_common::exit::one_line(&err);
    assert!(
        line.starts_with("cannot tell whether another run is active; this run stops before it snapshots or uploads anything: the API server did not answer page 1 of the list of TaskRuns in namespace backups within 1s"),
        "{line}"
    );
    assert_eq!(guard_outcome(results.path()), format!("failed: {line}"));
}

#[tokio::test]
async fn a_hung_list_ends_within_the_timeout() {
    let standin = KubeStandIn::start();
    seed(&standin);
    standin.delay_lists(Duration::from_secs(3600));
    let results = tempfile::tempdir().unwrap();
    let dir = results.path().display().to_string();
    let started = std::time::Instant::now();
    let err = prune(config(
        &standin,
        &[("PRUNE_TIMEOUT", "1s"), ("RESULTS_DIR", &dir)],
    ))
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.exit_code(), 1);
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(results.path().join("prune-outcome")).unwrap(),
        "failed: the API server did not answer page 1 of the list of TaskRuns in namespace backups within 1s; check the API server's health, or raise PRUNE_TIMEOUT"
    );
    assert!(standin.deletions().is_empty());
}

#[tokio::test]
async fn hung_deletes_end_within_the_timeout_and_no_more_are_started() {
    let standin = KubeStandIn::start();
    let runs = seed(&standin);
    let planned = expected_deletions(&runs, "").len();
    standin.delay_deletes(Duration::from_secs(3600));
    let started = std::time::Instant::now();
    let err = prune(config(&standin, &[("PRUNE_TIMEOUT", "1s")]))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let Error::Incomplete { summary } = &err else {
        panic!("expected Incomplete, got {err:?}");
    };
    assert_eq!(summary.failed.len(), 4, "the deletes in flight timed out");
    assert_eq!(summary.not_started, planned - 4);
    assert_eq!(summary.deleted, 0);
    assert!(
        err.to_string().contains(&format!(
            "; {} more not started once a delete timed out",
            planned - 4
        )),
        "{err}"
    );
    assert_eq!(standin.taskruns().len(), 2500, "nothing was deleted");
}
