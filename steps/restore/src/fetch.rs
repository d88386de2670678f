//! Fetching a snapshot back from a store: its `.sha256` and manifest first, then the `.snap`
//! streamed into the scratch workspace while it is hashed and its archive checked (the snapshot
//! step's own receive), under a temp name until both checks pass.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vault_backup_common::artifact::{self, Artifact, Manifest, Part};
use vault_backup_common::fsutil;
use vault_backup_stores::Store;
use vault_backup_vault::archive::ArchiveInfo;
use vault_backup_vault::download;

use crate::config::Source;
use crate::error::{Error, Result};

/// A snapshot fetched and verified, under its final name in the workspace.
#[derive(Debug)]
pub struct Fetched {
    /// Its name.
    pub name: String,
    /// The `.snap` file in the workspace.
    pub path: PathBuf,
    /// Its SHA-256 (hex), equal to its `.sha256`.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// What the archive says about itself.
    pub info: ArchiveInfo,
    /// Its manifest, when the store holds one.
    pub manifest: Option<Manifest>,
    /// Where it came from (`s3://...`, a path).
    pub location: String,
}

/// Opens the configured store.
///
/// # Errors
/// [`Error::Config`] if the S3 client cannot be set up.
pub fn open(source: &Source) -> Result<Box<dyn Store>> {
    Ok(match source {
        Source::S3(s3) => vault_backup_stores::store::s3(s3)?,
        Source::Gcs(gcs) => vault_backup_stores::store::gcs(gcs)?,
        Source::Azure(azure) => vault_backup_stores::store::azure(azure)?,
        Source::Dir(dir) => vault_backup_stores::store::dir(dir),
    })
}

/// The newest complete snapshot (one with its `.snap` and `.sha256`) named `<prefix>-<time>`.
///
/// # Errors
/// [`Error::Store`] if the listing fails, [`Error::NoSnapshot`] if there is none.
pub async fn newest(store: &dyn Store, prefix: &str) -> Result<String> {
    let entries = store.list().await?;
    let mut snaps = std::collections::BTreeSet::new();
    let mut sums = std::collections::BTreeSet::new();
    for entry in &entries {
        if let Some((a, part)) = Artifact::classify(&entry.name, prefix) {
            match part {
                Part::Snapshot => snaps.insert(a.name().to_owned()),
                Part::Checksum => sums.insert(a.name().to_owned()),
                Part::Manifest => false,
            };
        }
    }
    snaps
        .intersection(&sums)
        .filter_map(|n| Artifact::new(n.as_str()).timestamp(prefix).map(|t| (t, n)))
        .max()
        .map(|(_, n)| n.clone())
        .ok_or_else(|| Error::NoSnapshot {
            store: store.location(""),
            prefix: prefix.to_owned(),
        })
}

