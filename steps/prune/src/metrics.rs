//! What a prune run tells the Pushgateway: how many TaskRuns it deleted and kept.
//!
//! Guard mode pushes nothing ([`step`] is `None`): its runs would otherwise replace the prune's
//! `last_success`/`last_failure` under the same step name, and a blocked guard is a run that
//! rightly stopped, not a failure to page about. A guard that keeps failing stops every backup,
//! which the "backup too old" alert on the snapshot and sync steps catches.

use std::time::SystemTime;

use vault_backup_common::metrics::{Metrics, Report, TASKRUNS_DELETED, TASKRUNS_KEPT};

use crate::config::Mode;
use crate::error::Error;
use crate::outcome::{Outcome, Summary};

/// The step name prune mode pushes under (the alert rules expect it).
pub const STEP: &str = "taskrun-prune";

/// The step name to push under for the mode `PRUNE_MODE` asks for: [`STEP`] for prune (and for
/// a `PRUNE_MODE` that does not parse: that configuration error is worth a failure), `None` for
/// guard. Read from the environment because it is needed before the configuration loads.
#[must_use]
pub fn step() -> Option<&'static str> {
    step_for(std::env::var("PRUNE_MODE").ok().as_deref())
}

fn step_for(mode: Option<&str>) -> Option<&'static str> {
    match Mode::parse(mode) {
        Ok(Mode::Guard) => None,
        Ok(Mode::Prune) | Err(_) => Some(STEP),
    }
}

fn counts(summary: &Summary, metrics: &mut Metrics) {
    // A dry run deletes nothing: 0, as it did.
    let deleted = summary.deleted + summary.already_gone;
    #[allow(clippy::cast_precision_loss)] // counts of TaskRuns, far below 2^52
    metrics
        .set(TASKRUNS_DELETED, deleted as f64)
        .set(TASKRUNS_KEPT, summary.kept as f64);
}

impl Report for Outcome {
    fn metrics(&self, metrics: &mut Metrics, _at: SystemTime) {
        if let Self::Pruned(summary) = self {
            counts(summary, metrics);
        }
    }
}

/// A prune that got as far as deleting says what it deleted, even when some deletes failed or
/// the step was stopped.
impl Report for Error {
    fn metrics(&self, metrics: &mut Metrics, _at: SystemTime) {
        if let Self::Incomplete { summary } | Self::Interrupted { summary } = self {
            counts(summary, metrics);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH
    }

    #[test]
    fn guard_pushes_nothing_and_everything_else_as_prune() {
        assert_eq!(step_for(Some("guard")), None);
        assert_eq!(step_for(Some(" GUARD ")), None);
        assert_eq!(step_for(None), Some(STEP));
        assert_eq!(step_for(Some("prune")), Some(STEP));
        assert_eq!(step_for(Some("gaurd")), Some(STEP));
    }

    #[test]
    fn deleted_counts_runs_already_gone_and_a_dry_run_deletes_nothing() {
        let summary = Summary {
            planned: 4,
            deleted: 3,
            already_gone: 1,
            kept: 10,
            ..Summary::default()
        };
        let mut m = Metrics::new();
        Outcome::Pruned(summary.clone()).metrics(&mut m, at());
        let text = m.render();
        assert!(text.contains("vault_backup_taskruns_deleted 4\n"), "{text}");
        assert!(text.contains("vault_backup_taskruns_kept 10\n"), "{text}");

        let dry = Summary {
            dry_run: true,
            deleted: 0,
            already_gone: 0,
            ..summary
        };
        let mut m = Metrics::new();
        Outcome::Pruned(dry).metrics(&mut m, at());
        assert!(m.render().contains("vault_backup_taskruns_deleted 0\n"));
    }

    #[test]
    fn a_partial_prune_reports_what_it_did_and_other_errors_nothing() {
        let mut m = Metrics::new();
        Error::Incomplete {
            summary: Box::new(Summary {
                planned: 5,
                deleted: 2,
                kept: 7,
                failed: vec!["a".into(), "b".into(), "c".into()],
                ..Summary::default()
            }),
        }
        .metrics(&mut m, at());
        let text = m.render();
        assert!(text.contains("vault_backup_taskruns_deleted 2\n"), "{text}");
        assert!(text.contains("vault_backup_taskruns_kept 7\n"), "{text}");

        let mut m = Metrics::new();
        Error::InterruptedListing.metrics(&mut m, at());
        assert!(m.is_empty());
    }
}
