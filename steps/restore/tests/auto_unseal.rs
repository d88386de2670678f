//! Auto-unsealed clusters, end to end against real OpenBao with the transit seal (a second
//! OpenBao is the KMS): the backup of a 3-node transit-sealed cluster, the drill into a scratch
//! node with the same seal and no unseal keys file at all, the restore into a fresh
//! transit-sealed cluster, and restores across seal types (Shamir into transit and back),
//! which must fail naming both seals and say what they left behind.

use std::path::Path;
use std::process::Command;

mod common;

use common::{CANARY, env, restore_bin, run, s};
use serde_json::Value;
use vault_backup_testbed::check::files;
use vault_backup_testbed::openbao::{Cluster, Options};
use vault_backup_testbed::transit::{Kms, SealedCluster, SealedScratch};
use vault_backup_testbed::venv;

fn manifest(dir: &Path, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.snap.json"))).unwrap()).unwrap()
}

fn result(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// The backup Task's two steps (with the canary) against `addr`, to `bk`; returns the
/// snapshot's name and the snapshot step's stderr.
fn back_up(addr: &str, token: &str, bk: &Path) -> (String, String) {
    let backup = common::back_up(addr, token, true, env(&[("BACKUP_DIR", &s(bk))]));
    (backup.name, backup.snapshot_log)
}

fn cluster_name(status: &Value) -> String {
    status["cluster_name"]
        .as_str()
        .expect("cluster_name in bao status")
        .to_owned()
}

#[test]
// One story: the backup, its drills and its restore share the source and the KMS.
#[allow(clippy::too_many_lines)]
fn a_transit_sealed_cluster_is_backed_up_drilled_without_unseal_keys_and_restored() {
    let kms = Kms::start();
    let seal = kms.seal_stanza(None);
    let source = SealedCluster::start(3, &seal);
    assert_eq!(source.status(0)["type"], "transit", "{}", source.status(0));
    assert_eq!(source.status(0)["recovery_seal"], true);
    source.kv2_put("app", "password", "before-the-backup");

    // The backup against the 3-node transit-sealed cluster.
    let bk = tempfile::tempdir().unwrap();
    let (name, snap_log) = back_up(source.addr(0), source.root_token(), bk.path());
    let m = manifest(bk.path(), &name);
    assert_eq!(m["seal_type"], "transit", "{m}");
    assert_eq!(m["health"]["status"], "healthy", "{m}");
    assert_eq!(m["health"]["failure_tolerance"], 1, "{m}");
    assert_eq!(
        m["health"]["voters"].as_array().map(Vec::len),
        Some(3),
        "{m}"
    );
    assert!(
        !snap_log.contains(" WARN "),
        "a healthy cluster, no warning: {snap_log}"
    );

    // The drill into a scratch node with the same seal, with DRILL_UNSEAL_KEYS_FILE set (as the
    // Task always sets it) to a file that does not exist (no Secret mounted).
    let scratch = SealedScratch::start(&seal);
    let ws = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let no_keys = ws.path().join("no-secret-mounted/keys");
    let (code, stderr) = run(
        &restore_bin(),
        &env(&[
            ("RESTORE_MODE", "drill"),
            ("VAULT_ADDR", scratch.addr()),
            ("VAULT_TOKEN", source.root_token()),
            ("SNAPSHOT_DIR", &s(ws.path())),
            ("BACKUP_DIR", &s(bk.path())),
            ("RESULTS_DIR", &s(results.path())),
            ("DRILL_UNSEAL_KEYS_FILE", &s(&no_keys)),
            ("DRILL_RECOVERY_KEYS_FILE", &s(&ws.path().join("absent"))),
            ("CANARY_PATH", CANARY),
        ]),
    );
    assert_eq!(
        code,
        0,
        "drill: {stderr}\n--- scratch ---\n{}",
        scratch.log()
    );
    assert_eq!(result(results.path(), "canary"), "ok");
    assert!(
        stderr.contains("unsealed itself with the auto-unseal seal")
            && stderr.contains("seal=transit"),
        "{stderr}"
    );
    assert!(!stderr.contains(source.root_token()) && !stderr.contains(source.recovery_key()));

    // DRILL_RECOVERY_KEYS_FILE, where the Secret is mounted: the source's recovery key is
    // proven on the restored data, another is refused.
    for (key, want) in [
        (source.recovery_key(), 0),
        ("c2VjcmV0LWJ1dC1ub3QtdGhlLWtleQ==", 1),
    ] {
        let scratch = SealedScratch::start(&seal);
        let ws = tempfile::tempdir().unwrap();
        let keys = ws.path().join("recovery-keys");
        std::fs::write(&keys, format!("{key}\n")).unwrap();
        let (code, stderr) = run(
            &restore_bin(),
            &env(&[
                ("RESTORE_MODE", "drill"),
                ("VAULT_ADDR", scratch.addr()),
                ("VAULT_TOKEN", source.root_token()),
                ("SNAPSHOT_DIR", &s(ws.path())),
                ("BACKUP_DIR", &s(bk.path())),
                ("DRILL_RECOVERY_KEYS_FILE", &s(&keys)),
                ("CANARY_PATH", CANARY),
            ]),
        );
        assert_eq!(code, want, "{stderr}\n--- scratch ---\n{}", scratch.log());
        if want == 0 {
            assert!(stderr.contains("recovery keys ok"), "{stderr}");
        } else {
            assert!(
                stderr.contains("the recovery keys in DRILL_RECOVERY_KEYS_FILE are not those of the restored snapshot"),
                "{stderr}"
            );
        }
        assert!(!stderr.contains(key), "a key in the log");
    }

    // The restore into a fresh transit-sealed cluster: the old secrets read back.
    let target = SealedCluster::start(3, &seal);
    target.kv2_put("prior", "state", "the-target-before");
    let ws = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let (code, stderr) = run(
        &restore_bin(),
        &env(&[
            ("VAULT_ADDR", target.addr(1)),
            ("VAULT_TOKEN", target.root_token()),
            ("SNAPSHOT_DIR", &s(ws.path())),
            ("BACKUP_DIR", &s(bk.path())),
            ("RESULTS_DIR", &s(results.path())),
            ("RESTORE_FORCE", "true"),
            (
                "RESTORE_CONFIRM",
                &format!("{name}@{}", cluster_name(&target.status(0))),
            ),
        ]),
    );
    assert_eq!(
        code,
        0,
        "restore: {stderr}\n--- target ---\n{}",
        target.log(0)
    );
    assert_eq!(result(results.path(), "sealed"), "false", "{stderr}");
    for i in 0..3 {
        let mut got = Err(String::new());
        for _ in 0..40 {
            got = target.kv2_get(i, source.root_token(), "app", "password");
            if got.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        assert_eq!(
            got.as_deref(),
            Ok("before-the-backup"),
            "node {i} reads the source's secret with the source's token"
        );
        assert_eq!(target.status(i)["sealed"], false, "node {i} unsealed");
    }
}

/// Removes `seal_type` from a manifest in `bk`, as a manifest written before it existed.
fn forget_seal(bk: &Path, name: &str) {
    let path = bk.join(format!("{name}.snap.json"));
    let mut m = manifest(bk, name);
    m.as_object_mut().unwrap().remove("seal_type");
    std::fs::write(path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// `vault-restore` in cluster mode from `bk` into the cluster at `addr`.
fn restore_into(
    addr: &str,
    token: &str,
    bk: &Path,
    name: &str,
    confirm: &str,
    force: bool,
) -> (i32, String, tempfile::TempDir) {
    let ws = tempfile::tempdir().unwrap();
    let mut e = env(&[
        ("VAULT_ADDR", addr),
        ("VAULT_TOKEN", token),
        ("SNAPSHOT_DIR", &s(ws.path())),
        ("BACKUP_DIR", &s(bk)),
        ("SNAPSHOT_NAME", name),
        ("RESTORE_CONFIRM", confirm),
        ("RESTORE_TIMEOUT", "40s"),
    ]);
    if force {
        e.insert("RESTORE_FORCE".into(), "true".into());
    }
    let (code, stderr) = run(&restore_bin(), &e);
    (code, stderr, ws)
}

#[test]
// One story: the two clusters, each refusal, and what OpenBao itself does after them.
#[allow(clippy::too_many_lines)]
fn restores_across_seal_types_fail_naming_both_seals() {
    let kms = Kms::start();
    let transit = SealedCluster::start(1, &kms.seal_stanza(None));
    transit.kv2_put("prior", "state", "the-transit-cluster");
    let shamir = Cluster::start(1, Options::default());
    shamir.enable_kv2("secret");
    for _ in 0..40 {
        if shamir
            .try_bao(
                0,
                &["kv", "put", "secret/prior", "state=the-shamir-cluster"],
            )
            .is_ok()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let (bk_t, bk_s) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (t_name, _) = back_up(transit.addr(0), transit.root_token(), bk_t.path());
    let (s_name, _) = back_up(shamir.addr(0), shamir.root_token(), bk_s.path());
    assert_eq!(manifest(bk_t.path(), &t_name)["seal_type"], "transit");
    assert_eq!(manifest(bk_s.path(), &s_name)["seal_type"], "shamir");
    let t_id = cluster_name(&transit.status(0));
    let s_id = cluster_name(&vault_backup_testbed::transit::status(shamir.addr(0)));
    let transit_intact = || {
        assert_eq!(
            transit
                .kv2_get(0, transit.root_token(), "prior", "state")
                .as_deref(),
            Ok("the-transit-cluster"),
            "the transit cluster keeps its data"
        );
    };
    let shamir_intact = || {
        assert_eq!(
            shamir
                .read_secret_as(0, shamir.root_token(), "secret/prior", "state")
                .map(|s| s.trim().to_owned())
                .as_deref(),
            Ok("the-shamir-cluster"),
            "the shamir cluster keeps its data"
        );
    };

    // With the source's seal in the manifest: refused before anything is fetched, forced or
    // not, each way.
    for force in [true, false] {
        let (code, stderr, ws) = restore_into(
            transit.addr(0),
            transit.root_token(),
            bk_s.path(),
            &s_name,
            &format!("{s_name}@{t_id}"),
            force,
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("the seals differ")
                && stderr.contains("a cluster with a shamir seal")
                && stderr.contains("has a transit seal")
                && stderr.contains("Nothing was fetched or restored"),
            "{stderr}"
        );
        assert!(
            files(ws.path()).is_empty(),
            "nothing fetched, no safety snapshot"
        );
        transit_intact();
        let (code, stderr, ws) = restore_into(
            shamir.addr(0),
            shamir.root_token(),
            bk_t.path(),
            &t_name,
            &format!("{t_name}@{s_id}"),
            force,
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("the seals differ")
                && stderr.contains("a cluster with a transit seal")
                && stderr.contains("has a shamir seal"),
            "{stderr}"
        );
        assert!(
            files(ws.path()).is_empty(),
            "nothing fetched, no safety snapshot"
        );
        shamir_intact();
    }

    // The same seal type with another KMS key: nothing tells them apart before the restore.
    // The cluster restore replaces the data, the target seals, the step fails naming the
    // safety snapshot; the drill's node seals and the drill says why at once.
    kms.create_key("another");
    let other_seal = kms.seal_stanza(Some("another"));
    let other = SealedCluster::start(1, &other_seal);
    let (code, stderr, ws) = restore_into(
        other.addr(0),
        other.root_token(),
        bk_t.path(),
        &t_name,
        &format!("{t_name}@{}", cluster_name(&other.status(0))),
        true,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("is sealed after the restore")
            && stderr.contains("its transit seal could not open the restored keyring")
            && stderr.contains("the safety snapshot pre-restore-"),
        "{stderr}"
    );
    assert!(
        files(ws.path())
            .iter()
            .any(|f| f.starts_with("pre-restore-")),
        "the safety snapshot is there"
    );
    eprintln!(
        "a transit snapshot forced into a cluster sealed by another transit key: status afterwards {}",
        other.status(0)
    );
    assert_eq!(other.status(0)["sealed"], true);
    let scratch = SealedScratch::start(&other_seal);
    let ws = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (code, stderr) = run(
        &restore_bin(),
        &env(&[
            ("RESTORE_MODE", "drill"),
            ("VAULT_ADDR", scratch.addr()),
            ("VAULT_TOKEN", transit.root_token()),
            ("SNAPSHOT_DIR", &s(ws.path())),
            ("BACKUP_DIR", &s(bk_t.path())),
            ("RESTORE_TIMEOUT", "2m"),
        ]),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "sealed after the restore: its transit seal could not open the restored keyring"
        ),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "said at once, not at RESTORE_TIMEOUT"
    );

    // The drill: a Shamir scratch node without the unseal keys file stops with exit 2 naming
    // the variable before anything is fetched; with a keys file, a transit snapshot is refused
    // before anything is sent to the node, naming both seals.
    let scratch = vault_backup_testbed::openbao::ScratchNode::start_uninitialized();
    let ws = tempfile::tempdir().unwrap();
    let keys = ws.path().join("keys");
    let mut drill = env(&[
        ("RESTORE_MODE", "drill"),
        ("VAULT_ADDR", scratch.addr()),
        ("VAULT_TOKEN", transit.root_token()),
        ("SNAPSHOT_DIR", &s(ws.path())),
        ("BACKUP_DIR", &s(bk_t.path())),
        ("DRILL_UNSEAL_KEYS_FILE", &s(&keys)),
    ]);
    let (code, stderr) = run(&restore_bin(), &drill);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("DRILL_UNSEAL_KEYS_FILE: the scratch node at")
            && stderr.contains("has a shamir seal")
            && stderr.contains(&format!("{} does not exist", s(&keys))),
        "{stderr}"
    );
    assert!(files(ws.path()).is_empty(), "nothing fetched");
    std::fs::write(&keys, "not-the-key\n").unwrap();
    let (code, stderr) = run(&restore_bin(), &drill);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the seals differ")
            && stderr.contains("a cluster with a transit seal")
            && stderr.contains("the scratch node at")
            && stderr.contains("has a shamir seal"),
        "{stderr}"
    );
    assert!(
        !scratch.is_initialized(),
        "nothing was sent to the scratch node"
    );
    drill.remove("DRILL_UNSEAL_KEYS_FILE");
    let (code, stderr) = run(&restore_bin(), &drill);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("the variable is not set"), "{stderr}");

    // Manifests written before the seal was recorded: the snapshot's own data says its seal
    // (core/seal-config), read as it is fetched; refused before anything is sent.
    forget_seal(bk_s.path(), &s_name);
    forget_seal(bk_t.path(), &t_name);
    for force in [true, false] {
        let (code, stderr, ws) = restore_into(
            transit.addr(0),
            transit.root_token(),
            bk_s.path(),
            &s_name,
            &format!("{s_name}@{t_id}"),
            force,
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("the seals differ")
                && stderr.contains("a cluster with a shamir seal")
                && stderr.contains("has a transit seal")
                && stderr.contains("nothing was sent to the cluster"),
            "{stderr}"
        );
        assert_eq!(
            files(ws.path()),
            vec![format!("{s_name}.snap")],
            "fetched, no safety snapshot"
        );
        transit_intact();
        let (code, stderr, ws) = restore_into(
            shamir.addr(0),
            shamir.root_token(),
            bk_t.path(),
            &t_name,
            &format!("{t_name}@{s_id}"),
            force,
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("the seals differ")
                && stderr.contains("a cluster with a transit seal")
                && stderr.contains("has a shamir seal"),
            "{stderr}"
        );
        assert_eq!(
            files(ws.path()),
            vec![format!("{t_name}.snap")],
            "fetched, no safety snapshot"
        );
        shamir_intact();
    }

    // What OpenBao itself does with them (the bao CLI, no vault-restore), which is why the step
    // checks first. Not forced: SHA256SUMS.sealed is verified with the target's seal, a 400,
    // the target untouched.
    let restore = |addr: &str, token: &str, file: &Path, force: bool| {
        let mut args = vec!["operator", "raft", "snapshot", "restore"];
        if force {
            args.push("-force");
        }
        let file = s(file);
        args.push(&file);
        let out = Command::new(venv::bao())
            .args(&args)
            .env("BAO_ADDR", addr)
            .env("BAO_TOKEN", token)
            .env_remove("VAULT_ADDR")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let s_file = bk_s.path().join(format!("{s_name}.snap"));
    let t_file = bk_t.path().join(format!("{t_name}.snap"));
    let (ok, err) = restore(transit.addr(0), transit.root_token(), &s_file, false);
    assert!(!ok && err.contains("different autoseal key"), "{err}");
    transit_intact();
    let (ok, err) = restore(shamir.addr(0), shamir.root_token(), &t_file, false);
    assert!(!ok && err.contains("different set of unseal keys"), "{err}");
    shamir_intact();
    // Forced: accepted (204), the data replaced, then the node seals for good.
    let sealed = |addr: &str| {
        let mut st = Value::Null;
        for _ in 0..60 {
            st = vault_backup_testbed::transit::status(addr);
            if st["sealed"] == true {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        st
    };
    let (ok, err) = restore(transit.addr(0), transit.root_token(), &s_file, true);
    assert!(ok, "{err}");
    let st = sealed(transit.addr(0));
    eprintln!("shamir snapshot forced into the transit cluster: status afterwards {st}");
    assert_eq!(st["sealed"], true, "{st}");
    assert!(
        transit
            .log(0)
            .contains("failed to perform key upgrades, reloading using auto seal"),
        "{}",
        transit.log(0)
    );
    let (ok, err) = restore(shamir.addr(0), shamir.root_token(), &t_file, true);
    assert!(ok, "{err}");
    let st = sealed(shamir.addr(0));
    eprintln!("transit snapshot forced into the shamir cluster: status afterwards {st}");
    assert_eq!(st["sealed"], true, "{st}");
    let own = shamir.try_bao(0, &["operator", "unseal", shamir.unseal_key()]);
    eprintln!("the shamir cluster's own unseal key afterwards: {own:?}");
    assert!(
        own.as_ref()
            .is_err_and(|e| e.contains("failed to decrypt keys from storage")),
        "{own:?}"
    );
}
