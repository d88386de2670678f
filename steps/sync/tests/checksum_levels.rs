//! How each store's copy was checked (`sha256` or `size-only`), in the log, the results and the
//! summary, and `S3_REQUIRE_CHECKSUM=true` failing a store that can be checked by size only.
//!
//! SeaweedFS states the SHA-256 checksum of every object, and cannot be told not to; an
//! S3-compatible server that states none is made here by a loopback proxy in front of it
//! (`vault_backup_testbed::strip_proxy`) that drops every `x-amz-checksum-*` response header.
//! Everything else (signatures, the per-part checks, the multipart upload) is the real server's.

mod common;

use std::collections::BTreeMap;

use common::*;
use vault_backup_testbed::seaweed::SeaweedFs;
use vault_backup_testbed::strip_proxy::StripProxy;

fn env(
    s3: &SeaweedFs,
    endpoint: &str,
    ws: &std::path::Path,
    bk: &std::path::Path,
    results: &std::path::Path,
) -> BTreeMap<String, String> {
    let mut env = s3_env(s3);
    env.insert("S3_ENDPOINT".into(), endpoint.to_owned());
    env.insert("SNAPSHOT_DIR".into(), s(ws));
    env.insert("BACKUP_DIR".into(), s(bk));
    env.insert("RESULTS_DIR".into(), s(results));
    env
}

fn result(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn a_server_that_states_no_checksum_is_size_only_and_fails_when_a_checksum_is_required() {
    let s3 = SeaweedFs::start("backups");
    let proxy = StripProxy::start(&format!("127.0.0.1:{}", s3.port()));
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    // Three parts of 8 MiB, the last one shorter.
    let a = write_big_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 20_000_000);

    let (code, stderr) = run_binary(&env(
        &s3,
        &proxy.endpoint(),
        ws.path(),
        bk.path(),
        results.path(),
    ));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        proxy.stripped() > 0,
        "the proxy stripped nothing:\n{stderr}"
    );
    let warning = stderr
        .lines()
        .find(|l| l.contains("WARN") && l.contains("states no SHA-256 checksum"))
        .unwrap_or_else(|| panic!("no warning:\n{stderr}"));
    assert!(warning.contains("store=\"s3\""), "{warning}");
    assert!(
        stderr.lines().any(|l| l.contains("WARN")
            && l.contains("checked by its size only")
            && l.contains("store=\"s3\"")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("stored and verified store=\"s3\""),
        "a size check called verified:\n{stderr}"
    );
    let summary = stderr
        .lines()
        .find(|l| l.contains("snapshot synced to every store"))
        .unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    assert!(
        summary.contains("verification=s3=size-only,dir=sha256"),
        "{summary}"
    );
    assert_eq!(
        result(results.path(), "store-verification"),
        "s3=size-only,dir=sha256"
    );
    assert_eq!(result(results.path(), "synced-stores"), "s3,dir");
    let dl = tempfile::tempdir().unwrap();
    for f in [a.snap_file(), a.sha256_file()] {
        s3.download(&format!("{PREFIX_IN_BUCKET}/{f}"), &dl.path().join(&f));
    }
    sha256sum_check(dl.path(), &a.sha256_file());

    // The next snapshot with S3_REQUIRE_CHECKSUM=true: the S3 store fails and keeps nothing of
    // it; the directory still gets its copy.
    let next = write_big_snapshot(ws.path(), "vault", at(2026, 11, 25, 6), 20_000_000);
    let mut strict = env(&s3, &proxy.endpoint(), ws.path(), bk.path(), results.path());
    strict.insert("S3_REQUIRE_CHECKSUM".into(), "true".into());
    let (code, stderr) = run_binary(&strict);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("1 of 2 stores failed: s3"), "{stderr}");
    assert!(
        stderr.contains("S3_REQUIRE_CHECKSUM=true asks for a checksum; the copy was removed again"),
        "{stderr}"
    );
    assert!(
        !bucket_files(&s3).iter().any(|f| f.starts_with(next.name())),
        "{:?}",
        bucket_files(&s3)
    );
    assert!(s3.pending_multipart_uploads().is_empty());
    sha256sum_check(bk.path(), &next.sha256_file());
    assert_eq!(result(results.path(), "store-verification"), "dir=sha256");
    assert_eq!(result(results.path(), "synced-stores"), "dir");

    // The same, straight to SeaweedFS (which states its checksum): sha256 everywhere, exit 0.
    let (code, stderr) = run_binary(&{
        let mut e = env(&s3, &s3.endpoint(), ws.path(), bk.path(), results.path());
        e.insert("S3_REQUIRE_CHECKSUM".into(), "true".into());
        e
    });
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("stored and verified store=\"s3\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("already in the store"),
        "the directory already has it: {stderr}"
    );
    assert_eq!(
        result(results.path(), "store-verification"),
        "s3=sha256,dir=sha256"
    );
}
