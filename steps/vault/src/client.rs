//! The only module that speaks Vault's HTTP API: leader discovery, login, the snapshot request.
//!
//! Redirects are never followed blindly. A standby with `disable_standby_reads` (and Vault OSS)
//! answers the snapshot request with a 307 to the active node; reqwest would follow it and keep
//! the `X-Vault-Token` header wherever it points. So the client follows no redirects itself and
//! [`Vault::open_snapshot`] follows one only to the leader that `sys/leader` named.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, LOCATION};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use url::Url;
use vault_backup_common::Secret;
use vault_backup_common::env::ConfigError;

use crate::config::{Auth, Tls};
use crate::error::{Error, Result};

/// The API path of the snapshot.
pub const SNAPSHOT_PATH: &str = "v1/sys/storage/raft/snapshot";

/// A Vault API client with the step's TLS settings.
#[derive(Debug, Clone)]
pub struct Vault {
    pub(crate) http: reqwest::Client,
    namespace: Option<String>,
    /// The variable that sets the step's time limit, named when a request times out.
    timeout_variable: &'static str,
}

/// What `sys/leader` said.
#[derive(Debug, Clone, Deserialize)]
pub struct LeaderInfo {
    /// Whether HA (raft) is on.
    #[serde(default)]
    pub ha_enabled: bool,
    /// Whether the node asked is the active node.
    #[serde(default)]
    pub is_self: bool,
    /// The active node's API address.
    #[serde(default)]
    pub leader_address: String,
    /// The raft index committed on this node (OpenBao and Vault with raft storage).
    #[serde(default)]
    pub raft_committed_index: Option<u64>,
}

/// What `sys/seal-status` said (the fields this step uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SealStatus {
    /// Whether the node is sealed.
    #[serde(default)]
    pub sealed: bool,
    /// The server version.
    #[serde(default)]
    pub version: Option<String>,
    /// The storage backend, where the server reports it.
    #[serde(default)]
    pub storage_type: Option<String>,
    /// Whether the node is initialized.
    #[serde(default)]
    pub initialized: bool,
    /// The seal type: `shamir`, or an auto-unseal (`transit`, `awskms`, ...).
    #[serde(default, rename = "type")]
    pub seal_type: Option<String>,
    /// Whether the seal is an auto-unseal with recovery keys (`recovery_seal`).
    #[serde(default)]
    pub recovery_seal: bool,
    /// Keys needed to unseal.
    #[serde(default, rename = "t")]
    pub threshold: u32,
    /// Keys given so far.
    #[serde(default)]
    pub progress: u32,
}

/// What `sys/init` returned: never logged, never written anywhere.
#[derive(Debug)]
pub struct Init {
    /// The new root token.
    pub root_token: Secret,
    /// The new unseal keys (shamir seal) or recovery keys (auto-unseal).
    pub keys: Vec<Secret>,
}

/// What recovery keys did on a node ([`Vault::prove_recovery_keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryProof {
    /// They reached the threshold and the node accepted them.
    Proven,
    /// The node refused them (its words; never a key).
    Refused {
        /// What it said, e.g. `root generation aborted: ...`.
        detail: String,
    },
    /// Fewer keys than the threshold.
    Incomplete {
        /// Keys entered.
        progress: u64,
        /// Keys required.
        required: u64,
    },
}

/// How an unseal key was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unseal {
    /// Accepted; the node's seal status after it.
    Accepted(SealStatus),
    /// Refused as not a key of this node's keyring (Vault's own words in `detail`).
    WrongKey {
        /// What Vault said, e.g. `cipher: message authentication failed`.
        detail: String,
    },
}

/// The leader a snapshot will be taken from.
#[derive(Debug, Clone)]
pub struct Leader {
    /// Its API address.
    pub addr: Url,
    /// Its version.
    pub version: Option<String>,
    /// Which cluster it leads (`sys/health`), when it says.
    pub cluster: Option<ClusterIdentity>,
    /// Its seal (`sys/seal-status` `type`: `shamir`, `transit`, ...), when it says.
    pub seal_type: Option<String>,
}

/// What `sys/storage/raft/autopilot/state` said (the fields the snapshot step records).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AutopilotState {
    /// Whether autopilot considers the cluster healthy.
    #[serde(default)]
    pub healthy: bool,
    /// How many voters may fail without losing quorum.
    #[serde(default)]
    pub failure_tolerance: u64,
    /// The raft node id of the leader.
    #[serde(default)]
    pub leader: String,
    /// The raft node ids of the voters.
    #[serde(default)]
    pub voters: Vec<String>,
    /// Each server by node id.
    #[serde(default)]
    pub servers: std::collections::BTreeMap<String, AutopilotServer>,
}

