//! The snapshot step's configuration, from Vault's own environment variable names.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vault_backup_common::env::{self, ConfigError};
use vault_backup_common::tekton::Results;
pub use vault_backup_vault::config::DEFAULT_JWT_FILE;
use vault_backup_vault::config::canary_location;
pub use vault_backup_vault::{Auth, Tls, VaultEnv, VaultSettings};

/// The Tekton results this step writes.
pub const RESULTS: [&str; 3] = ["snapshot-name", "snapshot-sha256", "snapshot-bytes"];

/// The step's own variables, exactly as documented; all optional strings so that parsing errors
/// can name the variable without echoing its value. Read through [`env::from_env`], which drops
/// empty values, so `Some` always holds something.
#[derive(Debug, Default, Deserialize)]
#[allow(missing_docs)]
pub struct SnapshotEnv {
    pub snapshot_dir: String,
    pub snapshot_prefix: Option<String>,
    pub snapshot_timeout: Option<String>,
    pub snapshot_retries: Option<String>,
    pub snapshot_retry_delay: Option<String>,
    pub canary_path: Option<String>,
    pub canary_mount: Option<String>,
    pub taskrun_name: Option<String>,
}

/// Everything the step reads, from one environment: its own variables and the Vault ones.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    /// `SNAPSHOT_*`, `CANARY_*`, `TASKRUN_NAME`.
    #[serde(flatten)]
    pub snapshot: SnapshotEnv,
    /// `VAULT_ADDR`, TLS, namespace and login.
    #[serde(flatten)]
    pub vault: VaultEnv,
}

impl RawConfig {
    /// The variable names the step reads. Listed part by part: a flattened struct hides its
    /// field names from [`env::variables`].
    #[must_use]
    pub fn variables() -> Vec<String> {
        [
            env::variables::<SnapshotEnv>(),
            env::variables::<VaultEnv>(),
        ]
        .concat()
    }
}

/// Where the canary goes and what it says, from `CANARY_PATH`, `CANARY_MOUNT`, `TASKRUN_NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanarySpec {
    /// The KV v2 mount.
    pub mount: String,
    /// The secret's path in the mount.
    pub path: String,
    /// The TaskRun that writes it (`TASKRUN_NAME`, else `local`).
    pub taskrun: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `VAULT_ADDR` (any node of the cluster; the leader is found from there), TLS, namespace
    /// and login.
    pub vault: VaultSettings,
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
    /// The canary written just before the snapshot (`CANARY_PATH`), if any.
    pub canary: Option<CanarySpec>,
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

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let vault = VaultSettings::try_from(raw.vault)?;
        let raw = raw.snapshot;
        let snapshot_dir = env::existing_dir("SNAPSHOT_DIR", raw.snapshot_dir.trim())?;
        Ok(Self {
            vault,
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
            canary: canary_location(raw.canary_path.as_deref(), raw.canary_mount.as_deref())?.map(
                |(mount, path)| CanarySpec {
                    mount,
                    path,
                    taskrun: raw
                        .taskrun_name
                        .as_deref()
                        .map_or_else(|| "local".to_owned(), |t| t.trim().to_owned()),
                },
            ),
            results: Results::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use vault_backup_common::env::Secret;

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
    fn the_variable_list_names_every_field() {
        let names = RawConfig::variables();
        assert!(
            names.iter().any(|n| n == "VAULT_ADDR") && names.iter().any(|n| n == "TASKRUN_NAME")
        );
        env::assert_names_cover::<RawConfig>(names);
    }

    #[test]
    fn token_config_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = raw(dir.path().to_str().unwrap(), &[("VAULT_TOKEN", "s.abc")]).unwrap();
        assert_eq!(c.vault.auth, Auth::Token(Secret::new("s.abc")));
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
    #[case(&[("VAULT_TOKEN", "t"), ("CANARY_PATH", "a/../b")], "CANARY_PATH: expected a KV path")]
    #[case(&[("VAULT_TOKEN", "t"), ("CANARY_PATH", "c"), ("CANARY_MOUNT", "se cret")], "CANARY_MOUNT: expected a KV path")]
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
    fn the_canary_is_optional_and_defaults_to_the_secret_mount() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(raw(d, &[("VAULT_TOKEN", "t")]).unwrap().canary, None);
        let c = raw(
            d,
            &[
                ("VAULT_TOKEN", "t"),
                ("CANARY_PATH", "/vault-backup/canary/"),
                ("TASKRUN_NAME", "backup-abc12"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.canary,
            Some(CanarySpec {
                mount: "secret".into(),
                path: "vault-backup/canary".into(),
                taskrun: "backup-abc12".into()
            })
        );
        let c = raw(
            d,
            &[
                ("VAULT_TOKEN", "t"),
                ("CANARY_PATH", "canary"),
                ("CANARY_MOUNT", "kv"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.canary.map(|c| (c.mount, c.taskrun)),
            Some(("kv".into(), "local".into()))
        );
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
            c.vault.auth,
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
            c.vault.auth,
            Auth::Kubernetes {
                mount: "k8s-prod".into(),
                role: "backup".into(),
                jwt_file: secret
            }
        );
    }
}
