//! The restore Tasks as written, through the step runner: the weekly drill into a local OpenBao
//! sidecar from the S3 copy, and the restore for the bad day into a fresh cluster from the
//! directory store, with its safety snapshot and its confirmation.

#[path = "support/known_env.rs"]
mod support;

use serde_json::Value;
use support::known_env;
use vault_backup_testbed::e2e::{self, ConfigSource, Drill, Environment, Run, Setup};
use vault_backup_testbed::openbao::{Cluster, Options};
use vault_backup_testbed::runner::RunError;
use vault_backup_testbed::venv;

fn manifest(dir: &std::path::Path, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.snap.json"))).unwrap()).unwrap()
}

#[test]
fn the_drill_restores_the_s3_copy_into_its_sidecar_and_finds_this_runs_canary() {
    let env = Environment::start();
    let backup = env
        .run_task(known_env(), false)
        .expect("the backup Task runs");
    assert!(backup.succeeded(), "{:?}", backup.steps);
    let name = backup.results["snapshot-name"].clone();
    let manifest = manifest(&env.backups, &name);
    assert_eq!(
        manifest["canary"]["taskrun"], env.task_run_name,
        "the backup recorded this run's canary: {manifest}"
    );

    let drill = env
        .run_drill("vault-restore-drill-w48", known_env(), false)
        .expect("the drill Task runs as written");
    for step in &drill.steps {
        assert_eq!(
            step.code, 0,
            "step {} failed:\n{}\n--- sidecar ---\n{}",
            step.name, step.stderr, drill.sidecar_logs["openbao"]
        );
    }
    assert_eq!(drill.results["restored-snapshot"], name);
    assert_eq!(drill.results["canary"], "ok");
    let restored: u64 = drill.results["raft-index"].parse().expect("a number");
    let recorded = manifest["raft_index"]
        .as_u64()
        .expect("the manifest's raft_index");
    assert!(
        restored >= recorded,
        "restored index {restored} < manifest's {recorded}"
    );
    let seconds: f64 = drill.results["restore-seconds"].parse().expect("seconds");
    assert!(seconds > 0.0 && seconds < 300.0, "{seconds}");
    // Nothing secret in any log line or result.
    let secrets = [
        env.cluster.unseal_key(),
        env.cluster.root_token(),
        env.token.as_str(),
    ];
    for step in &drill.steps {
        for secret in secrets {
            assert!(
                !step.stderr.contains(secret),
                "a secret in the {} log",
                step.name
            );
        }
    }
    for value in drill.results.values() {
        for secret in secrets {
            assert!(!value.contains(secret), "a secret in a result");
        }
    }
}

/// The drill as shipped before the pod model (commit bc5f960, kept in
/// `tests/tests/fixtures/drill-bc5f960/`) could not run on a cluster, and this runner says why:
/// its sidecar's tcpSocket probe goes to the pod IP while OpenBao listens on 127.0.0.1, so the
/// sidecar never becomes Ready and no step starts; with only the probe removed, the restore
/// fails on OpenBao's spool file under the read-only root (no `/tmp` volume).
#[test]
fn the_drill_as_shipped_at_bc5f960_never_starts_and_without_its_probe_fails_on_the_read_only_root()
{
    let env = Environment::start_with(&Setup {
        nodes: 1,
        ..Setup::default()
    });
    let backup = env
        .run_task(known_env(), false)
        .expect("the backup Task runs");
    assert!(backup.succeeded(), "{:?}", backup.steps);
    let old = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/drill-bc5f960");
    let mut drill = Drill {
        task: old.join("drill-task.yaml"),
        taskrun: old.join("drill-taskrun.yaml"),
        openbao_config: old.join("drill-openbao.hcl"),
        sidecar_ready_timeout: Some(std::time::Duration::from_secs(10)),
        unseal_keys_secret: true,
    };
    let err = env
        .run_drill_from(&drill, "vault-restore-drill-old", known_env(), false)
        .map(|o| o.steps)
        .expect_err("the sidecar is never Ready");
    let msg = err.to_string();
    assert!(
        matches!(&err, RunError::SidecarNotReady { sidecar, probe, .. }
            if sidecar == "openbao" && probe.ends_with(":8200") && !probe.contains("127.0.0.1")),
        "{msg}"
    );

    let task = std::fs::read_to_string(&drill.task).unwrap();
    let probe = "      readinessProbe:\n        tcpSocket:\n          port: 8200\n        periodSeconds: 1\n";
    assert!(task.contains(probe), "the fixture's probe");
    drill.task = env.path().join("drill-task-no-probe.yaml");
    std::fs::write(&drill.task, task.replace(probe, "")).unwrap();
    let outcome = env
        .run_drill_from(&drill, "vault-restore-drill-no-probe", known_env(), false)
        .expect("the Task runs");
    let restore = outcome.step("restore").unwrap();
    assert_eq!(restore.code, 1, "{}", restore.stderr);
    assert!(
        restore
            .stderr
            .contains("failed to create temp snapshot file")
            && restore.stderr.contains("read-only file system"),
        "{}",
        restore.stderr
    );
}

