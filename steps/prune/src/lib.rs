//! Caps the TaskRuns that backup runs leave behind, through the Kubernetes API.
//!
//! Every backup run leaves a TaskRun and its pod in the namespace. This step lists the runs of
//! the backup Task (by label, page by page), decides with a pure [`policy`] which old finished
//! runs to delete, logs that plan, and deletes them with background propagation so their pods
//! go too. It never deletes a run that has not finished, nor the run it runs in, nor a run whose
//! age it cannot tell. It needs only `list` and `delete` on `taskruns` (see `tekton/rbac.yaml`).
//!
//! Configuration (environment):
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `PRUNE_NAMESPACE` | the service account's namespace, else the kubeconfig context's | where the TaskRuns are |
//! | `KUBECONFIG` | unset: in-cluster service account (or `~/.kube/config`) | kubeconfig file(s) for local use |
//! | `PRUNE_SELECTOR` | `tekton.dev/task=vault-backup` | label selector of the runs to consider |
//! | `PRUNE_KEEP` | `10` | newest finished runs to keep (succeeded only, with `PRUNE_KEEP_FAILED`) |
//! | `PRUNE_KEEP_FAILED` | unset | count failed runs apart and keep the newest this many |
//! | `PRUNE_MAX_AGE` | unset | also delete kept runs that completed longer ago (`30d`, `720h`) |
//! | `PRUNE_CURRENT` | unset | the TaskRun this step runs in: never deleted |
//! | `PRUNE_DRY_RUN` | `false` | log the plan ("would delete N TaskRuns") and delete nothing |
//! | `PRUNE_PAGE_SIZE` | `500` | TaskRuns per list request (`limit`) |

pub mod kube;
pub mod policy;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use serde::Deserialize;
use tracing::{debug, error, info, warn};
use vault_backup_common::env::{self, ConfigError};
use vault_backup_common::exit::{CONFIG, FAILED};

use crate::kube::{Deleted, TaskRuns};
use crate::policy::Policy;

/// `--help` text.
pub const USAGE: &str = "\
Deletes old finished TaskRuns of the backup Task through the Kubernetes API.

