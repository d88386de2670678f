//! The sync step against a real S3 server (SeaweedFS, which checks signatures and per-part
//! SHA-256 checksums) and a temp directory standing in for the PVC. Copies are checked with the
//! tools a person restoring would use: `aws s3 cp` and `sha256sum -c`.

// Our own file names, lower-case by construction.
#![allow(clippy::case_sensitive_file_extension_comparisons)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use common::*;
use snapshot_sync::{CancellationToken, Config, RawConfig, S3Env, SyncEnv, run_with};
use vault_backup_common::tekton::Results;
use vault_backup_testbed::process::wait_until;
use vault_backup_testbed::seaweed::SeaweedFs;

fn raw_for(s3: &SeaweedFs, ws: &std::path::Path, bk: &std::path::Path) -> RawConfig {
    RawConfig {
        sync: SyncEnv {
            snapshot_dir: s(ws),
            backup_dir: Some(s(bk)),
            ..SyncEnv::default()
        },
        s3: S3Env {
            s3_endpoint: Some(s3.endpoint()),
            s3_bucket: Some(s3.bucket().to_owned()),
            s3_prefix: Some(PREFIX_IN_BUCKET.to_owned()),
            aws_access_key_id: Some(s3.access_key().to_owned()),
            aws_secret_access_key: Some(s3.secret_key().to_owned()),
            ..S3Env::default()
        },
        ..RawConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lands_in_s3_and_the_directory_and_sha256sum_checks_both() {
    let s3 = SeaweedFs::start("backups");
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let a = write_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 3 << 20);

    let mut raw = raw_for(&s3, ws.path(), bk.path());
    raw.sync.snapshot_name = Some(a.name().to_owned());
    let mut config = Config::try_from(raw).unwrap();
    config.results = Results::in_dir(results.path());
    let cancel = CancellationToken::new();
    let summary = run_with(config, &cancel, Utc::now()).await.unwrap();

    let names: Vec<_> = summary.stores.iter().map(|r| (r.store, r.ok())).collect();
    assert_eq!(names, [("s3", true), ("dir", true)]);
    assert_eq!(summary.snapshot, a.name());
    assert_eq!(summary.sha256, sha256sum(&ws.path().join(a.snap_file())).0);

    // Exactly the three files, in the bucket and in the directory, nothing else left behind.
    let want: Vec<String> = {
        let mut v = a.files_in_write_order().to_vec();
        v.sort();
        v
    };
    assert_eq!(bucket_files(&s3), want);
    assert_eq!(files(bk.path()), want);

    // What a restore would do: fetch the object and its checksum file, check them.
    let dl = tempfile::tempdir().unwrap();
    for f in [a.snap_file(), a.sha256_file(), a.manifest_file()] {
        s3.download(&format!("{PREFIX_IN_BUCKET}/{f}"), &dl.path().join(&f));
    }
    sha256sum_check(dl.path(), &a.sha256_file());
    sha256sum_check(bk.path(), &a.sha256_file());
    assert_eq!(
        std::fs::read(dl.path().join(a.manifest_file())).unwrap(),
        std::fs::read(ws.path().join(a.manifest_file())).unwrap()
    );

    let result = |n: &str| std::fs::read_to_string(results.path().join(n)).unwrap();
    assert_eq!(result("synced-stores"), "s3,dir");
    assert_eq!(
        result("s3-url"),
        format!("s3://backups/{PREFIX_IN_BUCKET}/{}", a.snap_file())
    );
    assert_eq!(result("dir-path"), s(&bk.path().join(a.snap_file())));
    assert!(s3.pending_multipart_uploads().is_empty());
}

#[test]
fn a_flipped_byte_uploads_nothing_and_exits_1() {
    let s3 = SeaweedFs::start("backups");
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    let a = write_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 2 << 20);
    flip_byte(&ws.path().join(a.snap_file()));

    let mut env = s3_env(&s3);
    env.insert("SNAPSHOT_DIR".into(), s(ws.path()));
    env.insert("BACKUP_DIR".into(), s(bk.path()));
    let (code, stderr) = run_binary(&env);

    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "snapshot {} in the workspace failed verification; nothing was uploaded",
            a.name()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("the file is corrupt"), "{stderr}");
    assert!(s3.keys("").is_empty(), "bucket: {:?}", s3.keys(""));
    assert!(s3.pending_multipart_uploads().is_empty());
    assert!(files(bk.path()).is_empty(), "{:?}", files(bk.path()));
}

