//! The Task as a real cluster meets it, through the step runner: the example config Secret as
//! shipped against a PVC only, a private CA from the CA ConfigMap, prune running first and never
//! failing the backup, a second run stopped by the guard, the OpenShift overlay, and each step
//! given only its own keys of the config Secret.

#[path = "support/known_env.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::Command;

use chrono::{TimeDelta, Utc};
use serde_json::Value;
use support::known_env;
use vault_backup_testbed::e2e::{self, ConfigSource, Environment, OLD_RUNS, PRUNE_KEEP, Setup};
use vault_backup_testbed::kube_standin::TaskRun;
use vault_backup_testbed::runner::RunError;
use vault_backup_testbed::venv;

fn step_names(outcome: &vault_backup_testbed::runner::Outcome) -> Vec<&str> {
    outcome.steps.iter().map(|s| s.name.as_str()).collect()
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_example_config_secret_as_shipped_backs_up_to_a_pvc_only_and_a_failed_prune_fails_nothing() {
    let env = Environment::start_with(&Setup {
        nodes: 1,
        s3: false,
        config: ConfigSource::Example,
        ..Setup::default()
    });
    // A delete the API refuses: the prune step fails, the backup does not.
    env.kube.fail_delete("vault-backup-old-11");
    let outcome = env
        .run_task(known_env(), false)
        .expect("the Task runs as written");
    assert_eq!(step_names(&outcome), ["guard", "prune", "snapshot", "sync"]);
    let prune = outcome.step("prune").unwrap();
    assert_eq!(
        prune.code, 1,
        "the refused delete fails the prune step:\n{}",
        prune.stderr
    );
    assert!(prune.continues_on_error);
    for name in ["guard", "snapshot", "sync"] {
        let step = outcome.step(name).unwrap();
        assert_eq!(step.code, 0, "step {name} failed:\n{}", step.stderr);
    }
    assert!(
        outcome.succeeded(),
        "a failed prune does not fail the TaskRun"
    );
    assert!(
        outcome.results["prune-outcome"].starts_with("failed"),
        "{:?}",
        outcome.results["prune-outcome"]
    );
    assert_eq!(outcome.results["synced-stores"], "dir");
    let name = &outcome.results["snapshot-name"];
    e2e::sha256sum_check(&env.backups, &format!("{name}.snap.sha256"));
    let restored = env.cluster.restore_into_fresh_node_and_read(
        &env.backups.join(format!("{name}.snap")),
        "secret/db",
        "password",
    );
    assert_eq!(restored, "correct horse battery staple");
    for step in &outcome.steps {
        assert!(
            !step.stderr.contains(&env.token),
            "no token in the {} log",
            step.name
        );
    }
}

#[test]
fn a_ca_configmap_lets_the_task_trust_openbao_over_tls_and_without_it_the_step_says_so() {
    let mut env = Environment::start_with(&Setup {
        nodes: 1,
        tls: true,
        s3: false,
        ..Setup::default()
    });
    assert!(env.cluster.addr(0).starts_with("https://"));
    let outcome = env
        .run_task(known_env(), false)
        .expect("the Task runs as written");
    for step in &outcome.steps {
        assert_eq!(step.code, 0, "step {} failed:\n{}", step.name, step.stderr);
    }
    let name = &outcome.results["snapshot-name"];
    e2e::sha256sum_check(&env.backups, &format!("{name}.snap.sha256"));

    // The same run without the ConfigMap (optional, so the pod starts): VAULT_CACERT names a
    // file that is not there, and the snapshot step refuses its configuration. The first run
    // has finished by then, and the second is in the stand-in, so the guard lets it through.
    env.objects.retain(|o| !o.ends_with("ca-configmap.yaml"));
    let now = Utc::now();
    env.kube.add_taskrun(
        &TaskRun::new(&env.task_run_name)
            .task("vault-backup")
            .created(Some(now - TimeDelta::minutes(1)))
            .succeeded(Some(now)),
    );
    env.kube.add_taskrun(
        &TaskRun::new("vault-backup-no-ca")
            .task("vault-backup")
            .running(),
    );
    let err = env
        .run_task_as("vault-backup-no-ca", known_env(), false)
        .map(|o| o.steps)
        .expect_err("VAULT_CACERT points at a missing file");
    assert!(
        matches!(&err, RunError::Config { step, .. } if step == "snapshot")
            && err.to_string().contains("VAULT_CACERT"),
        "{err}"
    );
}

#[test]
fn a_failing_snapshot_still_lets_the_prune_step_run_first_and_prune() {
    let env = Environment::start_with(&Setup {
        nodes: 1,
        s3: false,
        // Nothing listens on port 9: every attempt fails.
        config: ConfigSource::Generated {
            vault_addr: Some("http://127.0.0.1:9".into()),
        },
        ..Setup::default()
    });
    let outcome = env
        .run_task(known_env(), false)
        .expect("the Task runs as written");
    assert_eq!(step_names(&outcome), ["guard", "prune", "snapshot"]);
    assert_eq!(outcome.step("prune").unwrap().code, 0);
    assert_eq!(outcome.step("snapshot").unwrap().code, 1);
    assert!(!outcome.succeeded());
    assert_eq!(env.kube.deletions().len(), OLD_RUNS - PRUNE_KEEP);
    let pruned = &outcome.results["prune-outcome"];
    assert!(
        pruned.contains(&format!("deleted {}", OLD_RUNS - PRUNE_KEEP)),
        "{pruned:?}"
    );
    assert!(files_in(&env.backups).is_empty());
}

#[test]
fn a_second_run_stops_while_another_is_running_and_deletes_nothing() {
    let env = Environment::start_with(&Setup {
        nodes: 1,
        ..Setup::default()
    });
    let earlier = "vault-backup-manual-x7k2p";
    env.kube.add_taskrun(
        &TaskRun::new(earlier)
            .task("vault-backup")
            .created(Some(Utc::now() - TimeDelta::minutes(3)))
            .running(),
    );
    let outcome = env
        .run_task(known_env(), false)
        .expect("the Task runs as written");
    assert_eq!(
        step_names(&outcome),
        ["guard"],
        "nothing runs after the guard"
    );
    let guard = outcome.step("guard").unwrap();
    assert_eq!(guard.code, 1, "{}", guard.stderr);
    assert!(
        guard.stderr.contains(earlier),
        "names the running one:\n{}",
        guard.stderr
    );
    assert!(
        outcome.results["guard-outcome"].contains(earlier),
        "{:?}",
        outcome.results
    );
    assert!(env.kube.deletions().is_empty(), "no TaskRun deleted");
    assert!(files_in(&env.scratch).is_empty(), "no snapshot taken");
    assert!(files_in(&env.backups).is_empty(), "nothing copied");
    assert!(env.s3().keys("").is_empty(), "nothing uploaded");

    // The earlier run is not stopped by this later one: its guard lets it through.
    let outcome = env
        .run_task_as(earlier, known_env(), false)
        .expect("the Task runs as written");
    for step in &outcome.steps {
        assert_eq!(step.code, 0, "step {} failed:\n{}", step.name, step.stderr);
    }
    assert_eq!(outcome.results["guard-outcome"], "clear");
}

fn kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new(venv::bin("kubectl"))
        .args(["kustomize", dir])
        .current_dir(venv::workspace_root())
        .output()
        .expect("kubectl from the test bed (make testbed)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::Deserializer::from_slice(&out.stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn the_openshift_overlay_grants_nonroot_v2_to_both_service_accounts() {
    let docs = kustomize("openshift");
    let of_kind =
        |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };
    let accounts: BTreeSet<&str> = of_kind("ServiceAccount")
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    // The accounts the TaskRun and the CronJob's pods run as.
    let taskrun: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(venv::workspace_root().join("tekton/taskrun.yaml")).unwrap(),
    )
    .unwrap();
    let cronjob = of_kind("CronJob")[0];
    let users = [
        taskrun["spec"]["serviceAccountName"].as_str().unwrap(),
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap(),
    ];
    let roles: Vec<&str> = of_kind("Role")
        .into_iter()
        .filter(|r| {
            r["rules"].as_array().unwrap().iter().any(|rule| {
                rule["apiGroups"][0] == "security.openshift.io"
                    && rule["resources"][0] == "securitycontextconstraints"
                    && rule["resourceNames"] == serde_json::json!(["nonroot-v2"])
                    && rule["verbs"] == serde_json::json!(["use"])
            })
        })
        .filter_map(|r| r["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        roles.len(),
        1,
        "one Role allows use of nonroot-v2: {roles:?}"
    );
    for user in users {
        assert!(
            accounts.contains(user),
            "the overlay creates {user}: {accounts:?}"
        );
        let bound = of_kind("RoleBinding").into_iter().any(|b| {
            b["roleRef"]["name"] == roles[0]
                && b["subjects"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["kind"] == "ServiceAccount" && s["name"] == user)
        });
        assert!(bound, "{user} may use nonroot-v2");
    }
    // Vanilla Kubernetes keeps working as before: the plain kustomizations build too.
    assert!(!kustomize("tekton").is_empty());
    assert!(!kustomize("cronjob").is_empty());
}

