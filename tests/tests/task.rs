//! `tekton/task.yaml` run as written, through the local step runner, against a real 3-node
//! OpenBao cluster, SeaweedFS, a directory store and the Kubernetes API stand-in; and the runner
//! refusing manifests that disagree with the binaries.

#[path = "support/known_env.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use support::known_env;
use vault_backup_testbed::e2e::{self, Environment, OLD_RUNS, PRUNE_KEEP};
use vault_backup_testbed::kube_standin::{KubeStandIn, TaskRun};
use vault_backup_testbed::runner::{self, RunError, RunSpec};
use vault_backup_testbed::venv;

#[test]
fn the_task_as_written_backs_up_to_s3_and_a_directory_restores_and_prunes() {
    let env = Environment::start();
    let started = chrono::Utc::now().timestamp();
    let outcome = env
        .run_task(known_env(), false)
        .expect("the Task runs as written");
    for step in &outcome.steps {
        assert_eq!(step.code, 0, "step {} failed:\n{}", step.name, step.stderr);
    }
    assert_eq!(
        outcome
            .steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["guard", "prune", "snapshot", "sync"]
    );
    assert_eq!(outcome.results["guard-outcome"], "clear");
    assert!(
        outcome.results["prune-outcome"].contains(&format!("deleted {}", OLD_RUNS - PRUNE_KEEP)),
        "{:?}",
        outcome.results["prune-outcome"]
    );

    let name = &outcome.results["snapshot-name"];
    let sha = &outcome.results["snapshot-sha256"];
    assert!(
        name.starts_with("vault-") && name.ends_with('Z') && !name.contains('\n'),
        "{name:?}"
    );
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sha:?}"
    );
    let bytes: u64 = outcome.results["snapshot-bytes"]
        .parse()
        .expect("snapshot-bytes is a number");
    let stores: Vec<&str> = outcome.results["synced-stores"].split(',').collect();
    assert!(
        stores.contains(&"s3") && stores.contains(&"dir"),
        "{stores:?}"
    );
    // SeaweedFS states a SHA-256 for every copy, and the directory copy is read back.
    let mut checked: Vec<&str> = outcome.results["store-verification"].split(',').collect();
    checked.sort_unstable();
    assert_eq!(checked, ["dir=sha256", "s3=sha256"]);

    // The directory store: the three files, sha256sum -c passes.
    let snap = format!("{name}.snap");
    assert_eq!(
        std::fs::metadata(env.backups.join(&snap)).unwrap().len(),
        bytes
    );
    e2e::sha256sum_check(&env.backups, &format!("{snap}.sha256"));
    // S3: downloaded with the aws CLI, sha256sum -c passes, and it restores.
    let downloaded = env.download_and_check(name, "prod/");
    let restored = env.cluster.restore_into_fresh_node_and_read(
        &downloaded.join(&snap),
        "secret/db",
        "password",
    );
    assert_eq!(restored, "correct horse battery staple");

    // Prune: the newest PRUNE_KEEP finished runs stay, the running one (this run) stays.
    let deletions = env.kube.deletions();
    assert_eq!(deletions.len(), OLD_RUNS - PRUNE_KEEP, "{deletions:?}");
    let left = env.kube.taskruns();
    assert!(
        left.contains(&env.task_run_name),
        "the current run is never pruned: {left:?}"
    );
    for keep in 0..PRUNE_KEEP {
        assert!(
            left.contains(&format!("vault-backup-old-{keep:02}")),
            "newest runs stay: {left:?}"
        );
    }
    let prune_log = &outcome.step("prune").unwrap().stderr;
    assert!(!prune_log.contains(env.kube.token()), "no token in logs");

    // What the steps pushed to the real Pushgateway is what the run did.
    check_pushed_metrics(&env, started, bytes, &snap);
}

