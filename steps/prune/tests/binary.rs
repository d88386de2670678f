//! The `taskrun-prune` binary as the Task runs it: only environment variables in, an exit code
//! and log lines on stderr out. The Kubernetes API is the in-process stand-in (see its module
//! documentation for what it does not model); the binary reaches it through a kubeconfig.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use vault_backup_testbed::kube_standin::{KubeStandIn, TaskRun};

/// The binary with a clean environment: no inherited `KUBECONFIG`, `PRUNE_*` or `RUST_LOG`, and
/// a `HOME` without `~/.kube/config`.
fn prune(home: &std::path::Path, vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskrun-prune"))
        .env_clear()
        .env("HOME", home)
        .envs(vars.iter().copied())
        .output()
        .expect("run taskrun-prune")
}

/// The binary started in the background, its stderr piped.
fn spawn(home: &std::path::Path, vars: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_taskrun-prune"))
        .env_clear()
        .env("HOME", home)
        .envs(vars.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start taskrun-prune")
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits (up to 10 s) until `ready` holds.
fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// 30 finished backup runs an hour apart (`backup-00` oldest), 5 runs of another Task, and one
/// backup run still going.
fn seed(standin: &KubeStandIn) -> Vec<String> {
    let base: DateTime<Utc> = Utc::now() - TimeDelta::days(3);
    let mut backups = Vec::new();
    for i in 0..30 {
        let at = base + TimeDelta::hours(i);
        let name = format!("backup-{i:02}");
        standin.add_taskrun(
            &TaskRun::new(&name)
                .task("vault-backup")
                .created(Some(at - TimeDelta::minutes(5)))
                .succeeded(Some(at)),
        );
        backups.push(name);
    }
    for i in 0..5 {
        let at = base + TimeDelta::hours(i);
        standin.add_taskrun(
            &TaskRun::new(format!("lint-{i:02}"))
                .task("lint")
                .created(Some(at))
                .failed(Some(at)),
        );
    }
    standin.add_taskrun(&TaskRun::new("backup-now").task("vault-backup").running());
    backups
}

#[test]
fn dry_run_deletes_nothing_and_logs_what_it_would_delete() {
    let home = tempfile::tempdir().unwrap();
    let standin = KubeStandIn::start();
    let backups = seed(&standin);
    let before = standin.taskruns();
    let kubeconfig = standin.kubeconfig_path().display().to_string();
    let results_dir = tempfile::tempdir().unwrap();
    let results = results_dir.path().display().to_string();

    let out = prune(
        home.path(),
        &[
            ("KUBECONFIG", &kubeconfig),
            ("PRUNE_KEEP", "5"),
            ("PRUNE_DRY_RUN", "true"),
            ("PRUNE_CURRENT", "backup-now"),
            ("RESULTS_DIR", &results),
            // Debug logs too: the client's own logging must not leak the token either.
            ("RUST_LOG", "debug"),
        ],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("would delete 25 TaskRuns (dry run: nothing deleted)"),
        "{log}"
    );
    let would: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("would delete") && l.contains("taskrun="))
        .collect();
    assert_eq!(would.len(), 25, "{log}");
    for (i, name) in backups.iter().enumerate() {
        let listed = would
            .iter()
            .any(|l| l.contains(&format!("taskrun={name} ")));
        assert_eq!(listed, i < 25, "{name}:\n{log}");
    }
    assert!(!log.contains("lint-"), "{log}");
    assert!(
        !log.contains(standin.token()),
        "the bearer token reached the log"
    );

    assert!(standin.deletions().is_empty());
    assert_eq!(standin.taskruns(), before);
    assert_eq!(standin.list_requests().len(), 1);
    assert_eq!(
        std::fs::read_to_string(results_dir.path().join("prune-outcome")).unwrap(),
        "dry run: would delete 25, kept 6"
    );
    assert!(!results_dir.path().join("guard-outcome").exists());
}

#[test]
fn deletes_and_a_failed_delete_exits_1_after_the_rest() {
    let home = tempfile::tempdir().unwrap();
    let standin = KubeStandIn::start();
    let backups = seed(&standin);
    standin.fail_delete("backup-03");
    let kubeconfig = standin.kubeconfig_path().display().to_string();
    let result = home.path().join("prune-outcome-here");
    let result_path = result.display().to_string();

    let out = prune(
        home.path(),
        &[
            ("KUBECONFIG", &kubeconfig),
            ("PRUNE_NAMESPACE", "backups"),
            ("PRUNE_KEEP", "5"),
            ("PRUNE_PAGE_SIZE", "7"),
            ("RESULT_PRUNE_OUTCOME_PATH", &result_path),
        ],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("1 of 25 TaskRun deletions failed in namespace backups: backup-03"),
        "{log}"
    );
    assert!(
        log.contains("deleted=24") && log.contains("failed=1") && log.contains("kept=6"),
        "{log}"
    );
    let left = standin.taskruns();
    for (i, name) in backups.iter().enumerate() {
        assert_eq!(
            left.contains(name),
            i >= 25 || name == "backup-03",
            "{name}"
        );
    }
    assert!(left.contains(&"backup-now".to_owned()));
    assert_eq!(left.iter().filter(|n| n.starts_with("lint-")).count(), 5);
    assert!(
        standin
            .deletions()
            .iter()
            .all(|d| d.propagation_policy.as_deref() == Some("Background"))
    );
    assert!(standin.list_requests().len() >= 5, "31 runs at 7 a page");
    assert_eq!(
        std::fs::read_to_string(&result).unwrap(),
        "failed: 1 of 25 TaskRun deletions failed in namespace backups: backup-03; the step carried on with the rest and will retry them next run"
    );

    // Once the failure clears, the next run deletes it and says so.
    let standin2 = KubeStandIn::start();
    seed(&standin2);
    let kubeconfig = standin2.kubeconfig_path().display().to_string();
    let out = prune(
        home.path(),
        &[
            ("KUBECONFIG", &kubeconfig),
            ("PRUNE_KEEP", "5"),
            ("RESULT_PRUNE_OUTCOME_PATH", &result_path),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&result).unwrap(),
        "deleted 25, kept 6"
    );
}

#[test]
fn config_errors_exit_2_with_one_line_naming_the_variable() {
    let home = tempfile::tempdir().unwrap();
    for (variable, value) in [
        ("PRUNE_KEEP", "ten"),
        ("PRUNE_MAX_AGE", "forever"),
        ("PRUNE_DRY_RUN", "perhaps"),
        ("PRUNE_KEEP_FAILED", "-2"),
        ("PRUNE_PAGE_SIZE", "0"),
        ("PRUNE_NAMESPACE", "Not_A_Namespace"),
        ("PRUNE_MODE", "lock"),
        ("PRUNE_TIMEOUT", "soon"),
    ] {
        let out = prune(home.path(), &[(variable, value)]);
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{variable}={value}: {log}");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 1, "{variable}={value}: {log}");
        assert!(
            lines[0].contains(&format!("invalid configuration: {variable}: expected")),
            "{log}"
        );
        assert!(lines[0].contains(value), "{log}");
    }
}

#[test]
fn guard_mode_without_the_current_run_exits_2_and_says_so_in_its_result() {
    let home = tempfile::tempdir().unwrap();
    let results = home.path().display().to_string();
    let out = prune(
        home.path(),
        &[("PRUNE_MODE", "guard"), ("RESULTS_DIR", &results)],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains("invalid configuration: PRUNE_CURRENT: is required with PRUNE_MODE=guard"),
        "{log}"
    );
    let value = std::fs::read_to_string(home.path().join("guard-outcome")).unwrap();
    assert!(
        value.starts_with("failed: PRUNE_CURRENT: is required with PRUNE_MODE=guard"),
        "{value}"
    );
    assert!(!home.path().join("prune-outcome").exists());
}

#[test]
fn no_cluster_and_no_kubeconfig_exits_2_with_one_line() {
    let home = tempfile::tempdir().unwrap();
    let results = home.path().display().to_string();
    let out = prune(home.path(), &[("RESULTS_DIR", &results)]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert_eq!(
        log.lines().count(),
        1,
        "a configuration error is one line: {log}"
    );
    assert!(
        log.contains("no Kubernetes client configuration: not in a pod with a service account"),
        "{log}"
    );
    assert!(!log.contains("caused by"), "{log}");
    let value = std::fs::read_to_string(home.path().join("prune-outcome")).unwrap();
    assert!(
        value.starts_with("failed: no Kubernetes client configuration"),
        "{value}"
    );
}

#[test]
fn unreadable_kubeconfig_exits_2_naming_it() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("nope.yaml").display().to_string();
    let out = prune(home.path(), &[("KUBECONFIG", &missing)]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert_eq!(
        log.lines().count(),
        1,
        "a configuration error is one line: {log}"
    );
    assert!(
        log.lines()
            .next()
            .unwrap_or_default()
            .contains(&format!("KUBECONFIG: cannot use {missing}")),
        "{log}"
    );
}

#[test]
fn help_lists_every_variable() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_taskrun-prune"))
        .arg("--help")
        .env_clear()
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for var in [
        "PRUNE_NAMESPACE",
        "KUBECONFIG",
        "PRUNE_SELECTOR",
        "PRUNE_KEEP ",
        "PRUNE_KEEP_FAILED",
        "PRUNE_MAX_AGE",
        "PRUNE_CURRENT",
        "PRUNE_DRY_RUN",
        "PRUNE_PAGE_SIZE",
        "PRUNE_MODE",
        "PRUNE_TIMEOUT",
        "RESULT_PRUNE_OUTCOME_PATH",
        "RESULT_GUARD_OUTCOME_PATH",
        "RESULTS_DIR",
    ] {
        assert!(text.contains(var), "{var} missing from --help");
    }
}

/// Kubernetes sends SIGTERM when a TaskRun is cancelled or times out. The step stops starting
/// deletes, lets those in flight finish, says what it did and did not do, and exits 1 (the
/// README's "run failed"), not 143.
#[test]
fn sigterm_during_slow_deletes_stops_new_ones_and_exits_1() {
    let home = tempfile::tempdir().unwrap();
    let standin = KubeStandIn::start();
    seed(&standin);
    // Each delete takes 1.5 s: the first four are in flight when the signal comes, and finish
    // within the grace the step gives them.
    standin.delay_deletes(Duration::from_millis(1500));
    let kubeconfig = standin.kubeconfig_path().display().to_string();
    let results = home.path().display().to_string();
    let child = spawn(
        home.path(),
        &[
            ("KUBECONFIG", &kubeconfig),
            ("PRUNE_KEEP", "5"),
            ("RESULTS_DIR", &results),
        ],
    );
    // One list (every run fits one page) and the first four deletes, now held back.
    wait_for("four deletes in flight", || {
        standin.requests_received() == 5
    });
    sigterm(&child);
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    let log = stderr(&out);

    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(log.contains("termination requested"), "{log}");
    assert!(
        log.contains(
            "stopped by SIGTERM or SIGINT in namespace backups: deleted 4 of 25 planned TaskRuns, 21 not started; the next run carries on"
        ),
        "{log}"
    );
    let deletions = standin.deletions();
    assert_eq!(deletions.len(), 4, "no delete started after SIGTERM");
    assert!(deletions.iter().all(|d| d.status == 200));
    assert_eq!(standin.taskruns().len(), 36 - 4);
    let value = std::fs::read_to_string(home.path().join("prune-outcome")).unwrap();
    assert!(
        value.starts_with("failed: stopped by SIGTERM or SIGINT"),
        "{value}"
    );
}

#[test]
fn sigterm_during_a_hung_list_exits_1_having_deleted_nothing() {
    let home = tempfile::tempdir().unwrap();
    let standin = KubeStandIn::start();
    seed(&standin);
    standin.delay_lists(Duration::from_secs(3600));
    let kubeconfig = standin.kubeconfig_path().display().to_string();
    let child = spawn(
        home.path(),
        &[("KUBECONFIG", &kubeconfig), ("PRUNE_KEEP", "0")],
    );
    wait_for("the list request", || standin.requests_received() == 1);
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("stopped by SIGTERM or SIGINT while listing TaskRuns; nothing was deleted"),
        "{log}"
    );
    assert!(standin.deletions().is_empty());
}

