//! OpenBao on loopback: a single node or a raft cluster, initialized and unsealed.
//!
//! OpenBao is the open-source fork of Vault and serves the same raft snapshot API, so the
//! snapshot step is tested against the real thing: real raft, real leader election, real
//! archives with their own `SHA256SUMS`. Nodes are driven with the `bao` CLI that ships in the
//! same package, the way an operator would.
//!
//! Measured here: three nodes with `performance_multiplier = 1` are usable in about 3 s; a
//! killed leader is replaced in 2–3 s once autopilot has promoted the others to voters.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::process::{Server, free_port, host, port_open, wait_until};
use crate::venv;

/// How to start a cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Serve the API over TLS with a CA made for the test (see [`Cluster::ca_cert`]).
    pub tls: bool,
    /// `disable_standby_reads = true`: standbys answer reads with a 307 to the active node,
    /// as Vault OSS does; otherwise OpenBao standbys serve reads from their own copy.
    pub disable_standby_reads: bool,
}

/// One OpenBao server process.
#[derive(Debug)]
pub struct Node {
    /// `node1`, `node2`, ...
    pub id: String,
    /// Its API address, e.g. `http://127.0.0.1:41234` (the test-bed host, see [`host`]).
    pub addr: String,
    server: Server,
}

/// A running, initialized and unsealed OpenBao cluster (one node or more).
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<Node>,
    root_token: String,
    unseal_key: String,
    ca: Option<PathBuf>,
    dir: TempDir,
}

/// Makes a test CA (`ca.pem`) and a server certificate for 127.0.0.1, localhost and the test-bed
/// host ([`host`], the pod network's host address in a process that runs Tasks) signed by it
/// (`server.pem`, `server.key`) in `dir`; returns the CA's path.
pub(crate) fn tls_material(dir: &Path) -> PathBuf {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=vault-backup test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        format!(
            "subjectAltName=IP:127.0.0.1,IP:{},DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
            host()
        ),
    )
    .expect("write san.ext");
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    dir.join("ca.pem")
}

fn spawn_node(dir: &Path, i: usize, opts: Options) -> (Node, u16) {
    spawn_node_with(dir, i, opts, "")
}

/// [`spawn_node`] with `listener` (HCL lines) added to the node's `listener "tcp"` stanza.
fn spawn_node_with(dir: &Path, i: usize, opts: Options, listener: &str) -> (Node, u16) {
    let scheme = if opts.tls { "https" } else { "http" };
    let id = format!("node{i}");
    let (api, cluster) = (free_port(), free_port());
    let data = dir.join(&id);
    std::fs::create_dir_all(data.join("raft")).expect("mkdir");
    let tls = if opts.tls {
        format!(
            "tls_cert_file = \"{0}/server.pem\"\n  tls_key_file = \"{0}/server.key\"",
            dir.display()
        )
    } else {
        "tls_disable = true".to_owned()
    };
    let config = format!(
        r#"storage "raft" {{
  path = "{raft}"
  node_id = "{id}"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "{host}:{api}"
  cluster_address = "{host}:{cluster}"
  {tls}
  {listener}
}}
api_addr = "{scheme}://{host}:{api}"
cluster_addr = "https://{host}:{cluster}"
disable_standby_reads = {dsr}
log_level = "info"
"#,
        raft = data.join("raft").display(),
        dsr = opts.disable_standby_reads,
        host = host(),
    );
    let config_path = data.join("config.hcl");
    std::fs::write(&config_path, config).expect("write config");
    let mut cmd = Command::new(venv::bao());
    cmd.arg("server")
        .arg(format!("-config={}", config_path.display()));
    let server = Server::spawn(&id, cmd, &data.join("server.log"));
    (
        Node {
            id,
            addr: format!("{scheme}://{}:{api}", host()),
            server,
        },
        api,
    )
}

