//! The snapshot step against real OpenBao: 3-node raft clusters with standby reads on and off,
//! TLS with a CA made by the test, AppRole with only the shipped policy, a token without it,
//! and a leader killed before the run. Each backup is proven by restoring it.

#![allow(clippy::case_sensitive_file_extension_comparisons)]

mod common;

use common::{files, run_bin, sha256sum_check, shipped_policy};
use rstest::rstest;
use vault_backup_common::artifact::{Artifact, Manifest};
use vault_backup_testbed::openbao::{Cluster, Options};
use vault_snapshot::config::{RawConfig, SnapshotEnv, VaultEnv};
use vault_snapshot::{Config, run};

fn config(addr: &str, dir: &std::path::Path, token: &str) -> Config {
    Config::try_from(RawConfig {
        snapshot: SnapshotEnv {
            snapshot_dir: dir.display().to_string(),
            snapshot_retries: Some("2".into()),
            snapshot_retry_delay: Some("1s".into()),
            ..SnapshotEnv::default()
        },
        vault: VaultEnv {
            vault_addr: addr.into(),
            vault_token: Some(token.into()),
            ..VaultEnv::default()
        },
    })
    .expect("valid config")
}

#[rstest]
#[case::standby_reads_on(false)]
#[case::standby_reads_off(true)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_standby_the_snapshot_comes_from_the_leader_and_restores(
    #[case] disable_standby_reads: bool,
) {
    let cluster = Cluster::start(
        3,
        Options {
            disable_standby_reads,
            ..Options::default()
        },
    );
    cluster.write_secret("secret/app", &[("password", "hunter2"), ("user", "alice")]);
    let leader = cluster.leader().expect("leader");
    let standby = cluster.standby();
    let dir = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let mut cfg = config(cluster.addr(standby), dir.path(), cluster.root_token());
    cfg.results = vault_backup_common::tekton::Results::in_dir(results.path());

    let summary = run(cfg).await.expect("snapshot");

    assert_eq!(
        summary.leader,
        cluster.addr(leader),
        "served by the leader, not the standby it was pointed at"
    );
    assert_eq!(summary.attempt, 1);
    let a = Artifact::new(&summary.name);
    assert_eq!(
        files(dir.path()),
        vec![a.snap_file(), a.manifest_file(), a.sha256_file()]
    );
    sha256sum_check(dir.path(), &a.sha256_file());
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.path().join(a.manifest_file())).unwrap())
            .unwrap();
    assert_eq!(
        (manifest.bytes, &manifest.sha256),
        (summary.bytes, &summary.sha256)
    );
    assert_eq!(manifest.leader_address, cluster.addr(leader));
    assert!(
        manifest.raft_index > 0 && manifest.raft_term > 0,
        "{manifest:?}"
    );
    assert!(
        manifest
            .server_version
            .as_deref()
            .is_some_and(|v| v.starts_with('2')),
        "{manifest:?}"
    );
    // Results are exact, with no trailing newline.
    assert_eq!(
        std::fs::read_to_string(results.path().join("snapshot-name")).unwrap(),
        summary.name
    );
    assert_eq!(
        std::fs::read_to_string(results.path().join("snapshot-sha256")).unwrap(),
        summary.sha256
    );
    assert_eq!(
        std::fs::read_to_string(results.path().join("snapshot-bytes")).unwrap(),
        summary.bytes.to_string()
    );

    let restored =
        cluster.restore_into_fresh_node_and_read(&summary.path, "secret/app", "password");
    assert_eq!(restored, "hunter2");
}

