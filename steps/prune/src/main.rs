//! `taskrun-prune`: deletes old finished TaskRuns of the backup Task, or (guard mode) stops a run
//! while an older one is running. See the library.

use std::process::ExitCode;

use taskrun_prune::{Config, USAGE, metrics, outcome, run};

fn main() -> ExitCode {
    vault_backup_common::run_main_with_metrics(
        "taskrun-prune",
        env!("CARGO_PKG_VERSION"),
        USAGE,
        // Guard mode pushes nothing (see the metrics module).
        metrics::step(),
        vault_backup_common::Runtime::MultiThread,
        // The outcome result is written even when the configuration is unusable: the step runs
        // with onError: continue, so the result is where its failure shows.
        || Config::from_env().inspect_err(outcome::record_config_error),
        run,
    )
}
