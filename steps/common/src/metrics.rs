//! The outcome of each run, pushed to a Prometheus Pushgateway so that an alert fires when
//! backups stop.
//!
//! A TaskRun is a short batch job: once it ends there is nothing left for Prometheus to scrape,
//! and a backup that fails without telling anyone is found out on the day of the restore. So,
//! when `METRICS_PUSHGATEWAY_URL` is set, each step pushes a few gauges at the end of its run
//! (the Prometheus project's own answer for batch jobs), and the rules in `monitoring/` alert on
//! their age.
//!
//! - Every series is grouped by `job` (`METRICS_JOB`), `namespace` (`METRICS_NAMESPACE`, the
//!   TaskRun's namespace), `task` (`METRICS_TASK`) and `step`, so the backup, the restore drill,
//!   each step and each install sharing one Pushgateway never overwrite each other's series.
//! - The push is a `POST`: the Pushgateway replaces only the metrics named in the push, so a
//!   failed run's `vault_backup_last_failure_timestamp_seconds` leaves the last success in place.
//!   It replaces a metric with all its series in the group, though, so a gauge with labels of
//!   its own (`store`) is pushed to a group of its own (`.../step/snapshot-sync/store/s3`): a
//!   run that pushes only `store="dir"` leaves the `store="s3"` series as they were.
//! - Pushing is best effort: a Pushgateway that is down, slow or refusing costs at most
//!   `METRICS_PUSH_TIMEOUT` and one warning line, and never changes the step's exit code. So
//!   does a `METRICS_*` setting that cannot be used ([`Pusher::from_env_or_warn`]): monitoring
//!   never stops a backup.
//! - Credentials (`METRICS_BASIC_AUTH_FILE`, `METRICS_BEARER_TOKEN_FILE`) live in a
//!   [`Secret`] and never reach a log line; the URL may not carry any.
//!
//! Every gauge a step may push is listed once here ([`ALL`]), with its HELP text: the
//! Pushgateway keeps one HELP per metric name across all groups and logs "inconsistent help
//! strings" when two pushes disagree, so the steps must not word them differently.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Deserialize;
use url::Url;

use crate::env::{self, ConfigError, Secret};

/// `METRICS_JOB` when unset: the `job` label of every pushed series.
pub const DEFAULT_JOB: &str = "vault-backup";
/// `METRICS_TASK` when unset: the name of the shipped Task.
pub const DEFAULT_TASK: &str = "vault-backup";
/// `METRICS_PUSH_TIMEOUT` when unset: the most a push may add to a step's run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One gauge: its name and HELP text, the same in every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge {
    /// The metric name.
    pub name: &'static str,
    /// The HELP line (one line, no trailing period).
    pub help: &'static str,
    /// The labels the step sets besides the grouping labels (`job`, `task`, `step`).
    pub labels: &'static [&'static str],
}

/// Unix time of the step's last run that succeeded (exit code 0).
pub const LAST_SUCCESS: Gauge = Gauge {
    name: "vault_backup_last_success_timestamp_seconds",
    help: "Unix time the step last finished with exit code 0",
    labels: &[],
};
/// Unix time of the step's last run that failed (exit code other than 0).
pub const LAST_FAILURE: Gauge = Gauge {
    name: "vault_backup_last_failure_timestamp_seconds",
    help: "Unix time the step last finished with a non-zero exit code",
    labels: &[],
};
/// Wall time of the step's last run.
pub const DURATION: Gauge = Gauge {
    name: "vault_backup_duration_seconds",
    help: "Wall time of the step's last run in seconds",
    labels: &[],
};
/// Exit code of the step's last run (0 done, 1 failed, 2 configuration invalid).
pub const LAST_RUN_EXIT_CODE: Gauge = Gauge {
    name: "vault_backup_last_run_exit_code",
    help: "Exit code of the step's last run: 0 done, 1 failed, 2 configuration invalid",
    labels: &[],
};
/// Size of the snapshot the snapshot step saved.
pub const SNAPSHOT_BYTES: Gauge = Gauge {
    name: "vault_backup_snapshot_bytes",
    help: "Size in bytes of the last snapshot saved",
    labels: &[],
};
/// Raft index of the snapshot the snapshot step saved.
pub const SNAPSHOT_RAFT_INDEX: Gauge = Gauge {
    name: "vault_backup_snapshot_raft_index",
    help: "Raft index of the last snapshot saved (meta.json Index)",
    labels: &[],
};
/// Unix time a store (`store="s3"` or `"dir"`) last received a complete copy.
pub const STORE_LAST_SUCCESS: Gauge = Gauge {
    name: "vault_backup_store_last_success_timestamp_seconds",
    help: "Unix time the store last received a complete copy of a snapshot",
    labels: &["store"],
};
/// Complete snapshots a store holds after retention.
pub const STORE_SNAPSHOTS: Gauge = Gauge {
    name: "vault_backup_store_snapshots",
    help: "Complete snapshots the store holds after retention",
    labels: &["store"],
};
/// Bytes retention deleted from a store in the last run.
pub const STORE_DELETED_BYTES: Gauge = Gauge {
    name: "vault_backup_store_deleted_bytes",
    help: "Bytes retention deleted from the store in the last run",
    labels: &["store"],
};
/// Whether the cluster was healthy (raft autopilot) when the snapshot was taken: 1 or 0.
/// Not pushed when the health could not be read.
pub const CLUSTER_HEALTHY: Gauge = Gauge {
    name: "vault_backup_cluster_healthy",
    help: "Whether raft autopilot said the cluster was healthy when the last snapshot was taken (1 healthy, 0 not)",
    labels: &[],
};
/// How many voters the cluster could lose without losing quorum when the snapshot was taken.
/// Not pushed when the health could not be read.
pub const CLUSTER_FAILURE_TOLERANCE: Gauge = Gauge {
    name: "vault_backup_cluster_failure_tolerance",
    help: "Raft autopilot failure tolerance (voters that may fail without losing quorum) when the last snapshot was taken",
    labels: &[],
};
/// How many raft voters the cluster had when the snapshot was taken (the alert on failure
/// tolerance applies to clusters of three or more). Not pushed when the health is unknown.
pub const CLUSTER_VOTERS: Gauge = Gauge {
    name: "vault_backup_cluster_voters",
    help: "Raft voters autopilot listed when the last snapshot was taken",
    labels: &[],
};

