//! The Vault login and TLS settings every step reads, under Vault's own variable names.
//!
//! The snapshot step and the restore step log in the same way; this module parses the variables
//! once so both accept exactly the same values and refuse the same mistakes. A step's raw
//! configuration holds a [`VaultEnv`] as a `#[serde(flatten)]` field, read from the same
//! environment as its own variables, and lists its variable names with
//! [`env::variables`] of each part (a flattened struct hides its field names from serde).

use std::path::PathBuf;

use serde::Deserialize;
use url::Url;
use vault_backup_common::env::{self, ConfigError, Secret};

/// Where Kubernetes mounts a pod's service-account token.
pub const DEFAULT_JWT_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The Vault variables, exactly as documented, unparsed (`None` or non-empty).
#[derive(Debug, Default, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct VaultEnv {
    pub vault_addr: String,
    pub vault_cacert: Option<String>,
    pub vault_skip_verify: Option<String>,
    pub vault_namespace: Option<String>,
    pub vault_token: Option<String>,
    pub vault_token_file: Option<String>,
    pub vault_role_id: Option<String>,
    pub vault_secret_id: Option<String>,
    pub vault_secret_id_file: Option<String>,
    pub vault_approle_mount: Option<String>,
    pub vault_auth_role: Option<String>,
    pub vault_auth_mount: Option<String>,
    pub vault_auth_jwt_file: Option<String>,
}

/// The checked Vault settings.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// `VAULT_ADDR`: any node of the cluster; the leader is found from there.
    pub addr: Url,
    /// TLS settings.
    pub tls: Tls,
    /// `VAULT_NAMESPACE`, sent as `X-Vault-Namespace` on requests to namespaced paths (login)
    /// only: Vault Enterprise serves `sys/storage/raft/*` from the root namespace alone.
    pub namespace: Option<String>,
    /// How to log in.
    pub auth: Auth,
}

/// How the step logs in to Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A token given directly (`VAULT_TOKEN` or `VAULT_TOKEN_FILE`).
    Token(Secret),
    /// AppRole login at `auth/<mount>/login`.
    AppRole {
        /// The AppRole mount (`VAULT_APPROLE_MOUNT`, default `approle`).
        mount: String,
        /// `VAULT_ROLE_ID`.
        role_id: String,
        /// `VAULT_SECRET_ID` or the contents of `VAULT_SECRET_ID_FILE`.
        secret_id: Secret,
    },
    /// Kubernetes (or JWT) login at `auth/<mount>/login` with the pod's service-account token.
    Kubernetes {
        /// The auth mount (`VAULT_AUTH_MOUNT`, default `kubernetes`).
        mount: String,
        /// The Vault role (`VAULT_AUTH_ROLE`).
        role: String,
        /// The JWT file, read at each login because projected tokens rotate.
        jwt_file: PathBuf,
    },
}

impl Auth {
    /// A short description for logs (never the secret).
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Token(_) => "token".into(),
            Self::AppRole { mount, .. } => format!("approle at auth/{mount}"),
            Self::Kubernetes { mount, role, .. } => {
                format!("kubernetes role {role} at auth/{mount}")
            }
        }
    }
}

/// TLS settings for talking to Vault.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    /// PEM CA bundle (`VAULT_CACERT`): trusted instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// `VAULT_SKIP_VERIFY`: accept any certificate (for tests only; logged as a warning).
    pub skip_verify: bool,
}

