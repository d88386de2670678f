//! Which snapshots a store keeps: a pure plan from a listing, a policy and `now`.
//!
//! Stores fill up unless someone deletes, and deleting the wrong thing loses the only copy. So
//! the decision is a pure function with no I/O, tested with a fixed `now`, and every kept
//! snapshot carries the reasons it is kept (the way restic and rustic `forget` explain
//! themselves). The caller logs the plan, then carries it out (or stops there on a dry run).
//!
//! Rules:
//! - Only names `<prefix>-<timestamp>` (the three files of [`Artifact`]) are ever considered;
//!   anything else in a bucket or directory is not even listed here, so it cannot be deleted.
//! - A snapshot is complete when its `.snap` and `.snap.sha256` are both present. Only complete
//!   snapshots count towards `last`, `within` and the daily/weekly/monthly buckets.
//! - The snapshot just uploaded and the newest complete snapshot are always kept.
//! - An incomplete copy (a `.snap` without `.sha256`, or sidecars left without their `.snap`)
//!   is kept while it was written more recently than every complete snapshot was (another run
//!   may still be writing it) and deleted once a complete snapshot was written after it: it can
//!   never be restored from, and a copy that a later run superseded will never be finished.
//!   "More recently" goes by the files' modification times in the store, not by the time in
//!   the name: a slow run uploading an older-named snapshot is still in flight.
//! - This project's temp files (`.vault-backup-*.tmp`, a copy in flight in a directory store)
//!   are removed once older than [`TEMP_MAX_AGE`]: a live writer touches its temp file with
//!   every write, so only a killed run's leftovers get that old.
//! - `within` counts whole days back from `now`; buckets are UTC calendar days, ISO weeks and
//!   calendar months, and each keeps the newest snapshot in its bucket, newest buckets first.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use vault_backup_common::artifact::{Artifact, Part};
use vault_backup_common::fsutil;

use vault_backup_stores::store::Entry;

/// How old (by modification time) a `.vault-backup-*.tmp` file must be before it is removed as
/// a killed run's leftover. A copy in flight writes its temp file every few milliseconds, and
/// even a multi-gigabyte copy takes minutes, so six hours leaves a wide margin.
pub const TEMP_MAX_AGE: TimeDelta = TimeDelta::hours(6);

/// How many snapshots to keep; `None` means the rule is off. All off means keep everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the newest N complete snapshots (`RETAIN_LAST`).
    pub last: Option<u32>,
    /// Keep every complete snapshot taken in the last N days before `now` (`RETAIN_DAYS`).
    pub within_days: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one (`RETAIN_DAILY`).
    pub daily: Option<u32>,
    /// The same per ISO week (`RETAIN_WEEKLY`).
    pub weekly: Option<u32>,
    /// The same per calendar month (`RETAIN_MONTHLY`).
    pub monthly: Option<u32>,
}

impl Policy {
    /// No rule set: retention keeps everything and need not run.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules = [
            ("last", self.last),
            ("days", self.within_days),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
        ];
        let set: Vec<String> = rules
            .iter()
            .filter_map(|(name, n)| n.map(|n| format!("{name}={n}")))
            .collect();
        if set.is_empty() {
            f.write_str("keep everything")
        } else {
            f.write_str(&set.join(" "))
        }
    }
}

/// One snapshot as a store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The snapshot name (no suffix).
    pub name: String,
    /// The time in its name.
    pub time: DateTime<Utc>,
    /// When its files were last written in the store (the latest of their modification
    /// times).
    pub modified: DateTime<Utc>,
    /// Both `.snap` and `.snap.sha256` are present.
    pub complete: bool,
    /// It is the snapshot this run just uploaded.
    pub current: bool,
    /// Until when the store holds its `.snap` under an Object Lock (S3); `None` if it is not
    /// locked, or the store has no locks.
    pub locked_until: Option<DateTime<Utc>>,
}