/// How a store's last copy was checked: 1 by SHA-256, 0 by its size only (an S3 server that
/// states no checksum).
pub const STORE_VERIFIED_SHA256: Gauge = Gauge {
    name: "vault_backup_store_verified_sha256",
    help: "1 if the store's last copy was checked by SHA-256, 0 if by its size only",
    labels: &["store"],
};
/// Whether a store's bucket has Object Lock enabled: 1 or 0. Pushed by the sync step for each
/// store that has such a thing (S3) and whose configuration it could read.
pub const STORE_OBJECT_LOCK: Gauge = Gauge {
    name: "vault_backup_store_object_lock",
    help: "1 if the store's bucket has S3 Object Lock enabled, 0 if not",
    labels: &["store"],
};
/// Until when the snapshot the sync step last copied to a store is locked against deletion.
pub const STORE_LOCKED_UNTIL: Gauge = Gauge {
    name: "vault_backup_store_locked_until_timestamp_seconds",
    help: "Unix time until which Object Lock holds the newest snapshot the sync step copied to the store",
    labels: &["store"],
};
/// TaskRuns the prune step deleted in its last run.
pub const TASKRUNS_DELETED: Gauge = Gauge {
    name: "vault_backup_taskruns_deleted",
    help: "TaskRuns deleted by the last prune run",
    labels: &[],
};
/// TaskRuns the prune step kept in its last run.
pub const TASKRUNS_KEPT: Gauge = Gauge {
    name: "vault_backup_taskruns_kept",
    help: "TaskRuns kept by the last prune run",
    labels: &[],
};
/// Unix time a restore drill last proved a snapshot restorable.
pub const RESTORE_DRILL_LAST_SUCCESS: Gauge = Gauge {
    name: "vault_backup_restore_drill_last_success_timestamp_seconds",
    help: "Unix time a restore drill last restored a snapshot and read it back",
    labels: &[],
};
/// Wall time of the last successful restore drill.
pub const RESTORE_DRILL_DURATION: Gauge = Gauge {
    name: "vault_backup_restore_drill_duration_seconds",
    help: "Wall time of the last successful restore drill in seconds",
    labels: &[],
};

/// Every gauge a step may push (the README and the alert rules name only these).
pub const ALL: &[Gauge] = &[
    LAST_SUCCESS,
    LAST_FAILURE,
    DURATION,
    LAST_RUN_EXIT_CODE,
    SNAPSHOT_BYTES,
    SNAPSHOT_RAFT_INDEX,
    CLUSTER_HEALTHY,
    CLUSTER_FAILURE_TOLERANCE,
    CLUSTER_VOTERS,
    STORE_LAST_SUCCESS,
    STORE_SNAPSHOTS,
    STORE_DELETED_BYTES,
    STORE_VERIFIED_SHA256,
    STORE_OBJECT_LOCK,
    STORE_LOCKED_UNTIL,
    TASKRUNS_DELETED,
    TASKRUNS_KEPT,
    RESTORE_DRILL_LAST_SUCCESS,
    RESTORE_DRILL_DURATION,
];

/// The variables, exactly as documented; all optional strings (see [`env::from_env`]).
#[derive(Debug, Default, Deserialize)]
#[allow(missing_docs)]
pub struct RawConfig {
    pub metrics_pushgateway_url: Option<String>,
    pub metrics_push_timeout: Option<String>,
    pub metrics_job: Option<String>,
    pub metrics_namespace: Option<String>,
    pub metrics_task: Option<String>,
    pub metrics_basic_auth_file: Option<String>,
    pub metrics_bearer_token_file: Option<String>,
    pub metrics_cacert: Option<String>,
}

/// How the push authenticates to a Pushgateway behind a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// HTTP basic auth from `METRICS_BASIC_AUTH_FILE` (`user:password`).
    Basic {
        /// The user name (before the first `:`).
        user: String,
        /// The password (after it).
        password: Secret,
    },
    /// `Authorization: Bearer` from `METRICS_BEARER_TOKEN_FILE`.
    Bearer(Secret),
}

