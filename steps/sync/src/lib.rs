//! The sync step: verified copies of a snapshot in stores that outlive the cluster.
//!
//! A snapshot on a Tekton workspace is not a backup until it sits, verified, somewhere that
//! survives the cluster. This step checks the snapshot against its `.sha256` before anything
//! leaves the workspace, copies it to every configured store (an S3 bucket, a directory on a
//! PVC) in the order snapshot, `.json`, `.sha256` so that a store never shows a complete-looking
//! copy that is not, reads each copy back, and then applies retention per store. One failing
//! store does not stop the others; the exit code says whether all of them succeeded.
//!
//! Modules: [`config`] (the environment into a checked [`Config`]), [`error`] (what stops the
//! step, and its exit code), [`store`] (the only one that speaks to `object_store` and the
//! store directory), [`upload`] (one snapshot into one store), [`retention`] (the pure plan and
//! the code that carries it out), [`report`] (what the run did), [`metrics`] (what it pushes to a
//! Pushgateway). This file is the run, in the order it happens.

pub mod config;
pub mod error;
pub mod metrics;
pub mod report;
pub mod retention;
pub mod upload;

pub use vault_backup_stores::{checksum, store};

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};
use vault_backup_common::artifact::{self, Artifact, ArtifactError};
use vault_backup_common::exit::one_line;
use vault_backup_common::progress::mb_per_s;

pub use config::{
    Config, RESULT_DIR_PATH, RESULT_S3_URL, RESULT_STORE_VERIFICATION, RESULT_SYNCED_STORES,
    RawConfig, S3Config, S3Env, SyncEnv, Which,
};
pub use error::{Error, Result};
pub use report::{StoreReport, Summary};
pub use tokio_util::sync::CancellationToken;

