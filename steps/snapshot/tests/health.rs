//! The cluster's health before the snapshot, against real OpenBao and a real Pushgateway: a
//! 3-node cluster with one voter stopped is backed up all the same, with one warning, its state
//! in the manifest and its gauges pushed; a policy without the autopilot path gives one warning
//! and a manifest that says the health is unknown.

#![allow(clippy::float_cmp, clippy::case_sensitive_file_extension_comparisons)]

mod common;

use std::time::Duration;

use common::{files, run_bin, sha256sum_check, shipped_policy};
use serde_json::Value;
use vault_backup_testbed::openbao::{Cluster, Options};
use vault_backup_testbed::process::wait_until;
use vault_backup_testbed::pushgateway::Pushgateway;

const STEP: &str = "vault-snapshot";

/// The stanza of the shipped policy that allows the health read.
const AUTOPILOT: &str = r#"path "sys/storage/raft/autopilot/state" {
  capabilities = ["read"]
}
"#;

/// The shipped policy less its (optional) autopilot stanza: what a user who left it out has.
fn policy_without_autopilot() -> String {
    let shipped = shipped_policy();
    assert!(
        shipped.contains(AUTOPILOT),
        "the shipped policy reads autopilot"
    );
    shipped.replace(AUTOPILOT, "")
}

fn manifest(dir: &std::path::Path) -> Value {
    let json = files(dir)
        .into_iter()
        .find(|f| f.ends_with(".snap.json"))
        .expect("a manifest");
    serde_json::from_slice(&std::fs::read(dir.join(json)).unwrap()).unwrap()
}

fn warnings(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(" WARN ")).collect()
}

#[test]
fn a_cluster_with_a_voter_down_is_backed_up_with_one_warning_and_its_state_recorded() {
    let mut cluster = Cluster::start(3, Options::default());
    cluster.write_secret("secret/app", &[("k", "v")]);
    let leader = cluster.leader().expect("a leader");
    let autopilot = |cluster: &Cluster| {
        cluster
            .try_bao(
                leader,
                &["read", "-format=json", "sys/storage/raft/autopilot/state"],
            )
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .map_or(Value::Null, |v| v["data"].clone())
    };
    // Autopilot's state lags the raft configuration by a few seconds.
    wait_until(
        "autopilot to list three healthy voters",
        Duration::from_secs(120),
        || {
            let a = autopilot(&cluster);
            a["healthy"] == true && a["voters"].as_array().is_some_and(|v| v.len() == 3)
        },
    );
    let pg = Pushgateway::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();

    // Healthy first: no warning, failure tolerance 1, three voters.
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", cluster.addr(leader)),
        ("VAULT_TOKEN", cluster.root_token()),
        ("SNAPSHOT_DIR", &d),
        ("METRICS_PUSHGATEWAY_URL", &pg.url()),
    ]);
    eprintln!("{stderr}");
    assert_eq!(code, 0, "{stderr}");
    assert!(warnings(&stderr).is_empty(), "{stderr}");
    let m = manifest(dir.path());
    assert_eq!(m["health"]["status"], "healthy", "{m}");
    assert_eq!(m["health"]["failure_tolerance"], 1, "{m}");
    assert_eq!(pg.value("vault_backup_cluster_healthy", STEP), Some(1.0));
    assert_eq!(
        pg.value("vault_backup_cluster_failure_tolerance", STEP),
        Some(1.0)
    );

    // Autopilot calls a server unhealthy once it has not been heard from for this long
    // (10 s by default); set after the healthy run, which a loaded machine could make flaky.
    cluster.bao(
        leader,
        &[
            "operator",
            "raft",
            "autopilot",
            "set-config",
            "-last-contact-threshold=2s",
        ],
    );
    let down = cluster.standby();
    cluster.kill(down);
    wait_until(
        "autopilot to see the stopped voter",
        Duration::from_secs(60),
        || autopilot(&cluster)["healthy"] == false,
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", cluster.addr(leader)),
        ("VAULT_TOKEN", cluster.root_token()),
        ("SNAPSHOT_DIR", &d),
        ("METRICS_PUSHGATEWAY_URL", &pg.url()),
    ]);
    eprintln!("{stderr}");
    assert_eq!(code, 0, "{stderr}");
    let warned = warnings(&stderr);
    assert_eq!(warned.len(), 1, "exactly one warning: {stderr}");
    assert!(
        warned[0].contains("the cluster is degraded")
            && warned[0].contains("unhealthy")
            && warned[0].contains("failure tolerance is 0"),
        "{stderr}"
    );
    let snap = files(dir.path())
        .into_iter()
        .find(|f| f.ends_with(".snap"))
        .expect("a snapshot");
    sha256sum_check(dir.path(), &format!("{snap}.sha256"));
    let m = manifest(dir.path());
    let h = &m["health"];
    assert_eq!(h["status"], "unhealthy", "{m}");
    assert_eq!(h["healthy"], false, "{m}");
    assert_eq!(h["failure_tolerance"], 0, "{m}");
    assert_eq!(h["voters"].as_array().map(Vec::len), Some(3), "{m}");
    assert_eq!(h["leader_id"], format!("node{}", leader + 1), "{m}");
    assert!(h["leader_term"].as_u64().is_some_and(|t| t > 0), "{m}");
    assert!(
        h["leader_last_index"].as_u64().is_some_and(|i| i > 0),
        "{m}"
    );
    assert_eq!(pg.value("vault_backup_cluster_healthy", STEP), Some(0.0));
    assert_eq!(
        pg.value("vault_backup_cluster_failure_tolerance", STEP),
        Some(0.0)
    );
    assert_eq!(pg.value("vault_backup_cluster_voters", STEP), Some(3.0));
    assert_eq!(pg.value("vault_backup_last_run_exit_code", STEP), Some(0.0));
}