/// One server in [`AutopilotState::servers`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AutopilotServer {
    /// Its raft term as last seen.
    #[serde(default)]
    pub last_term: u64,
    /// Its last raft index as last seen.
    #[serde(default)]
    pub last_index: u64,
    /// Whether autopilot considers it healthy.
    #[serde(default)]
    pub healthy: bool,
}

impl AutopilotState {
    /// The leader's entry in [`Self::servers`].
    #[must_use]
    pub fn leader_server(&self) -> Option<&AutopilotServer> {
        self.servers.get(&self.leader)
    }
}

/// Which cluster a node belongs to, as `sys/health` says: what tells a restore's target apart
/// from the cluster a snapshot was taken from, whatever address either is reached at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClusterIdentity {
    /// `cluster_name` (e.g. `vault-cluster-8f3c1a2b`, or the `cluster_name` of the config).
    pub cluster_name: String,
    /// `cluster_id`, a UUID made when the cluster was initialized.
    pub cluster_id: String,
}

impl std::fmt::Display for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (cluster_id {})", self.cluster_name, self.cluster_id)
    }
}

fn origin(u: &Url) -> (String, Option<String>, Option<u16>) {
    (
        u.scheme().to_owned(),
        u.host_str().map(str::to_owned),
        u.port_or_known_default(),
    )
}

