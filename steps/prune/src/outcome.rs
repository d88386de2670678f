//! What a run did, and the one-line outcome it leaves as a Tekton result.
//!
//! The prune step runs first in the Task with `onError: continue`, so its exit code never shows
//! in the TaskRun's status; the `prune-outcome` result is where a person (or `tkn`) sees what it
//! did. The guard step's `guard-outcome` says why a run went on or stopped.

use chrono::{DateTime, SecondsFormat, Utc};
use vault_backup_common::env::ConfigError;
use vault_backup_common::tekton::Results;

use crate::config::Mode;

/// Longest result value written: Tekton keeps all of a TaskRun's results in one 4 KiB
/// termination message, shared with the other steps' results.
pub const MAX_RESULT_BYTES: usize = 512;

/// What a prune did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The namespace pruned.
    pub namespace: String,
    /// TaskRuns that matched the selector.
    pub listed: usize,
    /// List requests made.
    pub pages: usize,
    /// TaskRuns the plan deletes.
    pub planned: usize,
    /// TaskRuns deleted.
    pub deleted: usize,
    /// TaskRuns already gone when deleted (404): counted as done.
    pub already_gone: usize,
    /// TaskRuns kept.
    pub kept: usize,
    /// Of those kept, runs that belong to a PipelineRun (left to it).
    pub in_pipeline_runs: usize,
    /// TaskRuns whose delete failed (or timed out), by name.
    pub failed: Vec<String>,
    /// Planned deletes never started: the step was stopped, or the API server stopped answering.
    pub not_started: usize,
    /// Deletes still in flight when the step stopped waiting for them: they may or may not
    /// have happened.
    pub abandoned: Vec<String>,
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
}

impl Summary {
    /// The `prune-outcome` value of a run that did all it planned.
    #[must_use]
    pub fn result_value(&self) -> String {
        if self.dry_run {
            format!("dry run: would delete {}, kept {}", self.planned, self.kept)
        } else {
            format!(
                "deleted {}, kept {}",
                self.deleted + self.already_gone,
                self.kept
            )
        }
    }
}

/// What the guard found when it let the run go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clear {
    /// The namespace looked at.
    pub namespace: String,
    /// Runs that matched the selector.
    pub listed: usize,
    /// Other runs still going that started after this one (they stop themselves).
    pub newer_running: usize,
}

/// What a run of either mode ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Prune mode finished.
    Pruned(Summary),
    /// Guard mode found no other run ahead of this one.
    Clear(Clear),
}

impl Outcome {
    /// The value of the mode's outcome result.
    #[must_use]
    pub fn result_value(&self) -> String {
        match self {
            Self::Pruned(summary) => summary.result_value(),
            Self::Clear(_) => "clear".to_owned(),
        }
    }

    /// The prune summary, if this was a prune.
    #[must_use]
    pub fn pruned(self) -> Option<Summary> {
        match self {
            Self::Pruned(summary) => Some(summary),
            Self::Clear(_) => None,
        }
    }
}

/// The outcome result of a failed run: `failed: <line>`, cut to [`MAX_RESULT_BYTES`].
#[must_use]
pub fn failed_value(line: &str) -> String {
    let mut value = format!("failed: {line}");
    if value.len() > MAX_RESULT_BYTES {
        let mut end = MAX_RESULT_BYTES - '…'.len_utf8();
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        value.push('…');
    }
    value
}

/// A timestamp as a person reads it in a log line or a message.
#[must_use]
pub fn timestamp(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(
        || "at an unknown time".to_owned(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// Writes `value` to the mode's outcome result, if the step was given a place for it; a
/// failure to write is logged, never fatal, because the outcome it would report stands.
pub fn write(results: &Results, mode: Mode, value: &str) {
    if let Err(e) = results.write(mode.result(), value) {
        tracing::warn!("cannot write the {} result: {e}", mode.result());
    }
}

/// Records a configuration error in the outcome result of the mode `PRUNE_MODE` asks for (prune
/// if it is unreadable), so that a step that continues on error still shows why it did nothing.
/// Reads the result variables straight from the environment: the configuration did not load.
pub fn record_config_error(err: &ConfigError) {
    let mode = Mode::parse(std::env::var("PRUNE_MODE").ok().as_deref()).unwrap_or(Mode::Prune);
    let results = Results::from_env(&[mode.result()]);
    write(&results, mode, &failed_value(&err.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_documented() {
        let summary = Summary {
            planned: 3,
            deleted: 2,
            already_gone: 1,
            kept: 10,
            ..Summary::default()
        };
        assert_eq!(summary.result_value(), "deleted 3, kept 10");
        let dry = Summary {
            dry_run: true,
            deleted: 0,
            already_gone: 0,
            ..summary
        };
        assert_eq!(dry.result_value(), "dry run: would delete 3, kept 10");
        assert_eq!(failed_value("boom"), "failed: boom");
    }

    #[test]
    fn long_failures_are_cut_at_a_character_boundary() {
        let value = failed_value(&"é".repeat(1000));
        assert!(value.len() <= MAX_RESULT_BYTES, "{}", value.len());
        assert!(value.starts_with("failed: é") && value.ends_with('…'));
    }
}