/// What a user who follows the README gets: the shipped example Secret (PVC only, no S3, no
/// canary; only its `VAULT_ADDR` and login replaced by the test bed), the shipped backup
/// TaskRun, then the shipped drill TaskRun as is. The drill finds the backup on the PVC (bound
/// read-only by the drill TaskRun) and restores it into its sidecar.
#[test]
fn the_shipped_drill_taskrun_with_the_shipped_example_secret_restores_the_pvc_copy() {
    let env = Environment::start_with(&Setup {
        nodes: 1,
        s3: false,
        config: ConfigSource::Example,
        ..Setup::default()
    });
    let backup = env
        .run_task(known_env(), false)
        .expect("the backup Task runs");
    assert!(backup.succeeded(), "{:?}", backup.steps);
    assert_eq!(backup.results["synced-stores"], "dir");
    let name = backup.results["snapshot-name"].clone();
    let before = std::fs::read_dir(&env.backups).unwrap().count();

    let drill = env
        .run_drill("vault-restore-drill-pvc", known_env(), false)
        .expect("the shipped drill TaskRun runs as written");
    for step in &drill.steps {
        assert_eq!(
            step.code, 0,
            "step {} failed:\n{}\n--- sidecar ---\n{}",
            step.name, step.stderr, drill.sidecar_logs["openbao"]
        );
    }
    assert_eq!(drill.results["restored-snapshot"], name);
    assert_eq!(
        drill.results["canary"], "skipped",
        "the example Secret sets no canary"
    );
    assert_eq!(
        std::fs::read_dir(&env.backups).unwrap().count(),
        before,
        "the drill leaves the PVC as it found it"
    );
}

#[test]
fn the_restore_task_puts_a_directory_backup_into_a_fresh_cluster_after_a_safety_snapshot() {
    let env = Environment::start_with(&Setup {
        nodes: 1,
        s3: false,
        ..Setup::default()
    });
    let backup = env
        .run_task(known_env(), false)
        .expect("the backup Task runs");
    assert!(backup.succeeded(), "{:?}", backup.steps);
    let name = backup.results["snapshot-name"].clone();

    // Another cluster, with data of its own, and a login holding only the restore policy.
    let target = Cluster::start(1, Options::default());
    target.write_secret("secret/target-only", &[("v", "before the restore")]);
    let policy =
        std::fs::read_to_string(venv::workspace_root().join("tekton/vault-restore-policy.hcl"))
            .unwrap();
    let token = target.token_with_policy("vault-restore", &policy);
    let target_secret = env.path().join("restore-target.yaml");
    std::fs::write(
        &target_secret,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-restore-target\ntype: Opaque\nstringData:\n  \
             VAULT_ADDR: \"{}\"\n  VAULT_TOKEN: \"{token}\"\n",
            target.addr(0)
        ),
    )
    .unwrap();
    let run = |run_name: &str, confirm: &str| {
        env.run_shipped(
            &Run {
                task: "tekton/restore-task.yaml",
                taskrun: "tekton/restore-taskrun.yaml",
                name: run_name,
                params: vec![("confirm", confirm), ("force", "true")],
                bind: vec!["backups"],
                objects: vec![target_secret.clone()],
                ..Run::default()
            },
            known_env(),
            false,
        )
    };
    let untouched = || {
        target
            .read_secret_as(0, target.root_token(), "secret/target-only", "v")
            .expect("the target still has its own data")
    };

    // Not confirmed, or confirmed for another snapshot: exit 2, nothing restored.
    for (run_name, confirm) in [
        ("vault-restore-a", ""),
        ("vault-restore-b", "vault-20200101T000000Z"),
    ] {
        let err = run(run_name, confirm)
            .map(|o| o.steps)
            .expect_err("a restore needs confirm");
        assert!(
            matches!(&err, RunError::Config { step, .. } if step == "restore")
                && err.to_string().contains("RESTORE_CONFIRM"),
            "{err}"
        );
        assert_eq!(untouched(), "before the restore");
    }

    // Forced into another cluster than the snapshot's source, the confirm must also name the
    // target: the snapshot's name alone is exit 2, nothing fetched or restored.
    let err = run("vault-restore-b2", &name)
        .map(|o| o.steps)
        .expect_err("a forced restore into another cluster names the target");
    assert!(
        matches!(&err, RunError::Config { step, .. } if step == "restore")
            && err.to_string().contains(&format!("{name}@")),
        "{err}"
    );
    assert_eq!(untouched(), "before the restore");

    let target_name = target.bao_json(0, &["status", "-format=json"])["cluster_name"]
        .as_str()
        .expect("the target's cluster_name")
        .to_owned();
    let outcome = run("vault-restore-c", &format!("{name}@{target_name}"))
        .expect("the restore Task runs as written");
    let step = outcome.step("restore").unwrap();
    assert_eq!(step.code, 0, "{}", step.stderr);
    assert_eq!(outcome.results["restored-snapshot"], name);
    assert_eq!(
        outcome.results["sealed"], "true",
        "a restore into another cluster seals it"
    );
    // The safety snapshot of the target's prior state is in the scratch workspace, whole.
    let safety = &outcome.results["safety-snapshot"];
    let scratch = env.scratch_of("vault-restore-c");
    e2e::sha256sum_check(&scratch, &format!("{safety}.snap.sha256"));
    // Unsealed with the source cluster's key, the target holds the source's secrets.
    target.unseal_with(0, env.cluster.unseal_key());
    let restored = target
        .read_secret_as(0, env.cluster.root_token(), "secret/db", "password")
        .expect("the source's secret");
    assert_eq!(restored, "correct horse battery staple");
    for secret in [token.as_str(), env.cluster.unseal_key()] {
        assert!(!step.stderr.contains(secret), "a secret in the restore log");
    }
}

