//! S3 Object Lock against a real SeaweedFS: every object the step writes carries the lock asked
//! for (`S3_OBJECT_LOCK_MODE`/`S3_OBJECT_LOCK_DAYS`) with a retain-until one day after its
//! upload; retention keeps what is locked; a lock asked of a bucket without Object Lock stops
//! the step before anything is uploaded; a bucket's default retention is reported and honoured.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use vault_backup_common::metrics::{STORE_LOCKED_UNTIL, STORE_OBJECT_LOCK};
use vault_backup_testbed::pushgateway::Pushgateway;
use vault_backup_testbed::seaweed::SeaweedFs;

const LOCKED: &str = "locked-backups";

fn env(s3: &SeaweedFs, bucket: &str, ws: &std::path::Path) -> BTreeMap<String, String> {
    let mut env = s3_env(s3);
    env.insert("S3_BUCKET".into(), bucket.into());
    env.insert("SNAPSHOT_DIR".into(), s(ws));
    env
}

fn date(v: &serde_json::Value, field: &str) -> DateTime<Utc> {
    let text = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {v}"));
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_rfc2822(text))
        .unwrap_or_else(|e| panic!("{field} {text}: {e}"))
        .with_timezone(&Utc)
}

fn keys(s3: &SeaweedFs, bucket: &str) -> Vec<String> {
    s3.keys_in(bucket, &format!("{PREFIX_IN_BUCKET}/"))
}

/// Every object of snapshot `name` is locked in `mode` until one day after its upload, and
/// the server states a SHA-256 checksum for it: the request carried one (the multipart
/// `.snap` a composite over its `parts` parts, each part sent with its checksum).
fn assert_locked_for_a_day(s3: &SeaweedFs, bucket: &str, name: &str, mode: &str, parts: usize) {
    for suffix in [".snap", ".snap.json", ".snap.sha256"] {
        let key = format!("{PREFIX_IN_BUCKET}/{name}{suffix}");
        let head = s3.head_object(bucket, &key);
        assert_eq!(head["ObjectLockMode"], mode, "{key}: {head}");
        let uploaded = date(&head, "LastModified");
        let until = date(&head, "ObjectLockRetainUntilDate");
        let off = until - (uploaded + TimeDelta::days(1));
        assert!(
            off.num_seconds().abs() <= 5,
            "{key}: retain-until {until} is not one day after its upload at {uploaded}: {head}"
        );
        let checksum = head["ChecksumSHA256"].as_str().unwrap_or_default();
        assert!(!checksum.is_empty(), "{key}: no SHA-256 stated: {head}");
        if suffix == ".snap" {
            assert!(
                checksum.ends_with(&format!("-{parts}")),
                "{key}: a composite of {parts} parts expected: {head}"
            );
        }
    }
}

#[test]
fn every_object_is_locked_for_a_day_and_retention_keeps_the_locked_snapshot() {
    let s3 = SeaweedFs::start("backups");
    s3.create_bucket(LOCKED, true);
    let ws = tempfile::tempdir().unwrap();
    // Over one 8 MiB part, so the .snap goes up as a locked multipart upload of two parts.
    let first = write_big_snapshot(ws.path(), "vault", at(2026, 11, 26, 6), 9 << 20);
    let mut env = env(&s3, LOCKED, ws.path());
    env.insert("S3_OBJECT_LOCK_MODE".into(), "GOVERNANCE".into());
    env.insert("S3_OBJECT_LOCK_DAYS".into(), "1".into());

    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("bucket protection: versioning enabled, Object Lock enabled"),
        "{stderr}"
    );
    assert!(
        stderr.contains("every object written carries an Object Lock"),
        "{stderr}"
    );
    assert!(stderr.contains("the copy is locked"), "{stderr}");
    assert_locked_for_a_day(&s3, LOCKED, first.name(), "GOVERNANCE", 2);

    // A second snapshot, and retention that would keep only it.
    let second = write_snapshot(ws.path(), "vault", at(2026, 11, 27, 6), 4096);
    env.insert("RETAIN_LAST".into(), "1".into());
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("retention plan") && l.contains(first.name()))
        .unwrap_or_else(|| panic!("no plan line for {}: {stderr}", first.name()));
    assert!(
        line.contains("action=\"keep\"") && line.contains("locked until 2026-"),
        "{line}"
    );
    assert!(stderr.contains("deleted 0 snapshots"), "{stderr}");
    let held = keys(&s3, LOCKED);
    for a in [&first, &second] {
        for file in [a.snap_file(), a.manifest_file(), a.sha256_file()] {
            assert!(
                held.contains(&format!("{PREFIX_IN_BUCKET}/{file}")),
                "{file} missing: {held:?}"
            );
        }
    }
    assert_locked_for_a_day(&s3, LOCKED, second.name(), "GOVERNANCE", 1);
}

