//! The `vault-snapshot` binary against real OpenBao, pushing to a real Pushgateway: what it
//! pushes is what it saved (the `.snap` size, the raft index of its manifest), and a failed run
//! pushes its failure and leaves the last success and the last snapshot's values in place.

// Sizes, indexes and exit codes are integers, exact in an f64 and in the text format.
#![allow(
    clippy::float_cmp,
    clippy::cast_precision_loss,
    clippy::case_sensitive_file_extension_comparisons
)]

mod common;

use std::time::SystemTime;

use common::{files, run_bin, sha256sum_check};
use vault_backup_common::artifact::Manifest;
use vault_backup_common::metrics::{
    LAST_FAILURE, LAST_RUN_EXIT_CODE, LAST_SUCCESS, SNAPSHOT_BYTES, SNAPSHOT_RAFT_INDEX,
    unix_seconds,
};
use vault_backup_testbed::openbao::{Cluster, Options};
use vault_backup_testbed::pushgateway::Pushgateway;

const STEP: &str = "vault-snapshot";

#[test]
fn pushes_the_size_and_raft_index_it_saved_and_a_failure_keeps_them() {
    let cluster = Cluster::start(1, Options::default());
    cluster.write_secret("secret/app", &[("k", "v")]);
    let pg = Pushgateway::start();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();

    let before = unix_seconds(SystemTime::now());
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", cluster.addr(0)),
        ("VAULT_TOKEN", cluster.root_token()),
        ("SNAPSHOT_DIR", &d),
        ("METRICS_PUSHGATEWAY_URL", &url),
    ]);
    let after = unix_seconds(SystemTime::now());
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("metrics pushed"), "{stderr}");
    let snap = files(dir.path())
        .into_iter()
        .find(|f| f.ends_with(".snap"))
        .expect("a snapshot");
    sha256sum_check(dir.path(), &format!("{snap}.sha256"));
    let size = std::fs::metadata(dir.path().join(&snap)).unwrap().len();
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("{snap}.json"))).unwrap())
            .unwrap();
    assert!(manifest.raft_index > 0);
    let v = |name: &str| {
        pg.value(name, STEP)
            .unwrap_or_else(|| panic!("{name} not pushed: {:?}", pg.metrics("vault_backup_")))
    };
    assert_eq!(v(SNAPSHOT_BYTES.name), size as f64);
    assert_eq!(v(SNAPSHOT_RAFT_INDEX.name), manifest.raft_index as f64);
    assert_eq!(v(LAST_RUN_EXIT_CODE.name), 0.0);
    let success = v(LAST_SUCCESS.name);
    assert!(
        before <= success && success <= after,
        "{before} {success} {after}"
    );

    // A token without the snapshot policy: exit 1, its failure pushed, the rest kept.
    let token = cluster.token_with_policy(
        "unrelated",
        r#"path "secret/*" { capabilities = ["read"] }"#,
    );
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", cluster.addr(0)),
        ("VAULT_TOKEN", &token),
        ("SNAPSHOT_DIR", &d),
        ("METRICS_PUSHGATEWAY_URL", &url),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains(&token), "the token must never be logged");
    assert_eq!(v(LAST_RUN_EXIT_CODE.name), 1.0);
    assert!(v(LAST_FAILURE.name) > success);
    assert_eq!(v(LAST_SUCCESS.name), success);
    assert_eq!(v(SNAPSHOT_BYTES.name), size as f64);
    assert_eq!(v(SNAPSHOT_RAFT_INDEX.name), manifest.raft_index as f64);
}
