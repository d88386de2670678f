//! OpenBao with an auto-unseal: the transit seal, the test bed's KMS.
//!
//! Most production clusters auto-unseal (a cloud KMS, transit, PKCS#11) and hold recovery keys
//! where a Shamir cluster holds unseal keys. OpenBao's own transit seal is the one auto-unseal
//! that installs here: a second OpenBao (a dev server, in memory) serves the transit engine and
//! a key, and every node of the source cluster, the drill's scratch node and the restore's
//! target carries a `seal "transit"` stanza pointing at it. Nodes sealed by the same key open
//! each other's keyrings, which is what a restore of an auto-unsealed cluster rests on.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::openbao::DevServer;
use crate::process::{Server, free_port, host, port_open, wait_until};
use crate::venv;

/// The KMS: an OpenBao dev server with the transit engine at `transit/` and one key.
#[derive(Debug)]
pub struct Kms {
    dev: DevServer,
    key: String,
}

impl Kms {
    /// The transit mount.
    pub const MOUNT: &'static str = "transit/";

    /// Starts the dev server, enables transit and creates the key `autounseal`.
    ///
    /// # Panics
    /// If OpenBao is not installed or the CLI fails.
    #[must_use]
    pub fn start() -> Self {
        let dev = DevServer::start();
        let kms = Self {
            dev,
            key: "autounseal".to_owned(),
        };
        kms.bao(&["secrets", "enable", "transit"]);
        let key = format!("transit/keys/{}", kms.key);
        kms.bao(&["write", "-f", &key]);
        kms
    }

    /// A second key in the same engine, for a node sealed by another key.
    ///
    /// # Panics
    /// If the CLI fails.
    pub fn create_key(&self, name: &str) {
        self.bao(&["write", "-f", &format!("transit/keys/{name}")]);
    }

    fn bao(&self, args: &[&str]) -> String {
        let out = Command::new(venv::bao())
            .args(args)
            .env("BAO_ADDR", &self.dev.addr)
            .env("BAO_TOKEN", DevServer::ROOT_TOKEN)
            .env_remove("VAULT_ADDR")
            .output()
            .expect("bao");
        assert!(
            out.status.success(),
            "bao {args:?} on the KMS: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `seal "transit"` stanza for a node sealed by key `key` (the default key when `None`).
    #[must_use]
    pub fn seal_stanza(&self, key: Option<&str>) -> String {
        format!(
            r#"seal "transit" {{
  address = "{addr}"
  token = "{token}"
  key_name = "{key}"
  mount_path = "{mount}"
  disable_renewal = "true"
}}
"#,
            addr = self.dev.addr,
            token = DevServer::ROOT_TOKEN,
            key = key.unwrap_or(&self.key),
            mount = Self::MOUNT,
        )
    }

    /// The KMS's address.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.dev.addr
    }
}

/// One OpenBao process with a seal stanza.
#[derive(Debug)]
pub struct SealedNode {
    /// `node1`, `node2`, ...
    pub id: String,
    /// Its API address.
    pub addr: String,
    server: Server,
}

impl SealedNode {
    /// Its log so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// Starts node `i` with raft storage in `dir` and `seal` (HCL at the top level, e.g.
/// [`Kms::seal_stanza`]; empty for Shamir), and waits until it listens.
///
/// # Panics
/// If the node does not listen within 20 s.
#[must_use]
pub fn spawn_sealed(dir: &Path, i: usize, seal: &str) -> SealedNode {
    let id = format!("node{i}");
    let (api, cluster) = (free_port(), free_port());
    let data = dir.join(&id);
    std::fs::create_dir_all(data.join("raft")).expect("mkdir");
    let config = format!(
        r#"storage "raft" {{
  path = "{raft}"
  node_id = "{id}"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "{host}:{api}"
  cluster_address = "{host}:{cluster}"
  tls_disable = true
}}
{seal}
api_addr = "http://{host}:{api}"
cluster_addr = "https://{host}:{cluster}"
log_level = "info"
"#,
        raft = data.join("raft").display(),
        host = host(),
    );
    let config_path = data.join("config.hcl");
    std::fs::write(&config_path, config).expect("write config");
    let mut cmd = Command::new(venv::bao());
    cmd.arg("server")
        .arg(format!("-config={}", config_path.display()));
    let server = Server::spawn(&id, cmd, &data.join("server.log"));
    wait_until(&format!("{id} to listen"), Duration::from_secs(20), || {
        port_open(api)
    });
    SealedNode {
        id,
        addr: format!("http://{}:{api}", host()),
        server,
    }
}

