//! `vault-restore` as a process, against real OpenBao and SeaweedFS: the source snapshots come
//! from the real `vault-snapshot` (with a canary) and the real `snapshot-sync`, the target is a
//! fresh OpenBao cluster, the drill's scratch node a fresh uninitialized OpenBao. Each run's
//! whole stderr and results are checked for every token, unseal key and secret key of the test.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

mod common;

use common::{CANARY, drill_env, env, restore_bin, run, s};
use vault_backup_common::artifact::{Artifact, Manifest};
use vault_backup_testbed::check::{files, sha256sum_check};
use vault_backup_testbed::openbao::{Cluster, Options, ScratchNode};
use vault_backup_testbed::seaweed::SeaweedFs;

const PREFIX_IN_BUCKET: &str = "backups/vault";
fn s3_env(s3: &SeaweedFs) -> BTreeMap<String, String> {
    env(&[
        ("S3_ENDPOINT", &s3.endpoint()),
        ("S3_BUCKET", s3.bucket()),
        ("S3_PREFIX", PREFIX_IN_BUCKET),
        ("AWS_ACCESS_KEY_ID", s3.access_key()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key()),
    ])
}

/// The backup Task's two steps against `source` (with the canary), to `BACKUP_DIR` and/or S3.
/// Returns the snapshot's name.
fn back_up(source: &Cluster, bk: Option<&Path>, s3: Option<&SeaweedFs>) -> String {
    let mut stores = s3.map(s3_env).unwrap_or_default();
    if let Some(bk) = bk {
        stores.insert("BACKUP_DIR".into(), s(bk));
    }
    common::back_up(source.addr(0), source.root_token(), true, stores).name
}