fn auth(raw: &VaultEnv) -> Result<Auth, ConfigError> {
    let token = raw.vault_token.as_deref().is_some() || raw.vault_token_file.as_deref().is_some();
    let approle = raw.vault_role_id.as_deref().is_some();
    let kube = raw.vault_auth_role.as_deref().is_some();
    let chosen: Vec<&str> = [
        (token, "VAULT_TOKEN/VAULT_TOKEN_FILE"),
        (approle, "VAULT_ROLE_ID"),
        (kube, "VAULT_AUTH_ROLE"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    match chosen.len() {
        0 => {
            return Err(ConfigError::new(
                "VAULT_TOKEN",
                "no Vault login configured: set VAULT_TOKEN or VAULT_TOKEN_FILE, or VAULT_ROLE_ID with \
                 VAULT_SECRET_ID or VAULT_SECRET_ID_FILE, or VAULT_AUTH_ROLE for Kubernetes login",
            ));
        }
        1 => {}
        _ => {
            return Err(ConfigError::new(
                chosen.join(", "),
                "more than one Vault login is configured; set only one of them",
            ));
        }
    }
    if token {
        let token = env::secret_or_file(
            "VAULT_TOKEN",
            raw.vault_token.as_deref(),
            "VAULT_TOKEN_FILE",
            raw.vault_token_file.as_deref(),
        )?;
        let token = token.expect("token auth was chosen");
        let variable = if raw.vault_token.is_some() {
            "VAULT_TOKEN"
        } else {
            "VAULT_TOKEN_FILE"
        };
        header_value(variable, token.expose(), "the token")?;
        return Ok(Auth::Token(token));
    }
    if approle {
        let secret_id = env::secret_or_file(
            "VAULT_SECRET_ID",
            raw.vault_secret_id.as_deref(),
            "VAULT_SECRET_ID_FILE",
            raw.vault_secret_id_file.as_deref(),
        )?
        .ok_or_else(|| {
            ConfigError::new(
                "VAULT_SECRET_ID",
                "VAULT_ROLE_ID is set, so AppRole login also needs VAULT_SECRET_ID or VAULT_SECRET_ID_FILE",
            )
        })?;
        return Ok(Auth::AppRole {
            mount: mount(
                "VAULT_APPROLE_MOUNT",
                raw.vault_approle_mount.as_deref(),
                "approle",
            )?,
            role_id: raw
                .vault_role_id
                .as_deref()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            secret_id,
        });
    }
    let jwt_file = PathBuf::from(
        raw.vault_auth_jwt_file
            .as_deref()
            .unwrap_or(DEFAULT_JWT_FILE),
    );
    // Fail now, with the variable's name, rather than at login.
    env::read_secret_file("VAULT_AUTH_JWT_FILE", &jwt_file)?;
    Ok(Auth::Kubernetes {
        mount: mount(
            "VAULT_AUTH_MOUNT",
            raw.vault_auth_mount.as_deref(),
            "kubernetes",
        )?,
        role: raw
            .vault_auth_role
            .as_deref()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        jwt_file,
    })
}

/// Checks that `value` can travel in an HTTP header; the error never shows the value.
///
/// # Errors
/// A [`ConfigError`] naming `variable`.
pub fn header_value(variable: &str, value: &str, what: &str) -> Result<(), ConfigError> {
    if reqwest::header::HeaderValue::from_str(value).is_err() {
        return Err(ConfigError::new(
            variable,
            format!(
                "{what} is not usable as an HTTP header value (it holds a line break, control or \
                 non-ASCII character); the value is not shown"
            ),
        ));
    }
    Ok(())
}

fn mount(variable: &str, value: Option<&str>, default: &str) -> Result<String, ConfigError> {
    let m = value.unwrap_or(default).trim().trim_matches('/');
    if m.is_empty()
        || m.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        || m.contains(char::is_whitespace)
    {
        return Err(ConfigError::new(
            variable,
            format!("expected an auth mount path such as {default:?}, got {m:?}"),
        ));
    }
    Ok(m.to_owned())
}

/// The KV v2 canary's mount and path from `CANARY_MOUNT` (default `secret`) and `CANARY_PATH`:
/// `None` when `CANARY_PATH` is unset. Both are API path segments, without leading or trailing
/// `/`, `.` or `..` parts, blanks or `?`/`#`.
///
/// # Errors
/// A [`ConfigError`] naming the variable.
pub fn canary_location(
    path: Option<&str>,
    mount: Option<&str>,
) -> Result<Option<(String, String)>, ConfigError> {
    let check = |variable: &str, value: &str, example: &str| {
        let v = value.trim().trim_matches('/');
        if v.is_empty()
            || v.split('/').any(|p| p.is_empty() || p == "." || p == "..")
            || v.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            return Err(ConfigError::new(
                variable,
                format!("expected a KV path such as {example:?}, got {v:?}"),
            ));
        }
        Ok(v.to_owned())
    };
    let Some(path) = path else {
        if mount.is_some() {
            return Err(ConfigError::new(
                "CANARY_MOUNT",
                "is set but CANARY_PATH is not; set CANARY_PATH (e.g. vault-backup/canary) to use a canary",
            ));
        }
        return Ok(None);
    };
    let path = check("CANARY_PATH", path, "vault-backup/canary")?;
    let mount = check("CANARY_MOUNT", mount.unwrap_or("secret"), "secret")?;
    Ok(Some((mount, path)))
}

impl TryFrom<VaultEnv> for VaultSettings {
    type Error = ConfigError;

    fn try_from(raw: VaultEnv) -> Result<Self, ConfigError> {
        let addr = raw.vault_addr.trim();
        let vault_addr = Url::parse(addr)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                ConfigError::new(
                    "VAULT_ADDR",
                    format!("expected an http(s) URL such as https://vault:8200, got {addr:?}"),
                )
            })?;
        let ca_pem = match raw.vault_cacert.as_deref() {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    ConfigError::new("VAULT_CACERT", format!("cannot read {path}: {e}"))
                })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(ConfigError::new(
                        "VAULT_CACERT",
                        format!("{path} holds no PEM certificate"),
                    ));
                }
                Some(pem)
            }
        };
        let skip_verify =
            env::parse_bool("VAULT_SKIP_VERIFY", raw.vault_skip_verify.as_deref(), false)?;
        Ok(Self {
            auth: auth(&raw)?,
            addr: vault_addr,
            tls: Tls {
                ca_pem,
                skip_verify,
            },
            namespace: match raw.vault_namespace.as_deref().map(str::trim) {
                Some(ns) => {
                    header_value("VAULT_NAMESPACE", ns, "the namespace")?;
                    Some(ns.to_owned())
                }
                None => None,
            },
        })
    }
}