Configuration comes from environment variables:
  PRUNE_NAMESPACE    namespace of the TaskRuns (default: the service account's namespace,
                     else the kubeconfig context's)
  KUBECONFIG         kubeconfig file(s) for local use (default: in-cluster service account)
  PRUNE_SELECTOR     label selector (default: tekton.dev/task=vault-backup)
  PRUNE_KEEP         newest finished runs to keep (default: 10)
  PRUNE_KEEP_FAILED  count failed runs apart and keep the newest this many (default: unset)
  PRUNE_MAX_AGE      also delete kept runs that completed longer ago, e.g. 30d (default: unset)
  PRUNE_CURRENT      the TaskRun this step runs in, never deleted ($(context.taskRun.name))
  PRUNE_DRY_RUN      true: log what would be deleted and delete nothing (default: false)
  PRUNE_PAGE_SIZE    TaskRuns per list request (default: 500)

Runs that have not finished, and finished runs missing a timestamp, are never deleted.
Exit codes: 0 done, 1 a list or some deletes failed, 2 invalid configuration.";

/// Where Kubernetes mounts the pod's namespace with its service-account token.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The label Tekton puts on every run of the `vault-backup` Task.
pub const DEFAULT_SELECTOR: &str = "tekton.dev/task=vault-backup";
/// Finished runs kept when `PRUNE_KEEP` is unset.
pub const DEFAULT_KEEP: u32 = 10;
/// TaskRuns per list request when `PRUNE_PAGE_SIZE` is unset.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Deletes in flight at once: enough to clear a backlog of thousands in seconds, few enough not
/// to crowd the API server.
const DELETE_CONCURRENCY: usize = 4;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable or file of the configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `KUBECONFIG` names files that cannot be read or used.
    #[error("KUBECONFIG: cannot use {paths}; check the file(s) it names")]
    Kubeconfig {
        /// The files, as given.
        paths: String,
        /// What kube reported.
        #[source]
        source: ::kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster service account is available.
    #[error(
        "no Kubernetes client configuration: not in a pod with a service account, and no ~/.kube/config; set KUBECONFIG for local use"
    )]
    NoClusterConfig {
        /// What kube reported for both.
        #[source]
        source: ::kube::config::InferConfigError,
    },
    /// The client could not be built from a configuration that loaded.
    #[error("cannot build the Kubernetes client")]
    Client {
        /// What kube reported.
        #[source]
        source: Box<::kube::Error>,
    },
    /// The API server refused the label selector.
    #[error("PRUNE_SELECTOR: the API server rejected the label selector {selector:?}: {message}")]
    SelectorRejected {
        /// The selector sent.
        selector: String,
        /// The server's message.
        message: String,
    },
    /// A list request failed.
    #[error(
        "cannot list TaskRuns in namespace {namespace} with selector {selector:?}; check that the service account may list taskruns there (tekton/rbac.yaml)"
    )]
    List {
        /// The namespace.
        namespace: String,
        /// The selector.
        selector: String,
        /// What kube reported.
        #[source]
        source: Box<::kube::Error>,
    },
    /// The server returned the same `continue` token it was sent.
    #[error(
        "listing TaskRuns in namespace {namespace}: the API server returned the same continue token again after {pages} pages; stopped rather than loop"
    )]
    ListLoop {
        /// The namespace.
        namespace: String,
        /// Pages read.
        pages: usize,
    },
    /// Some deletes failed; the others went ahead.
    #[error(
        "{} of {} TaskRun deletions failed in namespace {}: {}; the step carried on with the rest and will retry them next run",
        .summary.failed.len(),
        .summary.planned,
        .summary.namespace,
        .summary.failed.join(", ")
    )]
    Incomplete {
        /// What was done.
        summary: Summary,
    },
}

impl vault_backup_common::ExitStatus for Error {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_)
            | Self::Kubeconfig { .. }
            | Self::NoClusterConfig { .. }
            | Self::SelectorRejected { .. } => CONFIG,
            Self::Client { .. }
            | Self::List { .. }
            | Self::ListLoop { .. }
            | Self::Incomplete { .. } => FAILED,
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

/// What a run did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The namespace pruned.
    pub namespace: String,
    /// TaskRuns that matched the selector.
    pub listed: usize,
    /// List requests made.
    pub pages: usize,
    /// TaskRuns the plan deletes.
    pub planned: usize,
    /// TaskRuns deleted.
    pub deleted: usize,
    /// TaskRuns already gone when deleted (404): counted as done.
    pub already_gone: usize,
    /// TaskRuns kept.
    pub kept: usize,
    /// TaskRuns whose delete failed, by name.
    pub failed: Vec<String>,
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
}

/// Loads the client configuration: the `KUBECONFIG` files if given, else kube's inference
/// (`~/.kube/config`, then the in-cluster service account).
async fn client_config(kubeconfig: &[PathBuf]) -> Result<::kube::Config> {
    use ::kube::config::{KubeConfigOptions, Kubeconfig};
    if kubeconfig.is_empty() {
        return ::kube::Config::infer()
            .await
            .map_err(|source| Error::NoClusterConfig { source });
    }
    let paths = kubeconfig
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    // The same merge kube applies to KUBECONFIG itself; done here so that tests can pass the
    // path in the Config instead of changing the process environment.
    let merged = kubeconfig
        .iter()
        .try_fold(Kubeconfig::default(), |merged, p| {
            Kubeconfig::read_from(p).and_then(|c| merged.merge(c))
        });
    let config = match merged {
        Ok(merged) => {
            ::kube::Config::from_custom_kubeconfig(merged, &KubeConfigOptions::default()).await
        }
        Err(e) => Err(e),
    };
    config.map_err(|source| Error::Kubeconfig { paths, source })
}