#[test]
fn a_policy_without_the_autopilot_path_gives_one_warning_and_an_unknown_health() {
    let cluster = Cluster::start(1, Options::default());
    cluster.write_secret("secret/app", &[("k", "v")]);
    let pg = Pushgateway::start();

    // The shipped policy without its optional read on sys/storage/raft/autopilot/state.
    let token = cluster.token_with_policy("vault-backup", &policy_without_autopilot());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", cluster.addr(0)),
        ("VAULT_TOKEN", &token),
        ("SNAPSHOT_DIR", &d),
        ("METRICS_PUSHGATEWAY_URL", &pg.url()),
    ]);
    eprintln!("{stderr}");
    assert_eq!(code, 0, "{stderr}");
    let warned = warnings(&stderr);
    assert_eq!(warned.len(), 1, "exactly one warning: {stderr}");
    assert!(
        warned[0].contains("the cluster's health is unknown")
            && warned[0].contains("403")
            && warned[0].contains("sys/storage/raft/autopilot/state"),
        "{stderr}"
    );
    assert!(!stderr.contains(&token));
    let m = manifest(dir.path());
    assert_eq!(m["health"]["status"], "unknown", "{m}");
    assert!(m["health"].get("healthy").is_none(), "{m}");
    assert_eq!(pg.value("vault_backup_last_run_exit_code", STEP), Some(0.0));
    assert_eq!(
        pg.value("vault_backup_cluster_healthy", STEP),
        None,
        "an unknown health pushes no gauge"
    );

    // The shipped policy as it is: the health is read, no warning (one voter: no tolerance by
    // design).
    let token = cluster.token_with_policy("vault-backup-health", &shipped_policy());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", cluster.addr(0)),
        ("VAULT_TOKEN", &token),
        ("SNAPSHOT_DIR", &d),
        ("METRICS_PUSHGATEWAY_URL", &pg.url()),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(warnings(&stderr).is_empty(), "{stderr}");
    let m = manifest(dir.path());
    assert_eq!(m["health"]["status"], "healthy", "{m}");
    assert_eq!(m["health"]["failure_tolerance"], 0, "{m}");
    assert_eq!(pg.value("vault_backup_cluster_healthy", STEP), Some(1.0));
}
