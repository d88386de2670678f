//! The `taskrun-prune` binary pushing its outcome to a real Pushgateway: the counts it pushes
//! are the stand-in's deletions, a failed run leaves the earlier success in place, guard mode
//! pushes nothing, and a Pushgateway that is down or hung costs one warning line and at most
//! `METRICS_PUSH_TIMEOUT`, never the exit code.

// Counts and exit codes are small integers, exact in an f64 and in the text format.
#![allow(clippy::float_cmp)]

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use vault_backup_common::metrics::{
    DURATION, LAST_FAILURE, LAST_RUN_EXIT_CODE, LAST_SUCCESS, TASKRUNS_DELETED, TASKRUNS_KEPT,
    unix_seconds,
};
use vault_backup_testbed::kube_standin::{KubeStandIn, TaskRun};
use vault_backup_testbed::pushgateway::Pushgateway;

const STEP: &str = "taskrun-prune";

/// The binary with only `vars` (and a `HOME` without `~/.kube/config`); its output and wall
/// time.
fn prune(home: &std::path::Path, vars: &[(&str, &str)]) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_taskrun-prune"))
        .env_clear()
        .env("HOME", home)
        .envs(vars.iter().copied())
        .output()
        .expect("run taskrun-prune");
    (out, started.elapsed())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `n` finished backup runs an hour apart, and one still going (`backup-now`, the current run).
fn seed(standin: &KubeStandIn, n: i64) {
    let base: DateTime<Utc> = Utc::now() - TimeDelta::days(3);
    for i in 0..n {
        let at = base + TimeDelta::hours(i);
        standin.add_taskrun(
            &TaskRun::new(format!("backup-{i:02}"))
                .task("vault-backup")
                .created(Some(at - TimeDelta::minutes(5)))
                .succeeded(Some(at)),
        );
    }
    standin.add_taskrun(&TaskRun::new("backup-now").task("vault-backup").running());
}

/// Deletions the stand-in carried out (200), as the step counts them.
fn deleted(standin: &KubeStandIn) -> usize {
    standin
        .deletions()
        .iter()
        .filter(|d| d.status == 200)
        .count()
}

fn value(pg: &Pushgateway, name: &str) -> f64 {
    pg.value(name, STEP).unwrap_or_else(|| {
        panic!(
            "{name} not pushed; pushed: {:?}",
            pg.metrics("vault_backup_")
        )
    })
}

#[test]
fn pushes_the_counts_the_stand_in_saw_and_a_failure_keeps_the_last_success() {
    let home = tempfile::tempdir().unwrap();
    let pg = Pushgateway::start();
    let url = pg.url();
    let standin = KubeStandIn::start();
    seed(&standin, 12);
    let kubeconfig = standin.kubeconfig_path().display().to_string();
    let vars = [
        ("KUBECONFIG", kubeconfig.as_str()),
        ("PRUNE_KEEP", "5"),
        ("PRUNE_CURRENT", "backup-now"),
        ("METRICS_PUSHGATEWAY_URL", &url),
        ("METRICS_TASK", "nightly-backup"),
    ];

    let before = unix_seconds(SystemTime::now());
    let (out, wall) = prune(home.path(), &vars);
    let after = unix_seconds(SystemTime::now());
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("metrics pushed"), "{log}");
    let gone = deleted(&standin);
    assert_eq!(gone, 7, "12 finished, keep 5");
    assert_eq!(value(&pg, TASKRUNS_DELETED.name), 7.0);
    // The five kept finished runs, and the one still going.
    assert_eq!(value(&pg, TASKRUNS_KEPT.name), 6.0);
    assert_eq!(value(&pg, LAST_RUN_EXIT_CODE.name), 0.0);
    let success = value(&pg, LAST_SUCCESS.name);
    assert!(
        before <= success && success <= after,
        "{before} {success} {after}"
    );
    let took = value(&pg, DURATION.name);
    assert!(
        took > 0.0 && took <= wall.as_secs_f64(),
        "{took} vs {wall:?}"
    );
    assert_eq!(pg.value(LAST_FAILURE.name, STEP), None);
    for s in pg.metrics("vault_backup_") {
        assert_eq!(
            (s.label("job"), s.label("task"), s.label("step")),
            ("vault-backup", "nightly-backup", STEP),
            "{s:?}"
        );
    }

    // The next run fails one delete: exit 1, a failure newer than the success, which stays,
    // and the counts of what this run did.
    let standin = KubeStandIn::start();
    seed(&standin, 9);
    standin.fail_delete("backup-01");
    let kubeconfig = standin.kubeconfig_path().display().to_string();
    let mut vars = vars;
    vars[0].1 = &kubeconfig;
    let (out, _) = prune(home.path(), &vars);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert_eq!(deleted(&standin), 3, "4 planned, 1 failed");
    assert_eq!(value(&pg, TASKRUNS_DELETED.name), 3.0);
    assert_eq!(value(&pg, LAST_RUN_EXIT_CODE.name), 1.0);
    let failure = value(&pg, LAST_FAILURE.name);
    assert!(
        (value(&pg, LAST_SUCCESS.name) - success).abs() < 1e-3,
        "the earlier success was replaced"
    );
    assert!(
        failure > success,
        "failure {failure} not after success {success}"
    );
}