/// `--help` text: the variables the step reads.
pub const USAGE: &str = "\
Copies a verified Vault raft snapshot from a workspace to S3, GCS, Azure Blob and/or a directory, then applies
retention per store. Configuration comes from the environment:

  SNAPSHOT_DIR            the workspace holding <name>.snap, .snap.json, .snap.sha256 (required)
  SNAPSHOT_NAME           which snapshot (no suffix); or
  SNAPSHOT_NAME_FILE      a file holding the name (the snapshot step's result);
                          neither: the newest complete <prefix>-<timestamp> snapshot
  SNAPSHOT_PREFIX         name prefix of snapshots (default vault)

  S3 store (ObjectBucketClaim, mounted with envFrom):
  BUCKET_HOST, BUCKET_PORT, BUCKET_NAME, BUCKET_REGION (default us-east-1)
  BUCKET_SSL              the claim's TLS flag: http when false (default true)
  BUCKET_SUBREGION        accepted and not used (requests are signed for BUCKET_REGION)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
  or plainly: S3_ENDPOINT (URL or host[:port]), S3_BUCKET
  S3_PREFIX               key prefix inside the bucket (default none)
  S3_TLS                  https unless false (default BUCKET_SSL, else true;
                          contradicting BUCKET_SSL is an error)
  S3_CACERT               PEM bundle to trust for the endpoint (checked at start)
  S3_REQUIRE_CHECKSUM     fail the S3 store when the server states no SHA-256 checksum
                          for the copy, so it can be checked by its size only (default false)
  S3_OBJECT_LOCK_MODE     GOVERNANCE or COMPLIANCE: lock every object written (Object Lock;
  S3_OBJECT_LOCK_DAYS     whole days from its upload, at least 1); both or neither

  Google Cloud Storage (the names object_store reads):
  GOOGLE_BUCKET           the bucket (alias GOOGLE_BUCKET_NAME)
  GOOGLE_SERVICE_ACCOUNT  a service account key file (or GOOGLE_SERVICE_ACCOUNT_KEY, its JSON;
                          or GOOGLE_APPLICATION_CREDENTIALS; none: the metadata server, as
                          GKE Workload Identity provides)
  GOOGLE_BASE_URL         another endpoint than https://storage.googleapis.com
  GCS_PREFIX              key prefix inside the bucket (default none)

  Azure Blob (the names object_store reads):
  AZURE_CONTAINER_NAME, AZURE_STORAGE_ACCOUNT_NAME
  AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY, or workload identity
                          (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE)
  AZURE_STORAGE_ENDPOINT  another endpoint than https://<account>.blob.core.windows.net
  AZURE_PREFIX            key prefix inside the container (default none)

  Directory store:
  BACKUP_DIR              an existing directory (a PVC workspace)

  Retention per store (none set: keep everything):
  RETAIN_LAST, RETAIN_DAYS, RETAIN_DAILY, RETAIN_WEEKLY, RETAIN_MONTHLY
  RETAIN_DRY_RUN          log the plan only (default false)

Results: synced-stores, s3-url, dir-path, store-verification (RESULTS_DIR or
RESULT_<NAME>_PATH).
Exit codes: 0 all stores hold a verified copy; 1 a store or the snapshot failed; 2 bad configuration.";

/// Runs the step; SIGTERM or SIGINT aborts uploads in flight.
///
/// # Errors
/// See [`Error`]: configuration (exit 2), a missing or corrupt snapshot, failed stores or a
/// signal (exit 1).
pub async fn run(config: Config) -> Result<Summary> {
    let cancel = vault_backup_common::exit::cancel_on_termination();
    run_with(config, &cancel, Utc::now()).await
}

/// Runs the step with a given cancellation and `now` (for tests).
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    config: Config,
    cancel: &CancellationToken,
    now: DateTime<Utc>,
) -> Result<Summary> {
    let artifact = match &config.which {
        Which::Named(name) => Artifact::new(name.clone()),
        Which::Newest => newest_complete(&config)?,
    };
    let mut stores = Vec::new();
    if let Some(s3) = &config.s3 {
        stores.push(store::s3(s3)?);
    }
    if let Some(gcs) = &config.gcs {
        stores.push(store::gcs(gcs)?);
    }
    if let Some(azure) = &config.azure {
        stores.push(store::azure(azure)?);
    }
    if let Some(dir) = &config.backup_dir {
        stores.push(store::dir(dir));
    }
    let protections = protections(&stores, &config).await?;
    // The S3 checksum of the parts is computed in the same read as the verification: the copy
    // is later proven by it, so the upload itself hashes nothing.
    let part_size = stores.iter().find_map(|s| s.part_size());
    let source = verify(&config, &artifact, part_size, cancel).await?;
    info!(
        snapshot = artifact.name(),
        bytes = source.bytes,
        sha256 = %source.sha256,
        "snapshot verified against its .sha256"
    );
    if config.retention.is_empty() {
        info!(
            "no retention setting (RETAIN_LAST, RETAIN_DAYS, RETAIN_DAILY, RETAIN_WEEKLY, RETAIN_MONTHLY): every snapshot is kept"
        );
    }

    let reports = futures::future::join_all(
        stores
            .iter()
            .zip(&protections)
            .map(|(s, p)| sync_store(s.as_ref(), p.as_ref(), &source, &config, cancel, now)),
    )
    .await;

    let summary = Summary {
        snapshot: artifact.name().to_owned(),
        bytes: source.bytes,
        sha256: source.sha256.clone(),
        stores: reports,
    };
    write_results(&config, &summary);
    if cancel.is_cancelled() {
        return Err(Error::Interrupted);
    }
    let failed: Vec<&'static str> = summary
        .stores
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.store)
        .collect();
    if failed.is_empty() {
        info!(snapshot = %summary.snapshot, stores = summary.stores.len(), verification = %summary.verification(), "snapshot synced to every store");
        Ok(summary)
    } else {
        Err(Error::StoresFailed {
            failed,
            summary: Box::new(summary),
        })
    }
}

/// Reads and logs what each store protects against deletion (S3: versioning and Object Lock),
/// before anything is hashed or uploaded. A lock asked for (`S3_OBJECT_LOCK_*`) on a bucket
/// without Object Lock, or whose configuration cannot be read, stops the step: writing unlocked
/// copies while the configuration promises locked ones would be the worse failure.
async fn protections(
    stores: &[Box<dyn store::Store>],
    config: &Config,
) -> Result<Vec<Option<store::Protection>>> {
    let requested = config.s3.as_ref().and_then(|s| s.object_lock);
    let mut out = Vec::with_capacity(stores.len());
    for s in stores {
        let bucket = s.location("");
        let bucket = bucket.trim_end_matches('/');
        let protection = match s.protection().await {
            Ok(p) => p,
            Err(e) if requested.is_some() && s.name() == "s3" => {
                return Err(Error::LockUnknown {
                    bucket: bucket.to_owned(),
                    source: e,
                });
            }
            Err(e) => {
                warn!(
                    store = s.name(),
                    "cannot read the bucket's versioning and Object Lock configuration; carrying on without reporting them: {}",
                    one_line(&e)
                );
                None
            }
        };
        if let Some(p) = protection {
            info!(
                store = s.name(),
                bucket,
                versioning = %p.versioning,
                object_lock = p.lock_enabled,
                default_retention = %p.default_retention.map_or_else(|| "none".into(), |d| format!("{} {} days", d.mode, d.days)),
                "bucket protection: {p}"
            );
            if let (Some(lock), "s3") = (requested, s.name()) {
                if !p.lock_enabled {
                    return Err(Error::LockUnavailable {
                        bucket: bucket.to_owned(),
                        protection: p.to_string(),
                    });
                }
                info!(store = s.name(), mode = %lock.mode, days = lock.days, "every object written carries an Object Lock: {} until its upload time plus {} days", lock.mode, lock.days);
            } else if let Some(d) = p.default_retention.filter(|_| p.lock_enabled) {
                info!(store = s.name(), mode = %d.mode, days = d.days, "no S3_OBJECT_LOCK_* set: the bucket's default retention locks every object written ({} for {} days)", d.mode, d.days);
            }
        }
        out.push(protection);
    }
    Ok(out)
}

