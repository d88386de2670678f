//! The `vault-restore` binary in drill mode, pushing to a real Pushgateway: a drill that passes
//! (a real OpenBao snapshot restored into a real scratch node) pushes when it passed and how
//! long it took; a drill that fails pushes its failure and leaves the last passing drill's time
//! in place, which is what the "drill too old" alert reads.

use std::path::Path;
use std::process::Command;
use std::time::{Instant, SystemTime};

use vault_backup_common::metrics::{
    LAST_FAILURE, LAST_RUN_EXIT_CODE, LAST_SUCCESS, RESTORE_DRILL_DURATION,
    RESTORE_DRILL_LAST_SUCCESS, unix_seconds,
};
use vault_backup_testbed::openbao::{Cluster, Options, ScratchNode};
use vault_backup_testbed::pushgateway::Pushgateway;

const STEP: &str = "vault-restore";
const NAME: &str = "vault-20261124T020000Z";

/// The binary with exactly `vars` (plus PATH): exit code, stderr and wall time.
fn restore(vars: &[(&str, &str)]) -> (Option<i32>, String, f64) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_vault-restore"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .output()
        .expect("run vault-restore");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed().as_secs_f64(),
    )
}

/// A real snapshot of `cluster` in `dir` as `NAME.snap` with its `.sha256` (no manifest: the
/// step then checks the archive's own raft index).
fn backup(cluster: &Cluster, dir: &Path) {
    let snap = dir.join(format!("{NAME}.snap"));
    cluster.bao(
        0,
        &[
            "operator",
            "raft",
            "snapshot",
            "save",
            &snap.display().to_string(),
        ],
    );
    let out = Command::new("sha256sum")
        .arg(format!("{NAME}.snap"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(dir.join(format!("{NAME}.snap.sha256")), out.stdout).unwrap();
}

#[test]
fn a_passed_drill_pushes_its_time_and_duration_and_a_failed_one_keeps_them() {
    let source = Cluster::start(1, Options::default());
    source.write_secret("secret/app", &[("k", "v")]);
    let backups = tempfile::tempdir().unwrap();
    backup(&source, backups.path());
    let scratch = tempfile::tempdir().unwrap();
    let keys = scratch.path().join("unseal-keys");
    std::fs::write(&keys, format!("{}\n", source.unseal_key())).unwrap();
    let node = ScratchNode::start_uninitialized();
    let pg = Pushgateway::start();
    let url = pg.url();
    let (b, s, k) = (
        backups.path().display().to_string(),
        scratch.path().display().to_string(),
        keys.display().to_string(),
    );
    let vars = [
        ("RESTORE_MODE", "drill"),
        ("RESTORE_FROM", "dir"),
        ("BACKUP_DIR", b.as_str()),
        ("SNAPSHOT_DIR", &s),
        ("VAULT_ADDR", node.addr()),
        ("VAULT_TOKEN", source.root_token()),
        ("DRILL_UNSEAL_KEYS_FILE", &k),
        ("METRICS_PUSHGATEWAY_URL", &url),
        ("METRICS_TASK", "vault-restore-drill"),
    ];

    let before = unix_seconds(SystemTime::now());
    let (code, stderr, wall) = restore(&vars);
    let after = unix_seconds(SystemTime::now());
    assert_eq!(code, Some(0), "{stderr}\n--- node ---\n{}", node.log());
    assert!(stderr.contains("restore drill passed"), "{stderr}");
    assert!(stderr.contains("metrics pushed"), "{stderr}");
    assert!(
        !stderr.contains(source.unseal_key()),
        "the unseal key was logged"
    );
    let v = |name: &str| {
        pg.value(name, STEP)
            .unwrap_or_else(|| panic!("{name} not pushed: {:?}", pg.metrics("vault_backup_")))
    };
    let drilled = v(RESTORE_DRILL_LAST_SUCCESS.name);
    assert!(
        before <= drilled && drilled <= after,
        "{before} {drilled} {after}"
    );
    let took = v(RESTORE_DRILL_DURATION.name);
    assert!(took > 0.0 && took <= wall, "drill {took}s, run {wall}s");
    let success = v(LAST_SUCCESS.name);
    for s in pg.metrics("vault_backup_") {
        assert_eq!(
            (s.label("task"), s.label("step")),
            ("vault-restore-drill", STEP),
            "{s:?}"
        );
    }

    // The same node again: no longer fresh, so the drill fails (exit 1) and proves nothing.
    let (code, stderr, _) = restore(&vars);
    assert_eq!(code, Some(1), "{stderr}");
    assert!((v(LAST_RUN_EXIT_CODE.name) - 1.0).abs() < f64::EPSILON);
    assert!(v(LAST_FAILURE.name) > success);
    assert!((v(LAST_SUCCESS.name) - success).abs() < 1e-3);
    assert!((v(RESTORE_DRILL_LAST_SUCCESS.name) - drilled).abs() < 1e-3);
    assert!((v(RESTORE_DRILL_DURATION.name) - took).abs() < 1e-3);
}
