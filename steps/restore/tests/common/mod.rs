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