#[test]
fn a_hung_api_server_ends_the_step_within_prune_timeout() {
    let home = tempfile::tempdir().unwrap();
    let standin = KubeStandIn::start();
    seed(&standin);
    standin.delay_lists(Duration::from_secs(3600));
    let kubeconfig = standin.kubeconfig_path().display().to_string();
    let started = Instant::now();
    let out = prune(
        home.path(),
        &[("KUBECONFIG", &kubeconfig), ("PRUNE_TIMEOUT", "1s")],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        log.contains("the API server did not answer page 1 of the list of TaskRuns in namespace backups within 1s"),
        "{log}"
    );
}

#[test]
fn guard_mode_blocks_behind_an_older_running_run() {
    let home = tempfile::tempdir().unwrap();
    let standin = KubeStandIn::start();
    seed(&standin);
    let older = Utc::now() - TimeDelta::minutes(30);
    standin.add_taskrun(
        &TaskRun::new("backup-manual")
            .task("vault-backup")
            .created(Some(older))
            .running(),
    );
    let kubeconfig = standin.kubeconfig_path().display().to_string();
    let result = home.path().join("guard");
    let result_path = result.display().to_string();
    let vars = |current: &'static str| {
        [
            ("KUBECONFIG", kubeconfig.clone()),
            ("PRUNE_MODE", "guard".to_owned()),
            ("PRUNE_CURRENT", current.to_owned()),
            ("RESULT_GUARD_OUTCOME_PATH", result_path.clone()),
        ]
    };

    // backup-now (created just now) is the newer run: it stops.
    let v = vars("backup-now");
    let pairs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = prune(home.path(), &pairs);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].ends_with(&format!(
            "another run of this Task is running: backup-manual (started {}); this run stops before it snapshots or uploads anything",
            older.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&result).unwrap(),
        "blocked by backup-manual"
    );
    assert!(standin.deletions().is_empty());

    // backup-manual itself goes ahead.
    let v = vars("backup-manual");
    let pairs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = prune(home.path(), &pairs);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("no other run of this Task is active ahead of this one"),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&result).unwrap(), "clear");
    assert!(standin.deletions().is_empty());
}