/// Whether a transport error is a failed TLS handshake (untrusted or mismatched certificate, a
/// peer that does not speak TLS): decided by the error's sources, where rustls reports it, never
/// by the message text, which holds the URL (a host named `vault-tls-0` is not a TLS failure).
fn is_tls_failure(err: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        // The rustls error arrives wrapped in io::Errors (tokio-rustls, then hyper-util), and an
        // io::Error's source() skips the error it wraps, so step into it with get_ref().
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

pub(crate) fn base(addr: &Url) -> String {
    addr.as_str().trim_end_matches('/').to_owned()
}

/// The text of a Vault error body (`{"errors": [...]}`), short enough for one log line.
pub(crate) fn detail(body: &str) -> String {
    let text = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v["errors"].as_array().map(|e| {
                e.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| body.trim().to_owned());
    // Vault wraps errors in multi-line "1 error occurred:\n\t* ..." text: one line here.
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut text: String = text.chars().take(300).collect();
    if text.is_empty() {
        text = "(no error text)".into();
    }
    text
}

impl Vault {
    /// A client with the configured trust and timeouts; it follows no redirects. `agent` is
    /// the step's `User-Agent` (`vault-snapshot/0.1.0`); `timeout_variable` the variable a
    /// timeout message tells the user to raise.
    ///
    /// # Errors
    /// [`Error::Config`] if `VAULT_CACERT` holds no usable certificate.
    pub fn new(
        tls: &Tls,
        namespace: Option<String>,
        connect_timeout: Duration,
        agent: &str,
        timeout_variable: &'static str,
    ) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .user_agent(agent);
        if let Some(pem) = &tls.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ConfigError::new(
                    "VAULT_CACERT",
                    format!("holds no usable PEM certificate: {e}"),
                )
            })?;
            builder = builder.tls_certs_only(certs);
        }
        if tls.skip_verify {
            tracing::warn!("VAULT_SKIP_VERIFY is set: the server's certificate is not checked");
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| {
            ConfigError::new("VAULT_CACERT", format!("cannot build a TLS client: {e}"))
        })?;
        Ok(Self {
            http,
            namespace,
            timeout_variable,
        })
    }

    /// The error of a request that got no whole answer. `variable` is the variable that set
    /// `timeout`, or `None` for a fixed limit, so a timeout names only what really expired.
    /// The variable that sets the step's time limit (`SNAPSHOT_TIMEOUT`, `RESTORE_TIMEOUT`).
    #[must_use]
    pub fn timeout_variable(&self) -> &'static str {
        self.timeout_variable
    }

    fn transport(
        addr: &Url,
        err: reqwest::Error,
        timeout: Duration,
        variable: Option<&'static str>,
    ) -> Error {
        let addr = base(addr);
        // A connect timeout (10 s) is an unreachable node, not the request's limit.
        if err.is_timeout() && !err.is_connect() {
            return Error::Timeout {
                addr,
                after: timeout,
                variable,
            };
        }
        if is_tls_failure(&err) {
            Error::Tls { addr, source: err }
        } else {
            Error::Unreachable { addr, source: err }
        }
    }

    /// `X-Vault-Namespace`, for requests to paths that live in a namespace (auth mounts). Not
    /// for `sys/storage/raft/snapshot`: Vault Enterprise serves it from the root namespace only.
    pub(crate) fn namespace_header(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        // Config checked that the namespace is a valid header value.
        if let Some(v) = self
            .namespace
            .as_deref()
            .and_then(|ns| HeaderValue::from_str(ns).ok())
        {
            h.insert("X-Vault-Namespace", v);
        }
        h
    }

    /// `X-Vault-Token`, marked sensitive so no debug output shows it. Tokens only ever travel
    /// in this header.
    pub(crate) fn token_header(addr: &Url, token: &Secret) -> Result<HeaderMap> {
        let mut v = HeaderValue::from_str(token.expose()).map_err(|_| Error::Http {
            addr: base(addr),
            what: "the login",
            status: 200,
            detail: "the client token is not usable as an HTTP header value".into(),
        })?;
        v.set_sensitive(true);
        let mut h = HeaderMap::new();
        h.insert("X-Vault-Token", v);
        Ok(h)
    }

    /// An unauthenticated `GET v1/<path>` whose 200 answer is JSON of type `T`.
    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        addr: &Url,
        path: &'static str,
    ) -> Result<T> {
        let url = format!("{}/v1/{path}", base(addr));
        let (status, body) = self
            .exchange(addr, self.http.get(&url), Duration::from_secs(30))
            .await?;
        match (status, serde_json::from_str(&body)) {
            (StatusCode::OK, Ok(value)) => Ok(value),
            (StatusCode::SERVICE_UNAVAILABLE, _)
                if body.to_ascii_lowercase().contains("sealed") =>
            {
                Err(Error::Sealed { addr: base(addr) })
            }
            (StatusCode::TOO_MANY_REQUESTS, _) => Err(Error::RateLimited {
                addr: base(addr),
                what: path,
                detail: detail(&body),
            }),
            (status, _) => Err(Error::Http {
                addr: base(addr),
                what: path,
                status: status.as_u16(),
                detail: detail(&body),
            }),
        }
    }

    /// `GET sys/leader` on one node.
    ///
    /// # Errors
    /// Transport errors, [`Error::Sealed`] on a sealed node, [`Error::Http`] otherwise.
    pub async fn leader_info(&self, addr: &Url) -> Result<LeaderInfo> {
        self.get_json(addr, "sys/leader").await
    }

    /// `GET sys/seal-status` on one node.
    ///
    /// # Errors
    /// Transport errors or [`Error::Http`].
    pub async fn seal_status(&self, addr: &Url) -> Result<SealStatus> {
        self.get_json(addr, "sys/seal-status").await
    }

    /// Finds the active node starting from `addr`, and checks that it says it leads, is
    /// unsealed and uses raft storage. A leader named on another scheme than `addr`'s is
    /// refused before it is contacted.
    ///
    /// # Errors
    /// [`Error::NoLeader`], [`Error::NotLeader`], [`Error::SchemeMismatch`], [`Error::Sealed`],
    /// [`Error::NotRaft`] or transport errors, each naming the node.
    pub async fn find_leader(&self, addr: &Url) -> Result<Leader> {
        let info = self.leader_info(addr).await?;
        let leader = if info.is_self || !info.ha_enabled {
            addr.clone()
        } else {
            let named = info.leader_address.trim();
            if named.is_empty() {
                return Err(Error::NoLeader { addr: base(addr) });
            }
            let leader = Url::parse(named).map_err(|_| Error::Http {
                addr: base(addr),
                what: "sys/leader",
                status: 200,
                detail: format!("leader_address {named:?} is not a URL"),
            })?;
            // Before anything is sent there: a leader on another scheme would get the token,
            // secret id or JWT in plain text (https -> http), or is a misconfigured api_addr.
            if leader.scheme() != addr.scheme() {
                return Err(Error::SchemeMismatch {
                    asked: base(addr),
                    leader: base(&leader),
                });
            }
            tracing::info!(asked = %base(addr), leader = %base(&leader), "VAULT_ADDR is a standby; going to the leader it names");
            let confirm = self.leader_info(&leader).await?;
            if !confirm.is_self {
                return Err(Error::NotLeader {
                    addr: base(&leader),
                });
            }
            leader
        };
        let status = self.seal_status(&leader).await?;
        if status.sealed {
            return Err(Error::Sealed {
                addr: base(&leader),
            });
        }
        if let Some(kind) = status.storage_type.as_deref().filter(|k| *k != "raft") {
            return Err(Error::NotRaft {
                addr: base(&leader),
                detail: format!("its storage type is {kind}"),
            });
        }
        let cluster = self.identity(&leader).await;
        Ok(Leader {
            addr: leader,
            version: status.version,
            cluster,
            seal_type: status.seal_type,
        })
    }

    /// The cluster the node at `addr` belongs to, from `sys/health`; `None` (with a warning)
    /// when it does not say: the identity is recorded and compared where known, and a server
    /// that hides it must not stop a backup.
    pub async fn identity(&self, addr: &Url) -> Option<ClusterIdentity> {
        match self.get_json::<Value>(addr, "sys/health").await {
            Ok(v) => {
                let field = |k: &str| v[k].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
                if let (Some(cluster_name), Some(cluster_id)) =
                    (field("cluster_name"), field("cluster_id"))
                {
                    Some(ClusterIdentity {
                        cluster_name,
                        cluster_id,
                    })
                } else {
                    tracing::warn!(node = %base(addr), "sys/health names no cluster_name and cluster_id; the cluster's identity is unknown");
                    None
                }
            }
            Err(e) => {
                tracing::warn!(node = %base(addr), "sys/health did not answer with the cluster's identity: {e}");
                None
            }
        }
    }

    /// The token's capabilities on each of `paths` (`sys/capabilities-self`), in the root
    /// namespace; e.g. `["read", "update"]`, `["root"]` or `["deny"]`.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (a token without the `default` policy may not ask),
    /// [`Error::Http`] or transport errors.
    pub async fn capabilities_self(
        &self,
        addr: &Url,
        token: &Secret,
        paths: &[&str],
    ) -> Result<Vec<Vec<String>>> {
        let (status, text) = self
            .send_json(
                addr,
                reqwest::Method::POST,
                "sys/capabilities-self",
                Some(token),
                &serde_json::json!({ "paths": paths }),
            )
            .await?;
        if !status.is_success() {
            return Err(Self::refused(
                addr,
                status,
                &text,
                "the capability check of",
                "sys/capabilities-self",
                "[\"update\"]",
            ));
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(paths
            .iter()
            .map(|p| {
                // Per path at the top level and under `data` (the answer's two shapes).
                let caps = if v[*p].is_array() {
                    &v[*p]
                } else {
                    &v["data"][*p]
                };
                caps.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Logs in at the leader with `auth`; a static token is returned as it is.
    ///
    /// # Errors
    /// [`Error::Login`] with Vault's message, or transport errors.
    pub async fn login(&self, leader: &Url, auth: &Auth) -> Result<Secret> {
        let (mount, body) = match auth {
            Auth::Token(token) => return Ok(token.clone()),
            Auth::AppRole {
                mount,
                role_id,
                secret_id,
            } => (
                mount,
                serde_json::json!({ "role_id": role_id, "secret_id": secret_id.expose() }),
            ),
            Auth::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                let jwt =
                    vault_backup_common::env::read_secret_file("VAULT_AUTH_JWT_FILE", jwt_file)?;
                (
                    mount,
                    serde_json::json!({ "role": role, "jwt": jwt.expose() }),
                )
            }
        };
        let url = format!("{}/v1/auth/{mount}/login", base(leader));
        let request = self
            .http
            .post(&url)
            .headers(self.namespace_header())
            .json(&body);
        let (status, text) = self
            .exchange(leader, request, Duration::from_secs(30))
            .await?;
        let token = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["auth"]["client_token"].as_str().map(Secret::new));
        match (status, token) {
            (s, Some(token)) if s.is_success() => Ok(token),
            (s, _) => Err(Error::Login {
                addr: base(leader),
                method: auth.describe(),
                status: s.as_u16(),
                detail: detail(&text),
            }),
        }
    }

    /// Writes `data` as the new version of the KV v2 secret at `data_path`
    /// (`<mount>/data/<path>`), with `token`, in `VAULT_NAMESPACE` if set. A 403 names the
    /// policy path and capabilities it needs.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::Sealed`], [`Error::RateLimited`], [`Error::Http`] or
    /// transport errors.
    pub async fn write_kv2(
        &self,
        addr: &Url,
        token: &Secret,
        data_path: &str,
        data: &Value,
    ) -> Result<()> {
        let url = format!("{}/v1/{data_path}", base(addr));
        let request = self
            .http
            .post(&url)
            .headers(self.namespace_header())
            .headers(Self::token_header(addr, token)?)
            .json(&serde_json::json!({ "data": data }));
        let (status, body) = self
            .exchange(addr, request, Duration::from_secs(30))
            .await?;
        if status.is_success() {
            return Ok(());
        }
        Err(Self::refused(
            addr,
            status,
            &body,
            "the canary write to",
            data_path,
            "[\"create\", \"update\"]",
        ))
    }

    /// Reads the current version of the KV v2 secret at `data_path` (`<mount>/data/<path>`):
    /// its `data`, or `None` when there is no such secret (404).
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::Sealed`], [`Error::RateLimited`], [`Error::Http`] or
    /// transport errors.
    pub async fn read_kv2(
        &self,
        addr: &Url,
        token: &Secret,
        data_path: &str,
    ) -> Result<Option<Value>> {
        let url = format!("{}/v1/{data_path}", base(addr));
        let request = self
            .http
            .get(&url)
            .headers(self.namespace_header())
            .headers(Self::token_header(addr, token)?);
        let (status, body) = self
            .exchange(addr, request, Duration::from_secs(30))
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status.is_success() {
            let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            return Ok(Some(value["data"]["data"].clone()));
        }
        Err(Self::refused(
            addr,
            status,
            &body,
            "the canary read of",
            data_path,
            "[\"read\"]",
        ))
    }

    /// `GET sys/storage/raft/autopilot/state` at the leader: the cluster's health.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (a policy without `read` on the path), [`Error::Sealed`],
    /// [`Error::Http`] or transport errors.
    pub async fn autopilot_state(&self, leader: &Url, token: &Secret) -> Result<AutopilotState> {
        const PATH: &str = "sys/storage/raft/autopilot/state";
        let url = format!("{}/v1/{PATH}", base(leader));
        let request = self
            .http
            .get(&url)
            .headers(Self::token_header(leader, token)?);
        let (status, body) = self
            .exchange(leader, request, Duration::from_secs(30))
            .await?;
        if status.is_success() {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            return serde_json::from_value(v["data"].clone()).map_err(|e| Error::Http {
                addr: base(leader),
                what: PATH,
                status: status.as_u16(),
                detail: format!("unreadable autopilot state: {e}"),
            });
        }
        Err(Self::refused(
            leader,
            status,
            &body,
            "the health read of",
            PATH,
            "[\"read\"]",
        ))
    }

    /// The error for a refused request to `path`: 403 names the capabilities it needs.
    pub(crate) fn refused(
        addr: &Url,
        status: StatusCode,
        body: &str,
        what: &'static str,
        path: &str,
        capabilities: &str,
    ) -> Error {
        let text = detail(body);
        match status.as_u16() {
            403 => Error::Forbidden {
                addr: base(addr),
                what: format!("{what} {path}"),
                needs: format!(
                    "path \"{path}\" {{ capabilities = {capabilities} }} (see tekton/vault-policy.hcl)"
                ),
            },
            503 if text.to_ascii_lowercase().contains("sealed") => {
                Error::Sealed { addr: base(addr) }
            }
            429 => Error::RateLimited {
                addr: base(addr),
                what,
                detail: text,
            },
            s => Error::Http {
                addr: base(addr),
                what,
                status: s,
                detail: text,
            },
        }
    }

    /// `PUT sys/init` on a fresh node with one share and a threshold of one: unseal shares for a
    /// shamir seal, recovery shares (`recovery` true) for an auto-unseal. For throw-away nodes
    /// (the restore drill's scratch node) only.
    ///
    /// # Errors
    /// [`Error::Http`] (e.g. 400 "already initialized") or transport errors.
    pub async fn init(&self, addr: &Url, recovery: bool) -> Result<Init> {
        let body = if recovery {
            serde_json::json!({ "recovery_shares": 1, "recovery_threshold": 1 })
        } else {
            serde_json::json!({ "secret_shares": 1, "secret_threshold": 1 })
        };
        let (status, text) = self
            .send_json(addr, reqwest::Method::PUT, "sys/init", None, &body)
            .await?;
        if !status.is_success() {
            return Err(Error::Http {
                addr: base(addr),
                what: "sys/init",
                status: status.as_u16(),
                detail: detail(&text),
            });
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let root_token = v["root_token"]
            .as_str()
            .map(Secret::new)
            .ok_or_else(|| Error::Http {
                addr: base(addr),
                what: "sys/init",
                status: status.as_u16(),
                detail: "the answer holds no root_token".into(),
            })?;
        let field = if recovery {
            "recovery_keys_base64"
        } else {
            "keys_base64"
        };
        let keys = v[field]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(Secret::new)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Init { root_token, keys })
    }

    /// `PUT sys/unseal` with one key.
    ///
    /// # Errors
    /// [`Error::Http`] for answers other than acceptance or a wrong key, or transport errors.
    pub async fn unseal(&self, addr: &Url, key: &Secret) -> Result<Unseal> {
        let body = serde_json::json!({ "key": key.expose() });
        let (status, text) = self
            .send_json(addr, reqwest::Method::PUT, "sys/unseal", None, &body)
            .await?;
        if status.is_success() {
            return serde_json::from_str(&text)
                .map(Unseal::Accepted)
                .map_err(|e| Error::Http {
                    addr: base(addr),
                    what: "sys/unseal",
                    status: status.as_u16(),
                    detail: format!("unreadable seal status: {e}"),
                });
        }
        let text = detail(&text);
        let lower = text.to_ascii_lowercase();
        // Vault's words for a key of another keyring, a malformed one, or a share that does not
        // combine; never the key itself.
        if status == StatusCode::BAD_REQUEST
            && (lower.contains("message authentication failed")
                || lower.contains("invalid key")
                || lower.contains("unseal failed")
                || lower.contains("'key' must be a valid hex or base64 string"))
        {
            return Ok(Unseal::WrongKey { detail: text });
        }
        Err(Error::Http {
            addr: base(addr),
            what: "sys/unseal",
            status: status.as_u16(),
            detail: text,
        })
    }

    /// Proves recovery keys (an auto-unseal's) on a throw-away node: starts a root token
    /// generation, enters `keys` until the threshold is reached, and cancels the attempt
    /// whatever happened. OpenBao verifies the combined key against the keyring only at the
    /// threshold ("root generation aborted"), so a completed generation is the proof; the
    /// encoded token it returns is dropped undecoded. The unauthenticated
    /// `sys/generate-root/*` first (Vault; OpenBao only with the listener's
    /// `disable_unauthed_generate_root_endpoints = false`), then, on its 405, OpenBao's
    /// authenticated `sys/generate-root-token/*` with `token`. For the restore drill's scratch
    /// node only: it generates a root token there.
    ///
    /// # Errors
    /// [`Error::Forbidden`] when `token` may not use `sys/generate-root-token/*`,
    /// [`Error::Http`] for other unexpected answers, or transport errors.
    pub async fn prove_recovery_keys(
        &self,
        addr: &Url,
        keys: &[Secret],
        token: &Secret,
    ) -> Result<RecoveryProof> {
        let mut base_path = "sys/generate-root";
        let mut auth = None;
        let (mut status, mut text) = self
            .send_json(
                addr,
                reqwest::Method::PUT,
                "sys/generate-root/attempt",
                None,
                &serde_json::json!({}),
            )
            .await?;
        if status == StatusCode::METHOD_NOT_ALLOWED || status == StatusCode::NOT_FOUND {
            base_path = "sys/generate-root-token";
            auth = Some(token);
            (status, text) = self
                .send_json(
                    addr,
                    reqwest::Method::PUT,
                    "sys/generate-root-token/attempt",
                    auth,
                    &serde_json::json!({}),
                )
                .await?;
        }
        if status == StatusCode::FORBIDDEN {
            return Err(Error::Forbidden {
                addr: base(addr),
                what: format!("the recovery keys' proof through {base_path}/attempt"),
                needs: "path \"sys/generate-root-token/*\" { capabilities = [\"update\", \"delete\"] } on the restored data, or the scratch node's listener with disable_unauthed_generate_root_endpoints = false (harmless on a throw-away node); or unset DRILL_RECOVERY_KEYS_FILE".to_owned(),
            });
        }
        if !status.is_success() {
            return Err(Error::Http {
                addr: base(addr),
                what: "the recovery keys' proof (generate-root attempt)",
                status: status.as_u16(),
                detail: detail(&text),
            });
        }
        // The authenticated endpoints answer under `data`, the unauthenticated at the top.
        let fields = |text: &str| {
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["data"].is_object() {
                v["data"].clone()
            } else {
                v
            }
        };
        let v = fields(&text);
        let nonce = v["nonce"].as_str().unwrap_or_default().to_owned();
        let mut proof = RecoveryProof::Incomplete {
            progress: 0,
            required: v["required"].as_u64().unwrap_or(0),
        };
        let update = format!("{base_path}/update");
        for key in keys {
            let body = serde_json::json!({ "key": key.expose(), "nonce": nonce });
            let (status, text) = self
                .send_json(addr, reqwest::Method::PUT, &update, auth, &body)
                .await?;
            if !status.is_success() {
                // A wrong key shows at the threshold: 400 (unauthenticated) or 500
                // (authenticated) "root generation aborted: ...".
                proof = RecoveryProof::Refused {
                    detail: format!("{} {}", status.as_u16(), detail(&text)),
                };
                break;
            }
            let v = fields(&text);
            if v["complete"].as_bool() == Some(true) {
                proof = RecoveryProof::Proven;
                break;
            }
            proof = RecoveryProof::Incomplete {
                progress: v["progress"].as_u64().unwrap_or(0),
                required: v["required"].as_u64().unwrap_or(0),
            };
        }
        // Best effort: a completed or aborted attempt may already be gone.
        let url = format!("{}/v1/{base_path}/attempt", base(addr));
        let mut cancel = self.http.delete(&url);
        if let Some(t) = auth {
            cancel = cancel.headers(Self::token_header(addr, t)?);
        }
        let _ = self.exchange(addr, cancel, Duration::from_secs(30)).await;
        Ok(proof)
    }

    /// POSTs the snapshot file at `path` to the leader's `sys/storage/raft/snapshot` (or
    /// `snapshot-force` for a snapshot of another cluster), streamed from disk, never read into
    /// memory. `policy` names the policy file a 403 points to.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::Sealed`], [`Error::Http`] (400 "could not verify hash
    /// file" for another cluster's snapshot without force), [`Error::Io`] or transport errors.
    pub async fn restore(
        &self,
        leader: &Url,
        token: &Secret,
        path: &std::path::Path,
        force: bool,
        timeout: Duration,
        policy: &str,
    ) -> Result<()> {
        use tokio::io::AsyncReadExt as _;
        let api = if force {
            "sys/storage/raft/snapshot-force"
        } else {
            "sys/storage/raft/snapshot"
        };
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let body = futures::stream::try_unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 1 << 20];
            let n = f.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.truncate(n);
            Ok(Some((bytes::Bytes::from(buf), f)))
        });
        let url = format!("{}/v1/{api}", base(leader));
        let started = std::time::Instant::now();
        let resp = self
            .http
            .post(&url)
            .headers(Self::token_header(leader, token)?)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .body(reqwest::Body::wrap_stream(body))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Self::transport(leader, e, timeout, Some(self.timeout_variable)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        if status == StatusCode::FORBIDDEN {
            return Err(Error::Forbidden {
                addr: base(leader),
                what: format!("the restore through {api}"),
                needs: format!("path \"{api}\" {{ capabilities = [\"update\"] }} (see {policy})"),
            });
        }
        let mut err = Self::refused(leader, status, &text, "the restore", api, "[\"update\"]");
        if let Error::Http { detail, status, .. } = &mut err
            && *status >= 500
            && detail.contains("i/o timeout")
        {
            // OpenBao and Vault stop reading a request body once the listener's
            // http_read_timeout (default 30 s) has passed since the request began, whatever
            // its progress: the whole snapshot must arrive within it.
            let secs = started.elapsed().as_secs_f64();
            detail.push_str(&format!(
                " (the server stopped reading the snapshot after {secs:.1}s of its upload of {len} bytes: the listener's http_read_timeout bounds the whole request body, 30s unless set. Raise http_read_timeout in the server's listener \"tcp\" stanza above the upload's time, e.g. \"30m\" takes 90 GB at 50 MB/s)"
            ));
        }
        Err(err)
    }

    /// Sends `body` as JSON to `v1/<path>` (with `token` if given) and returns the status and
    /// the body text.
    pub(crate) async fn send_json(
        &self,
        addr: &Url,
        method: reqwest::Method,
        path: &str,
        token: Option<&Secret>,
        body: &Value,
    ) -> Result<(StatusCode, String)> {
        let url = format!("{}/v1/{path}", base(addr));
        let mut req = self.http.request(method, &url).json(body);
        if let Some(token) = token {
            req = req.headers(Self::token_header(addr, token)?);
        }
        self.exchange(addr, req, Duration::from_secs(60)).await
    }

    /// Sends `request` (to `addr`) within `timeout`, a fixed limit for a short request, and
    /// returns the status and the whole body text; a failure of either is a transport error
    /// ([`Self::transport`]).
    pub(crate) async fn exchange(
        &self,
        addr: &Url,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<(StatusCode, String)> {
        let resp = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Self::transport(addr, e, timeout, None))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Self::transport(addr, e, timeout, None))?;
        Ok((status, text))
    }

    /// Sends the snapshot request to the leader and returns the response once it is a 200,
    /// following at most one redirect, and only to the leader itself.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`], [`Error::Sealed`], [`Error::NotRaft`], [`Error::Redirect`],
    /// [`Error::NotLeader`], [`Error::Http`] or transport errors.
    pub async fn open_snapshot(
        &self,
        leader: &Url,
        token: &Secret,
        timeout: Duration,
    ) -> Result<(Url, Response)> {
        let mut target =
            Url::parse(&format!("{}/{SNAPSHOT_PATH}", base(leader))).map_err(|e| Error::Http {
                addr: base(leader),
                what: "the snapshot request",
                status: 0,
                detail: format!("cannot form the snapshot URL: {e}"),
            })?;
        for _ in 0..2 {
            // Bounded here as well as by the caller: a leader that accepts the request and
            // never answers must not hang the step.
            let send = self
                .http
                .get(target.clone())
                .headers(Self::token_header(leader, token)?)
                .send();
            let resp = tokio::time::timeout(timeout, send)
                .await
                .map_err(|_| Error::Timeout {
                    addr: base(leader),
                    after: timeout,
                    variable: Some(self.timeout_variable),
                })?
                .map_err(|e| Self::transport(leader, e, timeout, Some(self.timeout_variable)))?;
            let status = resp.status();
            if status.is_success() {
                return Ok((target, resp));
            }
            if status.is_redirection() {
                let to = resp
                    .headers()
                    .get(LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| target.join(l).ok())
                    .ok_or_else(|| Error::Http {
                        addr: base(leader),
                        what: "the snapshot request",
                        status: status.as_u16(),
                        detail: "a redirect without a usable Location".into(),
                    })?;
                if origin(&to) != origin(leader) {
                    return Err(Error::Redirect {
                        from: base(&target),
                        to: to.to_string(),
                        leader: base(leader),
                    });
                }
                tracing::info!(to = %to, "following the redirect to the leader");
                target = to;
                continue;
            }
            let body = resp.text().await.unwrap_or_default();
            let text = detail(&body);
            let lower = text.to_ascii_lowercase();
            return Err(match status.as_u16() {
                403 => Error::PermissionDenied { addr: base(leader) },
                503 if lower.contains("sealed") => Error::Sealed { addr: base(leader) },
                429 => Error::RateLimited {
                    addr: base(leader),
                    what: "the snapshot request",
                    detail: text,
                },
                _ if lower.contains("raft")
                    && (lower.contains("not") || lower.contains("unsupported")) =>
                {
                    Error::NotRaft {
                        addr: base(leader),
                        detail: text,
                    }
                }
                404 | 405 if lower.contains("unsupported path") => Error::NotRaft {
                    addr: base(leader),
                    detail: text,
                },
                s => Error::Http {
                    addr: base(leader),
                    what: "the snapshot request",
                    status: s,
                    detail: text,
                },
            });
        }
        Err(Error::Http {
            addr: base(leader),
            what: "the snapshot request",
            status: 307,
            detail: "redirected more than once".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_one_short_line() {
        assert_eq!(
            detail(r#"{"errors":["permission denied"]}"#),
            "permission denied"
        );
        assert_eq!(detail(r#"{"errors":["a","b"]}"#), "a; b");
        assert_eq!(
            detail(r#"{"errors":["1 error occurred:\n\t* i/o timeout\n\n"]}"#),
            "1 error occurred: * i/o timeout"
        );
        assert_eq!(detail(""), "(no error text)");
        assert_eq!(detail(&"x".repeat(1000)).len(), 300);
    }

    /// The error of one GET through `client`.
    async fn failed_get(client: &reqwest::Client, url: &str) -> Error {
        let err = client.get(url).send().await.expect_err("the request fails");
        Vault::transport(&Url::parse(url).unwrap(), err, Duration::from_secs(5), None)
    }

    #[tokio::test]
    async fn a_refused_connection_to_a_host_named_tls_is_unreachable_and_retried() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The listener is gone: the port refuses. The name resolves to it without DNS.
        let host = "vault-tls-0.vault-tls-handshake-certificate.svc";
        let client = reqwest::Client::builder()
            .resolve(host, ([127, 0, 0, 1], port).into())
            .build()
            .unwrap();
        for url in [
            format!("http://{host}:{port}/v1/sys/leader"),
            format!("https://{host}:{port}/v1/sys/leader"),
        ] {
            let err = failed_get(&client, &url).await;
            assert!(matches!(err, Error::Unreachable { .. }), "{url}: {err:?}");
            assert!(err.is_retryable(), "{url}");
        }
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_a_tls_failure_and_not_retried() {
        use vault_backup_testbed::canned::{CannedVault, Setup, Snapshot, test_tls};
        let certs = tempfile::tempdir().unwrap();
        let server = CannedVault::start_with(
            vec![Snapshot::Status(500, "unused".into())],
            Setup {
                leader_address: None,
                tls: Some(test_tls(certs.path())),
            },
        );
        let client = reqwest::Client::new();
        let err = failed_get(&client, &format!("{}/v1/sys/leader", server.addr())).await;
        assert!(matches!(err, Error::Tls { .. }), "{err:?}");
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn https_to_a_plain_http_listener_is_a_tls_failure() {
        // What Go's HTTP server (Vault, OpenBao) answers to a TLS handshake on a plain listener.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            if let Ok((mut s, _)) = listener.accept() {
                let _ = s.read(&mut [0u8; 1024]);
                let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n");
            }
        });
        let url = format!("https://127.0.0.1:{port}/v1/sys/leader");
        let err = failed_get(&reqwest::Client::new(), &url).await;
        assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let a = Url::parse("https://vault-0:8200/v1/x").unwrap();
        assert_eq!(
            origin(&a),
            origin(&Url::parse("https://vault-0:8200").unwrap())
        );
        assert_ne!(
            origin(&a),
            origin(&Url::parse("http://vault-0:8200").unwrap())
        );
        assert_ne!(
            origin(&a),
            origin(&Url::parse("https://vault-1:8200").unwrap())
        );
        assert_eq!(
            origin(&Url::parse("https://v").unwrap()),
            origin(&Url::parse("https://v:443").unwrap())
        );
    }
}
