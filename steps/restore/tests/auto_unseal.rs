//! Auto-unsealed clusters, end to end against real OpenBao with the transit seal (a second
//! OpenBao is the KMS): the backup of a 3-node transit-sealed cluster, the drill into a scratch
//! node with the same seal and no unseal keys file at all, the restore into a fresh
//! transit-sealed cluster, and restores across seal types (Shamir into transit and back),
//! which must fail naming both seals and say what they left behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use serde_json::Value;
use vault_backup_testbed::openbao::{Cluster, Options};
use vault_backup_testbed::transit::{Kms, SealedCluster, SealedScratch};
use vault_backup_testbed::venv;

const CANARY: &str = "vault-backup/canary";

/// Builds the other steps' binaries once per process, so the test never runs a stale one.
fn step_bin(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "vault-snapshot", "-p", "snapshot-sync"])
            .current_dir(venv::workspace_root())
            .status()
            .expect("cargo build");
        assert!(
            status.success(),
            "building vault-snapshot and snapshot-sync"
        );
    });
    venv::workspace_bin(name)
}

/// Runs `bin` with exactly `env` (plus PATH): exit code, stderr (printed, for the report).
fn run(bin: &Path, env: &BTreeMap<String, String>) -> (i32, String) {
    let out = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .expect("run the step");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "--- {} exited {:?} ---\n{stderr}",
        bin.display(),
        out.status.code()
    );
    (out.status.code().unwrap_or(-1), stderr)
}

fn restore_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vault-restore"))
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn manifest(dir: &Path, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.snap.json"))).unwrap()).unwrap()
}

fn result(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// `vault-snapshot` (with the canary) against `addr`, then `snapshot-sync` to `bk`; returns
/// the snapshot's name and the snapshot step's stderr.
fn back_up(addr: &str, token: &str, bk: &Path) -> (String, String) {
    let ws = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let (code, stderr) = run(
        &step_bin("vault-snapshot"),
        &env(&[
            ("VAULT_ADDR", addr),
            ("VAULT_TOKEN", token),
            ("SNAPSHOT_DIR", &s(ws.path())),
            ("RESULTS_DIR", &s(results.path())),
            ("CANARY_PATH", CANARY),
            ("TASKRUN_NAME", "vault-backup-transit-1"),
        ]),
    );
    assert_eq!(code, 0, "vault-snapshot: {stderr}");
    let name = result(results.path(), "snapshot-name");
    let (code, sync) = run(
        &step_bin("snapshot-sync"),
        &env(&[
            ("SNAPSHOT_DIR", &s(ws.path())),
            ("SNAPSHOT_NAME", &name),
            ("BACKUP_DIR", &s(bk)),
        ]),
    );
    assert_eq!(code, 0, "snapshot-sync: {sync}");
    (name, stderr)
}

fn cluster_name(status: &Value) -> String {
    status["cluster_name"]
        .as_str()
        .expect("cluster_name in bao status")
        .to_owned()
}

#[test]
fn a_transit_sealed_cluster_is_backed_up_drilled_without_unseal_keys_and_restored() {
    let kms = Kms::start();
    let seal = kms.seal_stanza(None);
    let source = SealedCluster::start(3, &seal);
    assert_eq!(source.status(0)["type"], "transit", "{}", source.status(0));
    assert_eq!(source.status(0)["recovery_seal"], true);
    source.kv2_put("app", "password", "before-the-backup");

    // The backup against the 3-node transit-sealed cluster.
    let bk = tempfile::tempdir().unwrap();
    let (name, snap_log) = back_up(source.addr(0), source.root_token(), bk.path());
    let m = manifest(bk.path(), &name);
    assert_eq!(m["seal_type"], "transit", "{m}");
    assert_eq!(m["health"]["status"], "healthy", "{m}");
    assert_eq!(m["health"]["failure_tolerance"], 1, "{m}");
    assert_eq!(
        m["health"]["voters"].as_array().map(Vec::len),
        Some(3),
        "{m}"
    );
    assert!(
        !snap_log.contains(" WARN "),
        "a healthy cluster, no warning: {snap_log}"
    );

    // The drill into a scratch node with the same seal, with DRILL_UNSEAL_KEYS_FILE set (as the
    // Task always sets it) to a file that does not exist (no Secret mounted).
    let scratch = SealedScratch::start(&seal);
    let ws = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let no_keys = ws.path().join("no-secret-mounted/keys");
    let (code, stderr) = run(
        &restore_bin(),
        &env(&[
            ("RESTORE_MODE", "drill"),
            ("VAULT_ADDR", scratch.addr()),
            ("VAULT_TOKEN", source.root_token()),
            ("SNAPSHOT_DIR", &s(ws.path())),
            ("BACKUP_DIR", &s(bk.path())),
            ("RESULTS_DIR", &s(results.path())),
            ("DRILL_UNSEAL_KEYS_FILE", &s(&no_keys)),
            ("DRILL_RECOVERY_KEYS_FILE", &s(&ws.path().join("absent"))),
            ("CANARY_PATH", CANARY),
        ]),
    );
    assert_eq!(
        code,
        0,
        "drill: {stderr}\n--- scratch ---\n{}",
        scratch.log()
    );
    assert_eq!(result(results.path(), "canary"), "ok");
    assert!(
        stderr.contains("unsealed itself with the auto-unseal seal")
            && stderr.contains("seal=transit"),
        "{stderr}"
    );
    assert!(!stderr.contains(source.root_token()) && !stderr.contains(source.recovery_key()));

    // The restore into a fresh transit-sealed cluster: the old secrets read back.
    let target = SealedCluster::start(3, &seal);
    target.kv2_put("prior", "state", "the-target-before");
    let ws = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let (code, stderr) = run(
        &restore_bin(),
        &env(&[
            ("VAULT_ADDR", target.addr(1)),
            ("VAULT_TOKEN", target.root_token()),
            ("SNAPSHOT_DIR", &s(ws.path())),
            ("BACKUP_DIR", &s(bk.path())),
            ("RESULTS_DIR", &s(results.path())),
            ("RESTORE_FORCE", "true"),
            (
                "RESTORE_CONFIRM",
                &format!("{name}@{}", cluster_name(&target.status(0))),
            ),
        ]),
    );
    assert_eq!(
        code,
        0,
        "restore: {stderr}\n--- target ---\n{}",
        target.log(0)
    );
    assert_eq!(result(results.path(), "sealed"), "false", "{stderr}");
    for i in 0..3 {
        let mut got = Err(String::new());
        for _ in 0..40 {
            got = target.kv2_get(i, source.root_token(), "app", "password");
            if got.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        assert_eq!(
            got.as_deref(),
            Ok("before-the-backup"),
            "node {i} reads the source's secret with the source's token"
        );
        assert_eq!(target.status(i)["sealed"], false, "node {i} unsealed");
    }
}