fn newest_complete(config: &Config) -> Result<Artifact> {
    let listing =
        artifact::list_dir(&config.snapshot_dir, &config.prefix).map_err(|e| Error::Workspace {
            name: format!("{}-<timestamp>", config.prefix),
            source: e,
        })?;
    let Some(newest) = listing.complete.last().cloned() else {
        return Err(Error::NoSnapshot {
            dir: config.snapshot_dir.clone(),
            prefix: config.prefix.clone(),
        });
    };
    // A newer .snap without its .sha256 means a snapshot step failed after writing; say so
    // rather than quietly syncing an older one.
    let newest_time = newest.timestamp(&config.prefix);
    for a in listing
        .incomplete
        .iter()
        .filter(|a| a.timestamp(&config.prefix) > newest_time)
    {
        warn!(
            incomplete = a.name(),
            synced = newest.name(),
            "a newer snapshot in the workspace has no .sha256 and is skipped as incomplete"
        );
    }
    info!(
        snapshot = newest.name(),
        "no SNAPSHOT_NAME: syncing the newest complete snapshot"
    );
    Ok(newest)
}

async fn verify(
    config: &Config,
    artifact: &Artifact,
    part_size: Option<usize>,
    cancel: &CancellationToken,
) -> Result<upload::Source> {
    let dir = config.snapshot_dir.clone();
    let a = artifact.clone();
    let check = tokio::task::spawn_blocking(move || upload::Source::verified(&dir, &a, part_size));
    let verified = tokio::select! {
        () = cancel.cancelled() => return Err(Error::Interrupted),
        r = check => r.map_err(|e| Error::Workspace {
            name: artifact.name().to_owned(),
            source: ArtifactError::Io { path: config.snapshot_dir.clone(), source: std::io::Error::other(e) },
        })?,
    };
    verified.map_err(|source| Error::Workspace {
        name: artifact.name().to_owned(),
        source,
    })
}

// One store's run in order (clean up, copy, lock, retention); splitting it would hide that order.
#[allow(clippy::too_many_lines)]
async fn sync_store(
    store: &dyn store::Store,
    protection: Option<&store::Protection>,
    source: &upload::Source,
    config: &Config,
    cancel: &CancellationToken,
    now: DateTime<Utc>,
) -> StoreReport {
    let started = std::time::Instant::now();
    let location = store.location(&source.artifact.snap_file());
    let mut report = StoreReport {
        store: store.name(),
        location: location.clone(),
        upload_error: None,
        already_there: false,
        verification: None,
        seconds: 0.0,
        retention: None,
        deleted: Vec::new(),
        deleted_bytes: 0,
        held: None,
        temp_files_removed: Vec::new(),
        retention_error: None,
        object_lock: protection.map(|p| p.lock_enabled),
        locked_until: None,
    };
    // Before the copy, and whatever the retention settings: a killed run's full-size temp file
    // may be what leaves no room for this copy. Judged by the file's age on the real clock.
    let cleanup_error =
        match retention::remove_stale_temp_files(store, config.dry_run, Utc::now()).await {
            Ok(removed) => {
                report.temp_files_removed = removed;
                None
            }
            Err(e) => {
                let chain = one_line(&e);
                error!(
                    store = store.name(),
                    "removing stale temp files failed: {chain}"
                );
                Some(chain)
            }
        };
    let stored = match upload::upload(store, source, cancel, config.require_checksum).await {
        Ok(stored) => stored,
        Err(e) => {
            report.seconds = started.elapsed().as_secs_f64();
            let chain = one_line(&e);
            error!(store = store.name(), location = %location, "copy failed, retention skipped for this store: {chain}");
            report.upload_error = Some(chain);
            report.retention_error = cleanup_error;
            return report;
        }
    };
    report.retention_error = cleanup_error;
    let elapsed = started.elapsed();
    report.seconds = elapsed.as_secs_f64();
    report.already_there = stored.outcome == upload::Outcome::AlreadyThere;
    report.verification = Some(stored.verification);
    if !report.already_there {
        let (bytes, seconds, rate, verification) = (
            source.bytes,
            format_args!("{:.2}", report.seconds),
            format_args!("{:.1}", mb_per_s(source.bytes, elapsed)),
            stored.verification.as_str(),
        );
        match stored.verification {
            upload::Verification::Sha256 => {
                info!(store = store.name(), location = %location, bytes, seconds, mb_per_s = rate, verification, "stored and verified");
            }
            upload::Verification::SizeOnly => {
                warn!(store = store.name(), location = %location, bytes, seconds, mb_per_s = rate, verification, "stored, and checked by its size only");
            }
        }
    }
    if cancel.is_cancelled() {
        return report;
    }
    if protection.is_some_and(|p| p.lock_enabled) {
        report.locked_until = copy_lock(store, &location, &source.artifact.snap_file()).await;
    }
    if config.retention.is_empty() {
        // Only for the held-snapshots metric: a listing that fails costs the metric, not the copy.
        match retention::complete_snapshots(store, &config.prefix, source.artifact.name()).await {
            Ok(held) => report.held = Some(held),
            Err(e) => warn!(
                store = store.name(),
                "cannot count the snapshots the store holds: {}",
                one_line(&e)
            ),
        }
        return report;
    }
    let mut applied = retention::Applied::default();
    let outcome = retention::apply(
        store,
        &config.prefix,
        source.artifact.name(),
        &config.retention,
        config.dry_run,
        now,
        &mut applied,
    )
    .await;
    report.held = applied.held();
    report.deleted_bytes = applied.deleted_bytes;
    report.retention = applied.plan;
    report.deleted = applied.deleted;
    if let Err(e) = outcome {
        let chain = one_line(&e);
        error!(store = store.name(), "retention failed: {chain}");
        report.retention_error = Some(chain);
    }
    report
}

