//! What each step binary reads, taken from the binaries' own config structs and result names,
//! so the step runner can refuse a Task that sets a variable no binary reads.

use std::collections::{BTreeMap, BTreeSet};

use vault_backup_common::env::variables;
use vault_backup_common::metrics;
use vault_backup_common::tekton::path_variable;

/// Variables every step reads besides its config struct (and the `METRICS_*` variables of
/// `metrics::Config`, which every step reads through `run_main_with_metrics`).
const COMMON: [&str; 3] = ["LOG_FORMAT", "RUST_LOG", "RESULTS_DIR"];

fn set(config: Vec<String>, results: &[&str]) -> BTreeSet<String> {
    config
        .into_iter()
        .chain(results.iter().map(|r| path_variable(r)))
        .chain(COMMON.iter().map(|s| (*s).to_owned()))
        .chain(metrics::Config::variables())
        .collect()
}

/// Binary name → the variables it reads.
pub fn known_env() -> BTreeMap<String, BTreeSet<String>> {
    BTreeMap::from([
        (
            "vault-snapshot".to_owned(),
            set(
                vault_snapshot::config::RawConfig::variables(),
                &vault_snapshot::config::RESULTS,
            ),
        ),
        (
            "snapshot-sync".to_owned(),
            set(
                snapshot_sync::RawConfig::variables(),
                &snapshot_sync::config::RESULTS,
            ),
        ),
        (
            "vault-restore".to_owned(),
            set(
                vault_restore::RawConfig::variables(),
                &vault_restore::config::RESULTS,
            ),
        ),
        (
            "taskrun-prune".to_owned(),
            set(
                variables::<taskrun_prune::RawConfig>(),
                &taskrun_prune::config::RESULTS,
            ),
        ),
    ])
}