/// A transit-sealed single-node source cluster with `secret/app` written, backed up by the
/// step binaries (with the canary) into `env`'s backups workspace; the config Secret's login
/// becomes the source's token (the drill and the restore log in with it). Returns the cluster
/// and the snapshot's name.
fn transit_backup(
    env: &Environment,
    kms: &vault_backup_testbed::transit::Kms,
) -> (vault_backup_testbed::transit::SealedCluster, String) {
    let source = vault_backup_testbed::transit::SealedCluster::start(1, &kms.seal_stanza(None));
    source.kv2_put("app", "k", "before-the-backup");
    let scratch = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let run = |bin: &str, vars: &[(&str, &str)]| {
        let out = std::process::Command::new(venv::workspace_bin(bin))
            .env_clear()
            .envs(vars.iter().copied())
            .output()
            .expect("run the step");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{bin}: {stderr}");
    };
    let (ws, res, bk) = (
        scratch.path().display().to_string(),
        results.path().display().to_string(),
        env.backups.display().to_string(),
    );
    run(
        "vault-snapshot",
        &[
            ("VAULT_ADDR", source.addr(0)),
            ("VAULT_TOKEN", source.root_token()),
            ("SNAPSHOT_DIR", &ws),
            ("RESULTS_DIR", &res),
            ("CANARY_PATH", e2e::CANARY_PATH),
            ("TASKRUN_NAME", "vault-backup-transit-1"),
        ],
    );
    let name = std::fs::read_to_string(results.path().join("snapshot-name")).unwrap();
    run(
        "snapshot-sync",
        &[
            ("SNAPSHOT_DIR", &ws),
            ("SNAPSHOT_NAME", &name),
            ("BACKUP_DIR", &bk),
        ],
    );
    assert_eq!(manifest(&env.backups, &name)["seal_type"], "transit");
    let secret = env.path().join("config-secret.yaml");
    let text = std::fs::read_to_string(&secret).unwrap();
    assert!(text.contains(&env.token));
    std::fs::write(&secret, text.replace(&env.token, source.root_token())).unwrap();
    (source, name)
}