/// Logs the lock the copy `snap` carries and returns its retain-until; for the metric and the
/// log only: a HEAD that fails costs them, not the copy.
async fn copy_lock(store: &dyn store::Store, location: &str, snap: &str) -> Option<DateTime<Utc>> {
    match store.retention(snap).await {
        Ok(r) => {
            let (mode, until) = r.map_or((None, None), |r| (r.mode, r.retain_until));
            if let (Some(mode), Some(until)) = (mode, until) {
                info!(store = store.name(), location = %location, mode = %mode, retain_until = %until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "the copy is locked");
            } else {
                warn!(store = store.name(), location = %location, "the bucket has Object Lock enabled but the copy carries no lock (no S3_OBJECT_LOCK_* set and no default retention): anyone with the job's keys can delete it");
            }
            until
        }
        Err(e) => {
            warn!(
                store = store.name(),
                "cannot read the lock of the copy: {}",
                one_line(&e)
            );
            None
        }
    }
}

fn write_results(config: &Config, summary: &Summary) {
    let synced: Vec<&str> = summary
        .stores
        .iter()
        .filter(|r| r.synced())
        .map(|r| r.store)
        .collect();
    let mut writes = vec![
        (RESULT_SYNCED_STORES, synced.join(",")),
        (RESULT_STORE_VERIFICATION, summary.verification()),
    ];
    for r in summary.stores.iter().filter(|r| r.synced()) {
        match r.store {
            "s3" => writes.push((RESULT_S3_URL, r.location.clone())),
            "dir" => writes.push((RESULT_DIR_PATH, r.location.clone())),
            _ => {}
        }
    }
    for (name, value) in writes {
        if let Err(e) = config.results.write(name, &value) {
            // The copies exist; a result file that cannot be written is worth a loud line,
            // not a failed backup.
            error!(result = name, "cannot write the Tekton result: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_name_the_newest_complete_snapshot_is_chosen() {
        let ws = tempfile::tempdir().unwrap();
        let c = Config::try_from(RawConfig {
            sync: SyncEnv {
                snapshot_dir: ws.path().display().to_string(),
                backup_dir: Some("/".into()),
                ..SyncEnv::default()
            },
            ..RawConfig::default()
        })
        .unwrap();
        assert!(matches!(newest_complete(&c), Err(Error::NoSnapshot { .. })));
        let touch = |f: &str| std::fs::write(ws.path().join(f), b"x").unwrap();
        for f in [
            "vault-20261101T000000Z.snap",
            "vault-20261101T000000Z.snap.sha256",
            "vault-20261102T000000Z.snap",
            "vault-20261102T000000Z.snap.sha256",
            // Newer, but without its checksum file: incomplete, never chosen.
            "vault-20261103T000000Z.snap",
            // Another prefix, never considered.
            "other-20261104T000000Z.snap",
            "other-20261104T000000Z.snap.sha256",
        ] {
            touch(f);
        }
        assert_eq!(
            newest_complete(&c).unwrap().name(),
            "vault-20261102T000000Z"
        );
    }
}