/// Where and how to push; `None` from [`Config::from_env`] when `METRICS_PUSHGATEWAY_URL` is unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The Pushgateway's base URL (`METRICS_PUSHGATEWAY_URL`), without credentials.
    pub url: Url,
    /// The most a push may take, connection included (`METRICS_PUSH_TIMEOUT`).
    pub timeout: Duration,
    /// The `job` grouping label (`METRICS_JOB`).
    pub job: String,
    /// The `namespace` grouping label (`METRICS_NAMESPACE`): the TaskRun's namespace,
    /// `$(context.taskRun.namespace)`, so that installs in several namespaces sharing one
    /// Pushgateway keep their own series. Unset: no such label.
    pub namespace: Option<String>,
    /// The `task` grouping label (`METRICS_TASK`): the Task's name, `$(context.task.name)`.
    pub task: String,
    /// Credentials, if any.
    pub auth: Option<Auth>,
    /// PEM CA bundle (`METRICS_CACERT`): trusted instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl Config {
    /// Reads the `METRICS_*` variables; `Ok(None)` when `METRICS_PUSHGATEWAY_URL` is unset.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the variable that is malformed or whose file cannot be read.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::try_from(env::from_env::<RawConfig>()?)
    }

    /// The variables [`Config::from_env`] reads.
    #[must_use]
    pub fn variables() -> Vec<String> {
        env::variables::<RawConfig>()
    }

    /// Checks a raw configuration; `Ok(None)` when no Pushgateway is configured.
    ///
    /// # Errors
    /// As [`Config::from_env`].
    pub fn try_from(raw: RawConfig) -> Result<Option<Self>, ConfigError> {
        let Some(url) = raw.metrics_pushgateway_url.as_deref() else {
            // Credentials or a CA without a URL mean someone meant to push: say so rather than
            // stay silent, which is what the metrics exist to prevent.
            let stray = [
                ("METRICS_PUSH_TIMEOUT", &raw.metrics_push_timeout),
                ("METRICS_BASIC_AUTH_FILE", &raw.metrics_basic_auth_file),
                ("METRICS_BEARER_TOKEN_FILE", &raw.metrics_bearer_token_file),
                ("METRICS_CACERT", &raw.metrics_cacert),
            ]
            .into_iter()
            .find(|(_, v)| v.is_some());
            return match stray {
                Some((name, _)) => Err(ConfigError::new(
                    "METRICS_PUSHGATEWAY_URL",
                    format!("is not set but {name} is; set the Pushgateway's URL, or unset {name}"),
                )),
                None => Ok(None),
            };
        };
        let url = pushgateway_url(url)?;
        let timeout = env::parse_duration(
            "METRICS_PUSH_TIMEOUT",
            raw.metrics_push_timeout.as_deref(),
            DEFAULT_TIMEOUT,
        )?;
        let auth = match (
            raw.metrics_basic_auth_file.as_deref(),
            raw.metrics_bearer_token_file.as_deref(),
        ) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "METRICS_BASIC_AUTH_FILE, METRICS_BEARER_TOKEN_FILE",
                    "both are set; set only one of them",
                ));
            }
            (Some(path), None) => Some(basic_auth(Path::new(path))?),
            (None, Some(path)) => Some(Auth::Bearer(env::read_secret_file(
                "METRICS_BEARER_TOKEN_FILE",
                Path::new(path),
            )?)),
            (None, None) => None,
        };
        let ca_pem = match raw.metrics_cacert.as_deref() {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                ConfigError::new("METRICS_CACERT", format!("cannot read {path}: {e}"))
            })?),
            None => None,
        };
        Ok(Some(Self {
            url,
            timeout,
            job: raw
                .metrics_job
                .map_or_else(|| DEFAULT_JOB.to_owned(), |s| s.trim().to_owned()),
            namespace: raw.metrics_namespace.map(|s| s.trim().to_owned()),
            task: raw
                .metrics_task
                .map_or_else(|| DEFAULT_TASK.to_owned(), |s| s.trim().to_owned()),
            auth,
            ca_pem,
        }))
    }

    /// Where a step's series are pushed:
    /// `<url>/metrics/job/<job>/namespace/<namespace>/task/<task>/step/<step>` (no `namespace`
    /// segment when it is unset), then `/<label>/<value>` for each of `extra` (a gauge's own
    /// labels, see [`Metrics`]).
    /// A value that is empty or holds anything but letters, digits, `-`, `_`, `.` and `~` is
    /// sent in the Pushgateway's base64 form (`task@base64/<url-safe base64>`), so a `/` in a
    /// name cannot change the grouping.
    #[must_use]
    pub fn group_url(&self, step: &str, extra: &[(&str, &str)]) -> Url {
        let mut path = self.url.path().trim_end_matches('/').to_owned();
        path.push_str("/metrics");
        let key = [
            Some(("job", self.job.as_str())),
            self.namespace.as_deref().map(|ns| ("namespace", ns)),
            Some(("task", self.task.as_str())),
            Some(("step", step)),
        ];
        for (label, value) in key.iter().flatten().chain(extra) {
            path.push('/');
            path.push_str(&grouping_segment(label, value));
        }
        let mut url = self.url.clone();
        url.set_path(&path);
        url
    }

    /// Exactly what a push of `metrics` for `step` sends, in order: one `POST` per group of
    /// [`Metrics::groups`], its URL ([`Config::group_url`] with the group's own labels) and its
    /// body. [`Pusher::try_push`] sends these and nothing else.
    #[must_use]
    pub fn requests(&self, step: &str, metrics: &Metrics) -> Vec<(Url, String)> {
        metrics
            .groups()
            .into_iter()
            .map(|(labels, body)| {
                let extra: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                (self.group_url(step, &extra), body)
            })
            .collect()
    }
}