/// A source cluster with a KV v2 `secret/` mount (the canary's) and one secret.
fn source_cluster() -> Cluster {
    let source = Cluster::start(1, Options::default());
    source.enable_kv2("secret");
    // A fresh KV v2 mount answers 400 "Upgrading from non-versioned to versioned data" for a
    // moment after it is enabled.
    for _ in 0..20 {
        match source.try_bao(
            0,
            &["kv", "put", "secret/app", "password=before-the-backup"],
        ) {
            Ok(_) => return source,
            Err(e) if e.contains("Upgrading from non-versioned") => {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the KV v2 mount did not finish its upgrade");
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

    // Confirmed, with the target's name (another cluster than the snapshot's source): the
    // safety snapshot, the restore, a sealed cluster.
    let mut confirmed = base.clone();
    confirmed.insert(
        "RESTORE_CONFIRM".into(),
        format!("{name}@{}", identity(&target).0),
    );
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
    vars.extend(drill_env(
        node.addr(),
        source.root_token(),
        scratch.path(),
        results.path(),
        &keys_file,
    ));
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

    // CANARY_PATH set for the drill, but the manifest records no canary: exit 1 before
    // anything is fetched or sent to the scratch node.
    let mut canaryless = manifest.clone();
    canaryless.canary = None;
    s3.put(
        &key(&a.manifest_file()),
        &serde_json::to_vec_pretty(&canaryless).unwrap(),
    );
    let (code, stderr, node, results) = drill(&source, &s3, &old_key);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the manifest of {name} records no canary, but CANARY_PATH is set"
        )),
        "{stderr}"
    );
    assert!(
        !node.is_initialized(),
        "nothing was sent to the scratch node"
    );
    assert!(files(results.path()).is_empty());
    s3.put(&key(&a.manifest_file()), &good_json);
    outputs.push(stderr);

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

/// Runs `bin` with exactly `env` (plus PATH), killed after `deadline`: exit code (-1 if it had
/// to be killed), stderr, and how long it ran. For runs that old code would never end.
fn run_with_deadline(
    bin: &Path,
    env: &BTreeMap<String, String>,
    deadline: std::time::Duration,
) -> (i32, String, std::time::Duration) {
    use std::io::Read;
    let started = std::time::Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the step");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    (code, reader.join().unwrap(), elapsed)
}

/// `cluster_name` and `cluster_id` of node 0 of `cluster`, as `bao status` prints them.
fn identity(cluster: &Cluster) -> (String, String) {
    let status = cluster.bao_json(0, &["status", "-format=json"]);
    (
        status["cluster_name"].as_str().unwrap().to_owned(),
        status["cluster_id"].as_str().unwrap().to_owned(),
    )
}

/// Issue 18, point 3: the manifest records the source cluster; a forced restore into another
/// cluster must be confirmed as `<snapshot>@<target cluster_name>` (exit 2 with nothing fetched
/// otherwise), and with it proceeds; the unforced 400 says it is another cluster's snapshot.
#[test]
fn a_forced_restore_into_another_cluster_must_name_the_target() {
    let source = source_cluster();
    let bk = tempfile::tempdir().unwrap();
    let name = back_up(&source, Some(bk.path()), None);
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(bk.path().join(Artifact::new(&name).manifest_file())).unwrap(),
    )
    .unwrap();
    let (source_name, source_id) = identity(&source);
    assert_eq!(manifest.cluster_name.as_deref(), Some(source_name.as_str()));
    assert_eq!(manifest.cluster_id.as_deref(), Some(source_id.as_str()));

    let target = Cluster::start(1, Options::default());
    let (target_name, target_id) = identity(&target);
    assert_ne!(source_id, target_id);
    let scratch = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let base = env(&[
        ("VAULT_ADDR", target.addr(0)),
        ("VAULT_TOKEN", target.root_token()),
        ("SNAPSHOT_DIR", &s(scratch.path())),
        ("BACKUP_DIR", &s(bk.path())),
        ("RESULTS_DIR", &s(results.path())),
        ("SNAPSHOT_NAME", &name),
        ("RESTORE_CONFIRM", &name),
    ]);

    // Unforced: OpenBao refuses it, and the hint says it is another cluster's snapshot.
    let (code, stderr) = run(&restore_bin(), &base);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("could not verify hash file")
            && stderr.contains(&format!("taken from {source_name} (cluster_id {source_id}), another cluster than the target {target_name}"))
            && stderr.contains(&format!("RESTORE_CONFIRM={name}@{target_name}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cluster_name={target_name}"))
            && stderr.contains("restore target"),
        "the target's identity is logged: {stderr}"
    );
    std::fs::remove_dir_all(scratch.path()).unwrap();
    std::fs::create_dir(scratch.path()).unwrap();

    // Forced, confirming the snapshot only: exit 2, nothing fetched.
    let mut forced = base.clone();
    forced.insert("RESTORE_FORCE".into(), "true".into());
    let (code, stderr2) = run(&restore_bin(), &forced);
    assert_eq!(code, 2, "{stderr2}");
    assert!(
        stderr2.contains("RESTORE_CONFIRM: names only the snapshot")
            && stderr2.contains(&format!("set RESTORE_CONFIRM={name}@{target_name}")),
        "{stderr2}"
    );
    assert!(files(scratch.path()).is_empty(), "nothing fetched");
    // Naming another target: exit 2 too.
    forced.insert("RESTORE_CONFIRM".into(), format!("{name}@{source_name}"));
    let (code, stderr3) = run(&restore_bin(), &forced);
    assert_eq!(code, 2, "{stderr3}");
    assert!(
        stderr3.contains(&format!(
            "names the target cluster \"{source_name}\", but VAULT_ADDR leads {target_name}"
        )),
        "{stderr3}"
    );
    assert!(files(scratch.path()).is_empty(), "nothing fetched");
    assert_eq!(
        target
            .read_secret_as(0, target.root_token(), "secret/app", "password")
            .ok(),
        None,
        "the target is untouched"
    );

    // Confirmed with the target's name: restored, sealed with the source's keys.
    forced.insert("RESTORE_CONFIRM".into(), format!("{name}@{target_name}"));
    let (code, stderr4) = run(&restore_bin(), &forced);
    assert_eq!(code, 0, "{stderr4}");
    assert_eq!(result(results.path(), "sealed"), "true");
    target.unseal_with(0, source.unseal_key());
    assert_eq!(
        target
            .read_secret_as(0, source.root_token(), "secret/app", "password")
            .unwrap()
            .trim(),
        "before-the-backup"
    );
    for text in [&stderr, &stderr2, &stderr3, &stderr4] {
        assert_no_secret(text, &[source.root_token(), target.root_token()]);
    }
}