/// The snapshot to restore and the store to read it from: `wanted` (`SNAPSHOT_NAME`), or the
/// newest complete snapshot the store lists.
///
/// The last line of defence: when the listing shows no complete snapshot (or not `wanted`) in
/// a bucket that keeps versions, every snapshot may be hidden behind delete markers (`aws s3 rm
/// --recursive` with the job's own keys only adds markers there). Then the newest complete
/// snapshot among the object versions (or `wanted`'s) is chosen, with a warning, and the store
/// returned reads its files at those versions; the fetch verifies them as usual. The `.snap`
/// version is the one its manifest records (`snap_version_id`, written by the sync step), else
/// the newest.
///
/// # Errors
/// [`Error::Store`] if a listing fails, [`Error::NoSnapshot`] if neither the listing nor the
/// versions hold a complete snapshot.
pub async fn locate(
    store: Box<dyn Store>,
    wanted: Option<&str>,
    prefix: &str,
) -> Result<(Box<dyn Store>, String)> {
    let not_listed = match wanted {
        Some(name) => {
            let a = Artifact::new(name);
            if store.size(&a.sha256_file()).await?.is_some()
                && store.size(&a.snap_file()).await?.is_some()
            {
                return Ok((store, name.to_owned()));
            }
            None
        }
        None => match newest(store.as_ref(), prefix).await {
            Ok(name) => {
                tracing::info!(name = %name, store = %store.location(""), "newest complete snapshot");
                return Ok((store, name));
            }
            Err(e @ Error::NoSnapshot { .. }) => Some(e),
            Err(e) => return Err(e),
        },
    };
    let versions = store.versions().await?;
    let Some(found) = in_versions(&versions, prefix, wanted) else {
        // No versions, or none complete: the usual error (for a named snapshot, "missing").
        return match (not_listed, wanted) {
            (Some(e), _) => Err(e),
            (None, Some(name)) => Ok((store, name.to_owned())),
            (None, None) => unreachable!("either a name was wanted or the listing failed"),
        };
    };
    let a = Artifact::new(found.name.as_str());
    let mut pins = vec![(a.sha256_file(), found.sha256.clone())];
    pins.extend(found.manifest.clone().map(|v| (a.manifest_file(), v)));
    // The manifest's record of the .snap's version binds the two; a manifest that records none
    // (or one not among the versions) leaves the newest .snap version.
    let recorded = match store.pinned(pins.clone()) {
        Some(sidecars) if found.manifest.is_some() => sidecars
            .read(&a.manifest_file())
            .await?
            .and_then(|b| serde_json::from_slice::<SnapVersion>(&b).ok())
            .and_then(|m| m.snap_version_id)
            .filter(|v| found.snap_versions.contains(v)),
        _ => None,
    };
    let snap = recorded
        .clone()
        .unwrap_or_else(|| found.snap_versions[0].clone());
    pins.push((a.snap_file(), snap.clone()));
    let Some(pinned) = store.pinned(pins) else {
        return not_listed.map_or_else(|| Ok((store, found.name.clone())), Err);
    };
    tracing::warn!(
        snapshot = %found.name,
        store = %store.location(""),
        snap_version = %snap,
        version_from = if recorded.is_some() { "its manifest" } else { "the newest version" },
        "the store lists no complete copy of this snapshot: it is hidden behind delete markers (a delete in a bucket that keeps versions, e.g. aws s3 rm). Restoring it from its object versions, verified as usual; restore the objects (remove the delete markers) once this is over"
    );
    Ok((pinned, found.name))
}

/// The manifest's record of the `.snap`'s version id.
#[derive(serde::Deserialize)]
struct SnapVersion {
    snap_version_id: Option<String>,
}

/// A complete snapshot found among object versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InVersions {
    /// Its name.
    pub name: String,
    /// The version id of its newest `.sha256`.
    pub sha256: String,
    /// The version id of its newest manifest, if any.
    pub manifest: Option<String>,
    /// The version ids of its `.snap`, newest first (never empty).
    pub snap_versions: Vec<String>,
}

/// The newest complete snapshot named `<prefix>-<timestamp>` among `versions` (or `wanted`):
/// one with a `.snap` and a `.sha256` version that are not delete markers.
#[must_use]
pub fn in_versions(
    versions: &[vault_backup_stores::store::ObjectVersion],
    prefix: &str,
    wanted: Option<&str>,
) -> Option<InVersions> {
    use std::collections::BTreeMap;
    // name -> part -> version ids, newest first (by time; S3 lists a key's versions newest
    // first, which breaks ties within one second).
    let mut data: Vec<&vault_backup_stores::store::ObjectVersion> =
        versions.iter().filter(|v| !v.delete_marker).collect();
    data.sort_by_key(|v| std::cmp::Reverse(v.modified));
    let mut by_name: BTreeMap<String, [Vec<String>; 3]> = BTreeMap::new();
    for v in data {
        let Some((a, part)) = Artifact::classify(&v.name, prefix) else {
            continue;
        };
        let slot = match part {
            Part::Snapshot => 0,
            Part::Checksum => 1,
            Part::Manifest => 2,
        };
        by_name.entry(a.name().to_owned()).or_default()[slot].push(v.version_id.clone());
    }
    by_name
        .into_iter()
        .filter(|(name, [snap, sum, _])| {
            !snap.is_empty() && !sum.is_empty() && wanted.is_none_or(|w| w == name)
        })
        .filter_map(|(name, parts)| {
            let time = Artifact::new(name.as_str()).timestamp(prefix)?;
            Some((time, name, parts))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, name, [snap, sum, json])| InVersions {
            name,
            sha256: sum[0].clone(),
            manifest: json.first().cloned(),
            snap_versions: snap,
        })
}

