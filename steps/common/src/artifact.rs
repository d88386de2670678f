//! The snapshot artifact: the contract between the steps and with whoever restores.
//!
//! A snapshot named `vault-20261124T063700Z` is three files side by side:
//! - `vault-20261124T063700Z.snap`: the raft snapshot exactly as Vault served it (a gzip tar);
//! - `vault-20261124T063700Z.snap.json`: the [`Manifest`];
//! - `vault-20261124T063700Z.snap.sha256`: one `sha256sum` line, so `sha256sum -c` checks it.
//!
//! They are written in that order and the checksum file last: a snapshot without its
//! `.sha256` is incomplete by definition, wherever it is stored.

use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fsutil;

/// The suffix of the snapshot file itself.
pub const SNAP_SUFFIX: &str = ".snap";
/// The suffix of the manifest.
pub const MANIFEST_SUFFIX: &str = ".snap.json";
/// The suffix of the checksum file, the sidecar written last.
pub const SHA256_SUFFIX: &str = ".snap.sha256";
/// The timestamp format in default names: sortable, UTC, no characters a store dislikes.
pub const TIMESTAMP_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Errors about an artifact on local disk.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot has no checksum file, so it is incomplete.
    #[error("snapshot {name} is incomplete: {} is missing", path.display())]
    Incomplete {
        /// The snapshot name.
        name: String,
        /// The missing checksum file.
        path: PathBuf,
    },
    /// The checksum file is not one `sha256sum` line for the snapshot file.
    #[error("{}: not a sha256sum line for {file}: {reason}", path.display())]
    BadChecksumFile {
        /// The checksum file.
        path: PathBuf,
        /// The snapshot file it should name.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The snapshot's content does not match its checksum file.
    #[error("{}: sha256 is {actual} but {file}.sha256 says {expected}; the file is corrupt", path.display())]
    Mismatch {
        /// The snapshot file.
        path: PathBuf,
        /// Its file name.
        file: String,
        /// The digest the checksum file records.
        expected: String,
        /// The digest of the content.
        actual: String,
    },
}

/// Which of an artifact's three files a file name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// `<name>.snap`
    Snapshot,
    /// `<name>.snap.json`
    Manifest,
    /// `<name>.snap.sha256`
    Checksum,
}

/// A snapshot by name (without suffix).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Artifact {
    name: String,
}

impl Artifact {
    /// An artifact with the given name (no suffix).
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// The default name for a snapshot taken at `at`: `<prefix>-20261124T063700Z`.
    #[must_use]
    pub fn timestamped(prefix: &str, at: DateTime<Utc>) -> Self {
        Self::new(format!("{prefix}-{}", at.format(TIMESTAMP_FORMAT)))
    }

    /// The name, without suffix.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The snapshot's file name.
    #[must_use]
    pub fn snap_file(&self) -> String {
        format!("{}{SNAP_SUFFIX}", self.name)
    }

    /// The manifest's file name.
    #[must_use]
    pub fn manifest_file(&self) -> String {
        format!("{}{MANIFEST_SUFFIX}", self.name)
    }

    /// The checksum file's name.
    #[must_use]
    pub fn sha256_file(&self) -> String {
        format!("{}{SHA256_SUFFIX}", self.name)
    }

    /// The three files in the order they must be written: snapshot, manifest, checksum.
    #[must_use]
    pub fn files_in_write_order(&self) -> [String; 3] {
        [self.snap_file(), self.manifest_file(), self.sha256_file()]
    }

    /// The time in a name of the form `<prefix>-<timestamp>`, or `None` for any other name.
    #[must_use]
    pub fn timestamp(&self, prefix: &str) -> Option<DateTime<Utc>> {
        let stamp = self.name.strip_prefix(prefix)?.strip_prefix('-')?;
        if stamp.len() != 16 {
            return None;
        }
        NaiveDateTime::parse_from_str(stamp, TIMESTAMP_FORMAT)
            .ok()
            .map(|t| t.and_utc())
    }

    /// Splits a file name into its artifact and part, if it is one of the three files of a
    /// snapshot named `<prefix>-<timestamp>`. Anything else (other prefixes, other files, temp
    /// files) is `None` and must be left alone.
    #[must_use]
    pub fn classify(file_name: &str, prefix: &str) -> Option<(Self, Part)> {
        let (name, part) = if let Some(n) = file_name.strip_suffix(SHA256_SUFFIX) {
            (n, Part::Checksum)
        } else if let Some(n) = file_name.strip_suffix(MANIFEST_SUFFIX) {
            (n, Part::Manifest)
        } else if let Some(n) = file_name.strip_suffix(SNAP_SUFFIX) {
            (n, Part::Snapshot)
        } else {
            return None;
        };
        let artifact = Self::new(name);
        artifact.timestamp(prefix)?;
        Some((artifact, part))
    }
}