/// Why a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It is the snapshot this run just uploaded.
    Current,
    /// It is the newest complete snapshot in the store.
    Newest,
    /// One of the newest `n` (`RETAIN_LAST`).
    Last(u32),
    /// Taken within the last `n` days (`RETAIN_DAYS`).
    Within(u32),
    /// The newest of its day (`RETAIN_DAILY`).
    Daily(NaiveDate),
    /// The newest of its ISO week (`RETAIN_WEEKLY`).
    Weekly(i32, u32),
    /// The newest of its month (`RETAIN_MONTHLY`).
    Monthly(i32, u32),
    /// Incomplete, but written after every complete snapshot: it may still be being written.
    MaybeInProgress,
    /// Its Object Lock holds it until then: a delete would be refused (or, in a versioned
    /// bucket, only hide it behind a delete marker while the data stays).
    Locked(DateTime<Utc>),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Current => f.write_str("just uploaded"),
            Self::Newest => f.write_str("newest complete"),
            Self::Last(n) => write!(f, "last {n}"),
            Self::Within(n) => write!(f, "within {n} days"),
            Self::Daily(d) => write!(f, "daily {d}"),
            Self::Weekly(y, w) => write!(f, "weekly {y}-W{w:02}"),
            Self::Monthly(y, m) => write!(f, "monthly {y}-{m:02}"),
            Self::MaybeInProgress => {
                f.write_str("incomplete but written after every complete one, may be in progress")
            }
            Self::Locked(until) => write!(
                f,
                "locked until {}",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        }
    }
}

/// What to do with one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot name (no suffix).
    pub name: String,
    /// Keep it (else delete its three files).
    pub keep: bool,
    /// Why it is kept; empty for a deletion.
    pub reasons: Vec<Reason>,
    /// Whether it was complete (for the log).
    pub complete: bool,
}

/// Groups a store's files into snapshots named `<prefix>-<timestamp>`; every other name is
/// dropped. `current` marks the snapshot this run uploaded.
#[must_use]
pub fn snapshots_from_files(entries: &[Entry], prefix: &str, current: &str) -> Vec<Snapshot> {
    // name -> (has .snap, has .sha256, latest modification)
    let mut seen: BTreeMap<Artifact, (bool, bool, DateTime<Utc>)> = BTreeMap::new();
    for entry in entries {
        if let Some((artifact, part)) = Artifact::classify(&entry.name, prefix) {
            let e = seen
                .entry(artifact)
                .or_insert((false, false, entry.modified));
            e.2 = e.2.max(entry.modified);
            match part {
                Part::Snapshot => e.0 = true,
                Part::Checksum => e.1 = true,
                Part::Manifest => {}
            }
        }
    }
    seen.into_iter()
        .filter_map(|(artifact, (snap, sum, modified))| {
            let time = artifact.timestamp(prefix)?;
            Some(Snapshot {
                current: artifact.name() == current,
                name: artifact.name().to_owned(),
                time,
                modified,
                complete: snap && sum,
                locked_until: None,
            })
        })
        .collect()
}

/// The names of this project's temp files (`.vault-backup-*.tmp`) in a listing that were last
/// written more than `max_age` before `now`: leftovers of a killed run, safe to remove. Fresher
/// ones may be another run's copy in flight and are not listed.
#[must_use]
pub fn stale_temp_files(entries: &[Entry], now: DateTime<Utc>, max_age: TimeDelta) -> Vec<String> {
    entries
        .iter()
        .filter(|e| fsutil::is_temp_name(&e.name) && now - e.modified > max_age)
        .map(|e| e.name.clone())
        .collect()
}

