//! Which TaskRuns to delete: a pure function of the runs, the policy and `now`.
//!
//! The rules, in the order they are applied to each run:
//!
//! 1. The current run (`PRUNE_CURRENT`) is kept and not counted.
//! 2. A run that belongs to a PipelineRun is kept and not counted: it is the PipelineRun's to
//!    keep or delete (deleting the PipelineRun deletes it too), and removing it would leave that
//!    PipelineRun pointing at a TaskRun that is gone.
//! 3. A run that has not finished (its `Succeeded` condition is `Unknown` or absent) is kept and
//!    not counted.
//! 4. A finished run without a `completionTime` or a `creationTimestamp` is kept and not counted:
//!    its place in the order is unknown, and the step never deletes when unsure.
//! 5. The remaining finished runs are ordered newest first by completion time, then creation
//!    time, then name (the greater name counts as newer, so exact ties are decided the same way
//!    every time). Without `keep_failed` succeeded and failed runs share one order and the newest
//!    `keep` of them are kept. With `keep_failed` they are ordered apart: the newest `keep`
//!    succeeded runs and the newest `keep_failed` failed runs are kept.
//! 6. Runs past those counts are deleted, whatever their age.
//! 7. With `max_age`, a run within the counts whose completion is more than `max_age` before
//!    `now` is deleted too: the counts are a ceiling, the age a second ceiling, never a floor.
//!
//! Nothing here performs I/O; the step lists the runs, calls [`plan`], logs the plan and only
//! then deletes.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// How a run ended, read from its `Succeeded` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `status: "True"`.
    Succeeded,
    /// `status: "False"` (failed, cancelled or timed out).
    Failed,
    /// `status: "Unknown"`, or no condition yet: pending or running.
    Running,
}

/// What the policy needs to know about one TaskRun.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.creationTimestamp`.
    pub created: Option<DateTime<Utc>>,
    /// `status.completionTime`.
    pub completed: Option<DateTime<Utc>>,
    /// From `status.conditions[type=Succeeded].status`.
    pub outcome: Outcome,
    /// The PipelineRun it belongs to (owner reference or `tekton.dev/pipelineRun` label), if any.
    pub pipeline_run: Option<String>,
}

/// The retention rules, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Newest finished runs to keep (succeeded runs only, when `keep_failed` is set).
    pub keep: u32,
    /// If set, failed runs are counted apart and the newest this many are kept.
    pub keep_failed: Option<u32>,
    /// If set, finished runs that completed longer ago than this are deleted even within the counts.
    pub max_age: Option<Duration>,
    /// The run this step runs in: never deleted.
    pub current: Option<String>,
}

/// Which order a finished run was counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Succeeded and failed runs together (no `keep_failed`).
    Finished,
    /// Succeeded runs (with `keep_failed`).
    Succeeded,
    /// Failed runs (with `keep_failed`).
    Failed,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Finished => "finished",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        })
    }
}

/// Why a run is kept or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Kept: it is the run this step runs in.
    Current,
    /// Kept: it belongs to this PipelineRun.
    InPipelineRun(String),
    /// Kept: it has not finished.
    NotFinished,
    /// Kept: a timestamp needed to order it is missing (`completionTime` or `creationTimestamp`).
    MissingTimestamp(&'static str),
    /// Kept: among the newest `keep` of its group (`rank` counts from 1).
    Newest {
        /// The order it was counted in.
        group: Group,
        /// Its place, 1 = newest.
        rank: usize,
        /// How many of the group are kept.
        keep: u32,
    },
    /// Deleted: past the newest `keep` of its group.
    BeyondKeep {
        /// The order it was counted in.
        group: Group,
        /// Its place, 1 = newest.
        rank: usize,
        /// How many of the group are kept.
        keep: u32,
    },
    /// Deleted: within the counts, but completed longer ago than `max_age`.
    TooOld {
        /// How long ago it completed.
        age: Duration,
        /// The limit.
        max_age: Duration,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Current => f.write_str("the current run"),
            Self::InPipelineRun(name) => write!(f, "belongs to PipelineRun {name}"),
            Self::NotFinished => f.write_str("not finished"),
            Self::MissingTimestamp(field) => write!(f, "no {field}, so its age is unknown"),
            Self::Newest { group, rank, keep } => {
                write!(f, "{group} run {rank} of the newest {keep} kept")
            }
            Self::BeyondKeep { group, rank, keep } => {
                write!(f, "{group} run {rank}, past the newest {keep} kept")
            }
            Self::TooOld { age, max_age } => write!(
                f,
                "completed {} ago, longer than PRUNE_MAX_AGE {}",
                humanize(*age),
                humanize(*max_age)
            ),
        }
    }
}