#[test]
fn wrong_s3_credentials_still_fill_the_directory_and_skip_s3_retention() {
    let s3 = SeaweedFs::start("backups");
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    let seed = tempfile::tempdir().unwrap();
    let old = stage_dated(
        seed.path(),
        "vault",
        &[at(2026, 10, 1, 6), at(2026, 10, 2, 6), at(2026, 10, 3, 6)],
    );
    seed_bucket(&s3, seed.path());
    for f in files(seed.path()) {
        std::fs::copy(seed.path().join(&f), bk.path().join(&f)).unwrap();
    }
    let seeded = bucket_files(&s3);
    assert_eq!(seeded.len(), 9);
    let a = write_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 1 << 20);

    let mut env = s3_env(&s3);
    env.insert("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret-key".into());
    env.insert("SNAPSHOT_DIR".into(), s(ws.path()));
    env.insert("BACKUP_DIR".into(), s(bk.path()));
    env.insert("RETAIN_LAST".into(), "1".into());
    let (code, stderr) = run_binary(&env);

    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("1 of 2 stores failed: s3"), "{stderr}");
    assert!(
        stderr.contains("403"),
        "the server's refusal is shown: {stderr}"
    );
    assert!(
        !stderr.contains("not-the-secret-key"),
        "secret leaked: {stderr}"
    );
    // The directory got its copy, verified, and its retention ran.
    let mut want = a.files_in_write_order().to_vec();
    want.sort();
    assert_eq!(files(bk.path()), want);
    sha256sum_check(bk.path(), &a.sha256_file());
    // S3: nothing new, nothing deleted.
    assert_eq!(bucket_files(&s3), seeded);
    assert!(stderr.contains("retention plan store=\"dir\""), "{stderr}");
    assert!(!stderr.contains("retention plan store=\"s3\""), "{stderr}");
    for o in &old {
        assert!(!bk.path().join(o.snap_file()).exists());
    }
}