/// The metrics the backup's steps pushed to the real Pushgateway equal what the run did:
/// timestamps within the run, the `.snap` size, the manifest's raft index, one store series per
/// configured store, and the stand-in's deletions.
fn check_pushed_metrics(env: &Environment, started: i64, bytes: u64, snap: &str) {
    let ended = chrono::Utc::now().timestamp();
    let gateway = env.pushgateway.as_ref().expect("the run pushes metrics");
    let series = gateway.metrics("vault_backup_");
    let one = |name: &str, step: &str| -> f64 {
        let found: Vec<_> = series
            .iter()
            .filter(|s| {
                s.name == name && s.label("step") == step && s.label("task") == "vault-backup"
            })
            .collect();
        assert_eq!(found.len(), 1, "one {name} of {step}: {series:#?}");
        found[0].value
    };
    // Counts and sizes are whole numbers well inside f64's exact range.
    #[allow(clippy::cast_precision_loss)]
    let same = |pushed: f64, expected: u64| (pushed - expected as f64).abs() < 0.5;
    #[allow(clippy::cast_precision_loss)]
    let within = |t: f64| (started as f64 - 1.0..=ended as f64 + 1.0).contains(&t);
    for step in ["vault-snapshot", "snapshot-sync", "taskrun-prune"] {
        let at = one("vault_backup_last_success_timestamp_seconds", step);
        assert!(
            within(at),
            "{step} succeeded at {at}, within the run {started}..{ended}"
        );
        assert!(
            same(one("vault_backup_last_run_exit_code", step), 0),
            "{step}"
        );
    }
    assert!(same(
        one("vault_backup_snapshot_bytes", "vault-snapshot"),
        bytes
    ));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.backups.join(format!("{snap}.json"))).unwrap())
            .unwrap();
    let index = manifest["raft_index"].as_u64().unwrap();
    assert!(same(
        one("vault_backup_snapshot_raft_index", "vault-snapshot"),
        index
    ));
    let mut stores: Vec<&str> = series
        .iter()
        .filter(|s| s.name == "vault_backup_store_last_success_timestamp_seconds")
        .map(|s| {
            assert!(within(s.value), "{s:?}");
            s.label("store")
        })
        .collect();
    stores.sort_unstable();
    assert_eq!(
        stores,
        ["dir", "s3"],
        "one store series per configured store"
    );
    let deleted = u64::try_from(env.kube.deletions().len()).unwrap();
    assert!(same(
        one("vault_backup_taskruns_deleted", "taskrun-prune"),
        deleted
    ));
}

/// A spec whose Vault does not exist: enough for the checks made before a step talks to anyone,
/// and for a binary to reject its configuration. The guard and prune steps get a Kubernetes API
/// stand-in holding only this run, so they pass and the snapshot step is reached.
fn offline_spec(task_file: PathBuf, dir: &Path, kube: &KubeStandIn) -> RunSpec {
    let secret = dir.join("config.yaml");
    std::fs::write(
        &secret,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-backup-config\nstringData:\n  \
         VAULT_ADDR: http://127.0.0.1:9\n  VAULT_TOKEN: s.none\n  SNAPSHOT_RETRIES: \"0\"\n",
    )
    .unwrap();
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    RunSpec {
        task_file,
        workspaces: BTreeMap::from([("scratch".to_owned(), scratch)]),
        objects: vec![secret],
        bin_dir: venv::workspace_bin("vault-snapshot")
            .parent()
            .unwrap()
            .to_owned(),
        known_env: known_env(),
        task_run_name: "run-1".into(),
        namespace: kube.namespace().into(),
        kubeconfig: Some(kube.kubeconfig_path().to_owned()),
        results_dir: dir.join("results"),
        ..RunSpec::default()
    }
}

fn standin() -> KubeStandIn {
    // The pod network first, so the stand-in listens where the runner's pods reach it.
    vault_backup_testbed::podnet::network();
    let kube = KubeStandIn::start_in("ns");
    kube.add_taskrun(&TaskRun::new("run-1").task("vault-backup").running());
    kube
}

fn task_with(dir: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(venv::workspace_root().join("tekton/task.yaml")).unwrap();
    assert!(
        text.contains(from),
        "task.yaml no longer contains {from:?}; update this test"
    );
    let n = std::fs::read_dir(dir).unwrap().count();
    let file = dir.join(format!("task-{n}.yaml"));
    std::fs::write(&file, text.replacen(from, to, 1)).unwrap();
    file
}

