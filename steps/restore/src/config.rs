//! The restore step's configuration: the environment, exactly as documented, into a checked
//! [`Config`]. Nothing here touches a store or a Vault; a bad value, or a cluster restore whose
//! `RESTORE_CONFIRM` does not name the snapshot, stops the step with exit 2 before anything is
//! fetched or sent.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vault_backup_common::env::{self, ConfigError, Secret};
use vault_backup_common::tekton::Results;
pub use vault_backup_stores::S3Env;
use vault_backup_stores::azureconfig::azure_config;
use vault_backup_stores::gcsconfig::gcs_config;
use vault_backup_stores::s3config::s3_config;
pub use vault_backup_stores::{AzureConfig, AzureEnv, GcsConfig, GcsEnv};
use vault_backup_vault::config::canary_location;
pub use vault_backup_vault::{KvPath, VaultEnv, VaultSettings};

pub use vault_backup_stores::S3Config;

/// The name of the restored snapshot.
pub const RESULT_RESTORED_SNAPSHOT: &str = "restored-snapshot";
/// Seconds the whole run took, fetch and checks included.
pub const RESULT_RESTORE_SECONDS: &str = "restore-seconds";
/// Drill: `ok` or `skipped`.
pub const RESULT_CANARY: &str = "canary";
/// Drill: the restored node's raft index; cluster: the manifest's.
pub const RESULT_RAFT_INDEX: &str = "raft-index";
/// Cluster: `true` or `false` after the restore.
pub const RESULT_SEALED: &str = "sealed";
/// Cluster: the name of the pre-restore snapshot in `SNAPSHOT_DIR`.
pub const RESULT_SAFETY_SNAPSHOT: &str = "safety-snapshot";
/// Recover: the paths written back into the cluster, comma-separated (empty in a dry run).
pub const RESULT_RECOVERED_PATHS: &str = "recovered-paths";
/// Recover: the paths whose value in the cluster already equals the snapshot's.
pub const RESULT_UNCHANGED_PATHS: &str = "unchanged-paths";

/// The Tekton results this step writes (each mode writes its own subset).
pub const RESULTS: [&str; 8] = [
    RESULT_RESTORED_SNAPSHOT,
    RESULT_RESTORE_SECONDS,
    RESULT_CANARY,
    RESULT_RAFT_INDEX,
    RESULT_SEALED,
    RESULT_SAFETY_SNAPSHOT,
    RESULT_RECOVERED_PATHS,
    RESULT_UNCHANGED_PATHS,
];

/// Where the recovery's scratch node listens unless `RECOVER_SCRATCH_ADDR` says otherwise: the
/// recover Task's sidecar, on the pod's loopback.
pub const DEFAULT_SCRATCH_ADDR: &str = "http://127.0.0.1:8200";

/// The prefix of the safety snapshot's name: `pre-restore-<UTC timestamp>`.
pub const SAFETY_PREFIX: &str = "pre-restore";

/// The step's own variables, exactly as documented; all optional strings so that errors can
/// name the variable without echoing its value.
#[derive(Debug, Default, Deserialize)]
#[allow(missing_docs)]
pub struct RestoreEnv {
    pub restore_mode: Option<String>,
    pub snapshot_dir: String,
    pub snapshot_name: Option<String>,
    pub snapshot_prefix: Option<String>,
    pub restore_from: Option<String>,
    pub backup_dir: Option<String>,
    pub restore_confirm: Option<String>,
    pub restore_force: Option<String>,
    pub drill_unseal_keys_file: Option<String>,
    pub drill_recovery_keys_file: Option<String>,
    pub canary_path: Option<String>,
    pub canary_mount: Option<String>,
    pub restore_timeout: Option<String>,
    pub recover_paths: Option<String>,
    pub recover_dry_run: Option<String>,
    pub recover_scratch_addr: Option<String>,
}