/// Decides, for every snapshot listed, whether to keep it and why. Newest first.
///
/// With an empty policy everything is kept (with no reasons): callers are expected to skip
/// retention altogether then, and say so.
#[must_use]
pub fn plan(snapshots: &[Snapshot], policy: &Policy, now: DateTime<Utc>) -> Vec<Decision> {
    let mut sorted: Vec<&Snapshot> = snapshots.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name)));
    if policy.is_empty() {
        return sorted
            .into_iter()
            .map(|s| Decision {
                name: s.name.clone(),
                keep: true,
                reasons: Vec::new(),
                complete: s.complete,
            })
            .collect();
    }

    // When the last complete snapshot was written; an incomplete copy written after that may
    // be another run's upload in flight.
    let last_completed = sorted
        .iter()
        .filter(|s| s.complete)
        .map(|s| s.modified)
        .max();
    let cutoff = policy
        .within_days
        .map(|d| now - TimeDelta::days(i64::from(d)));
    let mut buckets = [
        Bucket::new(policy.daily, |t| {
            let d = t.date_naive();
            (
                i64::from(d.year()) * 10_000 + i64::from(d.ordinal()),
                Reason::Daily(d),
            )
        }),
        Bucket::new(policy.weekly, |t| {
            let w = t.iso_week();
            (
                i64::from(w.year()) * 100 + i64::from(w.week()),
                Reason::Weekly(w.year(), w.week()),
            )
        }),
        Bucket::new(policy.monthly, |t| {
            (
                i64::from(t.year()) * 100 + i64::from(t.month()),
                Reason::Monthly(t.year(), t.month()),
            )
        }),
    ];

    let mut rank = 0u32;
    let mut decisions = Vec::with_capacity(sorted.len());
    for s in sorted {
        let mut reasons = Vec::new();
        if s.current {
            reasons.push(Reason::Current);
        }
        if s.complete {
            if rank == 0 {
                reasons.push(Reason::Newest);
            }
            if let Some(n) = policy.last.filter(|n| rank < *n) {
                reasons.push(Reason::Last(n));
            }
            if let (Some(cutoff), Some(days)) = (cutoff, policy.within_days)
                && s.time >= cutoff
            {
                reasons.push(Reason::Within(days));
            }
            for bucket in &mut buckets {
                if let Some(reason) = bucket.take(s.time) {
                    reasons.push(reason);
                }
            }
            rank += 1;
        } else if last_completed.is_none_or(|done| s.modified > done) && !s.current {
            reasons.push(Reason::MaybeInProgress);
        }
        // Whatever the rules say: retention never tries to delete what is still locked.
        if let Some(until) = s.locked_until.filter(|until| *until > now) {
            reasons.push(Reason::Locked(until));
        }
        decisions.push(Decision {
            name: s.name.clone(),
            keep: !reasons.is_empty(),
            reasons,
            complete: s.complete,
        });
    }
    decisions
}

/// One of the daily/weekly/monthly rules: keeps the newest snapshot of each of its newest
/// `left` buckets.
struct Bucket {
    left: u32,
    last: Option<i64>,
    key: fn(DateTime<Utc>) -> (i64, Reason),
}

impl Bucket {
    fn new(count: Option<u32>, key: fn(DateTime<Utc>) -> (i64, Reason)) -> Self {
        Self {
            left: count.unwrap_or(0),
            last: None,
            key,
        }
    }

    /// Called newest first: the first snapshot seen in a new bucket is kept, while any are left.
    fn take(&mut self, t: DateTime<Utc>) -> Option<Reason> {
        if self.left == 0 {
            return None;
        }
        let (key, reason) = (self.key)(t);
        if self.last == Some(key) {
            return None;
        }
        self.last = Some(key);
        self.left -= 1;
        Some(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rstest::rstest;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .unwrap()
            .and_utc()
    }

    fn name(t: DateTime<Utc>) -> String {
        Artifact::timestamped("vault", t).name().to_owned()
    }

    fn snap(t: &str) -> Snapshot {
        let time = at(t);
        Snapshot {
            name: name(time),
            time,
            modified: time,
            complete: true,
            current: false,
            locked_until: None,
        }
    }

    /// One snapshot a day at 06:00 for `days` days ending on 2026-11-24 (newest last).
    fn daily_series(days: i64) -> Vec<Snapshot> {
        (0..days)
            .rev()
            .map(|back| {
                let time = at("2026-11-24 06:00") - TimeDelta::days(back);
                Snapshot {
                    name: name(time),
                    time,
                    modified: time,
                    complete: true,
                    current: false,
                    locked_until: None,
                }
            })
            .collect()
    }

    fn kept(decisions: &[Decision]) -> Vec<String> {
        decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.name.trim_start_matches("vault-").to_owned())
            .collect()
    }

    fn policy(last: u32, days: u32, daily: u32, weekly: u32, monthly: u32) -> Policy {
        let opt = |n: u32| (n > 0).then_some(n);
        Policy {
            last: opt(last),
            within_days: opt(days),
            daily: opt(daily),
            weekly: opt(weekly),
            monthly: opt(monthly),
        }
    }

