//! `taskrun-prune`: deletes old finished TaskRuns of the backup Task. See the library.

use std::process::ExitCode;

use taskrun_prune::{Config, USAGE, run};

fn main() -> ExitCode {
    vault_backup_common::run_main(
        "taskrun-prune",
        env!("CARGO_PKG_VERSION"),
        USAGE,
        Config::from_env,
        run,
    )
}