/// What the snapshot step knew when it took a snapshot; stored as `<name>.snap.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The format of this manifest; bumped on incompatible change.
    pub manifest_version: u32,
    /// The snapshot name (no suffix).
    pub name: String,
    /// The snapshot's file name.
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// When the snapshot was taken (UTC).
    pub created_at: DateTime<Utc>,
    /// The API address of the raft leader that served it.
    pub leader_address: String,
    /// The server's version (Vault or OpenBao), as it reports it.
    pub server_version: Option<String>,
    /// The raft index in the archive's `meta.json`.
    pub raft_index: u64,
    /// The raft term in the archive's `meta.json`.
    pub raft_term: u64,
    /// The tool that wrote it, with its version.
    pub tool: String,
    /// The canary the snapshot step wrote just before taking the snapshot (`CANARY_PATH`), which
    /// a restore drill reads back from the restored data. Absent when no canary is configured,
    /// and in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// The `cluster_name` of the cluster it was taken from, as its `sys/health` said: a restore
    /// into a cluster of another name must say so (`RESTORE_CONFIRM=<name>@<target>`). Absent
    /// in manifests written before it existed, and where the server did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// The `cluster_id` of that cluster (`sys/health`), which tells two clusters of the same
    /// name apart. Absent as `cluster_name` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The seal of that cluster as its `sys/seal-status` said (`shamir`, `transit`, `awskms`,
    /// ...): the restored keyring opens only with the same kind of seal (the same unseal keys,
    /// or the same KMS key), so a restore into a cluster of another seal is refused before
    /// anything is sent. Absent in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_type: Option<String>,
    /// The cluster's health (raft autopilot) just before the snapshot: a degraded cluster is
    /// when a backup matters most, so one is never refused, but its state is recorded. Absent
    /// in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ClusterHealth>,
}

/// Whether the cluster's health could be read, and what autopilot said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Autopilot says `healthy: true`.
    Healthy,
    /// Autopilot says `healthy: false` (a voter down, lagging or unreachable).
    Unhealthy,
    /// The state could not be read (e.g. a policy without `sys/storage/raft/autopilot/state`).
    Unknown,
}

/// The cluster's state as `sys/storage/raft/autopilot/state` said just before a snapshot.
/// With [`HealthStatus::Unknown`] every other field is absent and `reason` says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterHealth {
    /// `healthy`, `unhealthy` or `unknown`.
    pub status: HealthStatus,
    /// Autopilot's `healthy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Autopilot's `failure_tolerance`: how many voters may fail without losing quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_tolerance: Option<u64>,
    /// The raft node id of the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<String>,
    /// The leader's raft term (its `last_term`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_term: Option<u64>,
    /// The leader's last raft index (its `last_index`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_last_index: Option<u64>,
    /// The raft node ids of the voters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<String>,
    /// Why the health is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ClusterHealth {
    /// The health of a cluster whose state could not be read, and why.
    #[must_use]
    pub fn unknown(reason: impl Into<String>) -> Self {
        Self {
            status: HealthStatus::Unknown,
            healthy: None,
            failure_tolerance: None,
            leader_id: None,
            leader_term: None,
            leader_last_index: None,
            voters: Vec::new(),
            reason: Some(reason.into()),
        }
    }
}

/// A KV v2 secret written into the cluster just before a snapshot, and its exact value: the
/// proof that a restored snapshot holds this run's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// The KV v2 mount (`CANARY_MOUNT`, default `secret`).
    pub mount: String,
    /// The secret's path in the mount (`CANARY_PATH`), e.g. `vault-backup/canary`.
    pub path: String,
    /// The `taskrun` field written: the TaskRun that took the snapshot.
    pub taskrun: String,
    /// The `written_at` field written (RFC 3339, UTC).
    pub written_at: String,
}

impl Canary {
    /// The API path of the secret's data: `<mount>/data/<path>`.
    #[must_use]
    pub fn data_path(&self) -> String {
        format!("{}/data/{}", self.mount, self.path)
    }
}

/// The current [`Manifest::manifest_version`].
pub const MANIFEST_VERSION: u32 = 1;

/// One `sha256sum` line: `<hex>  <file>\n` (text mode, two spaces).
#[must_use]
pub fn checksum_line(sha256_hex: &str, file: &str) -> String {
    format!("{sha256_hex}  {file}\n")
}