#[test]
fn tls_with_the_test_ca_and_approle_with_only_the_shipped_policy() {
    let cluster = Cluster::start(
        1,
        Options {
            tls: true,
            ..Options::default()
        },
    );
    cluster.write_secret("secret/db", &[("pw", "s3cr3t")]);
    cluster.write_policy("vault-backup", &shipped_policy());
    cluster.bao(0, &["auth", "enable", "approle"]);
    cluster.bao(
        0,
        &[
            "write",
            "auth/approle/role/backup",
            "token_policies=vault-backup",
            "token_ttl=5m",
        ],
    );
    let role_id = cluster.bao(
        0,
        &["read", "-field=role_id", "auth/approle/role/backup/role-id"],
    );
    let secret_id = cluster.bao(
        0,
        &[
            "write",
            "-f",
            "-field=secret_id",
            "auth/approle/role/backup/secret-id",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let secret_file = cluster.scratch().join("secret-id");
    std::fs::write(&secret_file, secret_id.trim()).unwrap();
    let ca = cluster.ca_cert().unwrap().display().to_string();
    let d = dir.path().display().to_string();
    let s = secret_file.display().to_string();
    let base = [
        ("VAULT_ADDR", cluster.addr(0)),
        ("VAULT_ROLE_ID", role_id.trim()),
        ("VAULT_SECRET_ID_FILE", s.as_str()),
        ("SNAPSHOT_DIR", d.as_str()),
        ("SNAPSHOT_RETRIES", "1"),
        ("SNAPSHOT_RETRY_DELAY", "1s"),
    ];

    // Without the CA the handshake fails, clearly and without retrying.
    let (code, stderr) = run_bin(&base);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("TLS with vault at") && stderr.contains("VAULT_CACERT"),
        "{stderr}"
    );
    assert!(
        files(dir.path()).is_empty(),
        "nothing left behind: {:?}",
        files(dir.path())
    );

    let mut with_ca = base.to_vec();
    with_ca.push(("VAULT_CACERT", ca.as_str()));
    let (code, stderr) = run_bin(&with_ca);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("snapshot saved and verified"), "{stderr}");
    assert!(
        !stderr.contains(secret_id.trim()),
        "the secret id must never be logged"
    );
    let snaps: Vec<String> = files(dir.path())
        .into_iter()
        .filter(|f| f.ends_with(".snap.sha256"))
        .collect();
    assert_eq!(snaps.len(), 1, "{:?}", files(dir.path()));
    sha256sum_check(dir.path(), &snaps[0]);

    // A wrong secret id is a login failure, not retried, exit 1. (A fresh directory: a second
    // snapshot in the same second would otherwise be refused for its name.)
    std::fs::write(&secret_file, "not-the-secret-id").unwrap();
    let other = tempfile::tempdir().unwrap();
    let o = other.path().display().to_string();
    with_ca.retain(|(k, _)| *k != "SNAPSHOT_DIR");
    with_ca.push(("SNAPSHOT_DIR", o.as_str()));
    let (code, stderr) = run_bin(&with_ca);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("login with approle at auth/approle"),
        "{stderr}"
    );
}

