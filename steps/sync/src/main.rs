//! `snapshot-sync`: copies a verified Vault snapshot to S3 and/or a directory (see `--help`).

use std::process::ExitCode;

use snapshot_sync::{Config, USAGE, metrics, run};

fn main() -> ExitCode {
    vault_backup_common::run_main_with_metrics(
        "snapshot-sync",
        env!("CARGO_PKG_VERSION"),
        USAGE,
        Some(metrics::STEP),
        vault_backup_common::Runtime::MultiThread,
        Config::from_env,
        run,
    )
}
