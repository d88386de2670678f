//! The recover Task as written, through the step runner with the pod model of the drill: the
//! backup Task writes a snapshot into the directory store, secrets change afterwards, and
//! `tekton/recover-task.yaml` with the params of `tekton/recover-taskrun.yaml` (a dry run as
//! shipped, then with `dryRun=false`) brings a folder of KV v2 secrets back through its own
//! loopback-only OpenBao sidecar (`tekton/recover-openbao.hcl`, the ConfigMap kustomize makes
//! of it), with a login that holds only `tekton/vault-recover-policy.hcl`.

#[path = "support/known_env.rs"]
mod support;

use serde_json::Value;
use support::known_env;
use vault_backup_testbed::e2e::{Environment, Run, Setup};
use vault_backup_testbed::venv;

const DB_V1: &str = "db-v1-Rk82";
const DB_V2: &str = "db-v2-Lm47";
const API_KEY: &str = "api-Qw19";
const NEW_VALUE: &str = "new-Pz63";

/// `text` indented by four spaces, line by line (a YAML block scalar's body).
fn indent(text: &str) -> String {
    text.lines().fold(String::new(), |mut out, l| {
        out.push_str("    ");
        out.push_str(l);
        out.push('\n');
        out
    })
}

/// `kv get -format=json` on the environment's cluster: the data and version, or `None`.
fn get(env: &Environment, path: &str) -> Option<(Value, u64)> {
    let out = env
        .cluster
        .try_bao(0, &["kv", "get", "-format=json", path])
        .ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    let data = v["data"]["data"].clone();
    (!data.is_null()).then(|| (data, v["data"]["metadata"]["version"].as_u64().unwrap()))
}

