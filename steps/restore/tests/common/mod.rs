//! What the restore crate's tests against real servers share: the other steps' binaries, a run
//! of a binary with exactly the environment given, and small conversions.

#![allow(dead_code)] // each test binary uses its own part of it

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use vault_backup_testbed::venv;

/// Where the backup writes its canary (`CANARY_PATH`).
pub const CANARY: &str = "vault-backup/canary";

/// Builds the other steps' binaries once per process, so the test never runs a stale one.
pub fn step_bin(name: &str) -> PathBuf {
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
pub fn run(bin: &Path, env: &BTreeMap<String, String>) -> (i32, String) {
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

pub fn restore_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vault-restore"))
}

pub fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// What [`back_up`] left: the snapshot's name and the snapshot step's stderr.
pub struct Backup {
    /// The snapshot's name (`vault-<time>`).
    pub name: String,
    /// `vault-snapshot`'s stderr, for checks on its log.
    pub snapshot_log: String,
}

/// The backup Task's two steps: `vault-snapshot` against `addr` with `token` (writing the
/// canary at [`CANARY`] when `canary`), then `snapshot-sync` with `stores` (the store
/// variables: `BACKUP_DIR`, `S3_*`, ...). Both must exit 0.
pub fn back_up(
    addr: &str,
    token: &str,
    canary: bool,
    mut stores: BTreeMap<String, String>,
) -> Backup {
    let ws = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let mut snapshot = env(&[
        ("VAULT_ADDR", addr),
        ("VAULT_TOKEN", token),
        ("SNAPSHOT_DIR", &s(ws.path())),
        ("RESULTS_DIR", &s(results.path())),
        ("TASKRUN_NAME", "vault-backup-run-1"),
    ]);
    if canary {
        snapshot.insert("CANARY_PATH".into(), CANARY.into());
    }
    let (code, snapshot_log) = run(&step_bin("vault-snapshot"), &snapshot);
    assert_eq!(code, 0, "vault-snapshot: {snapshot_log}");
    let name = std::fs::read_to_string(results.path().join("snapshot-name"))
        .unwrap()
        .trim()
        .to_owned();
    stores.insert("SNAPSHOT_DIR".into(), s(ws.path()));
    stores.insert("SNAPSHOT_NAME".into(), name.clone());
    let (code, stderr) = run(&step_bin("snapshot-sync"), &stores);
    assert_eq!(code, 0, "snapshot-sync: {stderr}");
    Backup { name, snapshot_log }
}

/// A drill's environment (no store variables): into the scratch node at `addr`, logged in with
/// `token`, fetching into `snapshot_dir`, results in `results_dir`, unsealing with the keys in
/// `keys_file`, checking the canary at [`CANARY`], each phase within 60 s.
pub fn drill_env(
    addr: &str,
    token: &str,
    snapshot_dir: &Path,
    results_dir: &Path,
    keys_file: &Path,
) -> BTreeMap<String, String> {
    env(&[
        ("RESTORE_MODE", "drill"),
        ("VAULT_ADDR", addr),
        ("VAULT_TOKEN", token),
        ("SNAPSHOT_DIR", &s(snapshot_dir)),
        ("RESULTS_DIR", &s(results_dir)),
        ("DRILL_UNSEAL_KEYS_FILE", &s(keys_file)),
        ("CANARY_PATH", CANARY),
        ("RESTORE_TIMEOUT", "60s"),
    ])
}