#[test]
fn a_token_without_the_policy_exits_1_naming_the_policy_path() {
    let cluster = Cluster::start(1, Options::default());
    let token = cluster.token_with_policy(
        "unrelated",
        r#"path "secret/*" { capabilities = ["read"] }"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", cluster.addr(0)),
        ("VAULT_TOKEN", &token),
        ("SNAPSHOT_DIR", &d),
        ("SNAPSHOT_RETRY_DELAY", "1s"),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("permission denied") && stderr.contains("sys/storage/raft/snapshot"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("backing off"),
        "a 403 is not retried: {stderr}"
    );
    assert!(!stderr.contains(&token), "the token must never be logged");
    assert!(files(dir.path()).is_empty());
}

#[test]
fn a_leader_killed_before_the_run_is_survived_once_a_new_one_is_elected() {
    let mut cluster = Cluster::start(3, Options::default());
    cluster.write_secret("secret/app", &[("k", "before-failover")]);
    let old_leader = cluster.leader().expect("leader");
    let standby = cluster.standby();
    let addr = cluster.addr(standby).to_owned();
    cluster.kill(old_leader);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    // Until the election ends, the standbys still name the dead leader: the first attempts
    // fail to reach it, and a retry within the budget gets the new leader.
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", &addr),
        ("VAULT_TOKEN", cluster.root_token()),
        ("SNAPSHOT_DIR", &d),
        ("SNAPSHOT_RETRIES", "8"),
        ("SNAPSHOT_RETRY_DELAY", "1s"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("backing off"),
        "the dead leader should have cost at least one retry: {stderr}"
    );
    let new_leader = cluster.wait_for_new_leader(old_leader);
    assert!(
        stderr.contains(&format!("leader={}", cluster.addr(new_leader)))
            || stderr.contains(&format!("\"leader\":\"{}\"", cluster.addr(new_leader))),
        "served by the new leader {}: {stderr}",
        cluster.addr(new_leader)
    );
    let snap = files(dir.path())
        .into_iter()
        .find(|f| f.ends_with(".snap"))
        .expect("a snapshot");
    sha256sum_check(dir.path(), &format!("{snap}.sha256"));
    assert_eq!(
        cluster.restore_into_fresh_node_and_read(&dir.path().join(&snap), "secret/app", "k"),
        "before-failover"
    );
}

#[test]
fn kubernetes_login_with_the_service_account_token() {
    use vault_backup_testbed::canned::{SERVICE_ACCOUNT, TokenReviewer};
    let cluster = Cluster::start(
        1,
        Options {
            tls: true,
            ..Options::default()
        },
    );
    let jwt = TokenReviewer::service_account_jwt();
    let reviewer = TokenReviewer::start(&jwt);
    cluster.write_policy("vault-backup", &shipped_policy());
    cluster.bao(0, &["auth", "enable", "kubernetes"]);
    let ca = cluster.ca_cert().unwrap().display().to_string();
    cluster.bao(
        0,
        &[
            "write",
            "auth/kubernetes/config",
            &format!("kubernetes_host={}", reviewer.addr()),
            &format!("kubernetes_ca_cert=@{ca}"),
            "disable_local_ca_jwt=true",
        ],
    );
    let (ns, name, _) = SERVICE_ACCOUNT;
    cluster.bao(
        0,
        &[
            "write",
            "auth/kubernetes/role/vault-backup",
            &format!("bound_service_account_names={name}"),
            &format!("bound_service_account_namespaces={ns}"),
            "token_policies=vault-backup",
            "token_ttl=5m",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let jwt_file = cluster.scratch().join("token");
    std::fs::write(&jwt_file, &jwt).unwrap();
    let (d, j) = (
        dir.path().display().to_string(),
        jwt_file.display().to_string(),
    );
    let mut envs = vec![
        ("VAULT_ADDR", cluster.addr(0)),
        ("VAULT_CACERT", ca.as_str()),
        ("VAULT_AUTH_ROLE", "vault-backup"),
        ("VAULT_AUTH_JWT_FILE", j.as_str()),
        ("SNAPSHOT_DIR", d.as_str()),
        ("SNAPSHOT_RETRIES", "0"),
    ];
    let (code, stderr) = run_bin(&envs);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        reviewer.reviews() >= 1,
        "OpenBao asked the TokenReview endpoint"
    );
    assert!(!stderr.contains(&jwt), "the JWT must never be logged");
    let sha = files(dir.path())
        .into_iter()
        .find(|f| f.ends_with(".snap.sha256"))
        .expect("a snapshot");
    sha256sum_check(dir.path(), &sha);

    // A role the account is not bound to: a login failure, exit 1, not retried.
    cluster.bao(
        0,
        &[
            "write",
            "auth/kubernetes/role/other",
            "bound_service_account_names=other",
            "bound_service_account_namespaces=other",
            "token_policies=vault-backup",
        ],
    );
    let other = tempfile::tempdir().unwrap();
    let o = other.path().display().to_string();
    envs.retain(|(k, _)| !matches!(*k, "VAULT_AUTH_ROLE" | "SNAPSHOT_DIR"));
    envs.push(("VAULT_AUTH_ROLE", "other"));
    envs.push(("SNAPSHOT_DIR", o.as_str()));
    let (code, stderr) = run_bin(&envs);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("login with kubernetes role other at auth/kubernetes"),
        "{stderr}"
    );
}

#[test]
fn a_server_without_raft_storage_is_refused_without_retrying() {
    let dev = vault_backup_testbed::openbao::DevServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", &dev.addr),
        (
            "VAULT_TOKEN",
            vault_backup_testbed::openbao::DevServer::ROOT_TOKEN,
        ),
        ("SNAPSHOT_DIR", &d),
        ("SNAPSHOT_RETRY_DELAY", "1s"),
    ]);
    assert_eq!(code, 1, "{stderr}\n{}", dev.log());
    assert!(
        stderr.contains("does not use integrated storage (raft)"),
        "{stderr}"
    );
    assert!(!stderr.contains("backing off"), "not retried: {stderr}");
    assert!(files(dir.path()).is_empty());
}