/// Whole days, hours, minutes or seconds, whichever is largest and exact enough to read.
fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86_400 => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// The verdict on one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The TaskRun's name.
    pub name: String,
    /// Whether to delete it.
    pub delete: bool,
    /// Why.
    pub reason: Reason,
}

/// Decides, for each run, whether to delete it; see the module documentation for the rules.
///
/// Returns one decision per run, in the order of `runs`.
///
/// # Panics
/// Never: every run is classified in the first pass or ranked in the second, and an `expect`
/// states that invariant rather than inventing a fallback reason.
#[must_use]
pub fn plan(runs: &[Run], policy: &Policy, now: DateTime<Utc>) -> Vec<Decision> {
    let mut reasons: Vec<Option<Reason>> = vec![None; runs.len()];
    // (index, completed, created) of the runs that take part in the counting.
    let mut dated: Vec<(usize, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        if policy.current.as_deref() == Some(run.name.as_str()) {
            reasons[i] = Some(Reason::Current);
        } else if let Some(pipeline_run) = &run.pipeline_run {
            reasons[i] = Some(Reason::InPipelineRun(pipeline_run.clone()));
        } else if run.outcome == Outcome::Running {
            reasons[i] = Some(Reason::NotFinished);
        } else {
            match (run.completed, run.created) {
                (Some(completed), Some(created)) => dated.push((i, completed, created)),
                (None, _) => reasons[i] = Some(Reason::MissingTimestamp("completionTime")),
                (Some(_), None) => reasons[i] = Some(Reason::MissingTimestamp("creationTimestamp")),
            }
        }
    }
    // Newest first; the name decides exact ties so the outcome never depends on list order.
    dated.sort_by(|a, b| (b.1, b.2, &runs[b.0].name).cmp(&(a.1, a.2, &runs[a.0].name)));

    let groups: Vec<(Group, u32, Vec<_>)> = match policy.keep_failed {
        None => vec![(Group::Finished, policy.keep, dated)],
        Some(keep_failed) => {
            let (failed, succeeded): (Vec<_>, Vec<_>) = dated
                .into_iter()
                .partition(|(i, _, _)| runs[*i].outcome == Outcome::Failed);
            vec![
                (Group::Succeeded, policy.keep, succeeded),
                (Group::Failed, keep_failed, failed),
            ]
        }
    };
    let max_age = policy
        .max_age
        .map(|d| (d, TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)));
    for (group, keep, members) in groups {
        for (n, (i, completed, _)) in members.into_iter().enumerate() {
            let rank = n + 1;
            let within = usize::try_from(keep).map_or(true, |keep| rank <= keep);
            let age = now.signed_duration_since(completed);
            reasons[i] = Some(match max_age {
                _ if !within => Reason::BeyondKeep { group, rank, keep },
                Some((limit, limit_delta)) if age > limit_delta => Reason::TooOld {
                    age: age.to_std().unwrap_or_default(),
                    max_age: limit,
                },
                _ => Reason::Newest { group, rank, keep },
            });
        }
    }

    let mut seen = HashSet::new();
    runs.iter()
        .zip(reasons)
        .map(|(run, reason)| {
            let reason = reason.expect("every run gets a reason above");
            // Names are unique within a namespace; a duplicate would mean a confused caller, and
            // the second copy is kept rather than risk deleting something twice over.
            let delete = matches!(reason, Reason::BeyondKeep { .. } | Reason::TooOld { .. })
                && seen.insert(run.name.as_str());
            Decision {
                name: run.name.clone(),
                delete,
                reason,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const DAY: i64 = 86_400;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-30T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn at(days_ago: i64) -> DateTime<Utc> {
        now() - TimeDelta::seconds(days_ago * DAY)
    }

    /// A run described in one token: `name:state:completed_days_ago[:created_days_ago]`, where
    /// state is `s` (succeeded), `f` (failed) or `r` (running), and `-` means the timestamp is
    /// missing. Creation defaults to one hour before completion (or 1 day ago for running runs).
    fn run(spec: &str) -> Run {
        let parts: Vec<&str> = spec.split(':').collect();
        let outcome = match parts[1] {
            "s" => Outcome::Succeeded,
            "f" => Outcome::Failed,
            "r" => Outcome::Running,
            other => panic!("bad state {other}"),
        };
        let day = |s: &str| (s != "-").then(|| at(s.parse().unwrap()));
        let completed = parts.get(2).and_then(|s| day(s));
        let created = match parts.get(3) {
            Some(s) => day(s),
            None => Some(completed.map_or(at(1), |c| c - TimeDelta::hours(1))),
        };
        Run {
            name: parts[0].to_owned(),
            created,
            completed,
            outcome,
            pipeline_run: None,
        }
    }

    fn runs(specs: &str) -> Vec<Run> {
        specs.split_whitespace().map(run).collect()
    }

    fn policy(keep: u32) -> Policy {
        Policy {
            keep,
            keep_failed: None,
            max_age: None,
            current: None,
        }
    }

    fn deleted(runs: &[Run], policy: &Policy, now: DateTime<Utc>) -> Vec<String> {
        let mut names: Vec<String> = plan(runs, policy, now)
            .into_iter()
            .filter(|d| d.delete)
            .map(|d| d.name)
            .collect();
        names.sort();
        names
    }

    fn names(list: &str) -> Vec<String> {
        let mut v: Vec<String> = list.split_whitespace().map(str::to_owned).collect();
        v.sort();
        v
    }

    #[rstest]
    #[case::nothing_to_do("", 3, "")]
    #[case::fewer_than_keep("a:s:1 b:s:2", 3, "")]
    #[case::exactly_keep("a:s:1 b:s:2 c:f:3", 3, "")]
    #[case::oldest_go("a:s:1 b:s:2 c:f:3 d:s:4 e:f:5", 3, "d e")]
    #[case::input_order_irrelevant("e:f:5 c:f:3 a:s:1 d:s:4 b:s:2", 3, "d e")]
    #[case::keep_zero("a:s:1 b:f:2 c:r", 0, "a b")]
    #[case::keep_one("a:s:1 b:s:2 c:s:3", 1, "b c")]
    #[case::running_not_counted("r1:r r2:r a:s:1 b:s:2 c:s:3", 2, "c")]
    #[case::running_never_deleted_even_if_old("r1:r:-:400 a:s:1", 0, "a")]
    fn keep_counts(#[case] specs: &str, #[case] keep: u32, #[case] want: &str) {
        assert_eq!(deleted(&runs(specs), &policy(keep), now()), names(want));
    }

    #[rstest]
    // Without keep_failed, two failures count against the same 2 slots as successes.
    #[case::together("s1:s:1 f1:f:2 s2:s:3 f2:f:4 s3:s:5", 2, None, "s2 f2 s3")]
    #[case::apart("s1:s:1 f1:f:2 s2:s:3 f2:f:4 s3:s:5", 2, Some(1), "f2 s3")]
    #[case::many_failures_do_not_push_out_successes(
        "f1:f:1 f2:f:2 f3:f:3 f4:f:4 s1:s:5 s2:s:6",
        2,
        Some(2),
        "f3 f4"
    )]
    #[case::keep_no_failed("s1:s:1 f1:f:2 f2:f:3", 5, Some(0), "f1 f2")]
    #[case::no_failures("s1:s:1 s2:s:2 s3:s:3", 2, Some(1), "s3")]
    fn failed_kept_apart(
        #[case] specs: &str,
        #[case] keep: u32,
        #[case] keep_failed: Option<u32>,
        #[case] want: &str,
    ) {
        let p = Policy {
            keep_failed,
            ..policy(keep)
        };
        assert_eq!(deleted(&runs(specs), &p, now()), names(want));
    }

    #[rstest]
    #[case::current_running("cur:r a:s:1 b:s:2", 1, "b")]
    // The current run is normally running; if it already reads as finished it is still kept and
    // does not take one of the kept places.
    #[case::current_finished_and_oldest("cur:s:9 a:s:1 b:s:2", 1, "b")]
    #[case::current_finished_and_newest("cur:s:0 a:s:1 b:s:2", 1, "b")]
    #[case::keep_zero_still_spares_current("cur:f:9 a:s:1", 0, "a")]
    fn current_run_never_chosen(#[case] specs: &str, #[case] keep: u32, #[case] want: &str) {
        let p = Policy {
            current: Some("cur".to_owned()),
            max_age: Some(Duration::from_secs(3600)),
            ..policy(keep)
        };
        let all = runs(specs);
        let plan = plan(&all, &p, now());
        let cur = plan.iter().find(|d| d.name == "cur").unwrap();
        assert!(!cur.delete);
        assert_eq!(cur.reason, Reason::Current);
        // max_age (1h) would delete every other finished run; only "cur" survives among them.
        let mut want = names(want);
        for d in &plan {
            if d.name != "cur" && !want.contains(&d.name) {
                want.push(d.name.clone());
            }
        }
        want.sort();
        assert_eq!(deleted(&all, &p, now()), want);
    }

    #[rstest]
    // Same completion: the later creation is newer.
    #[case::completion_tie_broken_by_creation("a:s:1:3 b:s:1:2 c:s:1:4", 2, "c")]
    // Same completion and creation: the greater name is newer, whatever the input order.
    #[case::full_tie_broken_by_name("b:s:1:2 c:s:1:2 a:s:1:2", 2, "a")]
    #[case::full_tie_reversed_input("a:s:1:2 c:s:1:2 b:s:1:2", 2, "a")]
    // Completion wins over creation: created earlier but finished later is newer.
    #[case::completion_before_creation("long:s:1:9 short:s:2:2", 1, "short")]
    fn ties_in_time(#[case] specs: &str, #[case] keep: u32, #[case] want: &str) {
        assert_eq!(deleted(&runs(specs), &policy(keep), now()), names(want));
    }

    #[rstest]
    #[case::finished_without_completion("x:s:- a:s:1 b:s:2", 1, "b", "x", "completionTime")]
    #[case::failed_without_completion("x:f:- a:s:1", 0, "a", "x", "completionTime")]
    #[case::without_creation("x:s:100:- a:s:1 b:s:2", 1, "b", "x", "creationTimestamp")]
    #[case::without_either("x:f:-:- a:s:1", 0, "a", "x", "completionTime")]
    fn missing_timestamps_never_deleted(
        #[case] specs: &str,
        #[case] keep: u32,
        #[case] want: &str,
        #[case] unsure: &str,
        #[case] field: &'static str,
    ) {
        let p = policy(keep);
        let all = runs(specs);
        let d = plan(&all, &p, now())
            .into_iter()
            .find(|d| d.name == unsure)
            .unwrap();
        assert!(!d.delete);
        assert_eq!(d.reason, Reason::MissingTimestamp(field));
        assert_eq!(deleted(&all, &p, now()), names(want));
    }

    #[rstest]
    #[case::none_too_old("a:s:1 b:s:2 c:s:3", 10, 30, "")]
    #[case::old_within_keep_deleted("a:s:1 b:s:29 c:s:31 d:f:45", 10, 30, "c d")]
    #[case::keep_still_caps("a:s:1 b:s:2 c:s:3", 2, 30, "c")]
    #[case::exactly_max_age_is_kept("a:s:30", 10, 30, "")]
    #[case::everything_old("a:s:40 b:f:50", 10, 30, "a b")]
    #[case::running_old_kept("r:r:-:90 a:s:40", 10, 30, "a")]
    #[case::undated_old_kept("x:s:-:400 y:f:90:- a:s:40", 10, 30, "a")]
    #[case::completed_in_future_kept("a:s:-2", 10, 1, "")]
    fn max_age(#[case] specs: &str, #[case] keep: u32, #[case] max_days: u64, #[case] want: &str) {
        let p = Policy {
            max_age: Some(Duration::from_secs(max_days * 86_400)),
            ..policy(keep)
        };
        assert_eq!(deleted(&runs(specs), &p, now()), names(want));
    }

    #[test]
    fn max_age_applies_to_failed_runs_kept_apart() {
        let p = Policy {
            keep_failed: Some(5),
            max_age: Some(Duration::from_secs(7 * 86_400)),
            ..policy(5)
        };
        let all = runs("s1:s:1 f1:f:2 f2:f:8 s2:s:9");
        assert_eq!(deleted(&all, &p, now()), names("f2 s2"));
    }

    /// Moving `now` by a year: without `max_age` nothing changes at all; with it, only runs
    /// crossing the age limit change, and running, current and undated runs never do.
    #[rstest]
    #[case::one_hour(3600)]
    #[case::one_year(365 * DAY)]
    fn moving_now_changes_only_age(#[case] shift: i64) {
        let all = runs("cur:r a:s:1 b:f:2 c:s:3 d:f:4 e:s:5 x:s:- r:r:-:40 t1:s:1:1 t2:s:1:1");
        let later = now() + TimeDelta::seconds(shift);
        for keep_failed in [None, Some(1)] {
            let p = Policy {
                current: Some("cur".to_owned()),
                keep_failed,
                ..policy(3)
            };
            assert_eq!(plan(&all, &p, now()), plan(&all, &p, later));

            let aged = Policy {
                max_age: Some(Duration::from_secs(10 * 86_400)),
                ..p
            };
            let before = plan(&all, &aged, now());
            let after = plan(&all, &aged, later);
            for (b, a) in before.iter().zip(&after) {
                let run = all.iter().find(|r| r.name == b.name).unwrap();
                let crosses = run.completed.is_some_and(|c| {
                    now() - c <= TimeDelta::days(10) && later - c > TimeDelta::days(10)
                });
                if matches!(
                    b.reason,
                    Reason::Current
                        | Reason::InPipelineRun(_)
                        | Reason::NotFinished
                        | Reason::MissingTimestamp(_)
                ) {
                    assert_eq!(b, a);
                } else if crosses && b.reason != a.reason {
                    assert!(
                        !b.delete && a.delete,
                        "{} only goes from kept to deleted",
                        b.name
                    );
                    assert!(matches!(a.reason, Reason::TooOld { .. }));
                } else {
                    assert_eq!(b.delete, a.delete, "{}", b.name);
                }
            }
            let moved = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| b.delete != a.delete)
                .count();
            // A year later every finished, dated run is past 10 days; an hour later none newly is.
            assert_eq!(moved > 0, shift > 86_400, "keep_failed {keep_failed:?}");
        }
    }

    #[test]
    fn reasons_read_well() {
        let p = Policy {
            current: Some("cur".to_owned()),
            max_age: Some(Duration::from_secs(30 * 86_400)),
            ..policy(1)
        };
        let all = runs("cur:r a:s:1 b:s:2 c:s:- old:s:0");
        let text: Vec<String> = plan(&all, &p, now())
            .into_iter()
            .map(|d| format!("{} {} ({})", d.name, d.delete, d.reason))
            .collect();
        assert_eq!(
            text,
            [
                "cur false (the current run)",
                "a true (finished run 2, past the newest 1 kept)",
                "b true (finished run 3, past the newest 1 kept)",
                "c false (no completionTime, so its age is unknown)",
                "old false (finished run 1 of the newest 1 kept)",
            ]
        );
        let too_old = Reason::TooOld {
            age: Duration::from_secs(31 * 86_400 + 7200),
            max_age: Duration::from_secs(30 * 86_400),
        };
        assert_eq!(
            too_old.to_string(),
            "completed 31d2h ago, longer than PRUNE_MAX_AGE 30d0h"
        );
    }

    /// Runs of a PipelineRun are never deleted and take no place among the kept, whatever their
    /// age or outcome.
    #[test]
    fn runs_of_a_pipeline_run_are_left_to_it() {
        let mut all = runs("p1:s:9 p2:f:8 a:s:1 b:s:2 c:s:3 p3:s:0");
        for r in &mut all {
            if r.name.starts_with('p') {
                r.pipeline_run = Some(format!("backup-pipeline-{}", r.name));
            }
        }
        let p = Policy {
            max_age: Some(Duration::from_secs(5 * 86_400)),
            ..policy(2)
        };
        assert_eq!(deleted(&all, &p, now()), names("c"));
        let p1 = plan(&all, &p, now())
            .into_iter()
            .find(|d| d.name == "p1")
            .unwrap();
        assert_eq!(
            p1.reason.to_string(),
            "belongs to PipelineRun backup-pipeline-p1"
        );
        assert_eq!(deleted(&all, &policy(0), now()), names("a b c"));
    }

    #[test]
    fn duplicate_names_are_deleted_once() {
        let all = runs("a:s:1 a:s:2 a:s:3");
        let plan = plan(&all, &policy(0), now());
        assert_eq!(plan.iter().filter(|d| d.delete).count(), 1);
    }
}