/// Everything the step reads, from one environment: its own variables, the S3 ones (as the
/// sync step reads them) and the Vault ones (as the snapshot step reads them).
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    /// `RESTORE_*`, `SNAPSHOT_*`, `BACKUP_DIR`, `DRILL_UNSEAL_KEYS_FILE`,
    /// `DRILL_RECOVERY_KEYS_FILE`, `CANARY_*`.
    #[serde(flatten)]
    pub restore: RestoreEnv,
    /// The bucket claim's or the plain S3 variables.
    #[serde(flatten)]
    pub s3: S3Env,
    /// The GCS variables, as the sync step reads them.
    #[serde(flatten)]
    pub gcs: GcsEnv,
    /// The Azure Blob variables, as the sync step reads them.
    #[serde(flatten)]
    pub azure: AzureEnv,
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
            env::variables::<RestoreEnv>(),
            env::variables::<S3Env>(),
            env::variables::<GcsEnv>(),
            env::variables::<AzureEnv>(),
            env::variables::<VaultEnv>(),
        ]
        .concat()
    }
}

/// The store the snapshot is fetched from.
#[derive(Debug, Clone)]
pub enum Source {
    /// S3, with the sync step's variables.
    S3(S3Config),
    /// Google Cloud Storage, with the sync step's variables.
    Gcs(GcsConfig),
    /// Azure Blob, with the sync step's variables.
    Azure(AzureConfig),
    /// A directory (`BACKUP_DIR`).
    Dir(PathBuf),
}

/// What the run does.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Restore into the cluster at `VAULT_ADDR` (disaster recovery).
    Cluster {
        /// `RESTORE_CONFIRM`: the snapshot's name, or `<name>@<target cluster_name>` (required
        /// for a forced restore into another cluster than the snapshot's source).
        confirm: String,
        /// `RESTORE_FORCE`: use `snapshot-force` (a snapshot of another cluster).
        force: bool,
    },
    /// Restore into the throw-away node at `VAULT_ADDR` and prove the snapshot.
    Drill {
        /// `DRILL_UNSEAL_KEYS_FILE`: the source cluster's unseal keys, one per line. Read only
        /// when the scratch node's seal is Shamir (the node says which, `sys/seal-status`):
        /// the drill Task always sets the variable and its Secret is optional, so the file may
        /// be absent with an auto-unseal.
        unseal_keys_file: Option<PathBuf>,
        /// `DRILL_RECOVERY_KEYS_FILE`: the source cluster's recovery keys (auto-unseal), one
        /// per line; when the file exists the drill proves them on the restored data.
        recovery_keys_file: Option<PathBuf>,
        /// `(mount, path)` of the canary from `CANARY_MOUNT`/`CANARY_PATH`, if set.
        canary: Option<(String, String)>,
    },
    /// Restore into the throw-away node at `RECOVER_SCRATCH_ADDR`, read the secrets at
    /// `RECOVER_PATHS` there and write each back into the cluster at `VAULT_ADDR` as a new
    /// version, check-and-set against the version read there.
    Recover {
        /// `RESTORE_CONFIRM`: the snapshot's exact name.
        confirm: String,
        /// `RECOVER_PATHS`: KV v2 secrets (`secret/app/db`) and folders (`secret/app/`).
        paths: Vec<KvPath>,
        /// `RECOVER_DRY_RUN`: report per path, write nothing.
        dry_run: bool,
        /// `RECOVER_SCRATCH_ADDR` (default [`DEFAULT_SCRATCH_ADDR`]): the throw-away node.
        scratch_addr: url::Url,
        /// `DRILL_UNSEAL_KEYS_FILE`: the source cluster's unseal keys (Shamir): they unseal
        /// the restored data and make the scratch root token.
        unseal_keys_file: Option<PathBuf>,
        /// `DRILL_RECOVERY_KEYS_FILE`: the source cluster's recovery keys (auto-unseal): they
        /// make the scratch root token.
        recovery_keys_file: Option<PathBuf>,
    },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// What the run does.
    pub mode: Mode,
    /// `SNAPSHOT_DIR`: the scratch workspace.
    pub snapshot_dir: PathBuf,
    /// `SNAPSHOT_NAME`, or `None` for the newest complete snapshot in the store.
    pub snapshot_name: Option<String>,
    /// `SNAPSHOT_PREFIX` (default `vault`).
    pub prefix: String,
    /// Where the snapshot comes from.
    pub source: Source,
    /// `VAULT_ADDR`, TLS and login.
    pub vault: VaultSettings,
    /// `RESTORE_TIMEOUT` (default 5m): the limit for each phase: the fetch of the snapshot,
    /// each wait (node answering, leader, active), the safety snapshot and the restore request.
    pub timeout: Duration,
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