impl Cluster {
    /// Starts `n` nodes on free ports, initializes node 1 with one unseal key, joins the others
    /// to its raft cluster, unseals them all and waits until node 1 leads and every node is a
    /// raft voter (autopilot stabilization is set to 1 s so that happens quickly).
    ///
    /// # Panics
    /// If OpenBao is not installed (`make testbed`) or the cluster does not come up.
    #[must_use]
    pub fn start(n: usize, opts: Options) -> Self {
        assert!(n >= 1);
        let dir = tempfile::Builder::new()
            .prefix("openbao-")
            .tempdir()
            .expect("tempdir");
        let ca = opts.tls.then(|| tls_material(dir.path()));
        let nodes: Vec<(Node, u16)> = (1..=n).map(|i| spawn_node(dir.path(), i, opts)).collect();
        for (node, port) in &nodes {
            wait_until(
                &format!("{} to listen", node.id),
                Duration::from_secs(20),
                || port_open(*port),
            );
        }
        let nodes: Vec<Node> = nodes.into_iter().map(|(n, _)| n).collect();
        let mut cluster = Self {
            nodes,
            root_token: String::new(),
            unseal_key: String::new(),
            ca,
            dir,
        };

        let init = cluster.bao_json(
            0,
            &[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ],
        );
        init["unseal_keys_b64"][0]
            .as_str()
            .expect("unseal key")
            .clone_into(&mut cluster.unseal_key);
        init["root_token"]
            .as_str()
            .expect("root token")
            .clone_into(&mut cluster.root_token);
        cluster.unseal(0);
        cluster.wait_for_leader(0);
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
            let mut args = vec!["operator", "raft", "join"];
            let ca_arg;
            if let Some(ca) = &cluster.ca {
                ca_arg = format!("-leader-ca-cert=@{}", ca.display());
                args.push(&ca_arg);
            }
            args.push(&leader);
            cluster.bao(i, &args);
            // A joined node can take a moment before it accepts the key.
            wait_until("a joined node to unseal", Duration::from_secs(20), || {
                cluster
                    .try_bao(i, &["operator", "unseal", &cluster.unseal_key])
                    .is_ok()
                    && cluster.seal_status(i)["sealed"] == Value::Bool(false)
            });
        }
        if n > 1 {
            cluster.wait_for_voters(n);
        }
        cluster
    }

    /// The root token.
    #[must_use]
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The (single) unseal key.
    #[must_use]
    pub fn unseal_key(&self) -> &str {
        &self.unseal_key
    }

    /// The CA that signed the servers' certificates, when started with TLS.
    #[must_use]
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// A directory for the test's own files, removed with the cluster.
    #[must_use]
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Node `i`'s API address.
    #[must_use]
    pub fn addr(&self, i: usize) -> &str {
        &self.nodes[i].addr
    }

    /// Runs the `bao` CLI against node `i` as root and returns stdout.
    ///
    /// # Errors
    /// The command's stderr if it fails.
    pub fn try_bao(&self, i: usize, args: &[&str]) -> Result<String, String> {
        self.try_bao_as(i, &self.root_token, args)
    }

    /// Runs the `bao` CLI against node `i` with `token`.
    ///
    /// # Errors
    /// The command's stderr if it fails.
    pub fn try_bao_as(&self, i: usize, token: &str, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(venv::bao());
        cmd.args(args)
            .env("BAO_ADDR", &self.nodes[i].addr)
            .env_remove("VAULT_ADDR");
        if !token.is_empty() {
            cmd.env("BAO_TOKEN", token);
        }
        if let Some(ca) = &self.ca {
            cmd.env("BAO_CACERT", ca);
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "bao {args:?} on {}: {}",
                self.nodes[i].id,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Like [`Cluster::try_bao`], panicking on failure.
    ///
    /// # Panics
    /// If the command fails.
    pub fn bao(&self, i: usize, args: &[&str]) -> String {
        self.try_bao(i, args)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.nodes[i].server.log_tail(30)))
    }

    /// Runs a `bao` command with `-format=json` output and parses it.
    ///
    /// # Panics
    /// If the command fails or prints no JSON.
    pub fn bao_json(&self, i: usize, args: &[&str]) -> Value {
        let out = self.bao(i, args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("bao {args:?} printed no JSON ({e}): {out}"))
    }

    fn seal_status(&self, i: usize) -> Value {
        // `bao status` exits 2 while sealed but still prints its JSON.
        let out = Command::new(venv::bao())
            .args(["status", "-format=json"])
            .env("BAO_ADDR", &self.nodes[i].addr)
            .envs(self.ca.iter().map(|ca| ("BAO_CACERT", ca)))
            .output();
        out.ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or(Value::Null)
    }

    /// Unseals node `i` with the cluster's key.
    ///
    /// # Panics
    /// If the CLI fails.
    pub fn unseal(&self, i: usize) {
        self.bao(i, &["operator", "unseal", &self.unseal_key]);
    }

    /// `GET /v1/sys/leader` of node `i`.
    #[must_use]
    pub fn leader_info(&self, i: usize) -> Value {
        self.try_bao(i, &["read", "-format=json", "sys/leader"])
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .map_or(Value::Null, |v| v["data"].clone())
    }

    fn wait_for_leader(&self, i: usize) {
        wait_until(
            &format!("{} to lead", self.nodes[i].id),
            Duration::from_secs(30),
            || self.leader_info(i)["is_self"] == Value::Bool(true),
        );
    }

    fn wait_for_voters(&self, n: usize) {
        wait_until(&format!("{n} raft voters"), Duration::from_secs(60), || {
            let Some(i) = self.leader() else { return false };
            let peers = self
                .try_bao(i, &["operator", "raft", "list-peers", "-format=json"])
                .unwrap_or_default();
            let peers: Value = serde_json::from_str(&peers).unwrap_or(Value::Null);
            peers["data"]["config"]["servers"]
                .as_array()
                .is_some_and(|s| s.len() == n && s.iter().all(|p| p["voter"] == Value::Bool(true)))
        });
    }

    /// The index of the node that currently leads, if any node says it does.
    #[must_use]
    pub fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].server.is_alive())
            .find(|&i| self.leader_info(i)["is_self"] == Value::Bool(true))
    }

    /// The index of a running node that is not the leader.
    ///
    /// # Panics
    /// If there is none.
    #[must_use]
    pub fn standby(&self) -> usize {
        let leader = self.leader();
        (0..self.nodes.len())
            .find(|&i| Some(i) != leader && self.nodes[i].server.is_alive())
            .expect("a running standby")
    }

    /// Kills node `i` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].server.kill();
    }

    /// Waits until a running node other than `not` leads and returns its index.
    ///
    /// # Panics
    /// If none does within 30 s.
    pub fn wait_for_new_leader(&mut self, not: usize) -> usize {
        let mut found = None;
        wait_until("a new leader", Duration::from_secs(30), || {
            found = self.leader().filter(|&i| i != not);
            found.is_some()
        });
        found.expect("leader")
    }

    /// Writes `key=value` pairs at `path` (a KV v1 mount at `secret/` is enabled on first use).
    ///
    /// # Panics
    /// If the write fails.
    pub fn write_secret(&self, path: &str, pairs: &[(&str, &str)]) {
        let leader = self.leader().expect("a leader");
        let mounts = self.bao(leader, &["secrets", "list", "-format=json"]);
        if !mounts.contains("\"secret/\"") {
            self.bao(leader, &["secrets", "enable", "-path=secret", "kv"]);
        }
        let kv: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["kv", "put", path];
        args.extend(kv.iter().map(String::as_str));
        self.bao(leader, &args);
    }

    /// Enables a KV v2 secrets engine at `mount` (e.g. `secret`, for the restore canary) on the
    /// leader; do it before [`Cluster::write_secret`], which would enable KV v1 there.
    ///
    /// # Panics
    /// If there is no leader or the CLI fails.
    pub fn enable_kv2(&self, mount: &str) {
        let leader = self.leader().expect("a leader");
        self.bao(
            leader,
            &["secrets", "enable", &format!("-path={mount}"), "kv-v2"],
        );
    }

    /// Reads field `key` at `path` from node `i` with `token`.
    ///
    /// # Errors
    /// The CLI's error.
    pub fn read_secret_as(
        &self,
        i: usize,
        token: &str,
        path: &str,
        key: &str,
    ) -> Result<String, String> {
        self.try_bao_as(i, token, &["kv", "get", &format!("-field={key}"), path])
    }

    /// Writes policy `name` with the HCL `hcl` at the leader and returns the leader's index.
    ///
    /// # Panics
    /// If there is no leader or the CLI fails.
    pub fn write_policy(&self, name: &str, hcl: &str) -> usize {
        let leader = self.leader().expect("a leader");
        let file = self.dir.path().join(format!("{name}.hcl"));
        std::fs::write(&file, hcl).expect("write policy");
        self.bao(
            leader,
            &["policy", "write", name, &file.display().to_string()],
        );
        leader
    }

    /// Writes a policy and returns a token that has only it (no default policy).
    ///
    /// # Panics
    /// If the CLI fails.
    #[must_use]
    pub fn token_with_policy(&self, name: &str, hcl: &str) -> String {
        let leader = self.write_policy(name, hcl);
        let out = self.bao_json(
            leader,
            &[
                "token",
                "create",
                "-format=json",
                "-no-default-policy",
                &format!("-policy={name}"),
                "-ttl=1h",
            ],
        );
        out["auth"]["client_token"]
            .as_str()
            .expect("client token")
            .to_owned()
    }

    /// Restores `snapshot` into node `i` with `snapshot restore -force`, as a user recovering
    /// into a fresh cluster would.
    ///
    /// # Errors
    /// The CLI's error.
    pub fn restore_force(&self, i: usize, snapshot: &Path) -> Result<String, String> {
        self.try_bao(
            i,
            &[
                "operator",
                "raft",
                "snapshot",
                "restore",
                "-force",
                &snapshot.display().to_string(),
            ],
        )
    }

    /// Proves `snapshot` (taken from this cluster) is a backup, the way a person restoring
    /// would: restores it with `snapshot restore -force` into a fresh single node, unseals that
    /// node with this cluster's key, and returns what this cluster's root token reads at
    /// `path`/`key` there.
    ///
    /// # Panics
    /// If the restore, the unseal or the read fails.
    #[must_use]
    pub fn restore_into_fresh_node_and_read(
        &self,
        snapshot: &Path,
        path: &str,
        key: &str,
    ) -> String {
        let fresh = Self::start(1, Options::default());
        fresh
            .restore_force(0, snapshot)
            .expect("snapshot-force restore");
        fresh.unseal_with(0, self.unseal_key());
        let mut value = Err(String::new());
        wait_until("the restored secret", Duration::from_secs(20), || {
            value = fresh.read_secret_as(0, self.root_token(), path, key);
            value.is_ok()
        });
        value.expect("read").trim().to_owned()
    }

    /// Unseals node `i` with another cluster's key (after a restore) and waits until it leads.
    ///
    /// # Panics
    /// If unsealing fails or the node does not become active.
    pub fn unseal_with(&self, i: usize, key: &str) {
        wait_until(
            "the restored node to unseal",
            Duration::from_secs(30),
            || {
                let _ = self.try_bao(i, &["operator", "unseal", key]);
                self.seal_status(i)["sealed"] == Value::Bool(false)
            },
        );
        self.wait_for_leader(i);
    }
}

