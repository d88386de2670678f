//! The `snapshot-sync` binary pushing to a real Pushgateway, with a real S3 server (SeaweedFS)
//! and a directory store: one series per configured store, holding what the stores hold
//! afterwards and what retention deleted from them; when one store fails, the other still pushes
//! its series, the failed one keeps its earlier values, and the step's failure leaves its last
//! success in place.

// Counts, sizes and exit codes are integers, exact in an f64 and in the text format.
#![allow(
    clippy::float_cmp,
    clippy::cast_precision_loss,
    clippy::case_sensitive_file_extension_comparisons
)]

mod common;

use std::path::Path;
use std::time::SystemTime;

use common::*;
use vault_backup_common::metrics::{
    LAST_FAILURE, LAST_RUN_EXIT_CODE, LAST_SUCCESS, STORE_DELETED_BYTES, STORE_LAST_SUCCESS,
    STORE_SNAPSHOTS, unix_seconds,
};
use vault_backup_testbed::pushgateway::Pushgateway;
use vault_backup_testbed::seaweed::SeaweedFs;

const STEP: &str = "snapshot-sync";

/// The value of a store's series, if pushed.
fn store_value(pg: &Pushgateway, name: &str, store: &str) -> Option<f64> {
    pg.metrics(name)
        .into_iter()
        .find(|s| s.name == name && s.label("step") == STEP && s.label("store") == store)
        .map(|s| s.value)
}

fn step_value(pg: &Pushgateway, name: &str) -> f64 {
    pg.value(name, STEP)
        .unwrap_or_else(|| panic!("{name} not pushed: {:?}", pg.metrics("vault_backup_")))
}

/// Complete snapshots in a directory: those with their `.sha256`.
fn complete_in(dir: &Path) -> usize {
    files(dir)
        .iter()
        .filter(|f| f.ends_with(".snap.sha256"))
        .count()
}

/// Each file of `dir` with its size.
fn sizes(dir: &Path) -> Vec<(String, u64)> {
    files(dir)
        .into_iter()
        .map(|f| {
            let len = std::fs::metadata(dir.join(&f)).unwrap().len();
            (f, len)
        })
        .collect()
}

#[test]
fn each_store_pushes_what_it_holds_and_a_failed_store_keeps_its_last_values() {
    let s3 = SeaweedFs::start("backups");
    let pg = Pushgateway::start();
    let url = pg.url();
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    // Three older snapshots in the directory store; the bucket starts empty.
    stage_dated(
        bk.path(),
        "vault",
        &[at(2026, 10, 1, 6), at(2026, 10, 2, 6), at(2026, 10, 3, 6)],
    );
    let before_files = sizes(bk.path());
    write_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 256 << 10);

    let mut env = s3_env(&s3);
    env.insert("SNAPSHOT_DIR".into(), s(ws.path()));
    env.insert("BACKUP_DIR".into(), s(bk.path()));
    env.insert("RETAIN_LAST".into(), "2".into());
    env.insert("METRICS_PUSHGATEWAY_URL".into(), url.clone());

    let before = unix_seconds(SystemTime::now());
    let (code, stderr) = run_binary(&env);
    let after = unix_seconds(SystemTime::now());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("metrics pushed"), "{stderr}");

    // The directory: 2 complete snapshots left, and the bytes of the files that went.
    let gone: Vec<&(String, u64)> = before_files
        .iter()
        .filter(|(f, _)| !bk.path().join(f).exists())
        .collect();
    assert_eq!(gone.len(), 6, "two snapshots of three files each: {gone:?}");
    let gone_bytes: u64 = gone.iter().map(|(_, len)| len).sum();
    assert!(gone_bytes > 0);
    assert_eq!(complete_in(bk.path()), 2);
    assert_eq!(store_value(&pg, STORE_SNAPSHOTS.name, "dir"), Some(2.0));
    assert_eq!(
        store_value(&pg, STORE_DELETED_BYTES.name, "dir"),
        Some(gone_bytes as f64)
    );
    // The bucket: only this run's snapshot, nothing deleted.
    let in_bucket = bucket_files(&s3);
    assert_eq!(
        in_bucket
            .iter()
            .filter(|f| f.ends_with(".snap.sha256"))
            .count(),
        1,
        "{in_bucket:?}"
    );
    assert_eq!(store_value(&pg, STORE_SNAPSHOTS.name, "s3"), Some(1.0));
    assert_eq!(store_value(&pg, STORE_DELETED_BYTES.name, "s3"), Some(0.0));
    // One series per configured store, and none for a store not configured.
    let stores: Vec<String> = pg
        .metrics(STORE_LAST_SUCCESS.name)
        .iter()
        .map(|s| s.label("store").to_owned())
        .collect();
    assert_eq!(stores.len(), 2, "{stores:?}");
    let dir_success = store_value(&pg, STORE_LAST_SUCCESS.name, "dir").unwrap();
    let s3_success = store_value(&pg, STORE_LAST_SUCCESS.name, "s3").unwrap();
    let success = step_value(&pg, LAST_SUCCESS.name);
    for t in [dir_success, s3_success, success] {
        assert!(before <= t && t <= after, "{before} {t} {after}");
    }

    // Next run: a new snapshot, S3 refuses the credentials, no retention. The directory gets
    // its copy and pushes it (held counted by listing the store); S3 pushes nothing new.
    write_snapshot(ws.path(), "vault", at(2026, 11, 25, 6), 256 << 10);
    env.insert("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret-key".into());
    env.remove("RETAIN_LAST");
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("1 of 2 stores failed: s3"), "{stderr}");
    assert!(!stderr.contains("not-the-secret-key"), "secret leaked");
    assert_eq!(complete_in(bk.path()), 3);
    assert_eq!(store_value(&pg, STORE_SNAPSHOTS.name, "dir"), Some(3.0));
    assert_eq!(store_value(&pg, STORE_DELETED_BYTES.name, "dir"), Some(0.0));
    assert!(store_value(&pg, STORE_LAST_SUCCESS.name, "dir").unwrap() > dir_success);
    assert_eq!(
        store_value(&pg, STORE_LAST_SUCCESS.name, "s3"),
        Some(s3_success)
    );
    assert_eq!(store_value(&pg, STORE_SNAPSHOTS.name, "s3"), Some(1.0));
    // The step: failed, newer than the success, which stays.
    assert_eq!(step_value(&pg, LAST_RUN_EXIT_CODE.name), 1.0);
    assert_eq!(step_value(&pg, LAST_SUCCESS.name), success);
    assert!(step_value(&pg, LAST_FAILURE.name) > success);
}

/// Issue 11, must-show 3, for the backup itself: a Pushgateway that refuses connections leaves
/// a successful sync successful (exit 0, the copy made) with one warning line.
#[test]
fn a_pushgateway_that_is_down_leaves_the_backup_successful_with_one_warning() {
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    let a = write_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 64 << 10);
    let mut pg = Pushgateway::start();
    let url = pg.url();
    pg.stop();
    let env = [
        ("SNAPSHOT_DIR", s(ws.path())),
        ("BACKUP_DIR", s(bk.path())),
        ("METRICS_PUSHGATEWAY_URL", url),
        ("METRICS_PUSH_TIMEOUT", "2s".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(0), "{stderr}");
    sha256sum_check(bk.path(), &a.sha256_file());
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("metrics not pushed; the step's outcome is unchanged")
            && warnings[0].contains("cannot reach the Pushgateway"),
        "{stderr}"
    );
}
