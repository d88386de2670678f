//! The two steps together, as the Task runs them: the snapshot step takes a snapshot of a real
//! OpenBao into the workspace and hands its name over as a result file; the sync step copies it
//! to SeaweedFS and a directory. The copy fetched back with `aws s3 cp` passes `sha256sum -c`
//! and restores into a fresh OpenBao with the secret written before.

mod common;

use std::collections::BTreeMap;

use common::*;
use vault_backup_testbed::openbao::{Cluster, Options};
use vault_backup_testbed::seaweed::SeaweedFs;
use vault_snapshot::config::RawConfig as SnapshotRaw;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_made_by_the_snapshot_step_lands_in_both_stores_and_restores() {
    let cluster = Cluster::start(1, Options::default());
    cluster.write_secret("secret/app", &[("password", "before-the-backup")]);
    let s3 = SeaweedFs::start("backups");
    let ws = tempfile::tempdir().unwrap();
    let bk = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();

    // The snapshot step, writing its Tekton results where the Task would.
    let mut snap_config = vault_snapshot::Config::try_from(SnapshotRaw {
        vault_addr: cluster.addr(0).to_owned(),
        vault_token: Some(cluster.root_token().to_owned()),
        snapshot_dir: s(ws.path()),
        ..SnapshotRaw::default()
    })
    .unwrap();
    snap_config.results = vault_backup_common::tekton::Results::in_dir(results.path());
    let taken = vault_snapshot::run(snap_config).await.unwrap();
    let name_file = results.path().join("snapshot-name");
    assert_eq!(std::fs::read_to_string(&name_file).unwrap(), taken.name);

    // The sync step's binary, given the result file as the Task does.
    let mut env: BTreeMap<String, String> = s3_env(&s3);
    env.insert("SNAPSHOT_DIR".into(), s(ws.path()));
    env.insert("SNAPSHOT_NAME_FILE".into(), s(&name_file));
    env.insert("BACKUP_DIR".into(), s(bk.path()));
    env.insert("RESULTS_DIR".into(), s(results.path()));
    let (code, stderr) = run_binary(&env);
    assert_eq!(code, Some(0), "{stderr}");
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
    assert_eq!(sha256sum(&dl.path().join(&snap)).0, taken.sha256);

    // The downloaded copy is a backup: it restores, and the secret is there.
    let restored =
        cluster.restore_into_fresh_node_and_read(&dl.path().join(&snap), "secret/app", "password");
    assert_eq!(restored, "before-the-backup");
}