/// Issue 18, point 4: the login and the policy are checked before any byte of the snapshot is
/// fetched. The `.snap` is taken out of the store: a run that fetched before it checked would
/// fail with "does not exist" instead.
#[test]
fn a_wrong_login_or_policy_exits_before_any_byte_is_fetched() {
    let source = source_cluster();
    let bk = tempfile::tempdir().unwrap();
    let name = back_up(&source, Some(bk.path()), None);
    std::fs::remove_file(bk.path().join(Artifact::new(&name).snap_file())).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let base = env(&[
        ("VAULT_ADDR", source.addr(0)),
        ("SNAPSHOT_DIR", &s(scratch.path())),
        ("BACKUP_DIR", &s(bk.path())),
        ("SNAPSHOT_NAME", &name),
        ("RESTORE_CONFIRM", &name),
    ]);
    let mut wrong = base.clone();
    wrong.insert("VAULT_TOKEN".into(), "s.not-a-token-of-this-cluster".into());
    let (code, stderr) = run(&restore_bin(), &wrong);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("refused the login's token (403 on sys/capabilities-self)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("does not exist"),
        "nothing fetched: {stderr}"
    );

    // A token that may take the safety snapshot but not force a restore.
    let weak = source.token_with_policy(
        "restore-weak",
        "path \"sys/storage/raft/snapshot\" { capabilities = [\"read\", \"update\"] }\npath \"sys/capabilities-self\" { capabilities = [\"update\"] }\n",
    );
    let mut forced = base.clone();
    forced.insert("VAULT_TOKEN".into(), weak.clone());
    forced.insert("RESTORE_FORCE".into(), "true".into());
    let (code, stderr2) = run(&restore_bin(), &forced);
    assert_eq!(code, 1, "{stderr2}");
    assert!(
        stderr2.contains("may not restore through sys/storage/raft/snapshot-force")
            && stderr2.contains("tekton/vault-restore-policy.hcl"),
        "{stderr2}"
    );
    assert!(
        !stderr2.contains("does not exist"),
        "nothing fetched: {stderr2}"
    );
    assert!(files(scratch.path()).is_empty());
    assert_no_secret(&(stderr + &stderr2), &[source.root_token(), &weak]);
}

/// Issue 18, point 2: a leader that accepts the safety snapshot's request and then stalls
/// ends the restore with exit 1 within RESTORE_TIMEOUT, naming it. A canned leader, because a
/// real one does not stall on demand; the snapshot to restore is a real one.
#[test]
fn a_leader_that_stalls_during_the_safety_snapshot_fails_within_restore_timeout() {
    use vault_backup_testbed::canned::{CannedVault, Snapshot};
    let source = source_cluster();
    let bk = tempfile::tempdir().unwrap();
    let name = back_up(&source, Some(bk.path()), None);
    drop(source);
    let stalling = CannedVault::start(vec![Snapshot::StallAfter(vec![0x1f; 4096], 1024)]);
    let scratch = tempfile::tempdir().unwrap();
    let vars = env(&[
        ("VAULT_ADDR", stalling.addr()),
        ("VAULT_TOKEN", "s.canned-token"),
        ("SNAPSHOT_DIR", &s(scratch.path())),
        ("BACKUP_DIR", &s(bk.path())),
        ("RESTORE_CONFIRM", &name),
        ("RESTORE_TIMEOUT", "3s"),
    ]);
    let (code, stderr, took) =
        run_with_deadline(&restore_bin(), &vars, std::time::Duration::from_secs(60));
    eprintln!("took {took:?}\n{stderr}");
    assert_eq!(code, 1, "took {took:?}: {stderr}");
    assert!(took < std::time::Duration::from_secs(20), "took {took:?}");
    assert!(
        stderr.contains("the safety snapshot of")
            && stderr.contains("did not answer within 3s; raise RESTORE_TIMEOUT"),
        "{stderr}"
    );
    assert_eq!(stalling.snapshot_requests(), 1);
    let left: Vec<String> = files(scratch.path())
        .into_iter()
        .filter(|f| f.starts_with("pre-restore") || f.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "no partial safety snapshot: {left:?}");
}