    #[rstest]
    // count only
    #[case::last_3(policy(3, 0, 0, 0, 0), 40, &["20261124T060000Z", "20261123T060000Z", "20261122T060000Z"])]
    #[case::last_1(policy(1, 0, 0, 0, 0), 40, &["20261124T060000Z"])]
    #[case::last_more_than_exist(policy(50, 0, 0, 0, 0), 3, &["20261124T060000Z", "20261123T060000Z", "20261122T060000Z"])]
    // days: now is 2026-11-24 12:00, cutoff 2026-11-22 12:00
    #[case::within_2_days(policy(0, 2, 0, 0, 0), 40, &["20261124T060000Z", "20261123T060000Z"])]
    #[case::within_4_days(policy(0, 4, 0, 0, 0), 40, &["20261124T060000Z", "20261123T060000Z", "20261122T060000Z", "20261121T060000Z"])]
    // weekly: 2026-11-24 is a Tuesday of ISO week 48; week 47 is Nov 16-22, week 46 Nov 9-15
    #[case::weekly_3(policy(0, 0, 0, 3, 0), 40, &["20261124T060000Z", "20261122T060000Z", "20261115T060000Z"])]
    // monthly: newest of November, October, September
    #[case::monthly_3(policy(0, 0, 0, 0, 3), 90, &["20261124T060000Z", "20261031T060000Z", "20260930T060000Z"])]
    // GFS: 2 daily + 2 weekly + 2 monthly, overlapping at the newest
    #[case::gfs(policy(0, 0, 2, 2, 2), 90, &["20261124T060000Z", "20261123T060000Z", "20261122T060000Z", "20261031T060000Z"])]
    // mixed: last 1 + within 1 day + monthly 2
    #[case::mixed(policy(1, 1, 0, 0, 2), 90, &["20261124T060000Z", "20261031T060000Z"])]
    fn policies_over_a_daily_series(
        #[case] policy: Policy,
        #[case] days: i64,
        #[case] want: &[&str],
    ) {
        let got = plan(&daily_series(days), &policy, now());
        assert_eq!(kept(&got), want);
        assert_eq!(
            got.len(),
            usize::try_from(days).unwrap(),
            "every snapshot decided"
        );
        for d in &got {
            assert_eq!(d.keep, !d.reasons.is_empty(), "{d:?}");
        }
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        let snaps = vec![
            snap("2026-11-24 06:00"),
            snap("2026-11-24 18:00"),
            snap("2026-11-23 01:00"),
            snap("2026-11-23 23:00"),
            snap("2026-11-22 12:00"),
        ];
        let got = plan(&snaps, &policy(0, 0, 2, 0, 0), now());
        assert_eq!(kept(&got), ["20261124T180000Z", "20261123T230000Z"]);
        let d = &got[0];
        assert_eq!(
            d.reasons,
            [
                Reason::Newest,
                Reason::Daily(NaiveDate::from_ymd_opt(2026, 11, 24).unwrap())
            ]
        );
    }

    #[test]
    fn reasons_name_every_rule_that_keeps() {
        let got = plan(&daily_series(3), &policy(2, 1, 1, 1, 1), now());
        assert_eq!(
            got[0].reasons,
            [
                Reason::Newest,
                Reason::Last(2),
                Reason::Within(1),
                Reason::Daily(NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()),
                Reason::Weekly(2026, 48),
                Reason::Monthly(2026, 11),
            ]
        );
        assert_eq!(got[1].reasons, [Reason::Last(2)]);
        assert!(!got[2].keep);
        assert_eq!(
            got[0]
                .reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            "newest complete, last 2, within 1 days, daily 2026-11-24, weekly 2026-W48, monthly 2026-11"
        );
    }

    #[test]
    fn the_current_upload_is_kept_even_when_older_than_others() {
        // A re-run synced an older snapshot while newer ones already sit in the store.
        let mut snaps = daily_series(10);
        snaps[0].current = true; // the oldest
        let got = plan(&snaps, &policy(2, 0, 0, 0, 0), now());
        assert_eq!(
            kept(&got),
            ["20261124T060000Z", "20261123T060000Z", "20261115T060000Z"]
        );
        assert_eq!(got.last().unwrap().reasons, [Reason::Current]);
    }

    #[test]
    fn the_newest_is_kept_when_every_rule_has_passed_it_by() {
        // Backups stopped a year ago: a days-only policy would keep nothing.
        let snaps = vec![snap("2025-10-01 06:00"), snap("2025-10-02 06:00")];
        let got = plan(&snaps, &policy(0, 7, 0, 0, 0), now());
        assert_eq!(kept(&got), ["20251002T060000Z"]);
        assert_eq!(got[0].reasons, [Reason::Newest]);
    }

