//! Whether another run of the Task is still going: a pure function of the listed runs.
//!
//! A manual run and a scheduled one can overlap (the CronJob's `concurrencyPolicy: Forbid` ends
//! with its `kubectl create`), and two runs writing to the same stores could meet each other's
//! copies in flight. So the guard step lets only the oldest running run through:
//!
//! - Only runs that have not finished count (no `Succeeded` condition yet, or `Unknown`).
//! - A run created before the current one blocks it; for the same creation time the
//!   lexically smaller name counts as older, so of two runs exactly one goes ahead.
//! - A running run whose creation time is unknown blocks (never guess in favour of going on).
//! - If the current run is not in the list (or its creation time is unknown), any other running
//!   run blocks: the guard cannot tell which came first.
//! - Runs of a PipelineRun count like any other: they write to the same stores.

use crate::policy::{Outcome, Run};

/// The guard's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No other run is ahead of this one.
    Clear {
        /// Other runs still going that started after this one (they will stop themselves).
        newer_running: usize,
    },
    /// This run must stop: `by` is still going and started first.
    Blocked {
        /// The oldest such run.
        by: Run,
    },
}

/// Decides whether the run named `current` may go ahead; see the module documentation.
#[must_use]
pub fn check(runs: &[Run], current: &str) -> Verdict {
    let me = runs
        .iter()
        .find(|r| r.name == current)
        .and_then(|r| r.created);
    let (mut ahead, mut behind): (Vec<&Run>, Vec<&Run>) = (Vec::new(), Vec::new());
    for run in runs
        .iter()
        .filter(|r| r.name != current && r.outcome == Outcome::Running)
    {
        let first = match (me, run.created) {
            (Some(mine), Some(theirs)) => (theirs, run.name.as_str()) < (mine, current),
            _ => true,
        };
        if first {
            ahead.push(run);
        } else {
            behind.push(run);
        }
    }
    // `None` sorts first: an undated run is named before dated ones.
    match ahead
        .into_iter()
        .min_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)))
    {
        Some(by) => Verdict::Blocked { by: by.clone() },
        None => Verdict::Clear {
            newer_running: behind.len(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeDelta, Utc};
    use rstest::rstest;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-30T12:00:00Z")
            .unwrap()
            .to_utc()
            + TimeDelta::minutes(minutes)
    }

    /// `name:state:created_minutes` with state `r` (running), `s` (succeeded) or `f` (failed);
    /// `-` for an unknown creation time.
    fn runs(specs: &str) -> Vec<Run> {
        specs
            .split_whitespace()
            .map(|spec| {
                let p: Vec<&str> = spec.split(':').collect();
                Run {
                    name: p[0].to_owned(),
                    created: (p[2] != "-").then(|| at(p[2].parse().unwrap())),
                    completed: None,
                    outcome: match p[1] {
                        "r" => Outcome::Running,
                        "s" => Outcome::Succeeded,
                        _ => Outcome::Failed,
                    },
                    pipeline_run: None,
                }
            })
            .collect()
    }

    fn blocker(specs: &str, current: &str) -> Option<String> {
        match check(&runs(specs), current) {
            Verdict::Blocked { by } => Some(by.name),
            Verdict::Clear { .. } => None,
        }
    }

    #[rstest]
    #[case::alone("cur:r:0", None)]
    #[case::older_running_blocks("old:r:-10 cur:r:0", Some("old"))]
    #[case::newer_running_does_not("cur:r:0 new:r:5", None)]
    #[case::finished_do_not("a:s:-30 b:f:-20 cur:r:0", None)]
    #[case::oldest_named("b:r:-5 a:r:-10 cur:r:0 n:r:3", Some("a"))]
    #[case::undated_other_blocks("x:r:- cur:r:0", Some("x"))]
    #[case::undated_current_any_blocks("cur:r:- new:r:5", Some("new"))]
    #[case::current_not_listed("other:r:5", Some("other"))]
    #[case::current_not_listed_nothing_running("done:s:5", None)]
    fn verdicts(#[case] specs: &str, #[case] want: Option<&str>) {
        assert_eq!(blocker(specs, "cur").as_deref(), want, "{specs}");
    }

    #[test]
    fn of_two_runs_created_together_exactly_one_goes_ahead() {
        let specs = "a:r:0 b:r:0";
        assert_eq!(blocker(specs, "a"), None);
        assert_eq!(blocker(specs, "b").as_deref(), Some("a"));
    }

    #[test]
    fn clear_counts_the_newer_runs_that_will_stop() {
        assert_eq!(
            check(&runs("cur:r:0 n1:r:1 n2:r:2 done:s:-5"), "cur"),
            Verdict::Clear { newer_running: 2 }
        );
    }
}
