//! The last line of defence, against real OpenBao and SeaweedFS: backups synced into a bucket
//! with Object Lock, then every one of them deleted with the job's own keys (`aws s3 rm
//! --recursive`, which in a versioned bucket only adds delete markers). `vault-restore` finds
//! the newest complete snapshot among the object versions, says so, fetches exactly the `.snap`
//! version its manifest records, verifies it as usual, and restores it: as a drill (canary ok)
//! and into the cluster.

use std::collections::BTreeMap;
use std::path::Path;

mod common;

use common::{drill_env, env, restore_bin, run, s};
use vault_backup_testbed::openbao::{Cluster, Options, ScratchNode};
use vault_backup_testbed::seaweed::SeaweedFs;

const LOCKED: &str = "locked-backups";
const PREFIX_IN_BUCKET: &str = "backups/vault";

fn s3_env(s3: &SeaweedFs) -> BTreeMap<String, String> {
    env(&[
        ("S3_ENDPOINT", &s3.endpoint()),
        ("S3_BUCKET", LOCKED),
        ("S3_PREFIX", PREFIX_IN_BUCKET),
        ("AWS_ACCESS_KEY_ID", s3.access_key()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key()),
    ])
}

/// The backup Task's two steps (with the canary) into the locked bucket, each object locked
/// for a day. Returns the snapshot's name.
fn back_up(source: &Cluster, s3: &SeaweedFs) -> String {
    let mut stores = s3_env(s3);
    stores.insert("S3_OBJECT_LOCK_MODE".into(), "GOVERNANCE".into());
    stores.insert("S3_OBJECT_LOCK_DAYS".into(), "1".into());
    common::back_up(source.addr(0), source.root_token(), true, stores).name
}

/// A source cluster with a KV v2 `secret/` mount (the canary's) and `secret/app`.
fn source_cluster() -> Cluster {
    let source = Cluster::start(1, Options::default());
    source.enable_kv2("secret");
    // A fresh KV v2 mount answers 400 "Upgrading from non-versioned to versioned data" for a
    // moment after it is enabled.
    for _ in 0..20 {
        match source.try_bao(0, &["kv", "put", "secret/app", "password=first"]) {
            Ok(_) => return source,
            Err(e) if e.contains("Upgrading from non-versioned") => {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the KV v2 mount did not finish its upgrade");
}

fn result(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("result {name}: {e}"))
}

// One story in the order it happens: back up twice, lose every object, restore twice.
#[allow(clippy::too_many_lines)]
#[test]
fn after_every_snapshot_is_deleted_the_drill_and_a_cluster_restore_use_the_object_versions() {
    let source = source_cluster();
    let s3 = SeaweedFs::start("backups");
    s3.create_bucket(LOCKED, true);
    let older = back_up(&source, &s3);
    // Names are per second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    source.write_secret("secret/app", &[("password", "second")]);
    let newest = back_up(&source, &s3);
    assert_ne!(older, newest);
    source.write_secret("secret/app", &[("password", "after-the-backups")]);

    // The manifest in the bucket records the version of the .snap beside it.
    let snap_key = format!("{PREFIX_IN_BUCKET}/{newest}.snap");
    let snap_version = s3.head_object(LOCKED, &snap_key)["VersionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let dl = tempfile::tempdir().unwrap();
    let json = dl.path().join("m.json");
    s3.aws_ok(&[
        "s3api",
        "get-object",
        "--bucket",
        LOCKED,
        "--key",
        &format!("{snap_key}.json"),
        &s(&json),
    ]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(manifest["snap_version_id"], snap_version.as_str());

    // Someone with the job's own keys deletes every backup.
    s3.aws_ok(&[
        "s3",
        "rm",
        "--recursive",
        &format!("s3://{LOCKED}/{PREFIX_IN_BUCKET}/"),
    ]);
    assert_eq!(
        s3.keys_in(LOCKED, &format!("{PREFIX_IN_BUCKET}/")),
        Vec::<String>::new()
    );
    let markers = s3.versions(LOCKED, &format!("{PREFIX_IN_BUCKET}/"))["DeleteMarkers"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(markers, 6, "one delete marker per object");

    // The drill: newest snapshot from its versions, canary read back.
    let node = ScratchNode::start_uninitialized();
    let scratch = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let keys_file = keys_dir.path().join("unseal-keys");
    std::fs::write(&keys_file, format!("{}\n", source.unseal_key())).unwrap();
    let mut vars = s3_env(&s3);
    vars.extend(drill_env(
        node.addr(),
        source.root_token(),
        scratch.path(),
        results.path(),
        &keys_file,
    ));
    let (code, stderr) = run(&restore_bin(), &vars);
    assert_eq!(code, 0, "{stderr}\n{}", node.log());
    assert_eq!(result(results.path(), "restored-snapshot"), newest);
    assert_eq!(result(results.path(), "canary"), "ok");
    let warning = stderr
        .lines()
        .find(|l| l.contains("hidden behind delete markers"))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(
        warning.contains("WARN")
            && warning.contains(&newest)
            && warning.contains(&snap_version)
            && warning.contains("its manifest"),
        "{warning}"
    );
    assert!(
        stderr.contains("it matches its .sha256 and its archive's SHA256SUMS"),
        "{stderr}"
    );
    drop(node);

    // A cluster restore (no SNAPSHOT_NAME: resolved among the versions, then confirmed) rolls
    // the source back to the newest backup.
    let scratch = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let mut vars = s3_env(&s3);
    vars.extend(env(&[
        ("VAULT_ADDR", source.addr(0)),
        ("VAULT_TOKEN", source.root_token()),
        ("SNAPSHOT_DIR", &s(scratch.path())),
        ("RESULTS_DIR", &s(results.path())),
        ("RESTORE_CONFIRM", &newest),
    ]));
    let (code, stderr) = run(&restore_bin(), &vars);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(result(results.path(), "restored-snapshot"), newest);
    assert!(stderr.contains("hidden behind delete markers"), "{stderr}");
    assert_eq!(
        source
            .read_secret_as(0, source.root_token(), "secret/app", "password")
            .unwrap()
            .trim(),
        "second"
    );

    // A snapshot named by SNAPSHOT_NAME is found among the versions too: a drill of the older.
    let node = ScratchNode::start_uninitialized();
    let scratch = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let mut vars = s3_env(&s3);
    vars.extend(drill_env(
        node.addr(),
        source.root_token(),
        scratch.path(),
        results.path(),
        &keys_file,
    ));
    vars.insert("SNAPSHOT_NAME".into(), older.clone());
    let (code, stderr) = run(&restore_bin(), &vars);
    assert_eq!(code, 0, "{stderr}\n{}", node.log());
    assert_eq!(result(results.path(), "restored-snapshot"), older);
    assert_eq!(result(results.path(), "canary"), "ok");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("hidden behind delete markers") && l.contains(&older)),
        "{stderr}"
    );
}