#[test]
fn a_lock_asked_of_a_bucket_without_object_lock_exits_1_and_uploads_nothing() {
    let s3 = SeaweedFs::start("backups");
    let ws = tempfile::tempdir().unwrap();
    write_snapshot(ws.path(), "vault", at(2026, 11, 27, 6), 4096);
    let mut env = env(&s3, "backups", ws.path());
    env.insert("S3_OBJECT_LOCK_MODE".into(), "COMPLIANCE".into());
    env.insert("S3_OBJECT_LOCK_DAYS".into(), "7".into());

    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("bucket s3://backups/backups/vault has none enabled")
            && stderr.contains("nothing was uploaded"),
        "{stderr}"
    );
    assert!(!stderr.contains("upload started"), "{stderr}");
    assert_eq!(keys(&s3, "backups"), Vec::<String>::new());
    assert_eq!(s3.pending_multipart_uploads(), Vec::<String>::new());
}

/// The value the Pushgateway holds for a store's series of the sync step.
fn pushed(pg: &Pushgateway, name: &str) -> Option<f64> {
    pg.metrics(name)
        .into_iter()
        .find(|s| s.name == name && s.label("step") == "snapshot-sync" && s.label("store") == "s3")
        .map(|s| s.value)
}

#[test]
fn a_bucket_default_retention_is_reported_and_retention_keeps_what_it_locks() {
    let s3 = SeaweedFs::start("backups");
    let pg = Pushgateway::start();
    s3.create_bucket(LOCKED, true);
    s3.set_default_retention(LOCKED, "GOVERNANCE", 1);
    let ws = tempfile::tempdir().unwrap();
    let first = write_snapshot(ws.path(), "vault", at(2026, 11, 26, 6), 4096);
    let mut env = env(&s3, LOCKED, ws.path());
    env.insert("METRICS_PUSHGATEWAY_URL".into(), pg.url());

    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(0), "{stderr}");
    // The metrics: a lock, and the copy's retain-until (a day from now, give or take).
    assert_eq!(pushed(&pg, STORE_OBJECT_LOCK.name), Some(1.0));
    let until = pushed(&pg, STORE_LOCKED_UNTIL.name).expect("retain-until pushed");
    // Unix seconds of this century fit an f64 exactly.
    #[allow(clippy::cast_precision_loss)]
    let day_from_now = (Utc::now() + TimeDelta::days(1)).timestamp() as f64;
    assert!(
        (until - day_from_now).abs() < 60.0,
        "{until} vs {day_from_now}"
    );
    assert!(
        stderr.contains("default retention GOVERNANCE 1 days")
            && stderr.contains("the bucket's default retention locks every object written"),
        "{stderr}"
    );
    assert!(stderr.contains("the copy is locked"), "{stderr}");
    let snap_head = s3.head_object(LOCKED, &format!("{PREFIX_IN_BUCKET}/{}", first.snap_file()));
    assert_eq!(snap_head["ObjectLockMode"], "GOVERNANCE", "{snap_head}");

    let second = write_snapshot(ws.path(), "vault", at(2026, 11, 27, 6), 4096);
    env.insert("RETAIN_LAST".into(), "1".into());
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(first.name()) && l.contains("locked until")),
        "{stderr}"
    );
    let held = keys(&s3, LOCKED);
    for a in [&first, &second] {
        assert!(
            held.contains(&format!("{PREFIX_IN_BUCKET}/{}", a.sha256_file())),
            "{held:?}"
        );
    }

    // The job pointed at a bucket without a lock: the gauge the alert watches goes to 0.
    env.insert("S3_BUCKET".into(), "backups".into());
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("bucket protection: versioning off, Object Lock not enabled"),
        "{stderr}"
    );
    assert_eq!(pushed(&pg, STORE_OBJECT_LOCK.name), Some(0.0));
}

