//! The snapshot step's configuration, from Vault's own environment variable names.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;
use vault_backup_common::env::{self, ConfigError, Secret};
use vault_backup_common::tekton::Results;

/// Where Kubernetes mounts a pod's service-account token.
pub const DEFAULT_JWT_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The Tekton results this step writes.
pub const RESULTS: [&str; 3] = ["snapshot-name", "snapshot-sha256", "snapshot-bytes"];

/// The variables, exactly as documented; all optional strings so that parsing errors can name
/// the variable without echoing its value. Read through [`env::from_env`], which drops empty
/// values, so `Some` always holds something.
#[derive(Debug, Default, Deserialize)]
#[allow(missing_docs)]
pub struct RawConfig {
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
    pub snapshot_dir: String,
    pub snapshot_prefix: Option<String>,
    pub snapshot_timeout: Option<String>,
    pub snapshot_retries: Option<String>,
    pub snapshot_retry_delay: Option<String>,
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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `VAULT_ADDR`: any node of the cluster; the leader is found from there.
    pub vault_addr: Url,
    /// TLS settings.
    pub tls: Tls,
    /// `VAULT_NAMESPACE`, sent as `X-Vault-Namespace` on the login request only: Vault Enterprise
    /// serves `sys/storage/raft/snapshot` from the root namespace alone.
    pub namespace: Option<String>,
    /// How to log in.
    pub auth: Auth,
    /// `SNAPSHOT_DIR`: the workspace directory the snapshot is written to.
    pub snapshot_dir: PathBuf,
    /// `SNAPSHOT_PREFIX` (default `vault`): names are `<prefix>-<UTC timestamp>`.
    pub prefix: String,
    /// `SNAPSHOT_TIMEOUT` (default 10m): the limit for one attempt.
    pub timeout: Duration,
    /// `SNAPSHOT_RETRIES` (default 3): attempts after the first one.
    pub retries: u32,
    /// `SNAPSHOT_RETRY_DELAY` (default 2s): the first backoff, doubled each retry up to 30 s.
    pub retry_delay: Duration,
    /// Where to write Tekton results.
    pub results: Results,
}

impl Config {
    /// Reads the configuration from the environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first variable that is missing or unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::try_from(env::from_env::<RawConfig>()?)?;
        config.results = Results::from_env(&RESULTS);
        Ok(config)
    }
}

