//! `vault-restore` as a process, against real OpenBao and SeaweedFS: the source snapshots come
//! from the real `vault-snapshot` (with a canary) and the real `snapshot-sync`, the target is a
//! fresh OpenBao cluster, the drill's scratch node a fresh uninitialized OpenBao. Each run's
//! whole stderr and results are checked for every token, unseal key and secret key of the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use vault_backup_common::artifact::{Artifact, Manifest};
use vault_backup_testbed::check::{files, sha256sum_check};
use vault_backup_testbed::openbao::{Cluster, Options, ScratchNode};
use vault_backup_testbed::seaweed::SeaweedFs;
use vault_backup_testbed::venv;

const PREFIX_IN_BUCKET: &str = "backups/vault";
const CANARY: &str = "vault-backup/canary";

/// Builds the other steps' binaries once per process, so the test never runs a stale one.
fn step_bin(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "vault-snapshot", "-p", "snapshot-sync"])
            .current_dir(venv::workspace_root())
            .status()
            .expect("cargo build");
        assert!(
            status.success(),
            "building vault-snapshot and snapshot-sync"
        );
    });
    venv::workspace_bin(name)
}

/// Runs `bin` with exactly `env` (plus PATH): exit code, stderr.
fn run(bin: &Path, env: &BTreeMap<String, String>) -> (i32, String) {
    let out = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .expect("run the step");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn restore_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vault-restore"))
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn s3_env(s3: &SeaweedFs) -> BTreeMap<String, String> {
    env(&[
        ("S3_ENDPOINT", &s3.endpoint()),
        ("S3_BUCKET", s3.bucket()),
        ("S3_PREFIX", PREFIX_IN_BUCKET),
        ("AWS_ACCESS_KEY_ID", s3.access_key()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key()),
    ])
}

/// The backup Task's two steps against `source`: `vault-snapshot` with the canary, then
/// `snapshot-sync` to `BACKUP_DIR` and/or S3. Returns the snapshot's name.
fn back_up(source: &Cluster, bk: Option<&Path>, s3: Option<&SeaweedFs>) -> String {
    let ws = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let (code, stderr) = run(
        &step_bin("vault-snapshot"),
        &env(&[
            ("VAULT_ADDR", source.addr(0)),
            ("VAULT_TOKEN", source.root_token()),
            ("SNAPSHOT_DIR", &s(ws.path())),
            ("RESULTS_DIR", &s(results.path())),
            ("CANARY_PATH", CANARY),
            ("TASKRUN_NAME", "vault-backup-run-1"),
        ]),
    );
    assert_eq!(code, 0, "vault-snapshot: {stderr}");
    let name = std::fs::read_to_string(results.path().join("snapshot-name")).unwrap();
    let mut sync = s3.map(s3_env).unwrap_or_default();
    sync.insert("SNAPSHOT_DIR".into(), s(ws.path()));
    sync.insert("SNAPSHOT_NAME".into(), name.clone());
    if let Some(bk) = bk {
        sync.insert("BACKUP_DIR".into(), s(bk));
    }
    let (code, stderr) = run(&step_bin("snapshot-sync"), &sync);
    assert_eq!(code, 0, "snapshot-sync: {stderr}");
    name
}

/// A source cluster with a KV v2 `secret/` mount (the canary's) and one secret.
fn source_cluster() -> Cluster {
    let source = Cluster::start(1, Options::default());
    source.enable_kv2("secret");
    source.write_secret("secret/app", &[("password", "before-the-backup")]);
    source
}

/// Fails if any of `secrets` appears in `text`.
fn assert_no_secret(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !secret.is_empty() && !text.contains(secret),
            "a secret appears in the output: {text}"
        );
    }
}

/// Every result file in `dir`, as one text.
fn all_results(dir: &Path) -> String {
    let mut text = String::new();
    for f in files(dir) {
        text.push_str(&f);
        text.push('=');
        text.push_str(&std::fs::read_to_string(dir.join(&f)).unwrap());
        text.push('\n');
    }
    text
}

fn result(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("result {name}: {e}"))
}