#[test]
fn the_canary_is_written_before_the_snapshot_recorded_in_the_manifest_and_restores() {
    let cluster = Cluster::start(1, Options::default());
    cluster.enable_kv2("secret");
    // The shipped policy, canary lines included, is all the login needs.
    let token = cluster.token_with_policy("vault-backup", &shipped_policy());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", cluster.addr(0)),
        ("VAULT_TOKEN", &token),
        ("SNAPSHOT_DIR", &d),
        ("CANARY_PATH", "vault-backup/canary"),
        ("TASKRUN_NAME", "backup-run-1"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("canary written"), "{stderr}");
    assert!(!stderr.contains(&token), "the token must never be logged");
    let json = files(dir.path())
        .into_iter()
        .find(|f| f.ends_with(".snap.json"))
        .expect("manifest");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.path().join(&json)).unwrap()).unwrap();
    let canary = manifest
        .canary
        .clone()
        .expect("the manifest records the canary");
    assert_eq!(
        (
            canary.mount.as_str(),
            canary.path.as_str(),
            canary.taskrun.as_str()
        ),
        ("secret", "vault-backup/canary", "backup-run-1")
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(&canary.written_at).is_ok(),
        "{canary:?}"
    );
    // What the cluster holds now is what the manifest says.
    assert_eq!(
        cluster
            .read_secret_as(
                0,
                cluster.root_token(),
                "secret/vault-backup/canary",
                "written_at"
            )
            .unwrap()
            .trim(),
        canary.written_at
    );
    // And the snapshot holds it: written before the snapshot was taken.
    let snap = dir.path().join(&manifest.file);
    let restored =
        cluster.restore_into_fresh_node_and_read(&snap, "secret/vault-backup/canary", "written_at");
    assert_eq!(restored, canary.written_at);
}

#[test]
fn a_login_without_the_canary_lines_exits_1_naming_the_canary_path() {
    let cluster = Cluster::start(1, Options::default());
    cluster.enable_kv2("secret");
    let token = cluster.token_with_policy(
        "snapshot-only",
        r#"path "sys/storage/raft/snapshot" { capabilities = ["read"] }"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", cluster.addr(0)),
        ("VAULT_TOKEN", &token),
        ("SNAPSHOT_DIR", &d),
        ("CANARY_PATH", "vault-backup/canary"),
        ("SNAPSHOT_RETRY_DELAY", "1s"),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("denied the canary write to secret/data/vault-backup/canary")
            && stderr.contains(r#"path "secret/data/vault-backup/canary""#)
            && stderr.contains("tekton/vault-policy.hcl"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("backing off"),
        "a 403 is not retried: {stderr}"
    );
    assert!(
        files(dir.path()).is_empty(),
        "no snapshot without its canary"
    );
}