/// Checks `METRICS_PUSHGATEWAY_URL`: http(s), a host, no credentials, query or fragment.
fn pushgateway_url(value: &str) -> Result<Url, ConfigError> {
    const VAR: &str = "METRICS_PUSHGATEWAY_URL";
    let url = Url::parse(value.trim()).map_err(|e| {
        ConfigError::new(
            VAR,
            format!("expected a URL such as http://pushgateway.monitoring:9091 ({e})"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(
            VAR,
            "expected an http:// or https:// URL with a host, such as http://pushgateway.monitoring:9091",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo the value: it holds a password.
        return Err(ConfigError::new(
            VAR,
            "must not carry credentials (they would be logged); put user:password in METRICS_BASIC_AUTH_FILE",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            VAR,
            "expected the Pushgateway's base URL, without a query or fragment",
        ));
    }
    Ok(url)
}

/// Reads `user:password` from a file (the password may contain `:`).
fn basic_auth(path: &Path) -> Result<Auth, ConfigError> {
    const VAR: &str = "METRICS_BASIC_AUTH_FILE";
    let text = env::read_secret_file(VAR, path)?;
    match text.expose().split_once(':') {
        Some((user, password)) if !user.is_empty() && !user.contains('\n') => Ok(Auth::Basic {
            user: user.to_owned(),
            password: Secret::new(password),
        }),
        _ => Err(ConfigError::new(
            VAR,
            format!("{} must hold user:password on one line", path.display()),
        )),
    }
}

/// One grouping-key path segment pair, `label/value` or `label@base64/<value>`.
fn grouping_segment(label: &str, value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        && value != "."
        && value != "..";
    if plain {
        format!("{label}/{value}")
    } else if value.is_empty() {
        // The Pushgateway's spelling of an empty value: a lone padding character.
        format!("{label}@base64/=")
    } else {
        format!(
            "{label}@base64/{}",
            base64::engine::general_purpose::URL_SAFE.encode(value)
        )
    }
}

/// Gauges to push, rendered in the Prometheus text exposition format (version 0.0.4).
///
/// Setting the same gauge with the same labels again replaces its value. Series are pushed
/// in groups by their own labels ([`Metrics::groups`]): the unlabelled ones to the step's
/// group, `store="s3"` ones to the step's group plus `store/s3`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    gauge: Gauge,
    labels: Vec<(&'static str, String)>,
    value: f64,
}

impl Metrics {
    /// No gauges yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a gauge that has no labels of its own.
    pub fn set(&mut self, gauge: Gauge, value: f64) -> &mut Self {
        self.set_with(gauge, &[], value)
    }

    /// Sets a gauge with label values, given in the order of [`Gauge::labels`]
    /// (`metrics.set_with(STORE_SNAPSHOTS, &["s3"], 7.0)`).
    ///
    /// A call whose number of values does not match the gauge's labels is a bug in the caller;
    /// it is logged and ignored rather than pushed malformed (a push never fails the step).
    pub fn set_with(&mut self, gauge: Gauge, values: &[&str], value: f64) -> &mut Self {
        if values.len() != gauge.labels.len() {
            tracing::warn!(
                metric = gauge.name,
                "metric set with the wrong number of labels; not pushed"
            );
            return self;
        }
        let labels: Vec<(&'static str, String)> = gauge
            .labels
            .iter()
            .zip(values)
            .map(|(name, v)| (*name, (*v).to_owned()))
            .collect();
        match self
            .samples
            .iter_mut()
            .find(|s| s.gauge.name == gauge.name && s.labels == labels)
        {
            Some(sample) => sample.value = value,
            None => self.samples.push(Sample {
                gauge,
                labels,
                value,
            }),
        }
        self
    }

    /// Sets a timestamp gauge to `at`, in Unix seconds.
    pub fn set_time(&mut self, gauge: Gauge, values: &[&str], at: SystemTime) -> &mut Self {
        self.set_with(gauge, values, unix_seconds(at))
    }

    /// Records how the run ended: always [`DURATION`] and [`LAST_RUN_EXIT_CODE`]; then
    /// [`LAST_SUCCESS`] at `at` if `exit_code` is 0, else [`LAST_FAILURE`]. Only one of the two
    /// timestamps is pushed, so the other keeps its earlier value in the Pushgateway.
    pub fn outcome(&mut self, exit_code: u8, duration: Duration, at: SystemTime) -> &mut Self {
        let stamp = if exit_code == 0 {
            LAST_SUCCESS
        } else {
            LAST_FAILURE
        };
        self.set_time(stamp, &[], at)
            .set(DURATION, duration.as_secs_f64())
            .set(LAST_RUN_EXIT_CODE, f64::from(exit_code))
    }

    /// Whether nothing was set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The number of series set.
    #[must_use]
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// The series split by their own label values, each group rendered without those labels
    /// (the Pushgateway sets them from the grouping key): what [`Pusher::try_push`] sends, one
    /// `POST` per group. The unlabelled group comes first.
    #[must_use]
    pub fn groups(&self) -> Vec<(Vec<(&'static str, String)>, String)> {
        let mut keys: Vec<&Vec<(&'static str, String)>> = Vec::new();
        for s in &self.samples {
            if !keys.contains(&&s.labels) {
                keys.push(&s.labels);
            }
        }
        keys.sort_by_key(|k| !k.is_empty());
        keys.into_iter()
            .map(|key| {
                let samples: Vec<&Sample> =
                    self.samples.iter().filter(|s| &s.labels == key).collect();
                (key.clone(), render(&samples, false))
            })
            .collect()
    }

    /// The series as the Pushgateway serves them once every group is pushed, in the text
    /// exposition format (each gauge's `# HELP` and `# TYPE` lines, then its series, with their
    /// own labels, which the Pushgateway takes from the group's URL): for tests to read a
    /// step's gauges in one text. Not what is sent: that is [`Config::requests`], and
    /// `tests/tests/metrics.rs` checks against a real Pushgateway that the two agree.
    #[must_use]
    pub fn render(&self) -> String {
        render(&self.samples.iter().collect::<Vec<_>>(), true)
    }
}

/// Renders `samples`, with their own labels or without (when the grouping key carries them).
fn render(samples: &[&Sample], with_labels: bool) -> String {
    let mut out = String::new();
    let mut done: Vec<&str> = Vec::new();
    for first in samples {
        let name = first.gauge.name;
        if done.contains(&name) {
            continue;
        }
        done.push(name);
        let _ = writeln!(out, "# HELP {name} {}", escape_help(first.gauge.help));
        let _ = writeln!(out, "# TYPE {name} gauge");
        for s in samples.iter().filter(|s| s.gauge.name == name) {
            out.push_str(name);
            if with_labels && !s.labels.is_empty() {
                out.push('{');
                for (i, (label, value)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{label}=\"{}\"", escape_label_value(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(s.value));
        }
    }
    out
}

/// Seconds since the Unix epoch (negative before it, which no clock here will show).
#[must_use]
pub fn unix_seconds(at: SystemTime) -> f64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// A label value in the text format: `\`, `"` and newlines escaped (for [`Metrics::render`];
/// a pushed label value travels in the URL, see [`Config::group_url`]).
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A HELP text in the text format: `\` and newlines escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as the text format spells it (`+Inf`, `-Inf`, `NaN`, else Rust's shortest
/// round-trip decimal, which never uses an exponent).
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Why a push did not land. Never holds a credential: the URL cannot carry one.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// No answer at all (connection refused, DNS, TLS).
    #[error("cannot reach the Pushgateway at {url}")]
    Unreachable {
        /// Where the push went.
        url: Url,
        /// What the HTTP client saw.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The whole push took longer than `METRICS_PUSH_TIMEOUT`.
    #[error(
        "the Pushgateway at {url} did not answer within {after:?}; check METRICS_PUSHGATEWAY_URL or raise METRICS_PUSH_TIMEOUT"
    )]
    Timeout {
        /// Where the push went.
        url: Url,
        /// The timeout.
        after: Duration,
    },
    /// The Pushgateway (or a proxy in front of it) refused the push.
    #[error("the Pushgateway at {url} answered {status}: {text}")]
    Refused {
        /// Where the push went.
        url: Url,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        text: String,
    },
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

/// Pushes [`Metrics`] to one Pushgateway.
///
/// Built on hyper directly rather than reqwest: the prune step already links hyper and
/// hyper-rustls through kube, and reqwest on top took its static binary over 10 MiB.
#[derive(Clone)]
pub struct Pusher {
    config: Config,
    http: HttpClient,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Pusher {
    /// A pusher with the configured trust (`METRICS_CACERT`, else the system roots).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `METRICS_CACERT` if it holds no usable certificate.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let bad_ca = |why: String| ConfigError::new("METRICS_CACERT", why);
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad_ca(format!("cannot build a TLS client: {e}")))?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = if let Some(pem) = &config.ca_pem {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|e| bad_ca(format!("holds no usable PEM certificate: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad_ca(format!("holds an unusable certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad_ca("holds no PEM certificate".into()));
            }
            builder.with_tls_config(tls.with_root_certificates(roots).with_no_client_auth())
        } else {
            let mut roots = rustls::RootCertStore::empty();
            // Unreadable system roots only matter for an https:// Pushgateway, whose push
            // then fails with one warning like any other.
            roots.add_parsable_certificates(rustls_native_roots());
            builder.with_tls_config(tls.with_root_certificates(roots).with_no_client_auth())
        };
        let mut http_connector = hyper_util::client::legacy::connect::HttpConnector::new();
        http_connector.enforce_http(false);
        http_connector.set_connect_timeout(Some(config.timeout));
        let connector = builder
            .https_or_http()
            .enable_http1()
            .wrap_connector(http_connector);
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(Self { config, http })
    }

    /// [`Config::from_env`] then [`Pusher::new`]: `Ok(None)` when no Pushgateway is configured.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the variable at fault.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Config::from_env()?.map(Self::new).transpose()
    }

    /// [`Pusher::from_env`], best effort: a `METRICS_*` setting that cannot be used (a malformed
    /// URL or timeout, a credentials file that is missing because its optional Secret is) logs
    /// one warning naming the variable and gives `None`. The step then runs, and exits, exactly
    /// as it would unmonitored: monitoring must never stop a backup, and a step that exits 2
    /// over its metrics settings would. Call it inside the tokio runtime the push runs on.
    #[must_use]
    pub fn from_env_or_warn() -> Option<Self> {
        Self::from_env().unwrap_or_else(|e| {
            tracing::warn!(
                variable = %e.variable,
                "metrics not pushed; the step's outcome is unchanged: invalid metrics configuration: {e}"
            );
            None
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Pushes with one `POST` per group ([`Metrics::groups`]), all of them together bounded by
    /// the timeout; the error says why (the first group that) did not land.
    ///
    /// # Errors
    /// A [`PushError`] if the Pushgateway cannot be reached, refuses or is too slow.
    pub async fn try_push(&self, step: &str, metrics: &Metrics) -> Result<(), PushError> {
        let after = self.config.timeout;
        let all = async {
            for (url, body) in self.config.requests(step, metrics) {
                self.post(&url, body).await?;
            }
            Ok(())
        };
        match tokio::time::timeout(after, all).await {
            Ok(result) => result,
            Err(_) => Err(PushError::Timeout {
                url: self.config.group_url(step, &[]),
                after,
            }),
        }
    }

    /// The `POST` of one group: its body as given, the text format's content type, and the
    /// credentials, if any, in an `Authorization` header marked sensitive (hyper then keeps it
    /// out of its debug output and HTTP/2 header compression, as the Vault client does with the
    /// Vault token).
    fn request(
        &self,
        url: &Url,
        body: String,
    ) -> Result<hyper::Request<http_body_util::Full<bytes::Bytes>>, PushError> {
        use base64::Engine as _;
        let mut request = hyper::Request::post(url.as_str())
            .header(
                hyper::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .header(
                hyper::header::USER_AGENT,
                concat!("vault-backup/", env!("CARGO_PKG_VERSION")),
            );
        let authorization = match &self.config.auth {
            Some(Auth::Basic { user, password }) => {
                let pair = format!("{user}:{}", password.expose());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            Some(Auth::Bearer(token)) => Some(format!("Bearer {}", token.expose())),
            None => None,
        };
        // The only failure here is a header value a config file put a newline in: say so
        // without the value.
        let bad_header = || PushError::Unreachable {
            url: url.clone(),
            source: "the credentials are not a valid HTTP header value".into(),
        };
        if let Some(value) = authorization {
            let mut value =
                hyper::header::HeaderValue::try_from(value).map_err(|_| bad_header())?;
            value.set_sensitive(true);
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        request
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|_| bad_header())
    }

    async fn post(&self, url: &Url, body: String) -> Result<(), PushError> {
        use http_body_util::BodyExt as _;
        let unreachable =
            |source: Box<dyn std::error::Error + Send + Sync>| PushError::Unreachable {
                url: url.clone(),
                source,
            };
        let request = self.request(url, body)?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| unreachable(Box::new(e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let mut text: String = String::from_utf8_lossy(&body)
            .trim()
            .chars()
            .take(300)
            .collect();
        if text.is_empty() {
            text = "(no error text)".into();
        }
        Err(PushError::Refused {
            url: url.clone(),
            status: status.as_u16(),
            text,
        })
    }

    /// Pushes `metrics` for `step`, best effort: success logs one `info` line, any failure one
    /// `warn` line, and either way the caller carries on with its own outcome. Takes at most the
    /// configured timeout. Returns whether the push landed.
    pub async fn push(&self, step: &str, metrics: &Metrics) -> bool {
        match self.try_push(step, metrics).await {
            Ok(()) => {
                tracing::info!(
                    pushgateway = %self.config.url,
                    step,
                    series = metrics.len(),
                    "metrics pushed"
                );
                true
            }
            Err(e) => {
                tracing::warn!(
                    pushgateway = %self.config.url,
                    step,
                    "metrics not pushed; the step's outcome is unchanged: {}",
                    crate::exit::one_line(&e)
                );
                false
            }
        }
    }
}

/// The system's trusted roots (`SSL_CERT_FILE`, else the distribution's bundle).
fn rustls_native_roots() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls_native_certs::load_native_certs().certs
}

/// The `--help` paragraph on the `METRICS_*` variables, the same in every step
/// ([`crate::exit::run_main_with_metrics`] appends it to the step's own usage text).
pub const USAGE: &str = "\
Metrics (optional; pushed to a Prometheus Pushgateway at the end of every run, success or failure):
  METRICS_PUSHGATEWAY_URL    the Pushgateway's base URL, e.g. http://pushgateway.monitoring:9091;
                             unset: nothing is pushed
  METRICS_PUSH_TIMEOUT       the most the push may add to the run (default 5s); a push that fails
                             logs one warning and never changes the exit code
  METRICS_JOB, METRICS_TASK  the job and task grouping labels (default vault-backup for both)
  METRICS_NAMESPACE          the namespace grouping label (the Tasks set the TaskRun's namespace);
                             unset: no namespace label
  METRICS_BASIC_AUTH_FILE    a file holding user:password, or
  METRICS_BEARER_TOKEN_FILE  a file holding a bearer token (never logged)
  METRICS_CACERT             PEM bundle to trust for an https:// Pushgateway
A METRICS_* setting that cannot be used logs one warning and nothing is pushed; the run and its
exit code are the same as without metrics.";

/// What a finished run (its summary, or its error) knows beyond its outcome, as gauges.
///
/// [`crate::exit::run_main_with_metrics`] calls it once after the run and then adds the outcome
/// ([`Metrics::outcome`]) itself, so an implementation sets only the step's own gauges
/// (snapshot size, per-store series, TaskRuns deleted). The default sets nothing: an error
/// that knows nothing more than its exit code.
pub trait Report {
    /// Adds this run's own gauges to `metrics`; `at` is when the run ended (the time a
    /// timestamp gauge such as [`STORE_LAST_SUCCESS`] should carry).
    fn metrics(&self, metrics: &mut Metrics, at: SystemTime) {
        let _ = (metrics, at);
    }
}

/// Pushes when a Pushgateway is configured, else does nothing: the one call a step makes at
/// the end of its run. See [`Pusher::push`].
pub async fn push(pusher: Option<&Pusher>, step: &str, metrics: &Metrics) -> bool {
    match pusher {
        Some(p) => p.push(step, metrics).await,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn raw(url: Option<&str>) -> RawConfig {
        RawConfig {
            metrics_pushgateway_url: url.map(str::to_owned),
            ..RawConfig::default()
        }
    }

    fn config(url: &str) -> Config {
        Config::try_from(raw(Some(url))).unwrap().unwrap()
    }

    #[test]
    fn unset_url_means_no_push() {
        assert_eq!(Config::try_from(raw(None)).unwrap(), None);
        let vars = [("METRICS_TASK".to_owned(), "t".to_owned())];
        let raw: RawConfig = env::from_iter(vars).unwrap();
        assert_eq!(Config::try_from(raw).unwrap(), None);
    }

    #[test]
    fn credentials_without_a_url_are_refused() {
        let mut r = raw(None);
        r.metrics_bearer_token_file = Some("/t".into());
        let err = Config::try_from(r).unwrap_err();
        assert_eq!(err.variable, "METRICS_PUSHGATEWAY_URL");
        assert!(err.message.contains("METRICS_BEARER_TOKEN_FILE"), "{err}");
    }

    #[test]
    fn defaults() {
        let c = config("http://pg:9091");
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.job, "vault-backup");
        assert_eq!(c.namespace, None);
        assert_eq!(c.task, "vault-backup");
        assert_eq!(c.auth, None);
        assert_eq!(c.ca_pem, None);
    }

    #[rstest]
    #[case("pushgateway:9091", "expected an http")]
    #[case("ftp://pg", "expected an http")]
    #[case("not a url", "expected a URL")]
    #[case("http://pg:9091/?x=1", "without a query")]
    #[case("https://admin:hunter2@pg", "must not carry credentials")]
    fn bad_urls_name_the_variable_and_never_echo_a_password(#[case] url: &str, #[case] want: &str) {
        let err = Config::try_from(raw(Some(url))).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("METRICS_PUSHGATEWAY_URL: "), "{text}");
        assert!(text.contains(want), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn bad_timeout_is_named() {
        let mut r = raw(Some("http://pg"));
        r.metrics_push_timeout = Some("soon".into());
        assert_eq!(
            Config::try_from(r).unwrap_err().variable,
            "METRICS_PUSH_TIMEOUT"
        );
    }

    #[test]
    fn basic_auth_file_is_user_colon_password_and_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth");
        std::fs::write(&p, "backup:pa:ss\n").unwrap();
        let mut r = raw(Some("https://pg"));
        r.metrics_basic_auth_file = Some(p.display().to_string());
        let c = Config::try_from(r).unwrap().unwrap();
        assert_eq!(
            c.auth,
            Some(Auth::Basic {
                user: "backup".into(),
                password: Secret::new("pa:ss")
            })
        );
        assert!(!format!("{c:?}").contains("pa:ss"));

        std::fs::write(&p, "no-colon-here\n").unwrap();
        let mut r = raw(Some("https://pg"));
        r.metrics_basic_auth_file = Some(p.display().to_string());
        let err = Config::try_from(r).unwrap_err();
        assert_eq!(err.variable, "METRICS_BASIC_AUTH_FILE");
        assert!(!err.to_string().contains("no-colon-here"), "{err}");
    }

    #[test]
    fn one_kind_of_credential_only() {
        let mut r = raw(Some("https://pg"));
        r.metrics_basic_auth_file = Some("/a".into());
        r.metrics_bearer_token_file = Some("/b".into());
        let err = Config::try_from(r).unwrap_err();
        assert!(err.message.contains("only one"), "{err}");
    }

    #[test]
    fn unreadable_or_useless_ca_is_named() {
        let mut r = raw(Some("https://pg"));
        r.metrics_cacert = Some("/nonexistent.pem".into());
        let err = Config::try_from(r).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("METRICS_CACERT: cannot read /nonexistent.pem"),
            "{err}"
        );

        let mut c = config("https://pg");
        c.ca_pem = Some(b"not a certificate".to_vec());
        let err = Pusher::new(c).unwrap_err();
        assert_eq!(err.variable, "METRICS_CACERT");
    }

    #[rstest]
    #[case(
        "http://pg:9091",
        "vault-backup",
        "vault-snapshot",
        "http://pg:9091/metrics/job/vault-backup/task/vault-backup/step/vault-snapshot"
    )]
    // A proxy path prefix is kept, with or without a trailing slash.
    #[case(
        "https://proxy/pushgateway/",
        "nightly",
        "snapshot-sync",
        "https://proxy/pushgateway/metrics/job/vault-backup/task/nightly/step/snapshot-sync"
    )]
    // '/' would add a path segment: base64, URL-safe alphabet.
    #[case(
        "http://pg",
        "team/backup",
        "s",
        "http://pg/metrics/job/vault-backup/task@base64/dGVhbS9iYWNrdXA=/step/s"
    )]
    #[case(
        "http://pg",
        "a b?",
        "s",
        "http://pg/metrics/job/vault-backup/task@base64/YSBiPw==/step/s"
    )]
    #[case(
        "http://pg",
        "..",
        "s",
        "http://pg/metrics/job/vault-backup/task@base64/Li4=/step/s"
    )]
    #[case(
        "http://pg",
        "",
        "s",
        "http://pg/metrics/job/vault-backup/task@base64/=/step/s"
    )]
    fn grouping_paths(
        #[case] base: &str,
        #[case] task: &str,
        #[case] step: &str,
        #[case] want: &str,
    ) {
        let mut c = config(base);
        c.task = task.to_owned();
        assert_eq!(c.group_url(step, &[]).as_str(), want);
    }

    #[test]
    fn a_labelled_gauge_goes_to_a_group_of_its_own() {
        let c = config("http://pg");
        assert_eq!(
            c.group_url("snapshot-sync", &[("store", "s3")]).as_str(),
            "http://pg/metrics/job/vault-backup/task/vault-backup/step/snapshot-sync/store/s3"
        );
        let mut m = Metrics::new();
        m.set_with(STORE_SNAPSHOTS, &["s3"], 7.0)
            .set_with(STORE_DELETED_BYTES, &["s3"], 10.0)
            .set_with(STORE_SNAPSHOTS, &["dir"], 3.0)
            .set(DURATION, 2.0);
        let groups = m.groups();
        let keys: Vec<_> = groups.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys,
            [
                vec![],
                vec![("store", "s3".to_owned())],
                vec![("store", "dir".to_owned())]
            ]
        );
        assert_eq!(
            groups[1].1,
            "# HELP vault_backup_store_snapshots Complete snapshots the store holds after retention\n\
             # TYPE vault_backup_store_snapshots gauge\n\
             vault_backup_store_snapshots 7\n\
             # HELP vault_backup_store_deleted_bytes Bytes retention deleted from the store in the last run\n\
             # TYPE vault_backup_store_deleted_bytes gauge\n\
             vault_backup_store_deleted_bytes 10\n"
        );
        assert!(groups[0].1.contains("vault_backup_duration_seconds 2\n"));
    }

    #[test]
    fn the_namespace_joins_the_grouping_key_when_set() {
        let vars = [
            (
                "METRICS_PUSHGATEWAY_URL".to_owned(),
                "http://pg:9091".to_owned(),
            ),
            ("METRICS_NAMESPACE".to_owned(), " team-a ".to_owned()),
        ];
        let c = Config::try_from(env::from_iter(vars).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(c.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            c.group_url("vault-snapshot", &[]).as_str(),
            "http://pg:9091/metrics/job/vault-backup/namespace/team-a/task/vault-backup/step/vault-snapshot"
        );
        assert_eq!(
            c.group_url("snapshot-sync", &[("store", "s3")]).as_str(),
            "http://pg:9091/metrics/job/vault-backup/namespace/team-a/task/vault-backup/step/snapshot-sync/store/s3"
        );
    }

    /// What a push sends, byte for byte: one POST per group, the step's own series first, each
    /// body without the labels its URL carries, and a label value the URL cannot hold as is in
    /// the base64 form (never escaped into the body).
    #[test]
    fn requests_are_exactly_what_is_pushed() {
        let mut c = config("http://pg");
        c.namespace = Some("ns".into());
        let mut m = Metrics::new();
        m.set_with(STORE_DELETED_BYTES, &["we\"ird/\n"], 0.0)
            .set(SNAPSHOT_BYTES, 1024.0)
            .set_with(STORE_SNAPSHOTS, &["dir"], 3.0);
        let sent: Vec<(String, String)> = c
            .requests("snapshot-sync", &m)
            .into_iter()
            .map(|(url, body)| (url.to_string(), body))
            .collect();
        let base =
            "http://pg/metrics/job/vault-backup/namespace/ns/task/vault-backup/step/snapshot-sync";
        assert_eq!(
            sent,
            [
                (
                    base.to_owned(),
                    "# HELP vault_backup_snapshot_bytes Size in bytes of the last snapshot saved\n\
                     # TYPE vault_backup_snapshot_bytes gauge\n\
                     vault_backup_snapshot_bytes 1024\n"
                        .to_owned()
                ),
                (
                    format!(
                        "{base}/store@base64/{}",
                        base64::engine::general_purpose::URL_SAFE.encode("we\"ird/\n")
                    ),
                    "# HELP vault_backup_store_deleted_bytes Bytes retention deleted from the store in the last run\n\
                     # TYPE vault_backup_store_deleted_bytes gauge\n\
                     vault_backup_store_deleted_bytes 0\n"
                        .to_owned()
                ),
                (
                    format!("{base}/store/dir"),
                    "# HELP vault_backup_store_snapshots Complete snapshots the store holds after retention\n\
                     # TYPE vault_backup_store_snapshots gauge\n\
                     vault_backup_store_snapshots 3\n"
                        .to_owned()
                ),
            ]
        );
    }

    #[rstest]
    #[case::basic("basic")]
    #[case::bearer("bearer")]
    #[tokio::test]
    async fn the_authorization_header_is_sensitive_and_the_body_is_the_group(#[case] kind: &str) {
        let mut c = config("https://pg");
        c.auth = Some(match kind {
            "basic" => Auth::Basic {
                user: "u".into(),
                password: Secret::new("pw"),
            },
            _ => Auth::Bearer(Secret::new("s.token")),
        });
        let pusher = Pusher::new(c).unwrap();
        let mut m = Metrics::new();
        m.set(SNAPSHOT_BYTES, 1.0);
        let (url, body) = pusher.config().requests("s", &m).remove(0);
        let request = pusher.request(&url, body.clone()).unwrap();
        let auth = &request.headers()[hyper::header::AUTHORIZATION];
        assert!(auth.is_sensitive());
        let want = if kind == "basic" {
            "Basic dTpwdw=="
        } else {
            "Bearer s.token"
        };
        assert_eq!(auth.to_str().unwrap(), want);
        assert!(!format!("{:?}", request.headers()).contains("token"));
        assert_eq!(request.uri().to_string(), url.as_str());
        let sent = http_body_util::BodyExt::collect(request.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(sent, body.as_bytes());
    }

    #[test]
    fn url_safe_alphabet_for_values_that_need_it() {
        // "??>" encodes to "Pz8+" in the standard alphabet; the path form needs '-' and '_'.
        assert_eq!(grouping_segment("task", "??>"), "task@base64/Pz8-");
    }

    #[test]
    fn renders_families_together_with_help_and_type() {
        let mut m = Metrics::new();
        m.set_with(STORE_SNAPSHOTS, &["s3"], 7.0)
            .set(SNAPSHOT_BYTES, 1024.0)
            .set_with(STORE_SNAPSHOTS, &["dir"], 3.0)
            .set_with(STORE_SNAPSHOTS, &["s3"], 8.0);
        assert_eq!(
            m.render(),
            "# HELP vault_backup_store_snapshots Complete snapshots the store holds after retention\n\
             # TYPE vault_backup_store_snapshots gauge\n\
             vault_backup_store_snapshots{store=\"s3\"} 8\n\
             vault_backup_store_snapshots{store=\"dir\"} 3\n\
             # HELP vault_backup_snapshot_bytes Size in bytes of the last snapshot saved\n\
             # TYPE vault_backup_snapshot_bytes gauge\n\
             vault_backup_snapshot_bytes 1024\n"
        );
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn wrong_number_of_labels_is_ignored() {
        let mut m = Metrics::new();
        m.set(STORE_SNAPSHOTS, 1.0)
            .set_with(SNAPSHOT_BYTES, &["x"], 1.0);
        assert!(m.is_empty());
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
        let mut m = Metrics::new();
        m.set_with(STORE_DELETED_BYTES, &["we\"ird\n"], 0.0);
        assert!(
            m.render()
                .contains("vault_backup_store_deleted_bytes{store=\"we\\\"ird\\n\"} 0\n")
        );
    }

    #[rstest]
    #[case(1_732_412_345.5, "1732412345.5")]
    #[case(1e21, "1000000000000000000000")]
    #[case(0.0, "0")]
    #[case(f64::NAN, "NaN")]
    #[case(f64::INFINITY, "+Inf")]
    #[case(f64::NEG_INFINITY, "-Inf")]
    fn values(#[case] v: f64, #[case] want: &str) {
        assert_eq!(format_value(v), want);
    }

    #[test]
    fn outcome_sets_one_timestamp_and_always_duration_and_exit_code() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let mut ok = Metrics::new();
        ok.outcome(0, Duration::from_millis(1500), at);
        let text = ok.render();
        assert!(text.contains("vault_backup_last_success_timestamp_seconds 1700000000.25\n"));
        assert!(!text.contains("last_failure"));
        assert!(text.contains("vault_backup_duration_seconds 1.5\n"));
        assert!(text.contains("vault_backup_last_run_exit_code 0\n"));

        let mut failed = Metrics::new();
        failed.outcome(2, Duration::from_secs(3), at);
        let text = failed.render();
        assert!(text.contains("vault_backup_last_failure_timestamp_seconds 1700000000.25\n"));
        assert!(!text.contains("last_success"));
        assert!(text.contains("vault_backup_last_run_exit_code 2\n"));
    }

    /// The labels the Pushgateway sets from the grouping key (and `instance`, which it adds
    /// empty): a pushed series must not carry them itself.
    const GROUPING_LABELS: [&str; 5] = ["job", "namespace", "task", "step", "instance"];

    #[test]
    fn catalogue_names_and_labels_are_valid_and_unique() {
        let valid = |s: &str| {
            s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        for (i, g) in ALL.iter().enumerate() {
            assert!(
                valid(g.name) && g.name.starts_with("vault_backup_"),
                "{}",
                g.name
            );
            assert!(
                !g.help.contains('\n') && !g.help.ends_with('.'),
                "{}",
                g.name
            );
            for l in g.labels {
                assert!(valid(l) && !l.starts_with("__"), "{}: {l}", g.name);
                assert!(!GROUPING_LABELS.contains(l), "{}: {l}", g.name);
            }
            assert!(
                ALL[i + 1..].iter().all(|o| o.name != g.name),
                "{} twice",
                g.name
            );
        }
    }

    #[test]
    fn variables_are_the_documented_names() {
        assert_eq!(
            Config::variables(),
            [
                "METRICS_PUSHGATEWAY_URL",
                "METRICS_PUSH_TIMEOUT",
                "METRICS_JOB",
                "METRICS_NAMESPACE",
                "METRICS_TASK",
                "METRICS_BASIC_AUTH_FILE",
                "METRICS_BEARER_TOKEN_FILE",
                "METRICS_CACERT"
            ]
        );
    }
}
