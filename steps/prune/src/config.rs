//! The prune step's configuration: the raw variables, exactly as documented, checked into a
//! [`Config`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vault_backup_common::env::{self, ConfigError};
use vault_backup_common::tekton::Results;

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
/// The bound on each request to the API server when `PRUNE_TIMEOUT` is unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The result prune mode writes: `deleted 3, kept 10`, `dry run: would delete 3, kept 10` or
/// `failed: <one-line error>`.
pub const RESULT_PRUNE_OUTCOME: &str = "prune-outcome";
/// The result guard mode writes: `clear`, `blocked by <name>` or `failed: <one-line error>`.
pub const RESULT_GUARD_OUTCOME: &str = "guard-outcome";
/// Every result this binary can write.
pub const RESULTS: [&str; 2] = [RESULT_PRUNE_OUTCOME, RESULT_GUARD_OUTCOME];

/// What the binary is asked to do (`PRUNE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `prune` (the default): delete old finished runs.
    Prune,
    /// `guard`: delete nothing; fail if an older run of the Task is still running.
    Guard,
}

impl Mode {
    /// Parses `PRUNE_MODE`; unset is [`Mode::Prune`].
    ///
    /// # Errors
    /// A [`ConfigError`] naming `PRUNE_MODE` for anything but `prune` or `guard`.
    pub fn parse(value: Option<&str>) -> Result<Self, ConfigError> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("prune") => Ok(Self::Prune),
            Some("guard") => Ok(Self::Guard),
            Some(_) => Err(ConfigError::new(
                "PRUNE_MODE",
                format!(
                    "expected prune or guard, got {:?}",
                    value.unwrap_or_default()
                ),
            )),
        }
    }

    /// The result this mode writes its outcome to.
    #[must_use]
    pub fn result(self) -> &'static str {
        match self {
            Self::Prune => RESULT_PRUNE_OUTCOME,
            Self::Guard => RESULT_GUARD_OUTCOME,
        }
    }
}

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
    /// `PRUNE_MODE`.
    pub prune_mode: Option<String>,
    /// `PRUNE_TIMEOUT`.
    pub prune_timeout: Option<String>,
    /// `RESULTS_DIR`: a directory to write every result to, one file per result.
    pub results_dir: Option<String>,
    /// `RESULT_PRUNE_OUTCOME_PATH`: `$(results.prune-outcome.path)`.
    pub result_prune_outcome_path: Option<String>,
    /// `RESULT_GUARD_OUTCOME_PATH`: `$(results.guard-outcome.path)`.
    pub result_guard_outcome_path: Option<String>,
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
    /// `PRUNE_MODE`.
    pub mode: Mode,
    /// `PRUNE_TIMEOUT`: the bound on each list and delete request.
    pub timeout: Duration,
    /// Where the outcome result goes (`RESULT_PRUNE_OUTCOME_PATH`, `RESULT_GUARD_OUTCOME_PATH`,
    /// `RESULTS_DIR`).
    pub results: Results,
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
        let mode = Mode::parse(raw.prune_mode.as_deref())?;
        if mode == Mode::Guard && current.is_none() {
            return Err(ConfigError::new(
                "PRUNE_CURRENT",
                "is required with PRUNE_MODE=guard: set it to $(context.taskRun.name) so the guard can tell this run from the others",
            ));
        }
        let timeout = env::parse_duration(
            "PRUNE_TIMEOUT",
            raw.prune_timeout.as_deref(),
            DEFAULT_TIMEOUT,
        )?;
        let results = results(&raw);
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
            mode,
            timeout,
            results,
        })
    }
}

/// The result files, from the raw variables rather than the process environment so that a
/// configuration built from given pairs writes where those pairs say.
fn results(raw: &RawConfig) -> Results {
    Results::from_lookup(&RESULTS, |variable| {
        match variable {
            "RESULTS_DIR" => raw.results_dir.as_ref(),
            "RESULT_PRUNE_OUTCOME_PATH" => raw.result_prune_outcome_path.as_ref(),
            "RESULT_GUARD_OUTCOME_PATH" => raw.result_guard_outcome_path.as_ref(),
            _ => None,
        }
        .cloned()
    })
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
                mode: Mode::Prune,
                timeout: Duration::from_secs(30),
                results: Results::default(),
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
            ("PRUNE_MODE", "Guard"),
            ("PRUNE_TIMEOUT", "2m"),
            ("RESULTS_DIR", "/tekton/results"),
            ("RESULT_GUARD_OUTCOME_PATH", "/elsewhere/guard"),
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
        assert_eq!(c.mode, Mode::Guard);
        assert_eq!(c.timeout, Duration::from_secs(120));
        assert_eq!(
            c.results.path("guard-outcome"),
            Some(PathBuf::from("/elsewhere/guard"))
        );
        assert_eq!(
            c.results.path("prune-outcome"),
            Some(PathBuf::from("/tekton/results/prune-outcome"))
        );
    }

    #[test]
    fn guard_mode_needs_the_current_run() {
        let err = config(&[("PRUNE_MODE", "guard")]).unwrap_err();
        assert_eq!(err.variable, "PRUNE_CURRENT");
        assert!(
            err.to_string()
                .starts_with("PRUNE_CURRENT: is required with PRUNE_MODE=guard"),
            "{err}"
        );
        let c = config(&[("PRUNE_MODE", "guard"), ("PRUNE_CURRENT", "run-1")]).unwrap();
        assert_eq!(c.mode.result(), "guard-outcome");
        assert_eq!(Mode::Prune.result(), "prune-outcome");
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
    #[case("PRUNE_MODE", "lock")]
    #[case("PRUNE_TIMEOUT", "soon")]
    #[case("PRUNE_TIMEOUT", "0s")]
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