#[test]
fn the_runner_refuses_a_task_that_disagrees_with_the_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(PathBuf, &str)> = vec![
        // A misspelt variable no binary reads.
        (
            task_with(d, "- name: SNAPSHOT_DIR\n", "- name: SNAPSHOT_DIRECTORY\n"),
            "env SNAPSHOT_DIRECTORY is not read by vault-snapshot",
        ),
        // A result the Task does not declare.
        (
            task_with(
                d,
                "$(results.snapshot-name.path)",
                "$(results.snapshot-id.path)",
            ),
            "cannot resolve $(results.snapshot-id.path)",
        ),
        // A param that does not exist.
        (
            task_with(d, "$(params.syncImage)", "$(params.sinkImage)"),
            "cannot resolve $(params.sinkImage)",
        ),
        // A command that is not the image's binary.
        (
            task_with(
                d,
                "[\"/usr/local/bin/vault-snapshot\"]",
                "[\"/usr/local/bin/vault-snap\"]",
            ),
            "is not the image's binary vault-snapshot",
        ),
        // An untagged image.
        (
            task_with(d, "vault-snapshot:0.1.0", "vault-snapshot"),
            "has no tag",
        ),
        // A variable the binary requires, missing from the YAML: the binary says so (exit 2).
        (
            task_with(
                d,
                "        - name: SNAPSHOT_DIR\n          value: $(workspaces.scratch.path)\n",
                "",
            ),
            "vault-snapshot rejected its configuration (exit 2)",
        ),
    ];
    let kube = standin();
    for (file, want) in cases {
        let text = std::fs::read_to_string(&file).unwrap();
        let err = runner::run(&offline_spec(file, d, &kube))
            .map(|o| o.steps)
            .expect_err(want);
        let msg = err.to_string();
        assert!(
            msg.contains(want),
            "want {want:?} in {msg:?}\n--- task ---\n{text}"
        );
        if want.contains("exit 2") {
            assert!(
                matches!(err, RunError::Config { .. }) && msg.contains("SNAPSHOT_DIR"),
                "{msg}"
            );
        }
    }
}

#[test]
fn the_shipped_taskrun_fits_the_task_and_a_wrong_task_ref_is_refused() {
    let root = venv::workspace_root();
    let taskrun = runner::read_taskrun(&root.join("tekton/taskrun.yaml")).unwrap();
    assert_eq!(taskrun.task_ref, "vault-backup");
    assert_eq!(taskrun.workspaces, ["scratch", "backups"]);
    let dir = tempfile::tempdir().unwrap();
    let kube = standin();
    let mut spec = offline_spec(root.join("tekton/task.yaml"), dir.path(), &kube);
    spec.params = taskrun.params;
    spec.task_ref = Some("vault-backups".into());
    let err = runner::run(&spec).map(|o| o.steps).unwrap_err();
    assert!(
        err.to_string()
            .contains("refers to Task vault-backups, but the Task is named vault-backup"),
        "{err}"
    );
}

#[test]
fn every_key_of_the_example_config_secret_is_read_by_a_step() {
    let text =
        std::fs::read_to_string(venv::workspace_root().join("tekton/config-secret.example.yaml"))
            .unwrap();
    let known: Vec<String> = known_env().into_values().flatten().collect();
    let mut keys = 0;
    for line in text.lines() {
        let line = line.trim_start_matches([' ', '#']);
        let Some((key, _)) = line.split_once(':') else {
            continue;
        };
        if key.len() > 3
            && key
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            keys += 1;
            assert!(
                known.contains(&key.to_owned()),
                "config-secret.example.yaml has {key}, which no step reads"
            );
        }
    }
    assert!(keys > 20, "found only {keys} keys");
}

/// A Task with an OpenBao sidecar and one step that talks to it.
const SIDECAR_TASK: &str = r#"apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: sidecar-check
spec:
  workspaces:
    - name: scratch
  volumes:
    - name: bao-config
      configMap:
        name: scratch-openbao
    - name: bao-data
      emptyDir: {}
  sidecars:
    - name: openbao
      image: quay.io/openbao/openbao:2.4.1
      command: ["bao", "server", "-config=/openbao/config/config.hcl"]
      ports:
        - containerPort: 8200
        - containerPort: 8201
      readinessProbe:
        tcpSocket:
          port: 8200
        periodSeconds: 1
      volumeMounts:
        - name: bao-config
          mountPath: /openbao/config
        - name: bao-data
          mountPath: /openbao/data
  steps:
    - name: snapshot
      image: ghcr.io/vault-backup/vault-snapshot:0.1.0
      command: ["/usr/local/bin/vault-snapshot"]
      env:
        - name: VAULT_ADDR
          value: http://127.0.0.1:8200
        - name: VAULT_TOKEN
          value: s.none
        - name: SNAPSHOT_RETRIES
          value: "0"
        - name: SNAPSHOT_DIR
          value: $(workspaces.scratch.path)