#[test]
fn sigterm_in_the_middle_of_a_large_upload_leaves_no_snapshot_visible() {
    let s3 = SeaweedFs::start("backups");
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    let a = write_big_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 300 << 20);

    let mut env = s3_env(&s3);
    env.insert("SNAPSHOT_DIR".into(), s(ws.path()));
    env.insert("BACKUP_DIR".into(), s(bk.path()));
    let mut run = Running::spawn(&env);
    run.wait_for_line(&["upload started", "s3://"], Duration::from_secs(180));
    // The multipart upload exists on the server: we are in the middle of it.
    wait_until(
        "a pending multipart upload",
        Duration::from_secs(60),
        || !s3.pending_multipart_uploads().is_empty(),
    );
    let pid = run.child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let (code, stderr) = run.wait();

    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let keys = bucket_files(&s3);
    assert!(
        !keys.iter().any(|k| k.ends_with(".snap")),
        "a .snap object is visible: {keys:?}"
    );
    assert!(
        s3.pending_multipart_uploads().is_empty(),
        "the multipart upload was not aborted"
    );
    // The directory: no temp file left, and a final name only for a whole, checked copy.
    let in_dir = files(bk.path());
    assert!(
        !in_dir.iter().any(|f| f.ends_with(".tmp")),
        "temp file left: {in_dir:?}"
    );
    if in_dir.contains(&a.snap_file()) {
        assert!(in_dir.contains(&a.sha256_file()), "{in_dir:?}");
        sha256sum_check(bk.path(), &a.sha256_file());
    }
    assert!(!in_dir.contains(&a.sha256_file()) || in_dir.contains(&a.snap_file()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_over_s3_and_a_directory_with_20_dated_snapshots() {
    let s3 = SeaweedFs::start("backups");
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    let seed = tempfile::tempdir().unwrap();
    // 20 daily snapshots, Nov 4 to Nov 23 at 06:00; the current one is Nov 24 at 06:00.
    let times: Vec<_> = (4..=23).map(|d| at(2026, 11, d, 6)).collect();
    stage_dated(seed.path(), "vault", &times);
    // Things retention must leave alone, and two incomplete copies of ours.
    for (f, body) in [
        ("README.md", "not a snapshot"),
        ("other-20261101T060000Z.snap", "another prefix"),
        ("other-20261101T060000Z.snap.sha256", "x"),
        ("vault-latest.snap", "a name without a timestamp"),
        ("vault-20261110T070000Z.snap", "incomplete, superseded"),
        (
            "vault-20261124T070000Z.snap",
            "incomplete, newer by name, but written before this run's copy completed",
        ),
    ] {
        std::fs::write(seed.path().join(f), body).unwrap();
    }
    seed_bucket(&s3, seed.path());
    for f in files(seed.path()) {
        std::fs::copy(seed.path().join(&f), bk.path().join(&f)).unwrap();
    }
    let current = write_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 1 << 20);
    let now = at(2026, 11, 24, 12);

    let raw = || {
        let mut raw = raw_for(&s3, ws.path(), bk.path());
        raw.sync.retain_last = Some("3".into());
        raw.sync.retain_weekly = Some("3".into());
        raw
    };
    let cancel = CancellationToken::new();

    // A dry run plans and deletes nothing.
    let before_bucket = bucket_files(&s3);
    let dry = run_with(
        Config::try_from({
            let mut raw = raw();
            raw.sync.retain_dry_run = Some("true".into());
            raw
        })
        .unwrap(),
        &cancel,
        now,
    )
    .await
    .unwrap();
    for r in &dry.stores {
        let plan = r.retention.as_ref().unwrap();
        assert_eq!(plan.iter().filter(|d| !d.keep).count(), 19, "{}", r.store);
        assert!(r.deleted.is_empty());
    }
    let mut with_current = before_bucket.clone();
    with_current.extend(current.files_in_write_order());
    with_current.sort();
    assert_eq!(bucket_files(&s3), with_current);

    // The real run: last 3 (Nov 24, 23, 22) and weekly 3 (ISO weeks 48, 47, 46: Nov 24, 22,
    // 15). Both incomplete copies go: "maybe still being written" is judged by when a copy was
    // written (all seeded before this run's copy completed), not by the time in its name.
    let summary = run_with(Config::try_from(raw()).unwrap(), &cancel, now)
        .await
        .unwrap();
    let mut want: Vec<String> = [
        "20261124T060000Z",
        "20261123T060000Z",
        "20261122T060000Z",
        "20261115T060000Z",
    ]
    .iter()
    .flat_map(|t| ["snap", "snap.json", "snap.sha256"].map(|s| format!("vault-{t}.{s}")))
    .chain(
        [
            "README.md",
            "other-20261101T060000Z.snap",
            "other-20261101T060000Z.snap.sha256",
            "vault-latest.snap",
        ]
        .map(str::to_owned),
    )
    .collect();
    want.sort();
    assert_eq!(bucket_files(&s3), want);
    assert_eq!(files(bk.path()), want);
    for r in &summary.stores {
        assert_eq!(r.deleted.len(), 19, "{}: {:?}", r.store, r.deleted);
        assert!(r.deleted.contains(&"vault-20261110T070000Z".to_owned()));
        assert!(r.deleted.contains(&"vault-20261124T070000Z".to_owned()));
    }
    // What is left still checks out.
    sha256sum_check(bk.path(), "vault-20261115T060000Z.snap.sha256");
}

#[test]
fn a_named_snapshot_without_its_checksum_is_an_error() {
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    let a = write_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 1 << 16);
    std::fs::remove_file(ws.path().join(a.sha256_file())).unwrap();
    let env: BTreeMap<String, String> = [
        ("SNAPSHOT_DIR", s(ws.path())),
        ("BACKUP_DIR", s(bk.path())),
        ("SNAPSHOT_NAME", a.name().to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is incomplete"), "{stderr}");
    assert!(files(bk.path()).is_empty());

    // Without a name, the newest complete one is wanted, and there is none.
    let mut env = env;
    env.remove("SNAPSHOT_NAME");
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no complete snapshot named vault-<timestamp>"),
        "{stderr}"
    );
    assert!(files(bk.path()).is_empty());
}

#[rstest::rstest]
#[case::snapshot_dir_missing(&[], "SNAPSHOT_DIR: is required but not set")]
#[case::no_store(&[("SNAPSHOT_DIR", "{ws}")], "BUCKET_NAME, S3_BUCKET, GOOGLE_BUCKET, AZURE_CONTAINER_NAME, BACKUP_DIR: no store configured")]
#[case::both_endpoint_forms(
    &[("SNAPSHOT_DIR", "{ws}"), ("BUCKET_HOST", "rgw.svc"), ("BUCKET_NAME", "b1"), ("S3_ENDPOINT", "http://127.0.0.1:1"),
      ("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "topsecret-value")],
    "BUCKET_HOST, S3_ENDPOINT: both are set")]
#[case::both_bucket_forms(
    &[("SNAPSHOT_DIR", "{ws}"), ("BUCKET_NAME", "b1"), ("S3_BUCKET", "b2"), ("S3_ENDPOINT", "http://127.0.0.1:1"),
      ("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "topsecret-value")],
    "BUCKET_NAME, S3_BUCKET: both are set and differ")]
#[case::no_access_key(
    &[("SNAPSHOT_DIR", "{ws}"), ("S3_BUCKET", "b1"), ("S3_ENDPOINT", "http://127.0.0.1:1"), ("AWS_SECRET_ACCESS_KEY", "topsecret-value")],
    "AWS_ACCESS_KEY_ID: is required for the S3 store")]