#[test]
fn guard_mode_pushes_nothing_and_a_bad_step_config_is_pushed_as_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let pg = Pushgateway::start();
    let url = pg.url();
    let standin = KubeStandIn::start();
    seed(&standin, 3);
    let kubeconfig = standin.kubeconfig_path().display().to_string();
    let guard = [
        ("KUBECONFIG", kubeconfig.as_str()),
        ("PRUNE_MODE", "guard"),
        ("PRUNE_CURRENT", "backup-now"),
        ("METRICS_PUSHGATEWAY_URL", &url),
    ];
    // Clear (exit 0), then blocked by an older run still going (exit 1): neither pushes.
    let (out, _) = prune(home.path(), &guard);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    standin.add_taskrun(
        &TaskRun::new("backup-older")
            .task("vault-backup")
            .created(Some(Utc::now() - TimeDelta::hours(1)))
            .running(),
    );
    let (out, _) = prune(home.path(), &guard);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("backup-older"), "{log}");
    assert!(!log.contains("metrics"), "{log}");
    assert_eq!(pg.metrics("vault_backup_"), vec![], "guard pushed");

    // A step configuration that does not load is a failed run: pushed with exit code 2.
    let (out, _) = prune(
        home.path(),
        &[("PRUNE_KEEP", "ten"), ("METRICS_PUSHGATEWAY_URL", &url)],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("invalid configuration: PRUNE_KEEP"), "{log}");
    assert_eq!(value(&pg, LAST_RUN_EXIT_CODE.name), 2.0);
    assert!(pg.value(LAST_FAILURE.name, STEP).is_some());
    assert_eq!(pg.value(TASKRUNS_DELETED.name, STEP), None);
}

/// Issue 18 point 7: monitoring must never stop a backup. `METRICS_BEARER_TOKEN_FILE` naming a
/// file that is not there (its Secret is optional, so a missing Secret looks exactly like
/// this), or a malformed `METRICS_PUSH_TIMEOUT`: the guard, clear or blocked, and the prune
/// each exit as they do without metrics, do their work, log exactly one warning naming the
/// variable, and push nothing.
#[test]
fn a_bad_metrics_setting_is_one_warning_and_changes_neither_the_work_nor_the_exit_code() {
    let home = tempfile::tempdir().unwrap();
    let pg = Pushgateway::start();
    let url = pg.url();
    let standin = KubeStandIn::start();
    seed(&standin, 3);
    let kubeconfig = standin.kubeconfig_path().display().to_string();
    let missing = home.path().join("metrics/token").display().to_string();
    let bad_settings: [(&str, [(&str, &str); 2]); 2] = [
        (
            "METRICS_BEARER_TOKEN_FILE",
            [
                ("METRICS_PUSHGATEWAY_URL", &url),
                ("METRICS_BEARER_TOKEN_FILE", &missing),
            ],
        ),
        (
            "METRICS_PUSH_TIMEOUT",
            [
                ("METRICS_PUSHGATEWAY_URL", &url),
                ("METRICS_PUSH_TIMEOUT", "soon"),
            ],
        ),
    ];
    let warnings = |log: &str| log.lines().filter(|l| l.contains("WARN")).count();
    for (variable, metrics) in &bad_settings {
        let with = |vars: &[(&str, &str)]| {
            let all: Vec<(&str, &str)> = vars.iter().chain(metrics).copied().collect();
            prune(home.path(), &all)
        };
        let guard = [
            ("KUBECONFIG", kubeconfig.as_str()),
            ("PRUNE_MODE", "guard"),
            ("PRUNE_CURRENT", "backup-now"),
        ];
        // Clear: exit 0, as without metrics.
        let (out, _) = with(&guard);
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{variable}: {log}");
        assert_eq!(warnings(&log), 1, "{variable}: {log}");
        assert!(
            log.contains("metrics not pushed") && log.contains(variable),
            "{variable}: {log}"
        );
        // Blocked by an older run still going: exit 1, as without metrics.
        standin.add_taskrun(
            &TaskRun::new("backup-older")
                .task("vault-backup")
                .created(Some(Utc::now() - TimeDelta::hours(1)))
                .running(),
        );
        let (out, _) = with(&guard);
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{variable}: {log}");
        assert!(log.contains("backup-older"), "{variable}: {log}");
        assert_eq!(warnings(&log), 1, "{variable}: {log}");
        // It finished: the next guard is clear again.
        standin.add_taskrun(
            &TaskRun::new("backup-older")
                .task("vault-backup")
                .created(Some(Utc::now() - TimeDelta::hours(1)))
                .succeeded(Some(Utc::now() - TimeDelta::minutes(30))),
        );
    }
    // The prune itself: its deletions done, exit 0, one warning, nothing pushed.
    let (variable, metrics) = &bad_settings[0];
    let all: Vec<(&str, &str)> = [
        ("KUBECONFIG", kubeconfig.as_str()),
        ("PRUNE_CURRENT", "backup-now"),
        ("PRUNE_KEEP", "1"),
    ]
    .iter()
    .chain(metrics)
    .copied()
    .collect();
    let (out, _) = prune(home.path(), &all);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_eq!(warnings(&log), 1, "{log}");
    assert!(log.contains(variable), "{log}");
    // Four finished runs, one kept.
    assert_eq!(deleted(&standin), 3, "{log}");
    assert_eq!(
        pg.metrics("vault_backup_"),
        vec![],
        "pushed despite the bad setting"
    );
}

