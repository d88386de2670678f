//! The prune step's configuration: the raw variables, exactly as documented, checked into a
//! [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vault_backup_common::env::{self, ConfigError};

use crate::policy::Policy;

/// Where Kubernetes mounts the pod's namespace with its service-account token.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The label Tekton puts on every run of the `vault-backup` Task.
pub const DEFAULT_SELECTOR: &str = "tekton.dev/task=vault-backup";
/// Finished runs kept when `PRUNE_KEEP` is unset.
pub const DEFAULT_KEEP: u32 = 10;
/// TaskRuns per list request when `PRUNE_PAGE_SIZE` is unset.
pub const DEFAULT_PAGE_SIZE: u32 = 500;

/// The variables as read, before any parsing: exactly the documented names.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawConfig {
    /// `PRUNE_NAMESPACE`.
    pub prune_namespace: Option<String>,
    /// `KUBECONFIG`.
    pub kubeconfig: Option<String>,
    /// `PRUNE_SELECTOR`.
    pub prune_selector: Option<String>,
    /// `PRUNE_KEEP`.
    pub prune_keep: Option<String>,
    /// `PRUNE_KEEP_FAILED`.
    pub prune_keep_failed: Option<String>,
    /// `PRUNE_MAX_AGE`.
    pub prune_max_age: Option<String>,
    /// `PRUNE_CURRENT`.
    pub prune_current: Option<String>,
    /// `PRUNE_DRY_RUN`.
    pub prune_dry_run: Option<String>,
    /// `PRUNE_PAGE_SIZE`.
    pub prune_page_size: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `PRUNE_NAMESPACE`; if unset the namespace is found at run time (service account, then
    /// kubeconfig).
    pub namespace: Option<String>,
    /// `KUBECONFIG` split into its files; empty means in-cluster (or `~/.kube/config`).
    pub kubeconfig: Vec<PathBuf>,
    /// `PRUNE_SELECTOR`.
    pub selector: String,
    /// `PRUNE_KEEP`, `PRUNE_KEEP_FAILED`, `PRUNE_MAX_AGE`, `PRUNE_CURRENT`.
    pub policy: Policy,
    /// `PRUNE_DRY_RUN`.
    pub dry_run: bool,
    /// `PRUNE_PAGE_SIZE`.
    pub page_size: u32,
}

impl Config {
    /// Reads and validates the configuration from the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first unusable variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Like [`Config::from_env`], from the given `(name, value)` pairs.
    ///
    /// # Errors
    /// As [`Config::from_env`].
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let raw: RawConfig = env::from_iter(vars.into_iter().map(|(k, v)| (k.into(), v.into())))?;
        Self::try_from(raw)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let namespace = raw
            .prune_namespace
            .as_deref()
            .map(|ns| namespace_name("PRUNE_NAMESPACE", ns))
            .transpose()?;
        let kubeconfig = raw
            .kubeconfig
            .as_deref()
            .map(|v| {
                std::env::split_paths(v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let selector = raw
            .prune_selector
            .as_deref()
            .map_or(DEFAULT_SELECTOR, str::trim)
            .to_owned();
        let keep = env::parse_count("PRUNE_KEEP", raw.prune_keep.as_deref(), 0, 100_000)?
            .unwrap_or(DEFAULT_KEEP);
        let keep_failed = env::parse_count(
            "PRUNE_KEEP_FAILED",
            raw.prune_keep_failed.as_deref(),
            0,
            100_000,
        )?;
        let max_age = raw
            .prune_max_age
            .as_deref()
            .map(|v| env::parse_duration("PRUNE_MAX_AGE", Some(v), Duration::ZERO))
            .transpose()?;
        let current = raw
            .prune_current
            .as_deref()
            .map(|name| object_name("PRUNE_CURRENT", name))
            .transpose()?;
        let dry_run = env::parse_bool("PRUNE_DRY_RUN", raw.prune_dry_run.as_deref(), false)?;
        let page_size =
            env::parse_count("PRUNE_PAGE_SIZE", raw.prune_page_size.as_deref(), 1, 10_000)?
                .unwrap_or(DEFAULT_PAGE_SIZE);
        Ok(Self {
            namespace,
            kubeconfig,
            selector,
            policy: Policy {
                keep,
                keep_failed,
                max_age,
                current,
            },
            dry_run,
            page_size,
        })
    }
}

/// Checks a namespace name (an RFC 1123 label: lowercase letters, digits and `-`, at most 63).
fn namespace_name(variable: &str, value: &str) -> Result<String, ConfigError> {
    let v = value.trim();
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(ConfigError::new(
            variable,
            format!(
                "expected a namespace name (lowercase letters, digits and '-', at most 63), got {v:?}"
            ),
        ))
    }
}

/// Checks an object name (an RFC 1123 subdomain: lowercase letters, digits, `-` and `.`, at most 253).
fn object_name(variable: &str, value: &str) -> Result<String, ConfigError> {
    let v = value.trim();
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(v.to_owned())
    } else {
        Err(ConfigError::new(
            variable,
            format!("expected a TaskRun name such as $(context.taskRun.name) gives, got {v:?}"),
        ))
    }
}