/// What a store says about a snapshot besides the snapshot itself: read before any byte of
/// the `.snap` is fetched, so the checks that need them cost nothing.
#[derive(Debug, Clone)]
pub struct Sidecars {
    /// The SHA-256 its `.sha256` records.
    pub expected: String,
    /// Its manifest, when the store holds one.
    pub manifest: Option<Manifest>,
}

/// Reads the `.sha256` and manifest of snapshot `name` from `store`.
///
/// # Errors
/// [`Error::Missing`], [`Error::BadSidecar`] or [`Error::Store`].
pub async fn sidecars(store: &dyn Store, name: &str) -> Result<Sidecars> {
    let a = Artifact::new(name);
    let (snap, sha_file, json) = (a.snap_file(), a.sha256_file(), a.manifest_file());
    let text = store.read(&sha_file).await?.ok_or_else(|| Error::Missing {
        object: store.location(&sha_file),
    })?;
    let expected =
        artifact::parse_checksum(&String::from_utf8_lossy(&text), &snap).map_err(|detail| {
            Error::BadSidecar {
                object: store.location(&sha_file),
                detail,
            }
        })?;
    let manifest = match store.read(&json).await? {
        None => {
            tracing::warn!(object = %store.location(&json), "no manifest beside the snapshot; the archive's own raft index is used");
            None
        }
        Some(bytes) => {
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::BadSidecar {
                object: store.location(&json),
                detail: format!("not a vault-backup manifest: {e}"),
            })?;
            if m.sha256 != expected {
                return Err(Error::BadSidecar {
                    object: store.location(&json),
                    detail: format!(
                        "it records sha256 {} but {} says {expected}",
                        m.sha256, sha_file
                    ),
                });
            }
            Some(m)
        }
    };
    Ok(Sidecars { expected, manifest })
}