fn bao_at(addr: &str, token: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(venv::bao());
    cmd.args(args)
        .env("BAO_ADDR", addr)
        .env_remove("VAULT_ADDR");
    if !token.is_empty() {
        cmd.env("BAO_TOKEN", token);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "bao {args:?} at {addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `bao status -format=json` of the node at `addr` (printed even while sealed).
#[must_use]
pub fn status(addr: &str) -> Value {
    Command::new(venv::bao())
        .args(["status", "-format=json"])
        .env("BAO_ADDR", addr)
        .env_remove("VAULT_ADDR")
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(Value::Null)
}

/// A raft cluster of nodes sealed by one seal stanza (transit), initialized with one recovery
/// key (`-recovery-shares=1 -recovery-threshold=1`): no node is ever unsealed by hand.
#[derive(Debug)]
pub struct SealedCluster {
    nodes: Vec<SealedNode>,
    root_token: String,
    recovery_key: String,
    dir: TempDir,
}

impl SealedCluster {
    /// Starts `n` nodes with `seal`, initializes node 1 with one recovery key, joins the others
    /// (each unseals itself through the seal) and waits until all are voters and autopilot
    /// calls them healthy.
    ///
    /// # Panics
    /// If the cluster does not come up.
    #[must_use]
    pub fn start(n: usize, seal: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("openbao-transit-")
            .tempdir()
            .expect("tempdir");
        let nodes: Vec<SealedNode> = (1..=n).map(|i| spawn_sealed(dir.path(), i, seal)).collect();
        let mut cluster = Self {
            nodes,
            root_token: String::new(),
            recovery_key: String::new(),
            dir,
        };
        let init: Value = serde_json::from_str(
            &cluster
                .try_bao(
                    0,
                    &[
                        "operator",
                        "init",
                        "-recovery-shares=1",
                        "-recovery-threshold=1",
                        "-format=json",
                    ],
                )
                .unwrap_or_else(|e| panic!("{e}\n{}", cluster.nodes[0].log())),
        )
        .expect("init JSON");
        init["root_token"]
            .as_str()
            .expect("root token")
            .clone_into(&mut cluster.root_token);
        init["recovery_keys_b64"][0]
            .as_str()
            .expect("recovery key")
            .clone_into(&mut cluster.recovery_key);
        cluster.wait_active(0);
        if n > 1 {
            cluster.bao(
                0,
                &[
                    "operator",
                    "raft",
                    "autopilot",
                    "set-config",
                    "-server-stabilization-time=1s",
                ],
            );
        }
        let leader = cluster.nodes[0].addr.clone();
        for i in 1..n {
            cluster.bao(i, &["operator", "raft", "join", &leader]);
            wait_until(
                "a joined node to unseal itself",
                Duration::from_secs(30),
                || status(&cluster.nodes[i].addr)["sealed"] == Value::Bool(false),
            );
        }
        if n > 1 {
            wait_until(&format!("{n} raft voters"), Duration::from_secs(60), || {
                let peers: Value = cluster
                    .try_bao(0, &["operator", "raft", "list-peers", "-format=json"])
                    .ok()
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or(Value::Null);
                peers["data"]["config"]["servers"]
                    .as_array()
                    .is_some_and(|s| {
                        s.len() == n && s.iter().all(|p| p["voter"] == Value::Bool(true))
                    })
            });
            // Autopilot's state (what the snapshot step records) lags the raft configuration.
            wait_until(
                &format!("autopilot to list {n} healthy voters"),
                Duration::from_secs(60),
                || {
                    let state: Value = cluster
                        .try_bao(
                            0,
                            &["read", "-format=json", "sys/storage/raft/autopilot/state"],
                        )
                        .ok()
                        .and_then(|s| serde_json::from_str(&s).ok())
                        .unwrap_or(Value::Null);
                    state["data"]["healthy"] == true
                        && state["data"]["voters"]
                            .as_array()
                            .is_some_and(|v| v.len() == n)
                },
            );
        }
        cluster
    }

    fn wait_active(&self, i: usize) {
        wait_until(
            &format!("{} to lead", self.nodes[i].id),
            Duration::from_secs(30),
            || {
                self.try_bao(i, &["read", "-format=json", "sys/leader"])
                    .ok()
                    .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                    .is_some_and(|v| v["data"]["is_self"] == Value::Bool(true))
            },
        );
    }

    /// The root token.
    #[must_use]
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The (single) recovery key.
    #[must_use]
    pub fn recovery_key(&self) -> &str {
        &self.recovery_key
    }

    /// Node `i`'s API address.
    #[must_use]
    pub fn addr(&self, i: usize) -> &str {
        &self.nodes[i].addr
    }

    /// Node `i`'s log.
    #[must_use]
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].log()
    }

    /// The cluster's temp directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the `bao` CLI against node `i` as root.
    ///
    /// # Errors
    /// The command's stderr.
    pub fn try_bao(&self, i: usize, args: &[&str]) -> Result<String, String> {
        bao_at(&self.nodes[i].addr, &self.root_token, args)
    }

    /// Like [`Self::try_bao`], panicking with the node's log on failure.
    ///
    /// # Panics
    /// If the command fails.
    pub fn bao(&self, i: usize, args: &[&str]) -> String {
        self.try_bao(i, args)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.nodes[i].server.log_tail(30)))
    }

    /// `bao status` of node `i`.
    #[must_use]
    pub fn status(&self, i: usize) -> Value {
        status(&self.nodes[i].addr)
    }

    /// Enables KV v2 at `secret/` on node 1 and writes `key=value` at `secret/<path>`, waiting
    /// out the mount's upgrade.
    ///
    /// # Panics
    /// If the write keeps failing.
    pub fn kv2_put(&self, path: &str, key: &str, value: &str) {
        let mounts = self.bao(0, &["secrets", "list", "-format=json"]);
        if !mounts.contains("\"secret/\"") {
            self.bao(0, &["secrets", "enable", "-path=secret", "kv-v2"]);
        }
        let pair = format!("{key}={value}");
        let full = format!("secret/{path}");
        for _ in 0..40 {
            match self.try_bao(0, &["kv", "put", &full, &pair]) {
                Ok(_) => return,
                Err(e) if e.contains("Upgrading from non-versioned") => {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the KV v2 mount did not finish its upgrade");
    }

    /// Reads field `key` of `secret/<path>` at node `i` with `token`.
    ///
    /// # Errors
    /// The CLI's error.
    pub fn kv2_get(&self, i: usize, token: &str, path: &str, key: &str) -> Result<String, String> {
        bao_at(
            &self.nodes[i].addr,
            token,
            &[
                "kv",
                "get",
                &format!("-field={key}"),
                &format!("secret/{path}"),
            ],
        )
        .map(|s| s.trim().to_owned())
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].server.kill();
    }
}

/// A fresh node with `seal` that nobody has initialized: the drill's scratch node with the
/// source cluster's auto-unseal.
#[derive(Debug)]
pub struct SealedScratch {
    node: SealedNode,
    _dir: TempDir,
}

impl SealedScratch {
    /// Starts it and waits until it listens.
    #[must_use]
    pub fn start(seal: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("openbao-scratch-transit-")
            .tempdir()
            .expect("tempdir");
        let node = spawn_sealed(dir.path(), 1, seal);
        Self { node, _dir: dir }
    }

    /// Its API address.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.node.addr
    }

    /// `bao status`.
    #[must_use]
    pub fn status(&self) -> Value {
        status(&self.node.addr)
    }

    /// Its log so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.node.log()
    }
}
