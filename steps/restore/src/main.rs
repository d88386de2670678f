//! `vault-restore`: restores a verified snapshot into a cluster, or runs the restore drill. See
//! the library for what it does.

use std::process::ExitCode;

use vault_restore::{Config, USAGE, metrics, run};

fn main() -> ExitCode {
    vault_backup_common::run_main_with_metrics(
        "vault-restore",
        env!("CARGO_PKG_VERSION"),
        USAGE,
        Some(metrics::STEP),
        vault_backup_common::Runtime::CurrentThread,
        Config::from_env,
        run,
    )
}
