//! A name in a store is immutable: a snapshot with other bytes under a name the store already
//! holds complete is refused (exit 1) and nothing in the store changes, in S3 (SeaweedFS) and in
//! a directory. The same bytes again are "already in the store" (exit 0).

mod common;

use std::collections::BTreeMap;

use common::*;
use vault_backup_testbed::seaweed::SeaweedFs;

fn env(s3: &SeaweedFs, ws: &std::path::Path, bk: &std::path::Path) -> BTreeMap<String, String> {
    let mut env = s3_env(s3);
    env.insert("SNAPSHOT_DIR".into(), s(ws));
    env.insert("BACKUP_DIR".into(), s(bk));
    env
}

#[test]
fn a_different_snapshot_under_a_name_already_stored_is_refused_and_nothing_changes() {
    let s3 = SeaweedFs::start("backups");
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    let seed = tempfile::tempdir().unwrap();
    // Other snapshots in both stores, which must stay exactly as they are.
    stage_dated(
        seed.path(),
        "vault",
        &[at(2026, 11, 22, 6), at(2026, 11, 23, 6)],
    );
    seed_bucket(&s3, seed.path());
    for f in files(seed.path()) {
        std::fs::copy(seed.path().join(&f), bk.path().join(&f)).unwrap();
    }
    let first = tempfile::tempdir().unwrap();
    let a = write_big_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 20_000_000);
    for f in files(ws.path()) {
        std::fs::copy(ws.path().join(&f), first.path().join(&f)).unwrap();
    }
    let (code, stderr) = run_binary(&env(&s3, ws.path(), bk.path()));
    assert_eq!(code, Some(0), "{stderr}");
    let old_sha = sha256sum(&ws.path().join(a.snap_file())).0;

    let bucket_before = bucket_objects(&s3);
    let dir_before = dir_contents(bk.path());
    assert_eq!(bucket_before.len(), 9, "{bucket_before:?}");

    // Another snapshot under the same name (a re-run of the snapshot step in the same second,
    // or a name given by hand).
    for f in files(ws.path()) {
        std::fs::remove_file(ws.path().join(f)).unwrap();
    }
    let again = write_big_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 20_000_000);
    assert_eq!(again, a);
    let new_sha = sha256sum(&ws.path().join(a.snap_file())).0;
    assert_ne!(new_sha, old_sha);
    let (code, stderr) = run_binary(&env(&s3, ws.path(), bk.path()));

    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("2 of 2 stores failed: s3, dir"), "{stderr}");
    for location in [
        format!("s3://backups/{PREFIX_IN_BUCKET}/{}", a.snap_file()),
        s(&bk.path().join(a.snap_file())),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains("already holds another snapshot") && l.contains(&location))
            .unwrap_or_else(|| panic!("no refusal naming {location}:\n{stderr}"));
        assert!(
            line.contains(&old_sha) && line.contains(&new_sha),
            "both digests: {line}"
        );
        assert!(line.contains(a.name()), "{line}");
    }
    assert!(!stderr.contains("upload started"), "{stderr}");
    // Nothing in either store changed: every object's ETag, size and time, every file's bytes.
    assert_eq!(bucket_objects(&s3), bucket_before);
    assert_eq!(dir_contents(bk.path()), dir_before);
    assert!(s3.pending_multipart_uploads().is_empty());
    // The old copy still checks out, as a person restoring would check it.
    sha256sum_check(bk.path(), &a.sha256_file());
    let dl = tempfile::tempdir().unwrap();
    for f in [a.snap_file(), a.sha256_file()] {
        s3.download(&format!("{PREFIX_IN_BUCKET}/{f}"), &dl.path().join(&f));
    }
    sha256sum_check(dl.path(), &a.sha256_file());

    // The first snapshot's very bytes again: already in both stores, exit 0, nothing written.
    for f in files(ws.path()) {
        std::fs::remove_file(ws.path().join(f)).unwrap();
    }
    for f in files(first.path()) {
        std::fs::copy(first.path().join(&f), ws.path().join(&f)).unwrap();
    }
    let (code, stderr) = run_binary(&env(&s3, ws.path(), bk.path()));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("already in the store").count(),
        2,
        "{stderr}"
    );
    assert_eq!(bucket_objects(&s3), bucket_before);
    assert_eq!(dir_contents(bk.path()), dir_before);
}
