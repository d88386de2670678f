//! `vault-restore` in `RESTORE_MODE=recover` as a process, against real OpenBao: a source
//! cluster (also the production cluster the secrets go back into) backed up by the real
//! `vault-snapshot` and `snapshot-sync`, a fresh scratch node per run (the recover Task's
//! sidecar, with the unauthenticated `sys/generate-root` on, as `tekton/recover-openbao.hcl`
//! has it), and the recover login holding only `tekton/vault-recover-policy.hcl`. Every run's
//! stderr and results are scanned for every value, token and key of the test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod common;

use common::{env, restore_bin, run, s, step_bin};
use serde_json::Value;
use vault_backup_testbed::check::files;
use vault_backup_testbed::openbao::{Cluster, Options, ScratchNode};
use vault_backup_testbed::venv;

/// The scratch node's listener, as `tekton/recover-openbao.hcl` sets it.
const SCRATCH_LISTENER: &str = "disable_unauthed_generate_root_endpoints = false";

// The values of the test: none may appear in any output.
const DB_V1: &str = "db-password-v1-Xq7";
const DB_V2: &str = "db-password-v2-Kp3";
const API_KEY: &str = "api-key-Zr9-before";
const NEW_VALUE: &str = "new-after-backup-Wm2";
const OTHER_V1: &str = "other-v1-Hb5";
const OTHER_V2: &str = "other-v2-Jd8";
const CONCURRENT: &str = "concurrent-write-Tn4";