/// Issue 11, must-show 3: a Pushgateway that is down or never answers leaves the exit code as
/// it was, logs exactly one warning line, and adds no more than `METRICS_PUSH_TIMEOUT` to the
/// step's wall time (measured against the same run without metrics).
#[test]
fn a_pushgateway_down_or_hung_costs_one_warning_and_at_most_the_timeout() {
    let home = tempfile::tempdir().unwrap();
    // Accepts connections (the kernel completes the handshake) and never answers.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    let mut pg = Pushgateway::start();
    let down_url = pg.url();
    pg.stop();

    let timeout = Duration::from_secs(1);
    let run = |pushgateway: Option<&str>| {
        // A fresh cluster each time, so every run does the same work.
        let standin = KubeStandIn::start();
        seed(&standin, 8);
        let kubeconfig = standin.kubeconfig_path().display().to_string();
        let mut vars = vec![
            ("KUBECONFIG", kubeconfig.as_str()),
            ("PRUNE_KEEP", "5"),
            ("PRUNE_CURRENT", "backup-now"),
        ];
        if let Some(url) = pushgateway {
            vars.push(("METRICS_PUSHGATEWAY_URL", url));
            vars.push(("METRICS_PUSH_TIMEOUT", "1s"));
        }
        let (out, wall) = prune(home.path(), &vars);
        assert_eq!(deleted(&standin), 3, "{}", stderr(&out));
        (out, wall)
    };

    let baseline = (0..3).map(|_| run(None).1).max().unwrap();
    for (what, url) in [("hung", &hung_url), ("down", &down_url)] {
        let (out, wall) = run(Some(url));
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{what}: {log}");
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 1, "{what}: {log}");
        assert!(
            warnings[0].contains("metrics not pushed; the step's outcome is unchanged"),
            "{what}: {log}"
        );
        let grew = wall.saturating_sub(baseline);
        eprintln!(
            "Pushgateway {what}: wall {:.3}s against {:.3}s without metrics (+{:.3}s, timeout {timeout:?})",
            wall.as_secs_f64(),
            baseline.as_secs_f64(),
            grew.as_secs_f64()
        );
        // The slowest of three runs without metrics as the baseline; 300 ms for the noise of
        // starting a process and a stand-in on a busy 2-core machine.
        assert!(
            grew <= timeout + Duration::from_millis(300),
            "{what}: the push added {grew:?}, more than the {timeout:?} timeout"
        );
        if what == "hung" {
            assert!(log.contains("did not answer within 1s"), "{what}: {log}");
            assert!(wall >= timeout, "a hung push did not wait for the timeout");
        }
    }
    drop(hung);
}

#[test]
fn help_lists_every_metrics_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_taskrun-prune"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    for name in vault_backup_common::metrics::Config::variables() {
        assert!(help.contains(&name), "{name} missing from --help:\n{help}");
    }
}
