//! Helpers shared by the snapshot step's integration tests.
#![allow(dead_code)]

use std::process::Command;

use vault_backup_testbed::venv;

/// Runs the real `vault-snapshot` binary with exactly `envs` (plus PATH) and returns its exit
/// code and stderr.
pub fn run_bin(envs: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vault-snapshot"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().copied())
        .output()
        .expect("run vault-snapshot");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sha256sum -c <file>` in `dir`, as a user would check a backup.
pub use vault_backup_testbed::check::{files, sha256sum_check};

/// The shipped least-privilege policy.
pub fn shipped_policy() -> String {
    std::fs::read_to_string(venv::workspace_root().join("tekton/vault-policy.hcl"))
        .expect("tekton/vault-policy.hcl")
}
