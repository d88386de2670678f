//! Snapshot files as the snapshot step leaves them in its workspace, for tests of the steps that
//! read them (sync, the store conformance suite, restore fetches): the `.snap`, its manifest and
//! its `.sha256`, written through the common crate.

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Utc};
use vault_backup_common::artifact::{self, Artifact, MANIFEST_VERSION, Manifest};

/// Runs `cmd`, which must succeed.
fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `<prefix>-<time>.snap` in `dir` as the snapshot step leaves it: a gzip'd tar of
/// `meta.json`, `state.bin` (`bytes` random bytes), `SHA256SUMS` and `SHA256SUMS.sealed` (whose
/// seal only a Vault checks; the restore's fetch checks it is there), then its manifest and
/// checksum file. Hashing uses `sha256sum` (fast in debug builds).
///
/// # Panics
/// If a file cannot be written or a tool fails.
pub fn write_snapshot(dir: &Path, prefix: &str, time: DateTime<Utc>, bytes: u64) -> Artifact {
    let a = Artifact::timestamped(prefix, time);
    let staging = tempfile::tempdir().unwrap();
    let s = staging.path();
    run_ok(
        Command::new("head")
            .args(["-c", &bytes.to_string(), "/dev/urandom"])
            .stdout(std::fs::File::create(s.join("state.bin")).unwrap()),
    );
    std::fs::write(
        s.join("meta.json"),
        format!(r#"{{"Index":42,"Term":3,"Size":{bytes}}}"#),
    )
    .unwrap();
    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("sha256sum meta.json state.bin > SHA256SUMS && echo sealed > SHA256SUMS.sealed")
            .current_dir(s),
    );
    run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(dir.join(a.snap_file()))
            .arg("-C")
            .arg(s)
            .args(["meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"]),
    );
    write_sidecars(dir, &a, time, (42, 3));
    a
}

/// Writes a large `<prefix>-<time>.snap` of `bytes` random bytes in `dir` (no tar: quicker to
/// make; only for steps that do not open the archive), with its manifest and checksum file.
///
/// # Panics
/// If a file cannot be written or a tool fails.
pub fn write_big_snapshot(dir: &Path, prefix: &str, time: DateTime<Utc>, bytes: u64) -> Artifact {
    let a = Artifact::timestamped(prefix, time);
    run_ok(
        Command::new("head")
            .args(["-c", &bytes.to_string(), "/dev/urandom"])
            .stdout(std::fs::File::create(dir.join(a.snap_file())).unwrap()),
    );
    write_sidecars(dir, &a, time, (1, 1));
    a
}

/// Writes the manifest and checksum file for `dir/<a>.snap` through the common crate, as the
/// snapshot step does; `raft` is the (index, term) the manifest records.
///
/// # Panics
/// If the file cannot be read or the sidecars written.
pub fn write_sidecars(dir: &Path, a: &Artifact, time: DateTime<Utc>, raft: (u64, u64)) {
    // sha256sum rather than the common crate's hashing: fast in a debug build too.
    let snap = dir.join(a.snap_file());
    let out = Command::new("sha256sum").arg(&snap).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", snap.display());
    let sha256 = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let bytes = std::fs::metadata(&snap).unwrap().len();
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        name: a.name().to_owned(),
        file: a.snap_file(),
        bytes,
        sha256,
        created_at: time,
        leader_address: "http://127.0.0.1:8200".into(),
        server_version: Some("2.7.2".into()),
        raft_index: raft.0,
        raft_term: raft.1,
        tool: "vault-backup-tests".into(),
        canary: None,
        cluster_name: None,
        cluster_id: None,
        seal_type: None,
        health: None,
    };
    artifact::write_sidecars(dir, a, &manifest).unwrap();
}