// One story, in the order a person would live it; split, each part would repeat the setup.
#[allow(clippy::too_many_lines)]
#[test]
fn cluster_mode_restores_into_a_fresh_cluster_from_the_directory_store() {
    let source = source_cluster();
    let bk = tempfile::tempdir().unwrap();
    let name = back_up(&source, Some(bk.path()), None);
    // A later secret, not in the snapshot.
    source.write_secret("secret/after", &[("k", "after-the-backup")]);

    let target = Cluster::start(1, Options::default());
    target.write_secret("secret/prior", &[("state", "the-target-before")]);
    let scratch = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let base = env(&[
        ("VAULT_ADDR", target.addr(0)),
        ("VAULT_TOKEN", target.root_token()),
        ("SNAPSHOT_DIR", &s(scratch.path())),
        ("BACKUP_DIR", &s(bk.path())),
        ("RESULTS_DIR", &s(results.path())),
        ("RESTORE_FORCE", "true"),
    ]);
    let secrets = [
        source.root_token(),
        source.unseal_key(),
        target.root_token(),
        target.unseal_key(),
    ];

    // Without RESTORE_CONFIRM, and with it naming another snapshot: exit 2, nothing restored.
    let (code, stderr) = run(&restore_bin(), &base);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("RESTORE_CONFIRM: is not set"), "{stderr}");
    let mut other = base.clone();
    other.insert("RESTORE_CONFIRM".into(), "vault-20200101T000000Z".into());
    let (code, stderr2) = run(&restore_bin(), &other);
    assert_eq!(code, 2, "{stderr2}");
    assert!(
        stderr2.contains("RESTORE_CONFIRM: names \"vault-20200101T000000Z\"")
            && stderr2.contains(&format!("is \"{name}\"")),
        "{stderr2}"
    );
    let mut named = other.clone();
    named.insert("SNAPSHOT_NAME".into(), name.clone());
    let (code, stderr3) = run(&restore_bin(), &named);
    assert_eq!(code, 2, "{stderr3}");
    assert!(files(scratch.path()).is_empty(), "nothing fetched");
    assert!(files(results.path()).is_empty(), "no results");
    assert_eq!(
        target
            .read_secret_as(0, target.root_token(), "secret/prior", "state")
            .unwrap()
            .trim(),
        "the-target-before",
        "the target is untouched"
    );

    // Confirmed but without RESTORE_FORCE: OpenBao refuses another cluster's snapshot.
    let mut unforced = base.clone();
    unforced.remove("RESTORE_FORCE");
    unforced.insert("RESTORE_CONFIRM".into(), name.clone());
    let elsewhere = tempfile::tempdir().unwrap();
    unforced.insert("SNAPSHOT_DIR".into(), s(elsewhere.path()));
    let (code, stderr5) = run(&restore_bin(), &unforced);
    assert_eq!(code, 1, "{stderr5}");
    assert!(
        stderr5.contains("could not verify hash file") && stderr5.contains("RESTORE_FORCE=true"),
        "{stderr5}"
    );
    assert_eq!(
        target
            .read_secret_as(0, target.root_token(), "secret/prior", "state")
            .unwrap()
            .trim(),
        "the-target-before",
        "the target is untouched"
    );

    // Confirmed: the safety snapshot, the restore, a sealed cluster.
    let mut confirmed = base.clone();
    confirmed.insert("RESTORE_CONFIRM".into(), name.clone());
    let (code, stderr4) = run(&restore_bin(), &confirmed);
    assert_eq!(code, 0, "{stderr4}");
    assert!(
        stderr4.contains("unseal with the source cluster's keys"),
        "{stderr4}"
    );
    assert_eq!(result(results.path(), "restored-snapshot"), name);
    assert_eq!(result(results.path(), "sealed"), "true");
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(bk.path().join(Artifact::new(&name).manifest_file())).unwrap(),
    )
    .unwrap();
    assert_eq!(
        result(results.path(), "raft-index"),
        manifest.raft_index.to_string()
    );
    assert!(
        result(results.path(), "restore-seconds")
            .parse::<f64>()
            .is_ok()
    );
    let safety = result(results.path(), "safety-snapshot");
    assert!(safety.starts_with("pre-restore-"), "{safety}");
    let sa = Artifact::new(&safety);
    sha256sum_check(scratch.path(), &sa.sha256_file());
    assert!(files(scratch.path()).contains(&sa.manifest_file()));

    // Unsealed with the old key, the old root token reads the secrets written before the backup.
    target.unseal_with(0, source.unseal_key());
    assert_eq!(
        target
            .read_secret_as(0, source.root_token(), "secret/app", "password")
            .unwrap()
            .trim(),
        "before-the-backup"
    );
    assert!(
        target
            .read_secret_as(0, source.root_token(), "secret/after", "k")
            .is_err(),
        "a secret written after the backup is not there"
    );
    // The safety snapshot holds the target's prior state: it restores, with the target's keys.
    let prior = target.restore_into_fresh_node_and_read(
        &scratch.path().join(sa.snap_file()),
        "secret/prior",
        "state",
    );
    assert_eq!(prior, "the-target-before");

    for text in [&stderr, &stderr2, &stderr3, &stderr4, &stderr5] {
        assert_no_secret(text, &secrets);
    }
    assert_no_secret(&all_results(results.path()), &secrets);
}