/// Reads the digest out of a checksum file's text, checking that it names `file`.
///
/// # Errors
/// A reason string if the text is not exactly one `sha256sum` line for `file`.
pub fn parse_checksum(text: &str, file: &str) -> Result<String, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let line = lines.next().ok_or("the file is empty")?;
    if lines.next().is_some() {
        return Err("more than one line".into());
    }
    let (hex, rest) = line.split_once(' ').ok_or("no space after the digest")?;
    // sha256sum writes "  name" (text) or " *name" (binary).
    let named = rest
        .strip_prefix(' ')
        .or_else(|| rest.strip_prefix('*'))
        .ok_or("expected two spaces after the digest")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the digest is not 64 hex digits".into());
    }
    if named != file {
        return Err(format!("it names {named:?}"));
    }
    Ok(hex.to_ascii_lowercase())
}

/// SHA-256 (hex) and length of a file, read in 1 MiB blocks.
///
/// # Errors
/// The I/O error if the file cannot be read.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// A snapshot in a local directory that matched its checksum file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// Checks `dir/<name>.snap` against `dir/<name>.snap.sha256`, the way `sha256sum -c` would.
///
/// # Errors
/// [`ArtifactError::Incomplete`] without a checksum file, [`ArtifactError::Mismatch`] if the
/// content differs, or the I/O or format error.
pub fn verify_in_dir(dir: &Path, artifact: &Artifact) -> Result<Verified, ArtifactError> {
    let sha_path = dir.join(artifact.sha256_file());
    let text = match std::fs::read_to_string(&sha_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ArtifactError::Incomplete {
                name: artifact.name().to_owned(),
                path: sha_path,
            });
        }
        Err(source) => {
            return Err(ArtifactError::Io {
                path: sha_path,
                source,
            });
        }
    };
    let file = artifact.snap_file();
    let expected =
        parse_checksum(&text, &file).map_err(|reason| ArtifactError::BadChecksumFile {
            path: sha_path.clone(),
            file: file.clone(),
            reason,
        })?;
    let snap_path = dir.join(&file);
    let (actual, bytes) = hash_file(&snap_path).map_err(|source| ArtifactError::Io {
        path: snap_path.clone(),
        source,
    })?;
    if actual != expected {
        return Err(ArtifactError::Mismatch {
            path: snap_path,
            file,
            expected,
            actual,
        });
    }
    Ok(Verified {
        sha256: actual,
        bytes,
    })
}

/// Writes the manifest, then the checksum file, next to an already persisted snapshot.
///
/// # Errors
/// [`ArtifactError::Io`] naming the file that could not be written.
///
/// # Panics
/// Never: a [`Manifest`] always serializes to JSON.
pub fn write_sidecars(
    dir: &Path,
    artifact: &Artifact,
    manifest: &Manifest,
) -> Result<(), ArtifactError> {
    let mut json = serde_json::to_vec_pretty(manifest).expect("a manifest always serializes");
    json.push(b'\n');
    let manifest_file = artifact.manifest_file();
    fsutil::write_atomic(dir, &manifest_file, &json, false).map_err(|source| {
        ArtifactError::Io {
            path: dir.join(&manifest_file),
            source,
        }
    })?;
    let sha_file = artifact.sha256_file();
    let line = checksum_line(&manifest.sha256, &artifact.snap_file());
    fsutil::write_atomic(dir, &sha_file, line.as_bytes(), false).map_err(|source| {
        ArtifactError::Io {
            path: dir.join(&sha_file),
            source,
        }
    })?;
    Ok(())
}

/// The snapshots named `<prefix>-<timestamp>` in a local directory, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Snapshots with both their `.snap` and `.snap.sha256`.
    pub complete: Vec<Artifact>,
    /// Snapshots whose `.snap` has no `.snap.sha256` (a writer failed or is still writing).
    pub incomplete: Vec<Artifact>,
}

