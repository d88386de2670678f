//! `vault-snapshot`: the first step of the vault-backup Task. See the library for what it does.

use std::process::ExitCode;

use vault_snapshot::{Config, USAGE, run};

fn main() -> ExitCode {
    vault_backup_common::run_main(
        "vault-snapshot",
        env!("CARGO_PKG_VERSION"),
        USAGE,
        Config::from_env,
        run,
    )
}