/// One drill run against a fresh scratch node: (exit code, stderr, scratch node, results dir).
fn drill(
    source: &Cluster,
    s3: &SeaweedFs,
    keys: &str,
) -> (i32, String, ScratchNode, tempfile::TempDir) {
    let node = ScratchNode::start_uninitialized();
    let scratch = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let keys_file = scratch.path().join("unseal-keys");
    std::fs::write(&keys_file, keys).unwrap();
    let mut vars = s3_env(s3);
    vars.extend(env(&[
        ("RESTORE_MODE", "drill"),
        ("VAULT_ADDR", node.addr()),
        ("VAULT_TOKEN", source.root_token()),
        ("SNAPSHOT_DIR", &s(scratch.path())),
        ("RESULTS_DIR", &s(results.path())),
        ("DRILL_UNSEAL_KEYS_FILE", &s(&keys_file)),
        ("CANARY_PATH", CANARY),
        ("RESTORE_TIMEOUT", "60s"),
    ]));
    let (code, stderr) = run(&restore_bin(), &vars);
    (code, stderr, node, results)
}

// One setup (a source, a backup in S3), then each way a drill must fail, undone in turn.
#[allow(clippy::too_many_lines)]
#[test]
fn the_drill_proves_a_good_snapshot_from_s3_and_refuses_bad_ones() {
    let source = source_cluster();
    let s3 = SeaweedFs::start("backups");
    let name = back_up(&source, None, Some(&s3));
    let a = Artifact::new(&name);
    let key = |f: &str| format!("{PREFIX_IN_BUCKET}/{f}");
    let get = |f: &str| {
        let dl = tempfile::tempdir().unwrap();
        s3.download(&key(f), &dl.path().join(f));
        std::fs::read(dl.path().join(f)).unwrap()
    };
    let good_snap = get(&a.snap_file());
    let good_sha = get(&a.sha256_file());
    let good_json = get(&a.manifest_file());
    let manifest: Manifest = serde_json::from_slice(&good_json).unwrap();
    let old_key = format!("{}\n", source.unseal_key());
    let secrets = [source.root_token(), source.unseal_key(), s3.secret_key()];
    let mut outputs = Vec::new();

    // A good snapshot: restored, unsealed with the old key, logged in, index and canary checked.
    let (code, stderr, node, results) = drill(&source, &s3, &old_key);
    assert_eq!(code, 0, "{stderr}\n{}", node.log());
    assert_eq!(result(results.path(), "restored-snapshot"), name);
    assert_eq!(result(results.path(), "canary"), "ok");
    let index: u64 = result(results.path(), "raft-index").parse().unwrap();
    assert!(
        index >= manifest.raft_index,
        "{index} < {}",
        manifest.raft_index
    );
    assert!(
        result(results.path(), "restore-seconds")
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    assert!(stderr.contains("canary ok"), "{stderr}");
    outputs.push(stderr + &all_results(results.path()));

    // Wrong unseal keys.
    let other = Cluster::start(1, Options::default());
    let (code, stderr, _node, results) = drill(&source, &s3, other.unseal_key());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("do not unseal the restored snapshot"),
        "{stderr}"
    );
    assert_no_secret(&stderr, &[other.unseal_key(), other.root_token()]);
    outputs.push(stderr + &all_results(results.path()));

    // A manifest whose canary differs from the one inside the snapshot.
    let mut edited = manifest.clone();
    edited.canary.as_mut().unwrap().written_at = "2020-01-01T00:00:00.000Z".into();
    s3.put(
        &key(&a.manifest_file()),
        &serde_json::to_vec_pretty(&edited).unwrap(),
    );
    let (code, stderr, _node, results) = drill(&source, &s3, &old_key);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the canary secret/data/vault-backup/canary in the restored data differs")
            && stderr.contains("written_at is")
            && stderr.contains("2020-01-01T00:00:00.000Z"),
        "{stderr}"
    );
    s3.put(&key(&a.manifest_file()), &good_json);
    outputs.push(stderr + &all_results(results.path()));

    // A .sha256 that does not match: exit 1 naming the object; the scratch node saw nothing.
    let wrong = format!("{}  {}\n", "0".repeat(64), a.snap_file());
    s3.put(&key(&a.sha256_file()), wrong.as_bytes());
    // (the manifest must agree with the .sha256, or it is refused first; give it the same)
    let mut zeroed = manifest.clone();
    zeroed.sha256 = "0".repeat(64);
    s3.put(
        &key(&a.manifest_file()),
        &serde_json::to_vec_pretty(&zeroed).unwrap(),
    );
    let (code, stderr, node, results) = drill(&source, &s3, &old_key);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "s3://backups/{PREFIX_IN_BUCKET}/{} hashes to {}",
            a.snap_file(),
            manifest.sha256
        )),
        "{stderr}"
    );
    assert!(
        !node.is_initialized(),
        "nothing was sent to the scratch node"
    );
    assert!(files(results.path()).is_empty());
    s3.put(&key(&a.sha256_file()), &good_sha);
    s3.put(&key(&a.manifest_file()), &good_json);
    outputs.push(stderr);

    // A byte flipped in the S3 object, well past the headers.
    let mut flipped = good_snap.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0xff;
    s3.put(&key(&a.snap_file()), &flipped);
    let (code, stderr, node, results) = drill(&source, &s3, &old_key);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "s3://backups/{PREFIX_IN_BUCKET}/{}",
            a.snap_file()
        )),
        "the object is named: {stderr}"
    );
    assert!(
        !node.is_initialized(),
        "nothing was sent to the scratch node"
    );
    assert!(files(results.path()).is_empty());
    outputs.push(stderr);

    for text in &outputs {
        assert_no_secret(text, &secrets);
    }
}

