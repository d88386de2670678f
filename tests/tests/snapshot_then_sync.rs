//! The two steps together, as the Task runs them: the snapshot step takes a snapshot of a real
//! OpenBao into the workspace and hands its name over as a result file; the sync step's binary
//! copies it to SeaweedFS and a directory. The copy fetched back with `aws s3 cp` passes
//! `sha256sum -c` and restores into a fresh OpenBao with the secret written before.
//!
//! It lives in the test bed, which depends on every step, so that no step crate depends on
//! another, not even for a test.

use std::path::Path;
use std::process::{Command, Stdio};

use vault_backup_common::artifact::hash_file;
use vault_backup_common::tekton::Results;
use vault_backup_testbed::check::sha256sum_check;
use vault_backup_testbed::openbao::{Cluster, Options};
use vault_backup_testbed::seaweed::SeaweedFs;
use vault_backup_testbed::venv;
use vault_snapshot::config::{RawConfig, SnapshotEnv, VaultEnv};

const PREFIX_IN_BUCKET: &str = "backups/vault";

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_made_by_the_snapshot_step_lands_in_both_stores_and_restores() {
    let cluster = Cluster::start(1, Options::default());
    cluster.write_secret("secret/app", &[("password", "before-the-backup")]);
    let s3 = SeaweedFs::start("backups");
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();

    // The snapshot step, writing its Tekton results where the Task would.
    let mut snap_config = vault_snapshot::Config::try_from(RawConfig {
        snapshot: SnapshotEnv {
            snapshot_dir: s(ws.path()),
            ..SnapshotEnv::default()
        },
        vault: VaultEnv {
            vault_addr: cluster.addr(0).to_owned(),
            vault_token: Some(cluster.root_token().to_owned()),
            ..VaultEnv::default()
        },
    })
    .unwrap();
    snap_config.results = Results::in_dir(results.path());
    let taken = vault_snapshot::run(snap_config).await.unwrap();
    let name_file = results.path().join("snapshot-name");
    assert_eq!(std::fs::read_to_string(&name_file).unwrap(), taken.name);

    // The sync step's binary, given the result file as the Task does, and nothing else.
    let out = Command::new(venv::workspace_bin("snapshot-sync"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs([
            ("S3_ENDPOINT", s3.endpoint()),
            ("S3_BUCKET", s3.bucket().to_owned()),
            ("S3_PREFIX", PREFIX_IN_BUCKET.to_owned()),
            ("AWS_ACCESS_KEY_ID", s3.access_key().to_owned()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_owned()),
            ("SNAPSHOT_DIR", s(ws.path())),
            ("SNAPSHOT_NAME_FILE", s(&name_file)),
            ("BACKUP_DIR", s(bk.path())),
            ("RESULTS_DIR", s(results.path())),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(results.path().join("synced-stores")).unwrap(),
        "s3,dir"
    );

    let snap = format!("{}.snap", taken.name);
    let sha = format!("{snap}.sha256");
    let dl = tempfile::tempdir().unwrap();
    for f in [&snap, &sha] {
        s3.download(&format!("{PREFIX_IN_BUCKET}/{f}"), &dl.path().join(f));
    }
    sha256sum_check(dl.path(), &sha);
    sha256sum_check(bk.path(), &sha);
    assert_eq!(hash_file(&dl.path().join(&snap)).unwrap().0, taken.sha256);

    // The downloaded copy is a backup: it restores, and the secret is there.
    let restored =
        cluster.restore_into_fresh_node_and_read(&dl.path().join(&snap), "secret/app", "password");
    assert_eq!(restored, "before-the-backup");
}