"#;

/// The sidecar's configuration: raft on the emptyDir, listening on every address of the pod (its
/// loopback, where the step talks to it, and its IP, where the kubelet probes it).
const SIDECAR_CONFIGMAP: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: scratch-openbao
data:
  config.hcl: |
    storage "raft" {
      path    = "/openbao/data"
      node_id = "scratch"
    }
    listener "tcp" {
      address         = "0.0.0.0:8200"
      cluster_address = "0.0.0.0:8201"
      tls_disable     = true
    }
    api_addr      = "http://127.0.0.1:8200"
    cluster_addr  = "http://127.0.0.1:8201"
"#;

/// A Task with an OpenBao sidecar (configuration from a ConfigMap, raft data on an emptyDir,
/// listening on port 8200 of the pod) and a step that talks to it: the runner starts the sidecar
/// from the mounted configuration, its probe sees it Ready at the pod IP, and the step reaches it
/// at 127.0.0.1:8200, the pod's own loopback, with nothing rewritten (a fresh, uninitialized
/// server, so the snapshot step is refused, and says so).
#[test]
fn the_runner_starts_sidecars_from_their_mounted_configuration_on_the_pods_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let task = d.join("task.yaml");
    std::fs::write(&task, SIDECAR_TASK).unwrap();
    let config = d.join("configmap.yaml");
    std::fs::write(&config, SIDECAR_CONFIGMAP).unwrap();
    let kube = standin();
    let mut spec = offline_spec(task, d, &kube);
    spec.objects.push(config);
    let outcome = runner::run(&spec).expect("the Task runs");
    let step = outcome.step("snapshot").unwrap();
    assert_eq!(step.code, 1, "{}", step.stderr);
    assert!(
        step.stderr.contains("127.0.0.1:8200"),
        "the step reached the sidecar on the pod's loopback:\n{}",
        step.stderr
    );
    assert!(
        step.stderr.to_lowercase().contains("sealed")
            || step.stderr.to_lowercase().contains("initialized"),
        "the fresh server answered:\n{}",
        step.stderr
    );
    let log = &outcome.sidecar_logs["openbao"];
    assert!(log.contains("OpenBao server started"), "{log}");
    assert!(
        d.join("volumes/bao-data/raft").exists() || d.join("volumes/bao-data/vault.db").exists(),
        "raft data went to the emptyDir's local directory"
    );
}

/// Issue 18 must-show 5: monitoring never stops a backup. `METRICS_BEARER_TOKEN_FILE` names a
/// file in the metrics Secret's volume, and that optional Secret does not exist: every step
/// still does its work and exits 0, each with exactly one warning that its metrics were not
/// pushed, and nothing reaches the Pushgateway.
#[test]
fn a_missing_metrics_token_file_costs_each_step_one_warning_and_the_backup_succeeds() {
    let env = Environment::start();
    let secret = env.path().join("config-secret.yaml");
    let mut text = std::fs::read_to_string(&secret).unwrap();
    text.push_str("  METRICS_BEARER_TOKEN_FILE: \"/etc/vault-backup/metrics/token\"\n");
    std::fs::write(&secret, text).unwrap();

    let outcome = env
        .run_task(known_env(), false)
        .expect("the Task runs as written");
    assert!(outcome.succeeded(), "{:?}", outcome.steps);
    assert_eq!(outcome.steps.len(), 4, "guard, snapshot, sync, prune");
    for step in &outcome.steps {
        assert_eq!(step.code, 0, "step {} failed:\n{}", step.name, step.stderr);
        let warnings: Vec<&str> = step.stderr.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(
            warnings.len(),
            1,
            "step {}: one warning, got {warnings:#?}",
            step.name
        );
        assert!(
            warnings[0].contains("metrics not pushed")
                && warnings[0].contains("METRICS_BEARER_TOKEN_FILE"),
            "step {}: {}",
            step.name,
            warnings[0]
        );
    }
    let name = &outcome.results["snapshot-name"];
    e2e::sha256sum_check(&env.backups, &format!("{name}.snap.sha256"));
    let pushed = env
        .pushgateway
        .as_ref()
        .expect("the setup has a Pushgateway")
        .metrics("vault_backup_");
    assert!(pushed.is_empty(), "nothing was pushed: {pushed:?}");
}