    #[test]
    fn incomplete_copies_never_count_and_go_once_superseded() {
        let mut snaps = daily_series(5);
        // The newest is incomplete (maybe being written), and so is one in the middle.
        snaps[4].complete = false;
        snaps[2].complete = false;
        let got = plan(&snaps, &policy(2, 0, 0, 0, 0), now());
        let by_name: Vec<(&str, bool, &[Reason])> = got
            .iter()
            .map(|d| {
                (
                    d.name.trim_start_matches("vault-"),
                    d.keep,
                    d.reasons.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            by_name,
            [
                ("20261124T060000Z", true, &[Reason::MaybeInProgress][..]),
                (
                    "20261123T060000Z",
                    true,
                    &[Reason::Newest, Reason::Last(2)][..]
                ),
                ("20261122T060000Z", false, &[][..]),
                ("20261121T060000Z", true, &[Reason::Last(2)][..]),
                ("20261120T060000Z", false, &[][..]),
            ]
        );
    }

    #[test]
    fn an_incomplete_current_upload_is_kept() {
        let mut snaps = daily_series(3);
        snaps[0].complete = false;
        snaps[0].current = true;
        let got = plan(&snaps, &policy(1, 0, 0, 0, 0), now());
        assert_eq!(kept(&got), ["20261124T060000Z", "20261122T060000Z"]);
    }

    #[test]
    fn a_locked_snapshot_is_kept_until_its_lock_expires() {
        let mut snaps = daily_series(4);
        // The two oldest are locked: one until tomorrow, one until an hour ago.
        snaps[0].locked_until = Some(now() + TimeDelta::days(1));
        snaps[1].locked_until = Some(now() - TimeDelta::hours(1));
        let got = plan(&snaps, &policy(1, 0, 0, 0, 0), now());
        assert_eq!(kept(&got), ["20261124T060000Z", "20261121T060000Z"]);
        let locked = got.last().unwrap();
        assert_eq!(locked.reasons, [Reason::Locked(now() + TimeDelta::days(1))]);
        assert_eq!(
            locked.reasons[0].to_string(),
            "locked until 2026-11-25T12:00:00Z"
        );
        // A day later the lock has run out and the rules decide alone.
        let later = plan(&snaps, &policy(1, 0, 0, 0, 0), now() + TimeDelta::days(1));
        assert_eq!(kept(&later), ["20261124T060000Z"]);
        // A lock adds a reason, it changes nothing else: the other decisions are as unlocked.
        let unlocked = plan(&daily_series(4), &policy(1, 0, 0, 0, 0), now());
        assert_eq!(got[..3], unlocked[..3]);
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let got = plan(&daily_series(5), &Policy::default(), now());
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|d| d.keep));
        assert_eq!(Policy::default().to_string(), "keep everything");
        assert_eq!(policy(3, 0, 7, 0, 0).to_string(), "last=3 daily=7");
    }

    #[test]
    fn moving_now_does_not_change_a_count_only_plan() {
        let snaps = daily_series(30);
        let p = policy(5, 0, 0, 0, 0);
        let base = plan(&snaps, &p, now());
        for shift in [-400, -1, 1, 30, 3650] {
            assert_eq!(plan(&snaps, &p, now() + TimeDelta::days(shift)), base);
        }
        // ... while a days policy does move with it, as it should.
        let d = policy(0, 5, 0, 0, 0);
        assert_ne!(
            kept(&plan(&snaps, &d, now())),
            kept(&plan(&snaps, &d, now() + TimeDelta::days(3)))
        );
    }