#[case::bad_tls(
    &[("SNAPSHOT_DIR", "{ws}"), ("S3_BUCKET", "b1"), ("S3_ENDPOINT", "127.0.0.1:1"), ("S3_TLS", "maybe"),
      ("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "topsecret-value")],
    "S3_TLS: expected true or false")]
#[case::bucket_ssl_contradicts_s3_tls(
    &[("SNAPSHOT_DIR", "{ws}"), ("BUCKET_HOST", "127.0.0.1"), ("BUCKET_PORT", "8333"), ("BUCKET_NAME", "b1"),
      ("BUCKET_SSL", "false"), ("S3_TLS", "true"), ("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "topsecret-value")],
    "BUCKET_SSL, S3_TLS: the bucket claim says BUCKET_SSL=false but S3_TLS=true")]
#[case::bad_count(&[("SNAPSHOT_DIR", "{ws}"), ("BACKUP_DIR", "{ws}"), ("RETAIN_LAST", "ten")], "RETAIN_LAST: expected a whole number")]
#[case::zero_count(&[("SNAPSHOT_DIR", "{ws}"), ("BACKUP_DIR", "{ws}"), ("RETAIN_DAILY", "0")], "RETAIN_DAILY: expected a whole number from 1")]
#[case::prefix_without_bucket(&[("SNAPSHOT_DIR", "{ws}"), ("BACKUP_DIR", "{ws}"), ("S3_PREFIX", "x")], "S3_PREFIX: is set but no bucket is")]
#[case::backup_dir_missing(&[("SNAPSHOT_DIR", "{ws}"), ("BACKUP_DIR", "/nonexistent/pvc")], "BACKUP_DIR: directory /nonexistent/pvc is not usable")]
#[case::name_with_suffix(&[("SNAPSHOT_DIR", "{ws}"), ("BACKUP_DIR", "{ws}"), ("SNAPSHOT_NAME", "vault-20261124T063700Z.snap")], "SNAPSHOT_NAME: expected the snapshot name without its .snap suffix")]
#[case::name_and_file(&[("SNAPSHOT_DIR", "{ws}"), ("BACKUP_DIR", "{ws}"), ("SNAPSHOT_NAME", "a"), ("SNAPSHOT_NAME_FILE", "/x")], "SNAPSHOT_NAME, SNAPSHOT_NAME_FILE: both are set")]
#[case::name_file_missing(&[("SNAPSHOT_DIR", "{ws}"), ("BACKUP_DIR", "{ws}"), ("SNAPSHOT_NAME_FILE", "/nonexistent/name")], "SNAPSHOT_NAME_FILE: cannot read /nonexistent/name")]
#[case::bad_dry_run(&[("SNAPSHOT_DIR", "{ws}"), ("BACKUP_DIR", "{ws}"), ("RETAIN_DRY_RUN", "perhaps")], "RETAIN_DRY_RUN: expected true or false")]
#[case::require_checksum_without_bucket(&[("SNAPSHOT_DIR", "{ws}"), ("BACKUP_DIR", "{ws}"), ("S3_REQUIRE_CHECKSUM", "true")], "S3_REQUIRE_CHECKSUM: is set but no bucket is")]
#[case::bad_require_checksum(
    &[("SNAPSHOT_DIR", "{ws}"), ("S3_BUCKET", "b1"), ("S3_ENDPOINT", "http://127.0.0.1:1"), ("S3_REQUIRE_CHECKSUM", "always"),
      ("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "topsecret-value")],
    "S3_REQUIRE_CHECKSUM: expected true or false")]