fn source(
    raw: &RestoreEnv,
    s3: &S3Env,
    gcs: &GcsEnv,
    azure: &AzureEnv,
) -> Result<Source, ConfigError> {
    let s3 = s3_config(s3)?;
    let gcs = gcs_config(gcs)?.map(Source::Gcs);
    let azure = azure_config(azure)?.map(Source::Azure);
    let dir = raw
        .backup_dir
        .as_deref()
        .map(|d| env::existing_dir("BACKUP_DIR", d.trim()))
        .transpose()?;
    let from = raw.restore_from.as_deref().map(str::trim);
    // GCS and Azure: named by RESTORE_FROM, or the only store configured.
    match (from, gcs, azure) {
        (Some("gcs"), Some(gcs), _) => return Ok(gcs),
        (Some("azure"), _, Some(azure)) => return Ok(azure),
        (Some("gcs"), None, _) => {
            return Err(ConfigError::new(
                "RESTORE_FROM",
                "is gcs but no bucket is configured; set GOOGLE_BUCKET",
            ));
        }
        (Some("azure"), _, None) => {
            return Err(ConfigError::new(
                "RESTORE_FROM",
                "is azure but no container is configured; set AZURE_CONTAINER_NAME",
            ));
        }
        (None, gcs, azure) if gcs.is_some() || azure.is_some() => {
            let configured = [s3.is_some(), gcs.is_some(), azure.is_some(), dir.is_some()];
            if configured.iter().filter(|c| **c).count() > 1 {
                return Err(ConfigError::new(
                    "RESTORE_FROM",
                    "more than one store is configured; set RESTORE_FROM to s3, gcs, azure or dir",
                ));
            }
            return Ok(gcs.or(azure).unwrap_or_else(|| unreachable!("one is set")));
        }
        _ => {}
    }
    match (from, s3, dir) {
        (Some("s3"), Some(s3), _) | (None, Some(s3), None) => Ok(Source::S3(s3)),
        (Some("dir"), _, Some(dir)) | (None, None, Some(dir)) => Ok(Source::Dir(dir)),
        (Some("s3"), None, _) => Err(ConfigError::new(
            "RESTORE_FROM",
            "is s3 but no bucket is configured; set BUCKET_HOST and BUCKET_NAME, or S3_ENDPOINT and S3_BUCKET",
        )),
        (Some("dir"), _, None) => Err(ConfigError::new(
            "RESTORE_FROM",
            "is dir but BACKUP_DIR is not set",
        )),
        (Some(other), _, _) => Err(ConfigError::new(
            "RESTORE_FROM",
            format!("expected s3, gcs, azure or dir, got {other:?}"),
        )),
        (None, Some(_), Some(_)) => Err(ConfigError::new(
            "RESTORE_FROM",
            "both an S3 bucket and BACKUP_DIR are configured; set RESTORE_FROM to s3 or dir",
        )),
        (None, None, None) => Err(ConfigError::new(
            "BUCKET_NAME, S3_BUCKET, GOOGLE_BUCKET, AZURE_CONTAINER_NAME, BACKUP_DIR",
            "no store to restore from; set BUCKET_HOST and BUCKET_NAME (ObjectBucketClaim), S3_ENDPOINT and S3_BUCKET, GOOGLE_BUCKET, AZURE_CONTAINER_NAME, or BACKUP_DIR",
        )),
    }
}

/// Checks `RESTORE_CONFIRM` against `SNAPSHOT_NAME` where set. `<snapshot>@<target
/// cluster_name>` names the target as well, checked against the target's `sys/health` once
/// it is reached.
fn check_confirm(confirm: &str, snapshot_name: Option<&str>) -> Result<(), ConfigError> {
    let (confirmed, target) = match confirm.split_once('@') {
        Some((s, t)) => (s, Some(t)),
        None => (confirm, None),
    };
    if target.is_some_and(|t| t.trim().is_empty()) {
        return Err(ConfigError::new(
            "RESTORE_CONFIRM",
            format!(
                "names {confirm:?}, with nothing after the @; write <snapshot>@<target cluster_name>, or the snapshot's name alone"
            ),
        ));
    }
    if let Some(name) = snapshot_name
        && confirmed != name
    {
        return Err(ConfigError::new(
            "RESTORE_CONFIRM",
            format!(
                "names {confirm:?} but the snapshot to restore is {name:?}; set it to the exact snapshot name"
            ),
        ));
    }
    Ok(())
}