    #[test]
    fn unrelated_names_are_never_listed() {
        let files = [
            "vault-20261124T060000Z.snap",
            "vault-20261124T060000Z.snap.json",
            "vault-20261124T060000Z.snap.sha256",
            "vault-20261123T060000Z.snap",
            "vault-20261122T060000Z.snap.json",
            "vault-20261122T060000Z.snap.sha256",
            "other-20261101T060000Z.snap",
            "other-20261101T060000Z.snap.sha256",
            "vault-prod-20261101T060000Z.snap",
            "vault-latest.snap",
            "vault-20261101T060000Z.tar.gz",
            "README.md",
            ".vault-backup-x1y2.tmp",
        ];
        let entries: Vec<Entry> = files.iter().map(|f| Entry::new(*f, now())).collect();
        let snaps = snapshots_from_files(&entries, "vault", "vault-20261124T060000Z");
        let got: Vec<(&str, bool, bool)> = snaps
            .iter()
            .map(|s| (s.name.as_str(), s.complete, s.current))
            .collect();
        assert_eq!(
            got,
            [
                ("vault-20261122T060000Z", false, false),
                ("vault-20261123T060000Z", false, false),
                ("vault-20261124T060000Z", true, true),
            ]
        );
        let decisions = plan(&snaps, &policy(1, 0, 0, 0, 0), now());
        let names: Vec<&str> = decisions.iter().map(|d| d.name.as_str()).collect();
        assert!(
            names.iter().all(|n| n.starts_with("vault-2026")),
            "{names:?}"
        );
        assert_eq!(kept(&decisions), ["20261124T060000Z"]);
    }

    #[test]
    fn an_incomplete_copy_is_judged_by_when_it_was_written_not_by_its_name() {
        // The newest complete snapshot was written at 06:01. A slow run uploads a snapshot
        // named for 05:00 (it started earlier) and its .snap landed at 06:05, after that: it may
        // be in flight, though its name is older.
        let complete = snap("2026-11-24 06:00");
        let mut done = complete.clone();
        done.modified = at("2026-11-24 06:01");
        let mut in_flight = snap("2026-11-24 05:00");
        in_flight.complete = false;
        in_flight.modified = at("2026-11-24 06:05");
        let got = plan(
            &[done.clone(), in_flight.clone()],
            &policy(1, 0, 0, 0, 0),
            now(),
        );
        assert_eq!(kept(&got), ["20261124T060000Z", "20261124T050000Z"]);
        assert_eq!(got[1].reasons, [Reason::MaybeInProgress]);

        // Written before the newest complete one was: a leftover, whatever its name says.
        in_flight.modified = at("2026-11-24 05:30");
        let got = plan(
            &[done.clone(), in_flight.clone()],
            &policy(1, 0, 0, 0, 0),
            now(),
        );
        assert_eq!(kept(&got), ["20261124T060000Z"]);
        let mut newer_name = snap("2026-11-24 07:00");
        newer_name.complete = false;
        newer_name.modified = at("2026-11-24 05:30");
        let got = plan(&[done, newer_name], &policy(1, 0, 0, 0, 0), now());
        assert_eq!(kept(&got), ["20261124T060000Z"]);
    }

    #[test]
    fn a_snapshot_is_as_recent_as_its_latest_file() {
        let entries = [
            Entry::new("vault-20261124T060000Z.snap", at("2026-11-24 06:00")),
            Entry::new("vault-20261124T060000Z.snap.sha256", at("2026-11-24 06:02")),
            Entry::new("vault-20261124T060000Z.snap.json", at("2026-11-24 06:01")),
        ];
        let got = snapshots_from_files(&entries, "vault", "");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].modified, at("2026-11-24 06:02"));
        assert!(got[0].complete);
    }

    #[rstest]
    #[case::old_temp(".vault-backup-a1b2.tmp", 7 * 60, true)]
    #[case::just_over(".vault-backup-a1b2.tmp", 6 * 60 + 1, true)]
    #[case::at_the_limit(".vault-backup-a1b2.tmp", 6 * 60, false)]
    #[case::fresh_temp(".vault-backup-a1b2.tmp", 5, false)]
    #[case::old_snapshot("vault-20261101T060000Z.snap", 30 * 24 * 60, false)]
    #[case::old_foreign_tmp(".other-a1b2.tmp", 30 * 24 * 60, false)]
    fn stale_temp_files_are_old_temp_files_of_ours(
        #[case] name: &str,
        #[case] minutes_old: i64,
        #[case] stale: bool,
    ) {
        let entries = [Entry::new(name, now() - TimeDelta::minutes(minutes_old))];
        let got = stale_temp_files(&entries, now(), TEMP_MAX_AGE);
        assert_eq!(got.len(), usize::from(stale), "{got:?}");
    }
}