/// Issue 19 must-show 2: the shipped drill Task, with an overlay that adds a transit seal stanza
/// to the scratch OpenBao's configuration and without the unseal keys Secret, restores the
/// backup of a transit-sealed cluster through the pod runner: the restored data unseals itself
/// through the KMS (reached from the pod at the test bed's host address), and the canary
/// written by the backup reads back.
#[test]
fn the_drill_task_with_a_transit_seal_overlay_and_no_unseal_keys_secret_passes() {
    // The environment first: it makes the pod network, so the KMS listens where a pod reaches.
    let env = Environment::start_with(&Setup {
        nodes: 1,
        s3: false,
        ..Setup::default()
    });
    let kms = vault_backup_testbed::transit::Kms::start();
    let (source, name) = transit_backup(&env, &kms);

    // The overlay: the shipped HCL plus the seal stanza; no unseal keys Secret at all.
    let root = venv::workspace_root();
    let hcl = env.path().join("drill-openbao-transit.hcl");
    let shipped = std::fs::read_to_string(root.join("tekton/drill-openbao.hcl")).unwrap();
    std::fs::write(&hcl, format!("{shipped}\n{}", kms.seal_stanza(None))).unwrap();
    let drill = Drill {
        task: root.join("tekton/drill-task.yaml"),
        taskrun: root.join("tekton/drill-taskrun.yaml"),
        openbao_config: hcl,
        sidecar_ready_timeout: None,
        unseal_keys_secret: false,
    };
    let outcome = env
        .run_drill_from(&drill, "vault-restore-drill-transit", known_env(), false)
        .expect("the drill Task runs as written");
    let restore = outcome.step("restore").unwrap();
    assert_eq!(
        restore.code, 0,
        "{}\n--- sidecar ---\n{}",
        restore.stderr, outcome.sidecar_logs["openbao"]
    );
    assert_eq!(outcome.results["restored-snapshot"], name);
    assert_eq!(outcome.results["canary"], "ok");
    assert!(
        restore.stderr.contains("unsealed itself"),
        "the step waited for the auto-unseal: {}",
        restore.stderr
    );
    for secret in [source.root_token(), source.recovery_key()] {
        assert!(!restore.stderr.contains(secret), "a secret in the log");
    }
}

/// Issue 19 must-show 1, the restore Task: the backup of a transit-sealed cluster restored
/// through the pod runner into a fresh cluster sealed by the same transit key (forced, confirmed
/// with the target's name) stays unsealed, and the source's secret reads back.
#[test]
fn the_restore_task_puts_a_transit_backup_into_a_fresh_transit_sealed_cluster() {
    let env = Environment::start_with(&Setup {
        nodes: 1,
        s3: false,
        ..Setup::default()
    });
    let kms = vault_backup_testbed::transit::Kms::start();
    let (source, name) = transit_backup(&env, &kms);
    let target = vault_backup_testbed::transit::SealedCluster::start(1, &kms.seal_stanza(None));
    target.kv2_put("target-only", "v", "before the restore");
    let target_secret = env.path().join("restore-target.yaml");
    std::fs::write(
        &target_secret,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-restore-target\ntype: Opaque\nstringData:\n  \
             VAULT_ADDR: \"{}\"\n  VAULT_TOKEN: \"{}\"\n",
            target.addr(0),
            target.root_token()
        ),
    )
    .unwrap();
    let target_name = target.status(0)["cluster_name"]
        .as_str()
        .expect("the target's cluster_name")
        .to_owned();
    let confirm = format!("{name}@{target_name}");
    let outcome = env
        .run_shipped(
            &Run {
                task: "tekton/restore-task.yaml",
                taskrun: "tekton/restore-taskrun.yaml",
                name: "vault-restore-transit",
                params: vec![("confirm", &confirm), ("force", "true")],
                bind: vec!["backups"],
                objects: vec![target_secret],
                ..Run::default()
            },
            known_env(),
            false,
        )
        .expect("the restore Task runs as written");
    let step = outcome.step("restore").unwrap();
    assert_eq!(step.code, 0, "{}", step.stderr);
    assert_eq!(outcome.results["restored-snapshot"], name);
    assert_eq!(
        outcome.results["sealed"], "false",
        "the same transit key unseals the restored data"
    );
    let mut got = Err(String::new());
    for _ in 0..50 {
        got = target.kv2_get(0, source.root_token(), "app", "k");
        if got.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        got.as_deref(),
        Ok("before-the-backup"),
        "the source's secret"
    );
    for secret in [
        source.root_token(),
        target.root_token(),
        source.recovery_key(),
    ] {
        assert!(!step.stderr.contains(secret), "a secret in the restore log");
    }
}