fn auth(raw: &RawConfig) -> Result<Auth, ConfigError> {
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
fn header_value(variable: &str, value: &str, what: &str) -> Result<(), ConfigError> {
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

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
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
        let snapshot_dir = env::existing_dir("SNAPSHOT_DIR", raw.snapshot_dir.trim())?;
        Ok(Self {
            auth: auth(&raw)?,
            vault_addr,
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
            snapshot_dir,
            prefix: env::name_prefix("SNAPSHOT_PREFIX", raw.snapshot_prefix.as_deref(), "vault")?,
            timeout: env::parse_duration(
                "SNAPSHOT_TIMEOUT",
                raw.snapshot_timeout.as_deref(),
                Duration::from_secs(600),
            )?,
            retries: env::parse_count("SNAPSHOT_RETRIES", raw.snapshot_retries.as_deref(), 0, 20)?
                .unwrap_or(3),
            retry_delay: env::parse_duration(
                "SNAPSHOT_RETRY_DELAY",
                raw.snapshot_retry_delay.as_deref(),
                Duration::from_secs(2),
            )?,
            results: Results::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn raw(dir: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut vars: Vec<(String, String)> = vec![
            ("VAULT_ADDR".into(), "http://127.0.0.1:8200".into()),
            ("SNAPSHOT_DIR".into(), dir.into()),
        ];
        for (k, v) in pairs {
            vars.retain(|(name, _)| name != k);
            vars.push(((*k).into(), (*v).into()));
        }
        Config::try_from(env::from_iter::<RawConfig, _>(vars)?)
    }

    #[test]
    fn token_config_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = raw(dir.path().to_str().unwrap(), &[("VAULT_TOKEN", "s.abc")]).unwrap();
        assert_eq!(c.auth, Auth::Token(Secret::new("s.abc")));
        assert_eq!(
            (c.prefix.as_str(), c.retries, c.timeout),
            ("vault", 3, Duration::from_secs(600))
        );
        assert!(
            !format!("{c:?}").contains("s.abc"),
            "the token must not show in Debug"
        );
    }

    #[rstest]
    #[case(&[], "VAULT_TOKEN: no Vault login configured")]
    #[case(&[("VAULT_TOKEN", "t"), ("VAULT_ROLE_ID", "r")], "VAULT_TOKEN/VAULT_TOKEN_FILE, VAULT_ROLE_ID: more than one")]
    #[case(&[("VAULT_TOKEN", "t"), ("VAULT_TOKEN_FILE", "/x")], "VAULT_TOKEN, VAULT_TOKEN_FILE: both are set")]
    #[case(&[("VAULT_ROLE_ID", "r")], "VAULT_SECRET_ID: VAULT_ROLE_ID is set")]
    #[case(&[("VAULT_AUTH_ROLE", "backup"), ("VAULT_AUTH_JWT_FILE", "/nonexistent/jwt")], "VAULT_AUTH_JWT_FILE: cannot read /nonexistent/jwt")]
    #[case(&[("VAULT_TOKEN", "t"), ("VAULT_ADDR", "vault:8200")], "VAULT_ADDR: expected an http(s) URL")]
    #[case(&[("VAULT_TOKEN", "t"), ("VAULT_CACERT", "/nonexistent.pem")], "VAULT_CACERT: cannot read /nonexistent.pem")]
    #[case(&[("VAULT_TOKEN", "t"), ("SNAPSHOT_TIMEOUT", "forever")], "SNAPSHOT_TIMEOUT: expected a positive duration")]
    #[case(&[("VAULT_TOKEN", "t"), ("SNAPSHOT_RETRIES", "many")], "SNAPSHOT_RETRIES: expected a whole number")]
    #[case(&[("VAULT_TOKEN", "t"), ("SNAPSHOT_PREFIX", "a b")], "SNAPSHOT_PREFIX: expected letters")]
    #[case(&[("VAULT_TOKEN", "t"), ("VAULT_SKIP_VERIFY", "perhaps")], "VAULT_SKIP_VERIFY: expected true or false")]
    #[case(&[("VAULT_TOKEN", "t"), ("SNAPSHOT_DIR", "/nonexistent")], "SNAPSHOT_DIR: directory /nonexistent is not usable")]
    #[case(&[("VAULT_TOKEN", "s.abc\u{7}def")], "VAULT_TOKEN: the token is not usable as an HTTP header value")]
    #[case(&[("VAULT_TOKEN", "s.abc\ndef")], "VAULT_TOKEN: the token is not usable as an HTTP header value")]
    #[case(&[("VAULT_TOKEN", "t"), ("VAULT_NAMESPACE", "team\u{1}a")], "VAULT_NAMESPACE: the namespace is not usable")]
    fn bad_configs_name_the_variable(#[case] pairs: &[(&str, &str)], #[case] want: &str) {
        let dir = tempfile::tempdir().unwrap();
        let err = raw(dir.path().to_str().unwrap(), pairs)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(want),
            "got {err:?}, want it to start with {want:?}"
        );
        assert!(!err.contains('\n'), "one line: {err:?}");
        assert!(!err.contains("abc"), "the value is never shown: {err:?}");
    }

    #[test]
    fn approle_and_kubernetes_logins() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let secret = dir.path().join("secret-id");
        std::fs::write(&secret, "sid\n").unwrap();
        let c = raw(
            d,
            &[
                ("VAULT_ROLE_ID", "rid"),
                ("VAULT_SECRET_ID_FILE", secret.to_str().unwrap()),
            ],
        )
        .unwrap();
        assert_eq!(
            c.auth,
            Auth::AppRole {
                mount: "approle".into(),
                role_id: "rid".into(),
                secret_id: Secret::new("sid")
            }
        );
        let c = raw(
            d,
            &[
                ("VAULT_AUTH_ROLE", "backup"),
                ("VAULT_AUTH_JWT_FILE", secret.to_str().unwrap()),
                ("VAULT_AUTH_MOUNT", "/k8s-prod/"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.auth,
            Auth::Kubernetes {
                mount: "k8s-prod".into(),
                role: "backup".into(),
                jwt_file: secret
            }
        );
    }
}