/// A loopback proxy in front of SeaweedFS that answers every DELETE itself with 403
/// AccessDenied, as S3 does for a locked version deleted by id or under a bucket policy that
/// denies deletes; everything else goes to the real server unchanged (Host included, so the
/// signatures verify). SeaweedFS answers a plain DELETE in a versioned bucket with a delete
/// marker, never 403, so the refusal cannot be had from it directly.
fn deny_deletes_proxy(upstream: u16) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let denied = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&denied);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let count = std::sync::Arc::clone(&count);
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut from_client = BufReader::new(client.try_clone()?);
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if from_client.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    let line = line.trim_end_matches(['\r', '\n']).to_owned();
                    if line.is_empty() {
                        break;
                    }
                    head.push(line);
                }
                let mut to_client = client;
                if head.first().is_some_and(|l| l.starts_with("DELETE ")) {
                    count.fetch_add(1, Ordering::SeqCst);
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
                    write!(
                        to_client,
                        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )?;
                    return to_client.shutdown(Shutdown::Both);
                }
                let server = TcpStream::connect(("127.0.0.1", upstream))?;
                let mut to_server = server.try_clone()?;
                let mut text = String::new();
                for l in head.iter().filter(|l| {
                    !l.split_once(':')
                        .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("connection"))
                }) {
                    text.push_str(l);
                    text.push_str("\r\n");
                }
                text.push_str("Connection: close\r\n\r\n");
                to_server.write_all(text.as_bytes())?;
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                    let _ = to_server.shutdown(Shutdown::Write);
                });
                let mut from_server = server;
                std::io::copy(&mut from_server, &mut to_client)?;
                to_client.shutdown(Shutdown::Both)
            });
        }
    });
    (format!("http://127.0.0.1:{port}"), denied)
}

#[test]
fn a_delete_refused_with_403_in_a_locked_bucket_is_retained_not_a_failure() {
    let s3 = SeaweedFs::start("backups");
    s3.create_bucket(LOCKED, true);
    // Older snapshots put there without a lock of their own (another writer, before the lock
    // was asked for): the plan sees no lock and would delete them.
    let seed = tempfile::tempdir().unwrap();
    let old = stage_dated(
        seed.path(),
        "vault",
        &[at(2026, 11, 20, 6), at(2026, 11, 21, 6)],
    );
    seed_bucket_in(&s3, LOCKED, seed.path());
    let ws = tempfile::tempdir().unwrap();
    write_snapshot(ws.path(), "vault", at(2026, 11, 27, 6), 4096);
    let (proxy, denied) = deny_deletes_proxy(s3.port());
    let mut env = env(&s3, LOCKED, ws.path());
    env.insert("S3_ENDPOINT".into(), proxy);
    env.insert("RETAIN_LAST".into(), "1".into());

    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        denied.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "{stderr}"
    );
    for a in &old {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("retained (locked)") && l.contains(a.name())),
            "{}: {stderr}",
            a.name()
        );
    }
    assert!(stderr.contains("deleted 0 snapshots"), "{stderr}");
    assert_eq!(keys(&s3, LOCKED).len(), 9, "{:?}", keys(&s3, LOCKED));

    // The same refusal from a bucket without Object Lock is what it always was: retention
    // failed, exit 1.
    let ws = tempfile::tempdir().unwrap();
    write_snapshot(ws.path(), "vault", at(2026, 11, 27, 7), 4096);
    seed_bucket_in(&s3, "backups", seed.path());
    env.insert("S3_BUCKET".into(), "backups".into());
    env.insert("SNAPSHOT_DIR".into(), s(ws.path()));
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("retention failed"), "{stderr}");
    assert!(!stderr.contains("retained (locked)"), "{stderr}");
}