/// Fetches snapshot `name` from `store` into `dir`, within `timeout` (`RESTORE_TIMEOUT`), and
/// verifies it against its `.sha256` (read before by [`sidecars`]) and its archive's own
/// `SHA256SUMS`. Nothing is under the final name unless both pass.
///
/// # Errors
/// [`Error::Missing`], [`Error::ChecksumMismatch`], [`Error::Timeout`], a
/// [`vault_backup_vault::Error::Archive`] or `Stream` naming the object, [`Error::Store`] or
/// [`Error::Io`].
pub async fn fetch(
    store: &dyn Store,
    name: &str,
    dir: &Path,
    sidecars: Sidecars,
    timeout: Duration,
) -> Result<Fetched> {
    let Sidecars { expected, manifest } = sidecars;
    let snap = Artifact::new(name).snap_file();
    let location = store.location(&snap);
    let stream = store.open(&snap).await?.ok_or_else(|| Error::Missing {
        object: location.clone(),
    })?;
    tracing::info!(object = %location, "fetching the snapshot");
    let started = std::time::Instant::now();
    // The whole fetch has one bound the user can raise; each part of an S3 read has its own
    // (the store's), so a slow but moving transfer is never cut by a per-request limit.
    let got = tokio::time::timeout(timeout, download::receive_stream(stream, dir, &location))
        .await
        .map_err(|_| Error::Timeout {
            what: format!("fetching {location} did not finish"),
            after: timeout,
        })??;
    if got.sha256 != expected {
        return Err(Error::ChecksumMismatch {
            object: location,
            expected,
            actual: got.sha256,
        });
    }
    let path = fsutil::persist(got.file, dir, &snap, true).map_err(|source| Error::Io {
        path: dir.join(&snap),
        source,
    })?;
    let elapsed = started.elapsed();
    tracing::info!(
        object = %location,
        path = %path.display(),
        bytes = got.bytes,
        sha256 = %got.sha256,
        raft_index = got.info.index,
        seconds = format!("{:.2}", elapsed.as_secs_f64()),
        mb_per_s = format!("{:.1}", vault_backup_common::progress::mb_per_s(got.bytes, elapsed)),
        "snapshot fetched; it matches its .sha256 and its archive's SHA256SUMS"
    );
    Ok(Fetched {
        name: name.to_owned(),
        path,
        sha256: got.sha256,
        bytes: got.bytes,
        info: got.info,
        manifest,
        location,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use vault_backup_stores::store::ObjectVersion;

    fn v(name: &str, id: &str, marker: bool, at: &str) -> ObjectVersion {
        ObjectVersion {
            name: name.into(),
            version_id: id.into(),
            latest: false,
            delete_marker: marker,
            modified: DateTime::parse_from_rfc3339(at)
                .unwrap()
                .with_timezone(&Utc),
            size: 1,
        }
    }

    #[test]
    fn the_newest_complete_snapshot_is_found_behind_delete_markers() {
        let t1 = "2026-11-26T06:00:01Z";
        let t2 = "2026-11-27T06:00:01Z";
        let rm = "2026-11-27T09:00:00Z";
        let versions = [
            // The older snapshot, complete, all three hidden.
            v("vault-20261126T060000Z.snap", "s1", false, t1),
            v("vault-20261126T060000Z.snap.sha256", "c1", false, t1),
            v("vault-20261126T060000Z.snap.json", "j1", false, t1),
            v("vault-20261126T060000Z.snap", "m1", true, rm),
            v("vault-20261126T060000Z.snap.sha256", "m2", true, rm),
            // The newer one: two .snap versions (a retried upload), complete.
            v("vault-20261127T060000Z.snap", "s2", false, t2),
            v(
                "vault-20261127T060000Z.snap",
                "s2-older",
                false,
                "2026-11-27T06:00:00Z",
            ),
            v("vault-20261127T060000Z.snap.sha256", "c2", false, t2),
            v("vault-20261127T060000Z.snap.sha256", "m3", true, rm),
            // Newer still, but incomplete (no .sha256 version): never chosen.
            v(
                "vault-20261128T060000Z.snap",
                "s3",
                false,
                "2026-11-28T06:00:01Z",
            ),
            v("other-20261129T060000Z.snap", "x", false, rm),
            v("other-20261129T060000Z.snap.sha256", "y", false, rm),
        ];
        let got = in_versions(&versions, "vault", None).unwrap();
        assert_eq!(
            got,
            InVersions {
                name: "vault-20261127T060000Z".into(),
                sha256: "c2".into(),
                manifest: None,
                snap_versions: vec!["s2".into(), "s2-older".into()],
            }
        );
        let older = in_versions(&versions, "vault", Some("vault-20261126T060000Z")).unwrap();
        assert_eq!(
            (older.sha256.as_str(), older.manifest.as_deref()),
            ("c1", Some("j1"))
        );
        assert!(in_versions(&versions, "vault", Some("vault-20261128T060000Z")).is_none());
        // Only delete markers left: nothing to restore.
        let markers: Vec<_> = versions
            .iter()
            .filter(|v| v.delete_marker)
            .cloned()
            .collect();
        assert!(in_versions(&markers, "vault", None).is_none());
    }
}