/// A single-node source cluster with a KV v2 `secret/` mount.
fn source_cluster() -> Cluster {
    let source = Cluster::start(1, Options::default());
    source.enable_kv2("secret");
    // A fresh KV v2 mount answers 400 "Upgrading from non-versioned to versioned data" for a
    // moment after it is enabled.
    for _ in 0..40 {
        match source.try_bao(0, &["kv", "put", "secret/other", &format!("v={OTHER_V1}")]) {
            Ok(_) => return source,
            Err(e) if e.contains("Upgrading from non-versioned") => {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the KV v2 mount did not finish its upgrade");
}

fn put(c: &Cluster, path: &str, pairs: &[(&str, &str)]) {
    let mut args = vec!["kv".to_owned(), "put".to_owned(), path.to_owned()];
    args.extend(pairs.iter().map(|(k, v)| format!("{k}={v}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.bao(0, &args);
}

/// `kv get -format=json`: the secret's data and its version, or `None` (deleted or missing).
fn get(c: &Cluster, path: &str) -> Option<(Value, u64)> {
    let out = c.try_bao(0, &["kv", "get", "-format=json", path]).ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    let data = v["data"]["data"].clone();
    (!data.is_null()).then(|| (data, v["data"]["metadata"]["version"].as_u64().unwrap()))
}

fn current_version(c: &Cluster, path: &str) -> u64 {
    let v = c.bao_json(0, &["kv", "metadata", "get", "-format=json", path]);
    v["data"]["current_version"].as_u64().unwrap()
}

/// The backup Task's two steps into a directory store. Returns the snapshot's name.
fn back_up(source: &Cluster, bk: &Path) -> String {
    let ws = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let (code, stderr) = run(
        &step_bin("vault-snapshot"),
        &env(&[
            ("VAULT_ADDR", source.addr(0)),
            ("VAULT_TOKEN", source.root_token()),
            ("SNAPSHOT_DIR", &s(ws.path())),
            ("RESULTS_DIR", &s(results.path())),
        ]),
    );
    assert_eq!(code, 0, "vault-snapshot: {stderr}");
    let name = std::fs::read_to_string(results.path().join("snapshot-name")).unwrap();
    let (code, stderr) = run(
        &step_bin("snapshot-sync"),
        &env(&[
            ("SNAPSHOT_DIR", &s(ws.path())),
            ("SNAPSHOT_NAME", &name),
            ("BACKUP_DIR", &s(bk)),
        ]),
    );
    assert_eq!(code, 0, "snapshot-sync: {stderr}");
    name
}

/// The story of must-show 1 up to the recovery: `secret/app/db` (v1) and `secret/app/api`
/// written and backed up; then `db` overwritten (v2), `api` deleted, `secret/app/new` written,
/// and `secret/other` (outside the folder) overwritten.
struct Story {
    source: Cluster,
    backups: tempfile::TempDir,
    name: String,
    /// A token holding only the shipped recover policy.
    token: String,
    keys: tempfile::TempDir,
}

impl Story {
    fn start() -> Self {
        let source = source_cluster();
        put(
            &source,
            "secret/app/db",
            &[("user", "app"), ("password", DB_V1)],
        );
        put(&source, "secret/app/api", &[("key", API_KEY)]);
        let backups = tempfile::tempdir().unwrap();
        let name = back_up(&source, backups.path());
        put(
            &source,
            "secret/app/db",
            &[("user", "app"), ("password", DB_V2)],
        );
        source.bao(0, &["kv", "delete", "secret/app/api"]);
        put(&source, "secret/app/new", &[("k", NEW_VALUE)]);
        put(&source, "secret/other", &[("v", OTHER_V2)]);
        let policy =
            std::fs::read_to_string(venv::workspace_root().join("tekton/vault-recover-policy.hcl"))
                .unwrap();
        let token = source.token_with_policy("vault-recover", &policy);
        let keys = tempfile::tempdir().unwrap();
        std::fs::write(
            keys.path().join("keys"),
            format!("{}\n", source.unseal_key()),
        )
        .unwrap();
        Self {
            source,
            backups,
            name,
            token,
            keys,
        }
    }

    /// One recovery run against a fresh scratch node, production at `vault_addr`: (exit code,
    /// stderr, results, the scratch node, which stays up for the test to question).
    fn recover(
        &self,
        vault_addr: &str,
        extra: &[(&str, &str)],
        listener: &str,
    ) -> (i32, String, BTreeMap<String, String>, ScratchNode) {
        let node = ScratchNode::start_with_listener(listener);
        let scratch = tempfile::tempdir().unwrap();
        let results = tempfile::tempdir().unwrap();
        let mut vars = env(&[
            ("RESTORE_MODE", "recover"),
            ("VAULT_ADDR", vault_addr),
            ("VAULT_TOKEN", &self.token),
            ("RECOVER_SCRATCH_ADDR", node.addr()),
            ("RECOVER_PATHS", "secret/app/"),
            ("RESTORE_CONFIRM", &self.name),
            ("SNAPSHOT_DIR", &s(scratch.path())),
            ("BACKUP_DIR", &s(self.backups.path())),
            ("RESULTS_DIR", &s(results.path())),
            ("DRILL_UNSEAL_KEYS_FILE", &s(&self.keys.path().join("keys"))),
            ("RESTORE_TIMEOUT", "60s"),
        ]);
        vars.extend(env(extra));
        let (code, stderr) = run(&restore_bin(), &vars);
        let got = files(results.path())
            .into_iter()
            .map(|f| {
                let text = std::fs::read_to_string(results.path().join(&f)).unwrap();
                (f, text)
            })
            .collect();
        (code, stderr, got, node)
    }

    fn secrets(&self) -> Vec<&str> {
        vec![
            DB_V1,
            DB_V2,
            API_KEY,
            NEW_VALUE,
            OTHER_V1,
            OTHER_V2,
            CONCURRENT,
            self.source.root_token(),
            self.source.unseal_key(),
            &self.token,
        ]
    }

    fn assert_no_secret(&self, stderr: &str, results: &BTreeMap<String, String>) {
        let all = format!("{stderr}\n{results:?}");
        for secret in self.secrets() {
            assert!(
                !all.contains(secret),
                "a secret appears in the output: {all}"
            );
        }
        // Whatever token the step made or used: OpenBao's service tokens start with "s.".
        assert!(
            !all.split(|c: char| c.is_whitespace() || c == '"' || c == '=')
                .any(|w| w.starts_with("s.") && w.len() > 20),
            "a token appears in the output: {all}"
        );
    }

    /// Every root token on the scratch node's restored data must be one the source had: the
    /// one the step made is revoked. Asked with the source's own root token, valid there.
    fn assert_scratch_root_revoked(&self, node: &ScratchNode, stderr: &str) {
        let bao = |args: &[&str]| -> Result<Value, String> {
            let out = Command::new(venv::bao())
                .args(args)
                .env("BAO_ADDR", node.addr())
                .env("BAO_TOKEN", self.source.root_token())
                .env_remove("VAULT_ADDR")
                .output()
                .unwrap();
            if out.status.success() {
                Ok(serde_json::from_slice(&out.stdout).unwrap())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        };
        let made = stderr
            .split("accessor=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the step logs the accessor of the token it made")
            .trim_matches('"')
            .to_owned();
        let lookup = bao(&["token", "lookup", "-format=json", "-accessor", &made]);
        assert!(
            lookup
                .as_ref()
                .is_err_and(|e| e.contains("invalid accessor")),
            "the token the step made on the scratch node still exists: {lookup:?}"
        );
        let source_root = self
            .source
            .bao_json(0, &["token", "lookup", "-format=json"])["data"]["accessor"]
            .as_str()
            .unwrap()
            .to_owned();
        let accessors = bao(&["list", "-format=json", "auth/token/accessors"]).unwrap();
        for a in accessors.as_array().unwrap() {
            let a = a.as_str().unwrap();
            let info = bao(&["token", "lookup", "-format=json", "-accessor", a]).unwrap();
            let root = info["data"]["policies"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p == "root"));
            assert!(
                !root || a == source_root,
                "a root token other than the source's on the scratch node: {info}"
            );
        }
    }
}

// One story, in the order a person would live it: the dry run, the recovery, a second run
// that finds everything equal.
#[test]
fn a_folder_is_recovered_as_new_versions_and_nothing_else_moves() {
    let story = Story::start();
    let src = &story.source;
    let before_db = current_version(src, "secret/app/db");
    let before_api = current_version(src, "secret/app/api");
    assert_eq!((before_db, before_api), (2, 1));

    // The dry run reports both and writes nothing.
    let (code, stderr, results, node) = story.recover(
        src.addr(0),
        &[("RECOVER_DRY_RUN", "true")],
        SCRATCH_LISTENER,
    );
    assert_eq!(code, 0, "{stderr}\n{}", node.log());
    for (path, status) in [
        ("secret/app/db", "differs (changed keys: password)"),
        (
            "secret/app/api",
            "missing in production (its current version is deleted)",
        ),
    ] {
        assert!(
            stderr.lines().any(|l| l.contains("would recover")
                && l.contains(&format!("path={path} "))
                && l.contains(status)),
            "{path}: {stderr}"
        );
    }
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(results["recovered-paths"], "");
    assert_eq!(results["unchanged-paths"], "");
    assert_eq!(current_version(src, "secret/app/db"), 2, "nothing written");
    assert_eq!(current_version(src, "secret/app/api"), 1, "nothing written");
    assert_eq!(get(src, "secret/app/api"), None, "still deleted");
    story.assert_no_secret(&stderr, &results);
    story.assert_scratch_root_revoked(&node, &stderr);
    drop(node);

    // The recovery.
    let (code, stderr, results, node) = story.recover(src.addr(0), &[], SCRATCH_LISTENER);
    assert_eq!(code, 0, "{stderr}\n{}", node.log());
    assert_eq!(results["recovered-paths"], "secret/app/api,secret/app/db");
    assert_eq!(results["unchanged-paths"], "");
    let (db, v) = get(src, "secret/app/db").expect("db");
    assert_eq!(
        (db, v),
        (serde_json::json!({"user": "app", "password": DB_V1}), 3),
        "a new version equal to v1"
    );
    let (api, v) = get(src, "secret/app/api").expect("api is back");
    assert_eq!((api, v), (serde_json::json!({"key": API_KEY}), 2));
    assert_eq!(
        get(src, "secret/app/new"),
        Some((serde_json::json!({"k": NEW_VALUE}), 1)),
        "a secret written after the backup stays"
    );
    assert_eq!(
        get(src, "secret/other"),
        Some((serde_json::json!({"v": OTHER_V2}), 2)),
        "a secret outside the folder stays"
    );
    story.assert_no_secret(&stderr, &results);
    story.assert_scratch_root_revoked(&node, &stderr);
    drop(node);

    // Again: everything is equal now, and left alone.
    let (code, stderr, results, node) = story.recover(src.addr(0), &[], SCRATCH_LISTENER);
    assert_eq!(code, 0, "{stderr}\n{}", node.log());
    assert_eq!(results["recovered-paths"], "");
    assert_eq!(results["unchanged-paths"], "secret/app/api,secret/app/db");
    assert_eq!(current_version(src, "secret/app/db"), 3, "left alone");
    assert_eq!(current_version(src, "secret/app/api"), 2, "left alone");
    story.assert_no_secret(&stderr, &results);
    drop(node);

    // A secret named that the snapshot does not hold: that path fails (exit 1, named), the
    // other is still compared, and the later secret stays.
    let (code, stderr, results, _node) = story.recover(
        src.addr(0),
        &[("RECOVER_PATHS", "secret/app/db,secret/app/new")],
        SCRATCH_LISTENER,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr
            .contains("1 path(s) not recovered: secret/app/new (it does not exist in the snapshot"),
        "{stderr}"
    );
    assert_eq!(results["unchanged-paths"], "secret/app/db");
    assert_eq!(
        get(src, "secret/app/new"),
        Some((serde_json::json!({"k": NEW_VALUE}), 1))
    );
    story.assert_no_secret(&stderr, &results);
}

/// A loopback proxy in front of the production node that, when the step's write to
/// `trigger` arrives, first writes that secret itself (through the real server, as another
/// client would), then forwards the step's write. OpenBao cannot be made to take a write
/// between two given requests of another client on demand; the proxy places it exactly there.
/// One request per connection (`Connection: close` both ways), so no body needs parsing past
/// its `Content-Length`.
struct RaceProxy {
    port: u16,
    fired: Arc<AtomicBool>,
}

impl RaceProxy {
    fn start(
        upstream: String,
        trigger: &'static str,
        write: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fired = Arc::new(AtomicBool::new(false));
        let (flag, write) = (Arc::clone(&fired), Arc::new(write));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, flag, write) =
                    (upstream.clone(), Arc::clone(&flag), Arc::clone(&write));
                std::thread::spawn(move || {
                    let _ = relay(client, &upstream, trigger, &flag, write.as_ref());
                });
            }
        });
        Self { port, fired }
    }
}

fn relay(
    client: TcpStream,
    upstream: &str,
    trigger: &str,
    fired: &AtomicBool,
    write: &(dyn Fn() + Send + Sync),
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut first = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if first.is_empty() {
            first.clone_from(&line);
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if !lower.starts_with("connection:") {
            head.extend_from_slice(line.as_bytes());
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    if first.starts_with(&format!("POST {trigger} ")) && !fired.swap(true, Ordering::SeqCst) {
        write();
    }
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&head)?;
    server.write_all(b"Connection: close\r\n\r\n")?;
    server.write_all(&body)?;
    let mut answer = Vec::new();
    server.read_to_end(&mut answer)?;
    let mut client = client;
    client.write_all(&answer)?;
    Ok(())
}

#[test]
fn a_write_between_the_read_and_the_write_fails_that_path_and_stands() {
    let story = Story::start();
    let upstream = story
        .source
        .addr(0)
        .trim_start_matches("http://")
        .to_owned();
    let (addr, token) = (
        story.source.addr(0).to_owned(),
        story.source.root_token().to_owned(),
    );
    let proxy = RaceProxy::start(upstream, "/v1/secret/data/app/db", move || {
        let out = Command::new(venv::bao())
            .args([
                "kv",
                "put",
                "secret/app/db",
                &format!("password={CONCURRENT}"),
            ])
            .env("BAO_ADDR", &addr)
            .env("BAO_TOKEN", &token)
            .env_remove("VAULT_ADDR")
            .output()
            .unwrap();
        assert!(out.status.success(), "the concurrent write");
    });
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let (code, stderr, results, node) = story.recover(&via, &[], SCRATCH_LISTENER);
    assert!(
        proxy.fired.load(Ordering::SeqCst),
        "the step wrote secret/app/db"
    );
    assert_eq!(code, 1, "{stderr}");
    let last = stderr
        .lines()
        .rev()
        .find(|l| l.contains("not recovered"))
        .unwrap_or_default();
    assert!(
        last.contains("1 path(s) not recovered: secret/app/db (")
            && last.contains("check-and-set")
            && last.contains("the concurrent value stands"),
        "{stderr}"
    );
    assert_eq!(
        get(&story.source, "secret/app/db"),
        Some((serde_json::json!({"password": CONCURRENT}), 3)),
        "the concurrent write stands"
    );
    // The other path of the folder was recovered all the same.
    assert_eq!(results["recovered-paths"], "secret/app/api");
    assert_eq!(
        get(&story.source, "secret/app/api"),
        Some((serde_json::json!({"key": API_KEY}), 2))
    );
    story.assert_no_secret(&stderr, &results);
    story.assert_scratch_root_revoked(&node, &stderr);
}

/// A scratch node with OpenBao's default listener (the unauthenticated `sys/generate-root`
/// off since 2.5.3): the step says which setting to change, and nothing is written.
#[test]
fn a_scratch_node_without_generate_root_names_the_listener_setting() {
    let mut story = Story::start();
    // First a login that may only read: found before anything is fetched or restored.
    let read_only = story.source.token_with_policy(
        "read-only",
        "path \"secret/metadata/*\" { capabilities = [\"read\"] }\npath \"secret/data/*\" { capabilities = [\"read\"] }\npath \"sys/capabilities-self\" { capabilities = [\"update\"] }\n",
    );
    let recover_token = std::mem::replace(&mut story.token, read_only);
    let (code, stderr, results, node) = story.recover(story.source.addr(0), &[], SCRATCH_LISTENER);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("may not create, update secret/data/app/")
            && stderr.contains("tekton/vault-recover-policy.hcl"),
        "{stderr}"
    );
    assert!(!node.is_initialized(), "nothing was restored");
    assert!(!results.contains_key("restored-snapshot"));
    story.assert_no_secret(&stderr, &results);
    story.token = recover_token;

    let (code, stderr, results, _node) = story.recover(story.source.addr(0), &[], "");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("disable_unauthed_generate_root_endpoints = false"),
        "{stderr}"
    );
    assert_eq!(current_version(&story.source, "secret/app/db"), 2);
    story.assert_no_secret(&stderr, &results);
}

/// An auto-unsealed (transit) source: the scratch node with the same seal stanza unseals the
/// restored data itself, and the root token is made from the source's recovery keys. The
/// scratch node's second listener carries `disable_unauthed_generate_root_endpoints = false`
/// (the test bed's sealed node writes its own first listener). Without the recovery keys the
/// step stops before anything is fetched, naming the variable.
#[test]
fn an_auto_unsealed_source_is_recovered_with_its_recovery_keys() {
    use vault_backup_testbed::transit::{Kms, SealedCluster, SealedScratch};
    let kms = Kms::start();
    let seal = kms.seal_stanza(None);
    let source = SealedCluster::start(1, &seal);
    source.kv2_put("app/db", "password", DB_V1);
    let bk = tempfile::tempdir().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let (code, stderr) = run(
        &step_bin("vault-snapshot"),
        &env(&[
            ("VAULT_ADDR", source.addr(0)),
            ("VAULT_TOKEN", source.root_token()),
            ("SNAPSHOT_DIR", &s(ws.path())),
            ("RESULTS_DIR", &s(results.path())),
        ]),
    );
    assert_eq!(code, 0, "{stderr}");
    let name = std::fs::read_to_string(results.path().join("snapshot-name")).unwrap();
    let (code, stderr) = run(
        &step_bin("snapshot-sync"),
        &env(&[
            ("SNAPSHOT_DIR", &s(ws.path())),
            ("SNAPSHOT_NAME", &name),
            ("BACKUP_DIR", &s(bk.path())),
        ]),
    );
    assert_eq!(code, 0, "{stderr}");
    source.kv2_put("app/db", "password", DB_V2);

    let keys = tempfile::tempdir().unwrap();
    let recovery = keys.path().join("recovery-keys");
    let recover = |with_keys: bool| {
        let port = vault_backup_testbed::process::free_port();
        let scratch = SealedScratch::start(&format!(
            "{seal}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n  {SCRATCH_LISTENER}\n}}\n"
        ));
        let out = tempfile::tempdir().unwrap();
        let res = tempfile::tempdir().unwrap();
        let mut vars = env(&[
            ("RESTORE_MODE", "recover"),
            ("VAULT_ADDR", source.addr(0)),
            ("VAULT_TOKEN", source.root_token()),
            ("RECOVER_SCRATCH_ADDR", &format!("http://127.0.0.1:{port}")),
            ("RECOVER_PATHS", "secret/app/db"),
            ("RESTORE_CONFIRM", &name),
            ("SNAPSHOT_DIR", &s(out.path())),
            ("BACKUP_DIR", &s(bk.path())),
            ("RESULTS_DIR", &s(res.path())),
            ("DRILL_UNSEAL_KEYS_FILE", &s(&keys.path().join("absent"))),
            ("RESTORE_TIMEOUT", "60s"),
        ]);
        if with_keys {
            vars.insert("DRILL_RECOVERY_KEYS_FILE".into(), s(&recovery));
        }
        let (code, stderr) = run(&restore_bin(), &vars);
        let recovered = std::fs::read_to_string(res.path().join("recovered-paths")).ok();
        (code, stderr, recovered, scratch)
    };

    let (code, stderr, _, scratch) = recover(false);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("DRILL_RECOVERY_KEYS_FILE: the scratch node at"),
        "{stderr}"
    );
    assert_eq!(
        scratch.status()["initialized"],
        false,
        "nothing was restored"
    );
    drop(scratch);

    std::fs::write(&recovery, format!("{}\n", source.recovery_key())).unwrap();
    let (code, stderr, recovered, scratch) = recover(true);
    assert_eq!(code, 0, "{stderr}\n--- scratch ---\n{}", scratch.log());
    assert!(
        stderr.contains("unsealed itself with the auto-unseal seal")
            && stderr.contains("from the source's recovery keys")
            && stderr.contains("scratch root token revoked"),
        "{stderr}"
    );
    assert_eq!(recovered.as_deref(), Some("secret/app/db"));
    assert_eq!(
        source
            .kv2_get(0, source.root_token(), "app/db", "password")
            .as_deref(),
        Ok(DB_V1)
    );
    for secret in [DB_V1, DB_V2, source.root_token(), source.recovery_key()] {
        assert!(!stderr.contains(secret), "a secret in the output: {stderr}");
    }
}
