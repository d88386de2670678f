//! The `taskrun-prune` binary as the Task runs it: only environment variables in, an exit code
//! and log lines on stderr out. The Kubernetes API is the in-process stand-in (see its module
//! documentation for what it does not model); the binary reaches it through a kubeconfig.

use std::process::{Command, Output};

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

    let out = prune(
        home.path(),
        &[
            ("KUBECONFIG", &kubeconfig),
            ("PRUNE_KEEP", "5"),
            ("PRUNE_DRY_RUN", "true"),
            ("PRUNE_CURRENT", "backup-now"),
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
}

#[test]
fn deletes_and_a_failed_delete_exits_1_after_the_rest() {
    let home = tempfile::tempdir().unwrap();
    let standin = KubeStandIn::start();
    let backups = seed(&standin);
    standin.fail_delete("backup-03");
    let kubeconfig = standin.kubeconfig_path().display().to_string();

    let out = prune(
        home.path(),
        &[
            ("KUBECONFIG", &kubeconfig),
            ("PRUNE_NAMESPACE", "backups"),
            ("PRUNE_KEEP", "5"),
            ("PRUNE_PAGE_SIZE", "7"),
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
fn no_cluster_and_no_kubeconfig_exits_2() {
    let home = tempfile::tempdir().unwrap();
    let out = prune(home.path(), &[]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.lines()
            .next()
            .unwrap_or_default()
            .contains("no Kubernetes client configuration: not in a pod with a service account"),
        "{log}"
    );
}

#[test]
fn unreadable_kubeconfig_exits_2_naming_it() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("nope.yaml").display().to_string();
    let out = prune(home.path(), &[("KUBECONFIG", &missing)]);
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
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
    ] {
        assert!(text.contains(var), "{var} missing from --help");
    }
}