/// Lists the selected TaskRuns, plans, logs the plan and (unless a dry run) deletes.
///
/// # Errors
/// Exit-2 errors for an unusable kubeconfig, namespace file or selector; [`Error::List`] if
/// listing fails (nothing is deleted then); [`Error::Incomplete`] if some deletes failed, after
/// all the others were carried out.
pub async fn run(config: Config) -> Result<Summary> {
    let client_config = client_config(&config.kubeconfig).await?;
    let namespace = resolve_namespace(
        config.namespace.as_deref(),
        Path::new(SERVICE_ACCOUNT_NAMESPACE),
        &client_config.default_namespace,
    )?;
    let client = ::kube::Client::try_from(client_config).map_err(|source| Error::Client {
        source: Box::new(source),
    })?;
    let taskruns = TaskRuns::new(client, &namespace);

    let listing = taskruns.list(&config.selector, config.page_size).await?;
    info!(
        namespace = %namespace,
        selector = %config.selector,
        listed = listing.runs.len(),
        pages = listing.pages,
        "listed TaskRuns"
    );
    let decisions = policy::plan(&listing.runs, &config.policy, Utc::now());
    // Oldest first, so that a step cut short by its timeout has removed the oldest runs.
    let mut doomed: Vec<_> = listing
        .runs
        .iter()
        .zip(&decisions)
        .filter(|(_, d)| d.delete)
        .collect();
    doomed.sort_by(|(a, _), (b, _)| {
        (a.completed, a.created, &a.name).cmp(&(b.completed, b.created, &b.name))
    });
    for d in decisions.iter().filter(|d| !d.delete) {
        debug!(taskrun = %d.name, reason = %d.reason, "keep");
    }

    let mut summary = Summary {
        namespace: namespace.clone(),
        listed: listing.runs.len(),
        pages: listing.pages,
        planned: doomed.len(),
        kept: decisions.len() - doomed.len(),
        dry_run: config.dry_run,
        ..Summary::default()
    };
    if config.dry_run {
        for (_, d) in &doomed {
            info!(taskrun = %d.name, reason = %d.reason, "would delete");
        }
        info!(
            namespace = %namespace,
            kept = summary.kept,
            "would delete {} TaskRuns (dry run: nothing deleted)",
            doomed.len()
        );
        return Ok(summary);
    }

    info!(namespace = %namespace, kept = summary.kept, "deleting {} TaskRuns", doomed.len());
    let mut results = futures::stream::iter(doomed.iter().map(|(_, d)| {
        let taskruns = taskruns.clone();
        async move { (d, taskruns.delete(&d.name).await) }
    }))
    .buffer_unordered(DELETE_CONCURRENCY);
    while let Some((d, result)) = results.next().await {
        match result {
            Ok(Deleted::Now) => {
                summary.deleted += 1;
                info!(taskrun = %d.name, reason = %d.reason, "deleted");
            }
            Ok(Deleted::AlreadyGone) => {
                summary.already_gone += 1;
                info!(taskrun = %d.name, "already gone");
            }
            Err(e) => {
                error!(taskrun = %d.name, error = %e, "delete failed; carrying on with the rest");
                summary.failed.push(d.name.clone());
            }
        }
    }
    summary.failed.sort();
    info!(
        namespace = %namespace,
        deleted = summary.deleted,
        already_gone = summary.already_gone,
        kept = summary.kept,
        failed = summary.failed.len(),
        "pruned TaskRuns"
    );
    if summary.failed.is_empty() {
        Ok(summary)
    } else {
        warn!("{} deletes failed", summary.failed.len());
        Err(Error::Incomplete { summary })
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
    fn usage_and_docs_list_every_variable_read() {
        let names = env::variables::<RawConfig>();
        assert_eq!(names.len(), 9, "{names:?}");
        for name in names {
            assert!(
                USAGE.contains(&format!("  {name} ")),
                "{name} missing from USAGE"
            );
        }
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