#[test]
fn cluster_mode_rolls_a_cluster_back_to_its_own_snapshot_and_it_stays_unsealed() {
    let source = source_cluster();
    let bk = tempfile::tempdir().unwrap();
    let name = back_up(&source, Some(bk.path()), None);
    source.write_secret("secret/after", &[("k", "after-the-backup")]);
    let scratch = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    // SNAPSHOT_NAME unset: the newest complete snapshot is resolved, then confirmed.
    let (code, stderr) = run(
        &restore_bin(),
        &env(&[
            ("VAULT_ADDR", source.addr(0)),
            ("VAULT_TOKEN", source.root_token()),
            ("SNAPSHOT_DIR", &s(scratch.path())),
            ("BACKUP_DIR", &s(bk.path())),
            ("RESULTS_DIR", &s(results.path())),
            ("RESTORE_CONFIRM", &name),
        ]),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(result(results.path(), "sealed"), "false");
    assert!(
        stderr.contains("the cluster has a leader and is unsealed"),
        "{stderr}"
    );
    assert_eq!(
        source
            .read_secret_as(0, source.root_token(), "secret/app", "password")
            .unwrap()
            .trim(),
        "before-the-backup"
    );
    assert!(
        source
            .read_secret_as(0, source.root_token(), "secret/after", "k")
            .is_err(),
        "rolled back to before the later write"
    );
    assert_no_secret(
        &(stderr + &all_results(results.path())),
        &[source.root_token(), source.unseal_key()],
    );
}