/// An OpenBao dev server: in-memory storage, unsealed, root token `root`. Not raft, which is
/// exactly what a test of the "not integrated storage" error needs.
#[derive(Debug)]
pub struct DevServer {
    /// Its API address.
    pub addr: String,
    server: Server,
    _dir: TempDir,
}

impl DevServer {
    /// The dev server's root token.
    pub const ROOT_TOKEN: &'static str = "root";

    /// Starts a dev server on a free port and waits until it answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("openbao-dev-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let mut cmd = Command::new(venv::bao());
        cmd.args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-listen-address={}:{port}", host()))
            .arg(format!("-dev-root-token-id={}", Self::ROOT_TOKEN))
            .env("HOME", dir.path());
        let server = Server::spawn("dev", cmd, &dir.path().join("server.log"));
        wait_until("the dev server to listen", Duration::from_secs(20), || {
            port_open(port)
        });
        Self {
            addr: format!("http://{}:{port}", host()),
            server,
            _dir: dir,
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// A fresh OpenBao node that nobody has initialized: the restore drill's scratch node, as the
/// drill Task's sidecar runs it (raft storage in a temp directory, loopback only). The test
/// hands its address to `vault-restore` and then asks whether anything reached it.
#[derive(Debug)]
pub struct ScratchNode {
    node: Node,
    _dir: TempDir,
}

impl ScratchNode {
    /// Starts one uninitialized raft node on free ports and waits until it listens.
    ///
    /// # Panics
    /// If OpenBao is not installed or the node does not listen.
    #[must_use]
    pub fn start_uninitialized() -> Self {
        Self::start_with_listener("")
    }

    /// [`Self::start_uninitialized`] with `listener` (HCL lines, e.g.
    /// `http_read_timeout = "2s"`) in its `listener "tcp"` stanza.
    ///
    /// # Panics
    /// If OpenBao is not installed or the node does not listen.
    #[must_use]
    pub fn start_with_listener(listener: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("openbao-scratch-")
            .tempdir()
            .expect("tempdir");
        let (node, port) = spawn_node_with(dir.path(), 1, Options::default(), listener);
        wait_until(
            "the scratch node to listen",
            Duration::from_secs(20),
            || port_open(port),
        );
        Self { node, _dir: dir }
    }

    /// Its API address.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.node.addr
    }

    /// `bao status -format=json` (printed even while sealed or uninitialized).
    #[must_use]
    pub fn status(&self) -> Value {
        let out = Command::new(venv::bao())
            .args(["status", "-format=json"])
            .env("BAO_ADDR", &self.node.addr)
            .env_remove("VAULT_ADDR")
            .output();
        out.ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or(Value::Null)
    }

    /// Whether anything initialized it.
    ///
    /// # Panics
    /// If the node does not answer.
    #[must_use]
    pub fn is_initialized(&self) -> bool {
        let status = self.status();
        status["initialized"]
            .as_bool()
            .unwrap_or_else(|| panic!("the scratch node answers its status: {status}"))
    }

    /// Its log so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.node.server.log()
    }
}
