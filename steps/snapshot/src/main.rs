//! `vault-snapshot`: the first step of the vault-backup Task. See the library for what it does.

use std::process::ExitCode;

use vault_snapshot::{Config, USAGE, metrics, run};

fn main() -> ExitCode {
    vault_backup_common::run_main_with_metrics(
        "vault-snapshot",
        env!("CARGO_PKG_VERSION"),
        USAGE,
        Some(metrics::STEP),
        vault_backup_common::Runtime::CurrentThread,
        Config::from_env,
        run,
    )
}