/// Writes about `mb` MB of KV data into `source` (values of ~700 KB: one over 1 MiB is
/// refused), so its snapshot is that large.
fn fill(source: &Cluster, mb: usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    let mut blob = String::with_capacity(700_000);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while blob.len() < 700_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        blob.push_str(&format!("{x:016x}"));
    }
    std::fs::write(&file, &blob).unwrap();
    let value = format!("@{}", file.display());
    // Four writers at once: one `bao` process per write is most of this test's time.
    std::thread::scope(|scope| {
        for t in 0..4 {
            let value = &value;
            scope.spawn(move || {
                for i in (t..mb * 10 / 7).step_by(4) {
                    source.write_secret(&format!("secret/blob{i}"), &[("v", value)]);
                }
            });
        }
    });
}

/// Must-show 1 of issue 18: a drill from S3 whose download lasts longer than the S3 client's
/// per-request timeout passes. The link is a throttling proxy in front of SeaweedFS (4 MB/s per
/// connection) and the per-request limit is lowered to 5 s (test-only knob), so a ~60 MB
/// snapshot takes several times that limit; one 8 MiB part takes about 2 s.
#[test]
fn a_drill_from_s3_lasting_longer_than_one_request_timeout_passes() {
    use vault_backup_testbed::throttle::{Rates, Throttle};
    let source = source_cluster();
    fill(&source, 60);
    let s3 = SeaweedFs::start("backups");
    let name = back_up(&source, None, Some(&s3));
    let slow = Throttle::start(
        &s3.endpoint(),
        Rates {
            down: Some(4_000_000),
            up: None,
        },
    );
    let node = ScratchNode::start_uninitialized();
    let scratch = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let keys_file = scratch.path().join("unseal-keys");
    std::fs::write(&keys_file, format!("{}\n", source.unseal_key())).unwrap();
    let mut vars = s3_env(&s3);
    vars.extend(env(&[
        ("S3_ENDPOINT", &slow.url()),
        ("RESTORE_MODE", "drill"),
        ("VAULT_ADDR", node.addr()),
        ("VAULT_TOKEN", source.root_token()),
        ("SNAPSHOT_DIR", &s(scratch.path())),
        ("RESULTS_DIR", &s(results.path())),
        ("DRILL_UNSEAL_KEYS_FILE", &s(&keys_file)),
        ("CANARY_PATH", CANARY),
        ("RESTORE_TIMEOUT", "120s"),
        ("VAULT_BACKUP_TEST_S3_REQUEST_TIMEOUT_MS", "5000"),
    ]));
    let (code, stderr, took) =
        run_with_deadline(&restore_bin(), &vars, std::time::Duration::from_secs(180));
    let size = std::fs::metadata(scratch.path().join(Artifact::new(&name).snap_file()))
        .map_or(0, |m| m.len());
    eprintln!(
        "the drill took {took:?}; {} bytes through the proxy; snapshot {size} bytes",
        slow.down_bytes()
    );
    assert_eq!(code, 0, "{stderr}\n{}", node.log());
    assert!(size > 50_000_000, "the snapshot is large: {size}");
    assert!(
        took > std::time::Duration::from_secs(6),
        "the download outlasted one request's limit: {took:?}"
    );
    assert_eq!(result(results.path(), "canary"), "ok");
}