fn task_yaml() -> Value {
    serde_yaml_ng::from_str(
        &std::fs::read_to_string(venv::workspace_root().join("tekton/task.yaml")).unwrap(),
    )
    .unwrap()
}

#[test]
fn each_step_gets_only_the_config_keys_it_reads_and_credentials_go_to_one_step_each() {
    let task = task_yaml();
    let spec = &task["spec"];
    let no_config_env_from = |v: &Value| {
        v["envFrom"].as_array().into_iter().flatten().all(|e| {
            e["secretRef"]["name"] != "$(params.configSecret)"
                && e["configMapRef"]["name"] != "$(params.configSecret)"
        })
    };
    assert!(
        no_config_env_from(&spec["stepTemplate"]),
        "no envFrom of the whole config Secret"
    );
    let known = known_env();
    for step in spec["steps"].as_array().unwrap() {
        let name = step["name"].as_str().unwrap();
        assert!(
            no_config_env_from(step),
            "step {name} takes the whole config Secret"
        );
        let binary = step["image"]
            .as_str()
            .unwrap()
            .replace("$(params.", "")
            .replace("Image)", "");
        let binary = match binary.as_str() {
            "snapshot" => "vault-snapshot",
            "sync" => "snapshot-sync",
            "prune" => "taskrun-prune",
            other => panic!("step {name}: unexpected image param {other}"),
        };
        let keys: Vec<&str> = step["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["valueFrom"]["secretKeyRef"]["name"] == "$(params.configSecret)")
            .map(|e| {
                assert_eq!(e["valueFrom"]["secretKeyRef"]["optional"], true, "{e}");
                assert_eq!(e["name"], e["valueFrom"]["secretKeyRef"]["key"], "{e}");
                e["name"].as_str().unwrap()
            })
            .collect();
        for key in &keys {
            assert!(
                known[binary].contains(*key),
                "step {name} is given {key}, which {binary} does not read"
            );
        }
        let vault_login = ["VAULT_TOKEN", "VAULT_SECRET_ID", "VAULT_ROLE_ID"];
        let s3_keys = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
        assert_eq!(
            vault_login.iter().any(|k| keys.contains(k)),
            name == "snapshot",
            "step {name}: Vault credentials go to the snapshot step only"
        );
        assert_eq!(
            s3_keys.iter().any(|k| keys.contains(k)),
            name == "sync",
            "step {name}: S3 keys go to the sync step only"
        );
    }
}

#[test]
fn the_run_template_sets_a_timeout_and_the_images_and_the_guard_never_continues_on_error() {
    let text = std::fs::read_to_string(venv::workspace_root().join("tekton/taskrun.yaml")).unwrap();
    let run: Value = serde_yaml_ng::from_str(&text).unwrap();
    let timeout = run["spec"]["timeout"].as_str().expect("a timeout");
    let secs = humantime::parse_duration(timeout).expect("a Go duration humantime reads");
    assert!(
        secs.as_secs() >= 45 * 60,
        "room for the snapshot step's retries: {timeout}"
    );
    let params: Vec<&str> = run["spec"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for image in ["snapshotImage", "syncImage", "pruneImage"] {
        assert!(params.contains(&image), "the TaskRun sets {image}");
    }
    assert!(
        text.contains("S3 only: delete these three lines"),
        "the template shows the S3-only form"
    );
    let task = task_yaml();
    let steps = task["spec"]["steps"].as_array().unwrap();
    assert_eq!(steps[0]["name"], "guard");
    assert!(steps[0].get("onError").is_none());
    assert_eq!(steps[1]["name"], "prune");
    assert_eq!(steps[1]["onError"], "continue");
}