/// Reads a keys file (`var` names it): one key per line, blank lines ignored. `Ok(None)` when
/// the file does not exist (an optional Secret not mounted); a file that exists but cannot be
/// read or holds no key is an error naming `var`.
///
/// # Errors
/// A [`ConfigError`] naming `var` and the file.
pub fn read_keys(
    var: &'static str,
    path: &std::path::Path,
) -> Result<Option<Vec<Secret>>, ConfigError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = env::read_secret_file(var, path)?;
    let keys: Vec<Secret> = text
        .expose()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(Secret::new)
        .collect();
    if keys.is_empty() {
        return Err(ConfigError::new(
            var,
            format!("{} holds no key; write one key per line", path.display()),
        ));
    }
    Ok(Some(keys))
}

/// `RESTORE_MODE=recover`: the paths, the dry run, the scratch node, the keys; a confirmation
/// that names the snapshot (no `@target`: nothing is restored into the cluster).
fn recover_mode(raw: &RestoreEnv, snapshot_name: Option<&str>) -> Result<Mode, ConfigError> {
    for (var, set) in [
        ("RESTORE_FORCE", raw.restore_force.is_some()),
        ("CANARY_PATH", raw.canary_path.is_some()),
        ("CANARY_MOUNT", raw.canary_mount.is_some()),
    ] {
        if set {
            return Err(ConfigError::new(
                var,
                "does not apply to RESTORE_MODE=recover, which restores into its own scratch node only",
            ));
        }
    }
    let text = raw
        .recover_paths
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                "RECOVER_PATHS",
                "is not set; name the KV v2 secrets to recover, comma-separated, as <mount>/<path> (secret/app/db), or a folder with a trailing / (secret/app/)",
            )
        })?;
    let mut paths = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let path = vault_backup_vault::kv::parse_kv_path(part)
            .map_err(|e| ConfigError::new("RECOVER_PATHS", e))?;
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    let confirm = raw
        .restore_confirm
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                "RESTORE_CONFIRM",
                format!(
                    "is not set; a recovery writes the snapshot's values into the cluster, so set RESTORE_CONFIRM to the exact name of the snapshot to recover from{}",
                    snapshot_name.map(|n| format!(" ({n})")).unwrap_or_default()
                ),
            )
        })?;
    if confirm.contains('@') {
        return Err(ConfigError::new(
            "RESTORE_CONFIRM",
            format!(
                "names {confirm:?}; a recovery restores nothing into the cluster, so name the snapshot alone"
            ),
        ));
    }
    check_confirm(confirm, snapshot_name)?;
    let scratch = raw
        .recover_scratch_addr
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or(DEFAULT_SCRATCH_ADDR);
    let scratch_addr = url::Url::parse(scratch)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            ConfigError::new(
                "RECOVER_SCRATCH_ADDR",
                format!("expected an http(s) URL of the scratch node, got {scratch:?}"),
            )
        })?;
    Ok(Mode::Recover {
        confirm: confirm.to_owned(),
        paths,
        dry_run: env::parse_bool("RECOVER_DRY_RUN", raw.recover_dry_run.as_deref(), false)?,
        scratch_addr,
        unseal_keys_file: path_var(raw.drill_unseal_keys_file.as_deref()),
        recovery_keys_file: path_var(raw.drill_recovery_keys_file.as_deref()),
    })
}