/// Must-show 4 of issue 17: a drill against a scratch node whose listener has a short
/// `http_read_timeout` (2 s), with the restore upload slowed by a throttling proxy, fails with
/// a message naming `http_read_timeout`.
#[test]
fn a_drill_cut_by_the_listeners_http_read_timeout_names_it() {
    use vault_backup_testbed::throttle::{Rates, Throttle};
    let source = source_cluster();
    let bk = tempfile::tempdir().unwrap();
    let name = back_up(&source, Some(bk.path()), None);
    let size = std::fs::metadata(bk.path().join(Artifact::new(&name).snap_file()))
        .unwrap()
        .len();
    let node = ScratchNode::start_with_listener("http_read_timeout = \"2s\"");
    // The upload takes about 6 s, three times the listener's limit.
    let slow = Throttle::start(
        node.addr(),
        Rates {
            down: None,
            up: Some((size / 6).max(1024)),
        },
    );
    let scratch = tempfile::tempdir().unwrap();
    let keys_file = scratch.path().join("unseal-keys");
    std::fs::write(&keys_file, format!("{}\n", source.unseal_key())).unwrap();
    let vars = env(&[
        ("RESTORE_MODE", "drill"),
        ("VAULT_ADDR", &slow.url()),
        ("VAULT_TOKEN", source.root_token()),
        ("SNAPSHOT_DIR", &s(scratch.path())),
        ("BACKUP_DIR", &s(bk.path())),
        ("DRILL_UNSEAL_KEYS_FILE", &s(&keys_file)),
        ("CANARY_PATH", CANARY),
        ("RESTORE_TIMEOUT", "60s"),
    ]);
    let (code, stderr, took) =
        run_with_deadline(&restore_bin(), &vars, std::time::Duration::from_secs(120));
    eprintln!("took {took:?}; snapshot {size} bytes\n{stderr}");
    assert_eq!(code, 1, "{stderr}\n{}", node.log());
    assert!(
        stderr.contains("i/o timeout") && stderr.contains("http_read_timeout"),
        "{stderr}"
    );
}

/// The parts of an S3 read are pinned to the object's ETag: an object overwritten while it is
/// read fails the fetch instead of splicing two objects into one stream. The read is slowed by
/// a throttling proxy so that the overwrite lands between its parts.
#[test]
fn an_object_overwritten_during_the_fetch_fails_it() {
    use vault_backup_testbed::throttle::{Rates, Throttle};
    let source = source_cluster();
    fill(&source, 24);
    let s3 = SeaweedFs::start("backups");
    let name = back_up(&source, None, Some(&s3));
    let a = Artifact::new(&name);
    let key = format!("{PREFIX_IN_BUCKET}/{}", a.snap_file());
    let dl = tempfile::tempdir().unwrap();
    s3.download(&key, &dl.path().join("good"));
    let mut other = std::fs::read(dl.path().join("good")).unwrap();
    let at = other.len() / 2;
    other[at] ^= 0xff;
    let slow = Throttle::start(
        &s3.endpoint(),
        Rates {
            down: Some(2_000_000),
            up: None,
        },
    );
    let node = ScratchNode::start_uninitialized();
    let scratch = tempfile::tempdir().unwrap();
    let keys_file = scratch.path().join("unseal-keys");
    std::fs::write(&keys_file, format!("{}\n", source.unseal_key())).unwrap();
    let mut vars = s3_env(&s3);
    vars.extend(env(&[
        ("S3_ENDPOINT", &slow.url()),
        ("RESTORE_MODE", "drill"),
        ("VAULT_ADDR", node.addr()),
        ("VAULT_TOKEN", source.root_token()),
        ("SNAPSHOT_DIR", &s(scratch.path())),
        ("DRILL_UNSEAL_KEYS_FILE", &s(&keys_file)),
        ("CANARY_PATH", CANARY),
        ("RESTORE_TIMEOUT", "120s"),
    ]));
    let bin = restore_bin();
    let drill = std::thread::spawn(move || {
        run_with_deadline(&bin, &vars, std::time::Duration::from_secs(120))
    });
    // Overwrite once the first part is under way.
    while slow.down_bytes() < 2_000_000 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    s3.put(&key, &other);
    let (code, stderr, took) = drill.join().unwrap();
    eprintln!("took {took:?}\n{stderr}");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the object changed while it was read"),
        "{stderr}"
    );
    assert!(
        !node.is_initialized(),
        "nothing was sent to the scratch node"
    );
}