// One story, in the order a person would live it (backup, changes, dry run, recovery); split,
// each part would repeat the setup.
#[allow(clippy::too_many_lines)]
#[test]
fn the_recover_task_brings_a_folder_back_through_its_sidecar_after_a_dry_run() {
    let env = Environment::start_with(&Setup {
        nodes: 1,
        s3: false,
        ..Setup::default()
    });
    let c = &env.cluster;
    // The environment's secret/ is KV v1; the recovery's secrets live in a KV v2 mount.
    c.bao(0, &["secrets", "enable", "-path=kv", "kv-v2"]);
    let mut ready = false;
    for _ in 0..40 {
        if c.try_bao(0, &["kv", "put", "kv/app/db", &format!("password={DB_V1}")])
            .is_ok()
        {
            ready = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(ready, "the KV v2 mount upgrades");
    c.bao(0, &["kv", "put", "kv/app/api", &format!("key={API_KEY}")]);
    let backup = env
        .run_task(known_env(), false)
        .expect("the backup Task runs");
    assert!(backup.succeeded(), "{:?}", backup.steps);
    let name = backup.results["snapshot-name"].clone();
    c.bao(0, &["kv", "put", "kv/app/db", &format!("password={DB_V2}")]);
    c.bao(0, &["kv", "delete", "kv/app/api"]);
    c.bao(0, &["kv", "put", "kv/app/new", &format!("k={NEW_VALUE}")]);

    // The recover login: the shipped policy, for this mount ("repeat both blocks for another
    // mount", as the policy file says).
    let root = venv::workspace_root();
    let policy = std::fs::read_to_string(root.join("tekton/vault-recover-policy.hcl"))
        .unwrap()
        .replace("\"secret/", "\"kv/");
    let token = c.token_with_policy("vault-recover", &policy);
    let dir = env.path();
    let target = dir.join("recover-target.yaml");
    std::fs::write(
        &target,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-recover-target\ntype: Opaque\nstringData:\n  \
             VAULT_ADDR: \"{}\"\n  VAULT_TOKEN: \"{token}\"\n",
            c.addr(0)
        ),
    )
    .unwrap();
    let hcl = std::fs::read_to_string(root.join("tekton/recover-openbao.hcl")).unwrap();
    let config = dir.join("recover-openbao.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: vault-recover-openbao\ndata:\n  config.hcl: |\n{}",
            indent(&hcl)
        ),
    )
    .unwrap();
    let unseal = dir.join("unseal.yaml");
    std::fs::write(
        &unseal,
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: vault-restore-drill-unseal\ntype: Opaque\nstringData:\n  keys: \"{}\"\n",
            c.unseal_key()
        ),
    )
    .unwrap();
    let run = |run_name: &str, extra: Vec<(&'static str, &'static str)>| {
        let mut params = vec![("paths", "kv/app/"), ("confirm", name.as_str())];
        params.extend(extra);
        env.run_shipped(
            &Run {
                task: "tekton/recover-task.yaml",
                taskrun: "tekton/recover-taskrun.yaml",
                name: run_name,
                params,
                objects: vec![target.clone(), config.clone(), unseal.clone()],
                ..Run::default()
            },
            known_env(),
            false,
        )
        .expect("the recover Task runs as written")
    };
    let secrets = [
        DB_V1,
        DB_V2,
        API_KEY,
        NEW_VALUE,
        c.unseal_key(),
        c.root_token(),
        token.as_str(),
        env.token.as_str(),
    ];

    // As shipped, the TaskRun is a dry run: both reported, nothing written.
    let dry = run("vault-recover-dry", vec![]);
    let step = dry.step("recover").unwrap();
    assert_eq!(
        step.code, 0,
        "{}\n--- sidecar ---\n{}",
        step.stderr, dry.sidecar_logs["openbao"]
    );
    for path in ["kv/app/db", "kv/app/api"] {
        assert!(
            step.stderr
                .lines()
                .any(|l| l.contains("would recover") && l.contains(&format!("path={path} "))),
            "{path}: {}",
            step.stderr
        );
    }
    assert_eq!(dry.results["recovered-paths"], "");
    assert_eq!(dry.results["restored-snapshot"], name);
    assert_eq!(
        get(&env, "kv/app/db"),
        Some((serde_json::json!({"password": DB_V2}), 2))
    );
    assert_eq!(get(&env, "kv/app/api"), None, "still deleted");
    let mut outputs = vec![step.stderr.clone(), format!("{:?}", dry.results)];

    // The recovery.
    let done = run("vault-recover-run", vec![("dryRun", "false")]);
    let step = done.step("recover").unwrap();
    assert_eq!(
        step.code, 0,
        "{}\n--- sidecar ---\n{}",
        step.stderr, done.sidecar_logs["openbao"]
    );
    assert_eq!(done.results["recovered-paths"], "kv/app/api,kv/app/db");
    assert_eq!(done.results["unchanged-paths"], "");
    assert_eq!(
        get(&env, "kv/app/db"),
        Some((serde_json::json!({"password": DB_V1}), 3)),
        "a new version equal to the backup's"
    );
    assert_eq!(
        get(&env, "kv/app/api"),
        Some((serde_json::json!({"key": API_KEY}), 2)),
        "back"
    );
    assert_eq!(
        get(&env, "kv/app/new"),
        Some((serde_json::json!({"k": NEW_VALUE}), 1)),
        "a secret written after the backup stays"
    );
    assert!(
        step.stderr.contains("scratch root token revoked"),
        "{}",
        step.stderr
    );
    outputs.push(step.stderr.clone());
    outputs.push(format!("{:?}", done.results));
    // The recovery pushed its outcome under its own Task, and the Pushgateway holds no value.
    let pushgateway = env.pushgateway.as_ref().expect("the setup's Pushgateway");
    let pushed = pushgateway.metrics("vault_backup_");
    assert!(
        pushed
            .iter()
            .any(|m| m.name == "vault_backup_last_success_timestamp_seconds"
                && m.label("task") == "vault-recover"),
        "{pushed:?}"
    );
    outputs.push(pushgateway.get("/metrics").1);
    for text in &outputs {
        for secret in secrets {
            assert!(!text.contains(secret), "a secret in the output: {text}");
        }
    }
}