/// Lists the snapshots named `<prefix>-<timestamp>` in `dir`, in one pass over the directory.
///
/// # Errors
/// [`ArtifactError::Io`] if the directory cannot be listed.
pub fn list_dir(dir: &Path, prefix: &str) -> Result<Listing, ArtifactError> {
    let io = |source| ArtifactError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut snaps = std::collections::BTreeSet::new();
    let mut sums = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        match Artifact::classify(&file, prefix) {
            Some((a, Part::Snapshot)) => {
                snaps.insert(a);
            }
            Some((a, Part::Checksum)) => {
                sums.insert(a);
            }
            _ => {}
        }
    }
    let sorted = |mut v: Vec<Artifact>| {
        v.sort_by_key(|a| a.timestamp(prefix));
        v
    };
    Ok(Listing {
        complete: sorted(snaps.intersection(&sums).cloned().collect()),
        incomplete: sorted(snaps.difference(&sums).cloned().collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rstest::rstest;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 6, 37, 0).unwrap()
    }

    #[test]
    fn names_are_sortable_utc_timestamps() {
        let a = Artifact::timestamped("vault", at());
        assert_eq!(a.name(), "vault-20261124T063700Z");
        assert_eq!(a.timestamp("vault"), Some(at()));
        assert_eq!(
            a.files_in_write_order(),
            [
                "vault-20261124T063700Z.snap",
                "vault-20261124T063700Z.snap.json",
                "vault-20261124T063700Z.snap.sha256"
            ]
        );
    }

    #[rstest]
    #[case("vault-20261124T063700Z.snap", Some(Part::Snapshot))]
    #[case("vault-20261124T063700Z.snap.json", Some(Part::Manifest))]
    #[case("vault-20261124T063700Z.snap.sha256", Some(Part::Checksum))]
    #[case("vault-prod-20261124T063700Z.snap", None)]
    #[case("vaultx-20261124T063700Z.snap", None)]
    #[case("vault-20261124T063700Z.tar", None)]
    #[case("vault-2026112T063700Z.snap", None)]
    #[case("vault-latest.snap", None)]
    #[case(".vault-backup-abc.tmp", None)]
    fn only_our_names_are_classified(#[case] file: &str, #[case] want: Option<Part>) {
        assert_eq!(Artifact::classify(file, "vault").map(|(_, p)| p), want);
    }

    #[rstest]
    #[case("  x.snap\n", false)]
    #[case(&format!("{}  x.snap\n", "a".repeat(64)), true)]
    #[case(&format!("{} *x.snap", "A".repeat(64)), true)]
    #[case(&format!("{}  y.snap\n", "a".repeat(64)), false)]
    #[case(&format!("{} x.snap\n", "a".repeat(64)), false)]
    #[case(&format!("{}  x.snap\n{}  x.snap\n", "a".repeat(64), "b".repeat(64)), false)]
    fn checksum_lines(#[case] text: &str, #[case] ok: bool) {
        let got = parse_checksum(text, "x.snap");
        assert_eq!(got.is_ok(), ok, "{got:?}");
        if ok {
            assert_eq!(got.unwrap(), "a".repeat(64));
        }
    }

    fn manifest(sha: &str, bytes: u64) -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            name: "vault-20261124T063700Z".into(),
            file: "vault-20261124T063700Z.snap".into(),
            bytes,
            sha256: sha.into(),
            created_at: at(),
            leader_address: "http://127.0.0.1:8200".into(),
            server_version: Some("2.7.2".into()),
            raft_index: 10,
            raft_term: 2,
            tool: "test".into(),
            canary: None,
            cluster_name: None,
            cluster_id: None,
            seal_type: None,
            health: None,
        }
    }

    #[test]
    fn the_canary_is_optional_both_ways() {
        let old = manifest(&"a".repeat(64), 3);
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("canary"), "no canary, no key: {text}");
        let back: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, old, "a manifest without the key still reads");
        let with = Manifest {
            canary: Some(Canary {
                mount: "secret".into(),
                path: "vault-backup/canary".into(),
                taskrun: "backup-x1".into(),
                written_at: "2026-11-24T06:37:00.123Z".into(),
            }),
            ..old
        };
        let text = serde_json::to_string(&with).unwrap();
        assert!(
            text.contains(r#""canary":{"mount":"secret","path":"vault-backup/canary""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), with);
        assert_eq!(
            with.canary.unwrap().data_path(),
            "secret/data/vault-backup/canary"
        );
    }

    #[test]
    fn sidecars_verify_and_a_flipped_byte_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = Artifact::timestamped("vault", at());
        let snap = dir.path().join(a.snap_file());
        std::fs::write(&snap, b"snapshot bytes").unwrap();
        let (sha, bytes) = hash_file(&snap).unwrap();
        assert!(matches!(
            verify_in_dir(dir.path(), &a),
            Err(ArtifactError::Incomplete { .. })
        ));
        let listing = list_dir(dir.path(), "vault").unwrap();
        assert!(listing.complete.is_empty());
        assert_eq!(listing.incomplete, vec![a.clone()]);
        write_sidecars(dir.path(), &a, &manifest(&sha, bytes)).unwrap();
        assert_eq!(
            verify_in_dir(dir.path(), &a).unwrap(),
            Verified {
                sha256: sha.clone(),
                bytes
            }
        );
        assert_eq!(
            list_dir(dir.path(), "vault").unwrap(),
            Listing {
                complete: vec![a.clone()],
                incomplete: vec![]
            }
        );
        let m: Manifest =
            serde_json::from_slice(&std::fs::read(dir.path().join(a.manifest_file())).unwrap())
                .unwrap();
        assert_eq!(m, manifest(&sha, bytes));
        std::fs::write(&snap, b"snapshot bytez").unwrap();
        let err = verify_in_dir(dir.path(), &a).unwrap_err();
        assert!(matches!(err, ArtifactError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn sha256_of_known_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            hash_file(&p).unwrap(),
            (
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_owned(),
                3
            )
        );
    }
}