fn path_var(value: Option<&str>) -> Option<PathBuf> {
    value
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    // The variables in the order they are checked; each mode's own checks live in a function.
    #[allow(clippy::too_many_lines)]
    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let RawConfig {
            restore: raw,
            s3,
            gcs,
            azure,
            vault,
        } = raw;
        let kind = match raw.restore_mode.as_deref().map(str::trim) {
            None | Some("cluster") => "cluster",
            Some("drill") => "drill",
            Some("recover") => "recover",
            Some(other) => {
                return Err(ConfigError::new(
                    "RESTORE_MODE",
                    format!("expected cluster, drill or recover, got {other:?}"),
                ));
            }
        };
        if kind != "recover" {
            for (var, set) in [
                ("RECOVER_PATHS", raw.recover_paths.is_some()),
                ("RECOVER_DRY_RUN", raw.recover_dry_run.is_some()),
                ("RECOVER_SCRATCH_ADDR", raw.recover_scratch_addr.is_some()),
            ] {
                if set {
                    return Err(ConfigError::new(
                        var,
                        "applies to RESTORE_MODE=recover only",
                    ));
                }
            }
        }
        let snapshot_name = raw
            .snapshot_name
            .as_deref()
            .map(|n| env::snapshot_name("SNAPSHOT_NAME", n))
            .transpose()?;
        let mode = if kind == "recover" {
            recover_mode(&raw, snapshot_name.as_deref())?
        } else if kind == "drill" {
            for (var, set) in [
                ("RESTORE_CONFIRM", raw.restore_confirm.is_some()),
                ("RESTORE_FORCE", raw.restore_force.is_some()),
            ] {
                if set {
                    return Err(ConfigError::new(
                        var,
                        "applies to RESTORE_MODE=cluster (and RESTORE_CONFIRM to recover) only; the drill always restores into its own scratch node",
                    ));
                }
            }
            Mode::Drill {
                unseal_keys_file: path_var(raw.drill_unseal_keys_file.as_deref()),
                recovery_keys_file: path_var(raw.drill_recovery_keys_file.as_deref()),
                canary: canary_location(raw.canary_path.as_deref(), raw.canary_mount.as_deref())?,
            }
        } else {
            for (var, set) in [
                (
                    "DRILL_UNSEAL_KEYS_FILE",
                    raw.drill_unseal_keys_file.is_some(),
                ),
                (
                    "DRILL_RECOVERY_KEYS_FILE",
                    raw.drill_recovery_keys_file.is_some(),
                ),
                ("CANARY_PATH", raw.canary_path.is_some()),
                ("CANARY_MOUNT", raw.canary_mount.is_some()),
            ] {
                if set {
                    return Err(ConfigError::new(
                        var,
                        if var.starts_with("DRILL_") {
                            "applies to RESTORE_MODE=drill or recover only"
                        } else {
                            "applies to RESTORE_MODE=drill only"
                        },
                    ));
                }
            }
            let confirm = raw.restore_confirm.as_deref().map(str::trim).ok_or_else(|| {
                ConfigError::new(
                    "RESTORE_CONFIRM",
                    format!(
                        "is not set; a restore overwrites everything in the cluster, so set RESTORE_CONFIRM to the exact name of the snapshot to restore{}",
                        snapshot_name
                            .as_deref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    ),
                )
            })?;
            check_confirm(confirm, snapshot_name.as_deref())?;
            Mode::Cluster {
                confirm: confirm.to_owned(),
                force: env::parse_bool("RESTORE_FORCE", raw.restore_force.as_deref(), false)?,
            }
        };
        let vault = VaultSettings::try_from(vault)?;
        Ok(Self {
            mode,
            snapshot_dir: env::existing_dir("SNAPSHOT_DIR", raw.snapshot_dir.trim())?,
            snapshot_name,
            prefix: env::name_prefix("SNAPSHOT_PREFIX", raw.snapshot_prefix.as_deref(), "vault")?,
            source: source(&raw, &s3, &gcs, &azure)?,
            vault,
            timeout: env::parse_duration(
                "RESTORE_TIMEOUT",
                raw.restore_timeout.as_deref(),
                Duration::from_secs(300),
            )?,
            results: Results::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn config(dir: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut vars: Vec<(String, String)> = vec![
            ("VAULT_ADDR".into(), "http://127.0.0.1:8200".into()),
            ("VAULT_TOKEN".into(), "s.secret-token".into()),
            ("SNAPSHOT_DIR".into(), dir.into()),
            ("BACKUP_DIR".into(), dir.into()),
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
            ["BUCKET_HOST", "VAULT_ADDR", "RESTORE_MODE"]
                .iter()
                .all(|v| names.contains(&(*v).to_owned()))
        );
        env::assert_names_cover::<RawConfig>(names);
    }

    #[test]
    fn a_cluster_restore_of_a_named_snapshot_with_its_confirmation() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let c = config(
            d,
            &[
                ("SNAPSHOT_NAME", "vault-20261124T063700Z"),
                ("RESTORE_CONFIRM", "vault-20261124T063700Z"),
            ],
        )
        .unwrap();
        assert!(matches!(c.mode, Mode::Cluster { force: false, .. }));
        assert!(matches!(c.source, Source::Dir(_)));
        assert_eq!(c.timeout, Duration::from_secs(300));
        assert!(!format!("{c:?}").contains("secret-token"));
    }

    #[test]
    fn a_drill_reads_the_keys_when_needed_and_an_absent_file_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let keys = dir.path().join("keys");
        std::fs::write(&keys, "key-one\n\n key-two \n").unwrap();
        let absent = dir.path().join("recovery-keys");
        let c = config(
            d,
            &[
                ("RESTORE_MODE", "drill"),
                ("DRILL_UNSEAL_KEYS_FILE", keys.to_str().unwrap()),
                ("DRILL_RECOVERY_KEYS_FILE", absent.to_str().unwrap()),
                ("CANARY_PATH", "vault-backup/canary"),
            ],
        )
        .unwrap();
        let Mode::Drill {
            unseal_keys_file,
            recovery_keys_file,
            canary,
        } = &c.mode
        else {
            panic!("drill");
        };
        assert_eq!(
            read_keys(
                "DRILL_UNSEAL_KEYS_FILE",
                unseal_keys_file.as_deref().unwrap()
            )
            .unwrap(),
            Some(vec![Secret::new("key-one"), Secret::new("key-two")])
        );
        // The Secret is optional: the Task sets the variable, the file may not be there.
        assert_eq!(
            read_keys(
                "DRILL_RECOVERY_KEYS_FILE",
                recovery_keys_file.as_deref().unwrap()
            )
            .unwrap(),
            None
        );
        std::fs::write(&absent, "\n \n").unwrap();
        let err = read_keys("DRILL_RECOVERY_KEYS_FILE", &absent).unwrap_err();
        assert!(
            err.to_string().starts_with("DRILL_RECOVERY_KEYS_FILE: ")
                && err.to_string().contains("is empty"),
            "{err}"
        );
        assert_eq!(
            canary,
            &Some(("secret".into(), "vault-backup/canary".into()))
        );
        assert!(!format!("{c:?}").contains("key-one"));
    }

    #[rstest]
    #[case(&[], "RESTORE_CONFIRM: is not set")]
    #[case(&[("SNAPSHOT_NAME", "vault-20261124T063700Z")], "RESTORE_CONFIRM: is not set; a restore overwrites everything in the cluster, so set RESTORE_CONFIRM to the exact name of the snapshot to restore (vault-20261124T063700Z)")]
    #[case(&[("SNAPSHOT_NAME", "vault-20261124T063700Z"), ("RESTORE_CONFIRM", "vault-20261125T063700Z")], "RESTORE_CONFIRM: names \"vault-20261125T063700Z\" but the snapshot to restore is \"vault-20261124T063700Z\"")]
    #[case(&[("SNAPSHOT_NAME", "vault-20261124T063700Z"), ("RESTORE_CONFIRM", "vault-20261125T063700Z@prod")], "RESTORE_CONFIRM: names \"vault-20261125T063700Z@prod\" but the snapshot to restore is \"vault-20261124T063700Z\"")]
    #[case(&[("RESTORE_CONFIRM", "vault-20261124T063700Z@")], "RESTORE_CONFIRM: names \"vault-20261124T063700Z@\", with nothing after the @")]
    #[case(&[("RESTORE_MODE", "test")], "RESTORE_MODE: expected cluster, drill or recover")]
    #[case(&[("RESTORE_MODE", "drill"), ("RESTORE_CONFIRM", "x")], "RESTORE_CONFIRM: applies to RESTORE_MODE=cluster (and RESTORE_CONFIRM to recover) only")]
    #[case(&[("RESTORE_CONFIRM", "x"), ("CANARY_PATH", "c")], "CANARY_PATH: applies to RESTORE_MODE=drill only")]
    #[case(&[("RESTORE_CONFIRM", "x"), ("SNAPSHOT_NAME", "x.snap")], "SNAPSHOT_NAME: expected the snapshot name without its .snap suffix")]
    #[case(&[("RESTORE_CONFIRM", "x"), ("S3_BUCKET", "b"), ("S3_ENDPOINT", "http://127.0.0.1:1"), ("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")], "RESTORE_FROM: both an S3 bucket and BACKUP_DIR are configured")]
    #[case(&[("RESTORE_CONFIRM", "x"), ("RESTORE_FROM", "s3")], "RESTORE_FROM: is s3 but no bucket is configured")]
    #[case(&[("RESTORE_CONFIRM", "x"), ("RESTORE_FROM", "tape")], "RESTORE_FROM: expected s3, gcs, azure or dir")]
    #[case(&[("RESTORE_CONFIRM", "x"), ("RESTORE_FROM", "gcs")], "RESTORE_FROM: is gcs but no bucket is configured")]
    #[case(&[("RESTORE_CONFIRM", "x"), ("RESTORE_FROM", "azure")], "RESTORE_FROM: is azure but no container is configured")]
    #[case(&[("RESTORE_CONFIRM", "x"), ("GOOGLE_BUCKET", "b")], "RESTORE_FROM: more than one store is configured")]
    #[case(&[("RESTORE_CONFIRM", "x"), ("AZURE_CONTAINER_NAME", "c")], "AZURE_STORAGE_ACCOUNT_NAME: is required")]
    #[case(&[("RESTORE_CONFIRM", "x"), ("RESTORE_FORCE", "maybe")], "RESTORE_FORCE: expected true or false")]
    #[case(&[("RESTORE_CONFIRM", "x"), ("RESTORE_TIMEOUT", "soon")], "RESTORE_TIMEOUT: expected a positive duration")]
    #[case(&[("DRILL_RECOVERY_KEYS_FILE", "/keys"), ("RESTORE_CONFIRM", "x")], "DRILL_RECOVERY_KEYS_FILE: applies to RESTORE_MODE=drill or recover only")]
    #[case(&[("RESTORE_MODE", "recover"), ("RESTORE_CONFIRM", "x")], "RECOVER_PATHS: is not set")]
    #[case(&[("RESTORE_MODE", "recover"), ("RECOVER_PATHS", "secret/app/db")], "RESTORE_CONFIRM: is not set; a recovery writes")]
    #[case(&[("RESTORE_MODE", "recover"), ("RECOVER_PATHS", "secret"), ("RESTORE_CONFIRM", "x")], "RECOVER_PATHS: \"secret\" names no path")]
    #[case(&[("RESTORE_MODE", "recover"), ("RECOVER_PATHS", "secret/data/app"), ("RESTORE_CONFIRM", "x")], "RECOVER_PATHS: \"secret/data/app\" names the API path")]
    #[case(&[("RESTORE_MODE", "recover"), ("RECOVER_PATHS", "secret/a"), ("RESTORE_CONFIRM", "x@prod")], "RESTORE_CONFIRM: names \"x@prod\"; a recovery restores nothing")]
    #[case(&[("RESTORE_MODE", "recover"), ("RECOVER_PATHS", "secret/a"), ("RESTORE_CONFIRM", "x"), ("RESTORE_FORCE", "true")], "RESTORE_FORCE: does not apply to RESTORE_MODE=recover")]
    #[case(&[("RESTORE_MODE", "recover"), ("RECOVER_PATHS", "secret/a"), ("RESTORE_CONFIRM", "x"), ("RECOVER_DRY_RUN", "perhaps")], "RECOVER_DRY_RUN: expected true or false")]
    #[case(&[("RESTORE_MODE", "recover"), ("RECOVER_PATHS", "secret/a"), ("RESTORE_CONFIRM", "x"), ("RECOVER_SCRATCH_ADDR", "127.0.0.1:8200")], "RECOVER_SCRATCH_ADDR: expected an http(s) URL")]
    #[case(&[("RESTORE_CONFIRM", "x"), ("RECOVER_PATHS", "secret/a")], "RECOVER_PATHS: applies to RESTORE_MODE=recover only")]
    fn bad_configs_name_the_variable(#[case] pairs: &[(&str, &str)], #[case] want: &str) {
        let dir = tempfile::tempdir().unwrap();
        let err = config(dir.path().to_str().unwrap(), pairs)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "got {err:?}, want {want:?}");
        assert!(!err.contains('\n'), "one line: {err:?}");
        assert!(!err.contains("secret-token"), "{err:?}");
    }

    #[test]
    fn gcs_or_azure_is_chosen_by_restore_from_or_as_the_only_store() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let gcs = [("RESTORE_CONFIRM", "x"), ("GOOGLE_BUCKET", "b")];
        let c = config(d, &[&gcs[..], &[("RESTORE_FROM", "gcs")]].concat()).unwrap();
        assert!(matches!(c.source, Source::Gcs(ref g) if g.bucket == "b"));
        let azure = [
            ("RESTORE_CONFIRM", "x"),
            ("AZURE_CONTAINER_NAME", "c"),
            ("AZURE_STORAGE_ACCOUNT_NAME", "a"),
            ("RESTORE_FROM", "azure"),
        ];
        let c = config(d, &azure).unwrap();
        assert!(matches!(c.source, Source::Azure(ref a) if a.container == "c"));
        // The same GCS bucket, with the directory as the only other store, needs RESTORE_FROM;
        // without BACKUP_DIR it is the only store and needs nothing.
        let mut vars: Vec<(String, String)> = vec![
            ("VAULT_ADDR".into(), "http://127.0.0.1:8200".into()),
            ("VAULT_TOKEN".into(), "t".into()),
            ("SNAPSHOT_DIR".into(), d.into()),
            ("RESTORE_CONFIRM".into(), "x".into()),
            ("GOOGLE_BUCKET".into(), "b".into()),
        ];
        vars.sort();
        let c = Config::try_from(env::from_iter::<RawConfig, _>(vars).unwrap()).unwrap();
        assert!(matches!(c.source, Source::Gcs(_)));
    }

    #[test]
    fn a_recovery_names_its_paths_its_snapshot_and_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let c = config(
            d,
            &[
                ("RESTORE_MODE", "recover"),
                ("SNAPSHOT_NAME", "vault-20261124T063700Z"),
                ("RESTORE_CONFIRM", "vault-20261124T063700Z"),
                ("RECOVER_PATHS", " secret/app/db, kv/team/ ,secret/app/db"),
                ("DRILL_UNSEAL_KEYS_FILE", "/etc/vault-backup/unseal/keys"),
            ],
        )
        .unwrap();
        let Mode::Recover {
            paths,
            dry_run,
            scratch_addr,
            unseal_keys_file,
            ..
        } = &c.mode
        else {
            panic!("recover");
        };
        let shown: Vec<String> = paths.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["secret/app/db", "kv/team/"]);
        assert!(!dry_run);
        assert_eq!(scratch_addr.as_str(), "http://127.0.0.1:8200/");
        assert!(unseal_keys_file.is_some());
        let other = config(
            d,
            &[
                ("RESTORE_MODE", "recover"),
                ("SNAPSHOT_NAME", "vault-20261124T063700Z"),
                ("RESTORE_CONFIRM", "vault-20261125T063700Z"),
                ("RECOVER_PATHS", "secret/app/db"),
            ],
        )
        .map(|_| ())
        .unwrap_err();
        assert!(
            other.to_string().starts_with("RESTORE_CONFIRM: names"),
            "{other}"
        );
    }

    #[test]
    fn neither_store_is_exit_2_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut vars: Vec<(String, String)> = vec![
            ("VAULT_ADDR".into(), "http://127.0.0.1:8200".into()),
            ("VAULT_TOKEN".into(), "t".into()),
            ("SNAPSHOT_DIR".into(), dir.path().display().to_string()),
            ("RESTORE_CONFIRM".into(), "x".into()),
        ];
        vars.sort();
        let err = Config::try_from(env::from_iter::<RawConfig, _>(vars).unwrap()).unwrap_err();
        assert_eq!(
            err.variable,
            "BUCKET_NAME, S3_BUCKET, GOOGLE_BUCKET, AZURE_CONTAINER_NAME, BACKUP_DIR"
        );
    }
}