/// The namespace to prune: `PRUNE_NAMESPACE` if set, else the service account's namespace file
/// if it exists, else the kubeconfig context's namespace (`default` if the context names none).
///
/// # Errors
/// A [`ConfigError`] naming `PRUNE_NAMESPACE` if the namespace file exists but cannot be read
/// or does not hold a namespace name.
pub fn resolve_namespace(
    explicit: Option<&str>,
    service_account_file: &Path,
    kubeconfig_namespace: &str,
) -> Result<String, ConfigError> {
    if let Some(ns) = explicit {
        return Ok(ns.to_owned());
    }
    match std::fs::read_to_string(service_account_file) {
        Ok(text) => namespace_name("PRUNE_NAMESPACE", &text).map_err(|e| {
            ConfigError::new(
                "PRUNE_NAMESPACE",
                format!(
                    "not set, and {} is unusable: {}",
                    service_account_file.display(),
                    e.message
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(kubeconfig_namespace.to_owned()),
        Err(e) => Err(ConfigError::new(
            "PRUNE_NAMESPACE",
            format!(
                "not set, and {} cannot be read: {e}",
                service_account_file.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(pairs.iter().copied())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c,
            Config {
                namespace: None,
                kubeconfig: vec![],
                selector: "tekton.dev/task=vault-backup".to_owned(),
                policy: Policy {
                    keep: 10,
                    keep_failed: None,
                    max_age: None,
                    current: None
                },
                dry_run: false,
                page_size: 500,
            }
        );
    }

    #[test]
    fn everything_set() {
        let c = config(&[
            ("PRUNE_NAMESPACE", "ci"),
            ("KUBECONFIG", "/a/config:/b/config"),
            (
                "PRUNE_SELECTOR",
                "tekton.dev/task in (vault-backup,vault-backup-v2)",
            ),
            ("PRUNE_KEEP", "3"),
            ("PRUNE_KEEP_FAILED", "0"),
            ("PRUNE_MAX_AGE", "30d"),
            ("PRUNE_CURRENT", "vault-backup-run-x7k2p"),
            ("PRUNE_DRY_RUN", "yes"),
            ("PRUNE_PAGE_SIZE", "50"),
        ])
        .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("ci"));
        assert_eq!(
            c.kubeconfig,
            [PathBuf::from("/a/config"), PathBuf::from("/b/config")]
        );
        assert_eq!(
            c.selector,
            "tekton.dev/task in (vault-backup,vault-backup-v2)"
        );
        assert_eq!(
            c.policy,
            Policy {
                keep: 3,
                keep_failed: Some(0),
                max_age: Some(Duration::from_secs(30 * 86_400)),
                current: Some("vault-backup-run-x7k2p".to_owned()),
            }
        );
        assert!(c.dry_run);
        assert_eq!(c.page_size, 50);
    }

    #[rstest]
    #[case("PRUNE_KEEP", "ten")]
    #[case("PRUNE_KEEP", "-1")]
    #[case("PRUNE_KEEP_FAILED", "some")]
    #[case("PRUNE_MAX_AGE", "forever")]
    #[case("PRUNE_MAX_AGE", "0")]
    #[case("PRUNE_DRY_RUN", "perhaps")]
    #[case("PRUNE_PAGE_SIZE", "0")]
    #[case("PRUNE_PAGE_SIZE", "1e3")]
    #[case("PRUNE_NAMESPACE", "Vault_Backup")]
    #[case("PRUNE_NAMESPACE", "-ns")]
    #[case("PRUNE_CURRENT", "$(context.taskRun.name)")]
    fn bad_values_name_the_variable(#[case] variable: &str, #[case] value: &str) {
        let err = config(&[(variable, value)]).unwrap_err();
        assert_eq!(err.variable, variable);
        let line = err.to_string();
        assert!(line.starts_with(&format!("{variable}: expected")), "{line}");
        assert!(line.contains(value.trim()), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }

    #[test]
    fn namespace_resolution_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("namespace");
        assert_eq!(
            resolve_namespace(Some("ci"), &file, "default").unwrap(),
            "ci"
        );
        assert_eq!(
            resolve_namespace(None, &file, "from-kubeconfig").unwrap(),
            "from-kubeconfig"
        );
        std::fs::write(&file, "backups\n").unwrap();
        assert_eq!(
            resolve_namespace(None, &file, "from-kubeconfig").unwrap(),
            "backups"
        );
        assert_eq!(
            resolve_namespace(Some("ci"), &file, "default").unwrap(),
            "ci"
        );
        std::fs::write(&file, "Not A Namespace").unwrap();
        let err = resolve_namespace(None, &file, "default").unwrap_err();
        assert_eq!(err.variable, "PRUNE_NAMESPACE");
        assert!(err.to_string().contains("is unusable"), "{err}");
    }
}