fn configuration_errors_exit_2_naming_the_variable(
    #[case] vars: &[(&str, &str)],
    #[case] want: &str,
) {
    let ws = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.replace("{ws}", &s(ws.path()))))
        .collect();
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(want), "want {want:?} in:\n{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "one line: {stderr}"
    );
    assert!(
        !stderr.contains("topsecret-value"),
        "secret leaked: {stderr}"
    );
}

#[test]
fn a_bad_s3_cacert_exits_2_before_the_snapshot_is_read() {
    let ws = tempfile::tempdir().unwrap();
    write_big_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 1 << 20);
    let not_pem = ws.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "just some text\n").unwrap();
    let broken = ws.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let env = |cacert: &str| -> BTreeMap<String, String> {
        [
            ("SNAPSHOT_DIR", s(ws.path())),
            ("S3_ENDPOINT", "https://127.0.0.1:1".to_owned()),
            ("S3_BUCKET", "backups".to_owned()),
            ("AWS_ACCESS_KEY_ID", "k".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "topsecret-value".to_owned()),
            ("S3_CACERT", cacert.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    for (cacert, want) in [
        (
            "/nonexistent/ca.pem".to_owned(),
            "S3_CACERT: cannot read /nonexistent/ca.pem",
        ),
        (s(&not_pem), "holds no PEM certificate"),
        (s(&broken), "S3_CACERT: "),
    ] {
        let (code, stderr) = run_binary(&env(&cacert));
        assert_eq!(code, Some(2), "{cacert}: {stderr}");
        assert!(stderr.contains(want), "want {want:?} in:\n{stderr}");
        assert!(stderr.contains("S3_CACERT"), "{stderr}");
        assert!(
            !stderr.contains("snapshot verified"),
            "the snapshot was read before the configuration was checked:\n{stderr}"
        );
    }
    // A real bundle passes the configuration: the step goes on to verify the snapshot and then
    // fails to reach the (closed) port, exit 1.
    let (code, stderr) = run_binary(&env("/etc/ssl/certs/ca-certificates.crt"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("snapshot verified"), "{stderr}");
}

#[test]
fn temp_files_left_by_a_killed_run_are_removed_once_old_and_fresh_ones_kept() {
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    let a = write_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 1 << 16);
    // A killed run's leftover, last written 7 hours ago, and another run's copy in flight.
    let old = bk.path().join(".vault-backup-k1ll3d.tmp");
    let fresh = bk.path().join(".vault-backup-fl1ght.tmp");
    for p in [&old, &fresh] {
        std::fs::write(p, vec![0u8; 4096]).unwrap();
    }
    let seven_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(seven_hours_ago)
        .unwrap();
    let mut env: BTreeMap<String, String> =
        [("SNAPSHOT_DIR", s(ws.path())), ("BACKUP_DIR", s(bk.path()))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();

    // A dry run only says what it would remove.
    env.insert("RETAIN_DRY_RUN".into(), "true".into());
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("would remove a temp file older than 6h"),
        "{stderr}"
    );
    assert!(old.exists() && fresh.exists());

    // No retention setting at all: stale temp files still go, before the copy is made.
    env.remove("RETAIN_DRY_RUN");
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("removed a temp file older than 6h")
            && stderr.contains(".vault-backup-k1ll3d.tmp"),
        "{stderr}"
    );
    assert!(!old.exists(), "the 7-hour-old temp file is still there");
    assert!(
        fresh.exists(),
        "a fresh temp file (maybe a copy in flight) was removed"
    );
    sha256sum_check(bk.path(), &a.sha256_file());
}

/// The composite checksum S3 states for a multipart object, computed here from the file with
/// the upload's part size (independently of the step's own streaming code).
fn composite_of(path: &std::path::Path, part: usize) -> String {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap();
    let mut outer = Sha256::new();
    let mut n = 0;
    for chunk in bytes.chunks(part) {
        outer.update(Sha256::digest(chunk));
        n += 1;
    }
    format!(
        "{}-{n}",
        base64::engine::general_purpose::STANDARD.encode(outer.finalize())
    )
}

#[test]
fn seaweedfs_states_a_composite_checksum_and_it_is_compared() {
    let s3 = SeaweedFs::start("backups");
    let ws = tempfile::tempdir().unwrap();
    // 20 MB: three parts of 8 MiB, the last one shorter.
    let a = write_big_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 20_000_000);
    let want = composite_of(
        &ws.path().join(a.snap_file()),
        snapshot_sync::store::OBJECT_PART_SIZE,
    );
    assert!(want.ends_with("-3"), "{want}");

    let mut env = s3_env(&s3);
    env.insert("SNAPSHOT_DIR".into(), s(ws.path()));
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("the server's SHA-256 checksum matches"))
        .unwrap_or_else(|| panic!("no checksum comparison logged:\n{stderr}"));
    assert!(line.contains(&format!("checksum={want}")), "{line}");
    assert!(line.contains("kind=\"composite\""), "{line}");
    assert!(!stderr.contains("checked by its size only"), "{stderr}");

    // The server says the same to anyone who asks (the aws CLI, checksum mode enabled).
    let out = s3.aws(&[
        "s3api",
        "head-object",
        "--bucket",
        s3.bucket(),
        "--key",
        &format!("{PREFIX_IN_BUCKET}/{}", a.snap_file()),
        "--checksum-mode",
        "ENABLED",
    ]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&want),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_bucket_claim_with_bucket_ssl_false_uploads_over_plain_http() {
    let s3 = SeaweedFs::start("backups");
    let ws = tempfile::tempdir().unwrap();
    let a = write_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 1 << 20);
    // The claim's ConfigMap and Secret as lib-bucket-provisioner writes them (BUCKET_SUBREGION
    // is written even when empty), mounted with envFrom; no S3_TLS.
    let env: BTreeMap<String, String> = [
        ("SNAPSHOT_DIR", s(ws.path())),
        ("BUCKET_HOST", "127.0.0.1".to_owned()),
        ("BUCKET_PORT", s3.port().to_string()),
        ("BUCKET_NAME", s3.bucket().to_owned()),
        ("BUCKET_REGION", s3.region().to_owned()),
        ("BUCKET_SUBREGION", String::new()),
        ("BUCKET_SSL", "false".to_owned()),
        ("AWS_ACCESS_KEY_ID", s3.access_key().to_owned()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("location=s3://backups/{}", a.snap_file())),
        "{stderr}"
    );
    let mut want = a.files_in_write_order().to_vec();
    want.sort();
    assert_eq!(s3.keys(""), want);
    let dl = tempfile::tempdir().unwrap();
    for f in [a.snap_file(), a.sha256_file()] {
        s3.download(&f, &dl.path().join(&f));
    }
    sha256sum_check(dl.path(), &a.sha256_file());

    // Without BUCKET_SSL the claim defaults to TLS, which the plain-HTTP server cannot speak.
    let mut tls_env = env.clone();
    tls_env.remove("BUCKET_SSL");
    let (code, stderr) = run_binary(&tls_env);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("https://127.0.0.1:{}", s3.port()))
            || stderr.contains("1 of 1 stores failed: s3"),
        "{stderr}"
    );
}
