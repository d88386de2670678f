//! Carries out a retention plan in one store: list, plan, log, then delete (unless a dry run).

use chrono::{DateTime, Utc};
use tracing::{info, warn};
use vault_backup_common::artifact::Artifact;

use super::plan::{self, Decision, Policy, TEMP_MAX_AGE};
use vault_backup_stores::lock::Versioning;
use vault_backup_stores::store::{self, Store};

/// What retention did in one store; filled in as it goes, so a failure halfway still shows
/// the plan and what was deleted before it.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The plan, once made.
    pub plan: Option<Vec<Decision>>,
    /// The snapshots deleted (their three files).
    pub deleted: Vec<String>,
    /// The bytes of the files deleted, as the store gave their sizes just before.
    pub deleted_bytes: u64,
    /// Snapshots the plan would delete but whose delete the store refused (403) because Object
    /// Lock holds them: retained (locked), no failure.
    pub retained_locked: Vec<String>,
}

impl Applied {
    /// Complete snapshots the store holds after retention (all of them after a dry run, the
    /// planned deletions that failed included); `None` if no plan was made.
    #[must_use]
    pub fn held(&self) -> Option<usize> {
        let plan = self.plan.as_ref()?;
        // A snapshot whose delete was refused is still held (its three files or some of them;
        // the .sha256 goes first, so a refusal there leaves it whole).
        Some(
            plan.iter()
                .filter(|d| d.complete && !self.deleted.contains(&d.name))
                .count(),
        )
    }
}

/// Lists `store`, plans retention for the snapshots named `<prefix>-<timestamp>` (`current` is
/// the one this run uploaded), logs the plan and carries it out; on a dry run stops after the
/// log line "would delete N snapshots".
///
/// # Errors
/// The [`store::Error`] of the listing or of the first deletion that failed; `applied` then
/// holds what was done before it.
pub async fn apply(
    store: &dyn Store,
    prefix: &str,
    current: &str,
    policy: &Policy,
    dry_run: bool,
    now: DateTime<Utc>,
    applied: &mut Applied,
) -> Result<(), store::Error> {
    let files = store.list().await?;
    let mut snapshots = plan::snapshots_from_files(&files, prefix, current);
    // The lock of each snapshot's .snap, where the store has locks (one HEAD each; a store
    // without Object Lock answers without asking the server).
    for s in &mut snapshots {
        s.locked_until = store
            .retention(&Artifact::new(s.name.as_str()).snap_file())
            .await?
            .and_then(|r| r.retain_until);
    }
    let decisions = plan::plan(&snapshots, policy, now);
    for d in &decisions {
        let reasons: Vec<String> = d.reasons.iter().map(ToString::to_string).collect();
        info!(
            store = store.name(),
            snapshot = %d.name,
            action = if d.keep { "keep" } else { "delete" },
            complete = d.complete,
            reasons = %reasons.join(", "),
            "retention plan"
        );
    }
    let doomed: Vec<String> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.name.clone())
        .collect();
    let kept = decisions.len() - doomed.len();
    applied.plan = Some(decisions);
    if dry_run {
        info!(store = store.name(), policy = %policy, kept, "dry run (RETAIN_DRY_RUN): would delete {} snapshots", doomed.len());
        return Ok(());
    }
    'snapshots: for name in doomed {
        let a = Artifact::new(name);
        // Checksum first: from then on the copy is incomplete and never mistaken for whole.
        for file in [a.sha256_file(), a.snap_file(), a.manifest_file()] {
            // For the bytes-deleted metric only: a size the store cannot give counts as 0
            // rather than stopping retention.
            let size = store.size(&file).await.ok().flatten().unwrap_or(0);
            match store.delete(&file).await {
                Ok(()) => applied.deleted_bytes += size,
                // A lock the plan did not see (extended by hand, a version locked by the
                // bucket's default), or a policy of a locked bucket that denies deletes: the
                // store keeps the snapshot, as it is meant to. Not a failed run.
                Err(e) if e.is_refused() => {
                    warn!(store = store.name(), snapshot = a.name(), file = %file, "retained (locked): the bucket has Object Lock and refused the delete (403); the snapshot stays");
                    applied.retained_locked.push(a.name().to_owned());
                    continue 'snapshots;
                }
                Err(e) => return Err(e),
            }
        }
        applied.deleted.push(a.name().to_owned());
    }
    info!(store = store.name(), policy = %policy, kept, "deleted {} snapshots", applied.deleted.len());
    if !applied.deleted.is_empty()
        && let Ok(Some(p)) = store.protection().await
        && p.versioning != Versioning::Off
    {
        info!(
            store = store.name(),
            versioning = %p.versioning,
            "the bucket keeps versions: a delete only added delete markers and the data stays as noncurrent versions until a lifecycle rule (NoncurrentVersionExpiration) removes them; see the README"
        );
    }
    Ok(())
}

/// Counts the complete snapshots named `<prefix>-<timestamp>` in `store`: what a run without
/// retention reports as held, since nothing else lists the store then.
///
/// # Errors
/// The [`store::Error`] of the listing.
pub async fn complete_snapshots(
    store: &dyn Store,
    prefix: &str,
    current: &str,
) -> Result<usize, store::Error> {
    let files = store.list().await?;
    Ok(plan::snapshots_from_files(&files, prefix, current)
        .iter()
        .filter(|s| s.complete)
        .count())
}

/// Removes this project's temp files (`.vault-backup-*.tmp`) older than [`TEMP_MAX_AGE`] from
/// a store that can hold them (a directory): leftovers of a run that was killed mid-copy, which
/// would otherwise fill the PVC until every later copy fails. Fresher ones may be another run's
/// copy in flight and are kept. On a dry run only logs what it would remove. Returns the names
/// removed (or, on a dry run, that would be).
///
/// # Errors
/// The [`store::Error`] of the listing or of the first removal that failed.
pub async fn remove_stale_temp_files(
    store: &dyn Store,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<Vec<String>, store::Error> {
    if !store.keeps_temp_files() {
        return Ok(Vec::new());
    }
    let stale = plan::stale_temp_files(&store.list().await?, now, TEMP_MAX_AGE);
    for name in &stale {
        if dry_run {
            info!(store = store.name(), file = %name, "dry run (RETAIN_DRY_RUN): would remove a temp file older than {}h left by a killed run", TEMP_MAX_AGE.num_hours());
        } else {
            store.delete(name).await?;
            warn!(store = store.name(), file = %name, "removed a temp file older than {}h left by a killed run", TEMP_MAX_AGE.num_hours());
        }
    }
    Ok(stale)
}
