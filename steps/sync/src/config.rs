//! The sync step's configuration: the environment, exactly as documented, into a checked
//! [`Config`]. Nothing here touches a store; a bad value stops the step with exit 2 before any
//! snapshot is hashed.

use std::path::PathBuf;

use serde::Deserialize;
use vault_backup_common::env::{self as cfg, ConfigError};
use vault_backup_common::tekton::Results;

use crate::retention;
pub use vault_backup_stores::S3Config;
pub use vault_backup_stores::S3Env;
use vault_backup_stores::azureconfig::azure_config;
use vault_backup_stores::gcsconfig::gcs_config;
use vault_backup_stores::lock::{LockMode, ObjectLock};
use vault_backup_stores::s3config::s3_config;
pub use vault_backup_stores::{AzureConfig, AzureEnv, GcsConfig, GcsEnv};

/// The Tekton result with the comma-separated names of the stores that hold a verified copy.
pub const RESULT_SYNCED_STORES: &str = "synced-stores";
/// The Tekton result with the `s3://bucket/key` of the snapshot.
pub const RESULT_S3_URL: &str = "s3-url";
/// The Tekton result with the snapshot's path in `BACKUP_DIR`.
pub const RESULT_DIR_PATH: &str = "dir-path";
/// The Tekton result with how each store's copy was checked: `s3=sha256,dir=sha256`
/// (`sha256` or `size-only`), for the stores that hold a verified copy.
pub const RESULT_STORE_VERIFICATION: &str = "store-verification";
/// Every result the step writes (`RESULT_<NAME>_PATH` each).
pub const RESULTS: [&str; 4] = [
    RESULT_SYNCED_STORES,
    RESULT_S3_URL,
    RESULT_DIR_PATH,
    RESULT_STORE_VERIFICATION,
];

/// The step's own variables, exactly as documented, unparsed.
#[derive(Debug, Deserialize, Default)]
#[allow(missing_docs)]
pub struct SyncEnv {
    pub snapshot_dir: String,
    pub snapshot_name: Option<String>,
    pub snapshot_name_file: Option<String>,
    pub snapshot_prefix: Option<String>,
    pub backup_dir: Option<String>,
    pub retain_last: Option<String>,
    pub retain_days: Option<String>,
    pub retain_daily: Option<String>,
    pub retain_weekly: Option<String>,
    pub retain_monthly: Option<String>,
    pub retain_dry_run: Option<String>,
    pub s3_require_checksum: Option<String>,
    pub s3_object_lock_mode: Option<String>,
    pub s3_object_lock_days: Option<String>,
}

/// The configuration as read from the environment: the step's own variables and the S3 ones.
#[derive(Debug, Deserialize, Default)]
pub struct RawConfig {
    /// `SNAPSHOT_*`, `BACKUP_DIR`, `RETAIN_*`.
    #[serde(flatten)]
    pub sync: SyncEnv,
    /// The bucket claim's or the plain S3 variables.
    #[serde(flatten)]
    pub s3: S3Env,
    /// The GCS variables (`GOOGLE_*`, `GCS_PREFIX`).
    #[serde(flatten)]
    pub gcs: GcsEnv,
    /// The Azure Blob variables (`AZURE_*`).
    #[serde(flatten)]
    pub azure: AzureEnv,
}

impl RawConfig {
    /// The variable names the step reads. Listed part by part: a flattened struct hides its
    /// field names from [`cfg::variables`].
    #[must_use]
    pub fn variables() -> Vec<String> {
        [
            cfg::variables::<SyncEnv>(),
            cfg::variables::<S3Env>(),
            cfg::variables::<GcsEnv>(),
            cfg::variables::<AzureEnv>(),
        ]
        .concat()
    }
}

/// Which snapshot in the workspace to sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// The one named by `SNAPSHOT_NAME` or `SNAPSHOT_NAME_FILE`.
    Named(String),
    /// The newest complete `<prefix>-<timestamp>` snapshot.
    Newest,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The workspace with the snapshot (`SNAPSHOT_DIR`).
    pub snapshot_dir: PathBuf,
    /// Which snapshot.
    pub which: Which,
    /// The name prefix (`SNAPSHOT_PREFIX`).
    pub prefix: String,
    /// The S3 store, if configured.
    pub s3: Option<S3Config>,
    /// The GCS store, if configured.
    pub gcs: Option<GcsConfig>,
    /// The Azure Blob store, if configured.
    pub azure: Option<AzureConfig>,
    /// The directory store (`BACKUP_DIR`), if configured.
    pub backup_dir: Option<PathBuf>,
    /// Retention, the same for every store.
    pub retention: retention::Policy,
    /// Log the retention plan without deleting (`RETAIN_DRY_RUN`).
    pub dry_run: bool,
    /// Fail an S3 store whose copy can be checked by its size only, because the server states
    /// no SHA-256 checksum (`S3_REQUIRE_CHECKSUM`).
    pub require_checksum: bool,
    /// Where Tekton results go.
    pub results: Results,
}

impl Config {
    /// Reads and validates the configuration from the environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the variable at fault.
    pub fn from_env() -> Result<Self, ConfigError> {
        let raw: RawConfig = cfg::from_env()?;
        let mut config = Self::try_from(raw)?;
        config.results = Results::from_env(&RESULTS);
        Ok(config)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut s3 = s3_config(&raw.s3)?;
        let gcs = gcs_config(&raw.gcs)?;
        let azure = azure_config(&raw.azure)?;
        let raw = raw.sync;
        if let Some(lock) = object_lock(&raw)? {
            let Some(s3) = s3.as_mut() else {
                return Err(ConfigError::new(
                    "S3_OBJECT_LOCK_MODE",
                    "is set but no bucket is; set BUCKET_NAME or S3_BUCKET, or leave the S3_OBJECT_LOCK_* variables unset",
                ));
            };
            s3.object_lock = Some(lock);
        }
        let snapshot_dir = cfg::existing_dir("SNAPSHOT_DIR", raw.snapshot_dir.trim())?;
        let prefix = cfg::name_prefix("SNAPSHOT_PREFIX", raw.snapshot_prefix.as_deref(), "vault")?;
        let which = match (
            raw.snapshot_name.as_deref(),
            raw.snapshot_name_file.as_deref(),
        ) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "SNAPSHOT_NAME, SNAPSHOT_NAME_FILE",
                    "both are set; set one of them, or neither for the newest complete snapshot",
                ));
            }
            (Some(name), None) => Which::Named(cfg::snapshot_name("SNAPSHOT_NAME", name)?),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file.trim()).map_err(|e| {
                    ConfigError::new("SNAPSHOT_NAME_FILE", format!("cannot read {file}: {e}"))
                })?;
                Which::Named(cfg::snapshot_name("SNAPSHOT_NAME_FILE", text.trim())?)
            }
            (None, None) => Which::Newest,
        };
        let backup_dir = raw
            .backup_dir
            .as_deref()
            .map(|d| cfg::existing_dir("BACKUP_DIR", d.trim()))
            .transpose()?;
        if s3.is_none() && gcs.is_none() && azure.is_none() && backup_dir.is_none() {
            return Err(ConfigError::new(
                "BUCKET_NAME, S3_BUCKET, GOOGLE_BUCKET, AZURE_CONTAINER_NAME, BACKUP_DIR",
                "no store configured; set BUCKET_HOST and BUCKET_NAME (ObjectBucketClaim), S3_ENDPOINT and S3_BUCKET, GOOGLE_BUCKET, AZURE_CONTAINER_NAME, and/or BACKUP_DIR",
            ));
        }
        let count = |var: &str, v: &Option<String>| cfg::parse_count(var, v.as_deref(), 1, 100_000);
        let retention = retention::Policy {
            last: count("RETAIN_LAST", &raw.retain_last)?,
            within_days: count("RETAIN_DAYS", &raw.retain_days)?,
            daily: count("RETAIN_DAILY", &raw.retain_daily)?,
            weekly: count("RETAIN_WEEKLY", &raw.retain_weekly)?,
            monthly: count("RETAIN_MONTHLY", &raw.retain_monthly)?,
        };
        let dry_run = cfg::parse_bool("RETAIN_DRY_RUN", raw.retain_dry_run.as_deref(), false)?;
        let require_checksum = cfg::parse_bool(
            "S3_REQUIRE_CHECKSUM",
            raw.s3_require_checksum.as_deref(),
            false,
        )?;
        if require_checksum && s3.is_none() {
            return Err(ConfigError::new(
                "S3_REQUIRE_CHECKSUM",
                "is set but no bucket is; set BUCKET_NAME or S3_BUCKET, or leave it unset",
            ));
        }
        Ok(Self {
            snapshot_dir,
            which,
            prefix,
            s3,
            gcs,
            azure,
            backup_dir,
            retention,
            dry_run,
            require_checksum,
            results: Results::default(),
        })
    }
}

/// `S3_OBJECT_LOCK_MODE` and `S3_OBJECT_LOCK_DAYS`: both or neither.
fn object_lock(raw: &SyncEnv) -> Result<Option<ObjectLock>, ConfigError> {
    let (mode, days) = match (
        raw.s3_object_lock_mode.as_deref(),
        raw.s3_object_lock_days.as_deref(),
    ) {
        (None, None) => return Ok(None),
        (Some(mode), Some(days)) => (mode, days),
        (Some(_), None) | (None, Some(_)) => {
            return Err(ConfigError::new(
                "S3_OBJECT_LOCK_MODE, S3_OBJECT_LOCK_DAYS",
                "set both (a mode and whole days, e.g. GOVERNANCE and 30) or neither",
            ));
        }
    };
    let mode = LockMode::parse(mode).ok_or_else(|| {
        ConfigError::new(
            "S3_OBJECT_LOCK_MODE",
            format!("expected GOVERNANCE or COMPLIANCE, got {:?}", mode.trim()),
        )
    })?;
    // Up to 100 years, as AWS allows.
    let days =
        cfg::parse_count("S3_OBJECT_LOCK_DAYS", Some(days), 1, 36_500)?.expect("a value was given");
    Ok(Some(ObjectLock { mode, days }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn raw(ws: &std::path::Path, pairs: &[(&str, &str)]) -> RawConfig {
        let mut vars: Vec<(String, String)> =
            vec![("SNAPSHOT_DIR".into(), ws.display().to_string())];
        vars.extend(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        cfg::from_iter(vars).unwrap()
    }

    fn obc() -> Vec<(&'static str, &'static str)> {
        vec![
            ("BUCKET_HOST", "rook-ceph-rgw.rook-ceph.svc"),
            ("BUCKET_NAME", "backups-1a2b"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
        ]
    }

    #[test]
    fn the_variable_list_names_every_field() {
        let names = RawConfig::variables();
        assert!(
            names.iter().any(|n| n == "BUCKET_HOST") && names.iter().any(|n| n == "RETAIN_LAST")
        );
        cfg::assert_names_cover::<RawConfig>(names);
    }

    #[rstest]
    #[case::obc_default_https(&[], Some("https://rook-ceph-rgw.rook-ceph.svc"))]
    #[case::obc_port(&[("BUCKET_PORT", "8443")], Some("https://rook-ceph-rgw.rook-ceph.svc:8443"))]
    #[case::obc_plain_http(&[("BUCKET_PORT", "80"), ("S3_TLS", "false")], Some("http://rook-ceph-rgw.rook-ceph.svc:80"))]
    #[case::obc_ssl_false(&[("BUCKET_PORT", "80"), ("BUCKET_SSL", "false")], Some("http://rook-ceph-rgw.rook-ceph.svc:80"))]
    #[case::obc_ssl_true(&[("BUCKET_PORT", "443"), ("BUCKET_SSL", "true")], Some("https://rook-ceph-rgw.rook-ceph.svc:443"))]
    #[case::obc_agreeing(&[("BUCKET_SSL", "false"), ("S3_TLS", "false")], Some("http://rook-ceph-rgw.rook-ceph.svc"))]
    #[case::obc_subregion_accepted(&[("BUCKET_SUBREGION", "zone-a")], Some("https://rook-ceph-rgw.rook-ceph.svc"))]
    fn obc_endpoints(#[case] extra: &[(&str, &str)], #[case] want: Option<&str>) {
        let ws = tempfile::tempdir().unwrap();
        let mut pairs = obc();
        pairs.extend_from_slice(extra);
        let c = Config::try_from(raw(ws.path(), &pairs)).unwrap();
        let s3 = c.s3.unwrap();
        assert_eq!(s3.endpoint.as_deref(), want);
        assert_eq!(s3.bucket, "backups-1a2b");
        assert_eq!(s3.region, "us-east-1");
        assert_eq!(s3.secret_access_key.expose(), "s3cr3t");
        assert!(!format!("{s3:?}").contains("s3cr3t"));
        assert_eq!(c.which, Which::Newest);
        assert!(c.retention.is_empty());
    }

    #[rstest]
    #[case::url("https://minio.example:9000/", None, Ok("https://minio.example:9000"))]
    #[case::host_port_tls("minio.example:9000", None, Ok("https://minio.example:9000"))]
    #[case::host_port_plain("minio.example:9000", Some("false"), Ok("http://minio.example:9000"))]
    #[case::url_http("http://127.0.0.1:8333", None, Ok("http://127.0.0.1:8333"))]
    #[case::contradiction("http://127.0.0.1:8333", Some("true"), Err("S3_TLS, S3_ENDPOINT"))]
    #[case::path("https://minio.example/bucket", None, Err("S3_ENDPOINT"))]
    #[case::scheme("ftp://minio.example", None, Err("S3_ENDPOINT"))]
    fn plain_endpoints(
        #[case] endpoint: &str,
        #[case] tls: Option<&str>,
        #[case] want: Result<&str, &str>,
    ) {
        let ws = tempfile::tempdir().unwrap();
        let mut pairs = vec![
            ("S3_ENDPOINT", endpoint),
            ("S3_BUCKET", "b1"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ];
        if let Some(tls) = tls {
            pairs.push(("S3_TLS", tls));
        }
        let got = Config::try_from(raw(ws.path(), &pairs));
        match want {
            Ok(url) => assert_eq!(got.unwrap().s3.unwrap().endpoint.as_deref(), Some(url)),
            Err(var) => assert_eq!(got.unwrap_err().variable, var),
        }
    }

    #[test]
    fn the_same_bucket_in_both_forms_is_fine_and_prefix_is_trimmed() {
        let ws = tempfile::tempdir().unwrap();
        let mut pairs = obc();
        pairs.extend([("S3_BUCKET", "backups-1a2b"), ("S3_PREFIX", "/vault/prod/")]);
        let s3 = Config::try_from(raw(ws.path(), &pairs))
            .unwrap()
            .s3
            .unwrap();
        assert_eq!(s3.prefix, "vault/prod");
        pairs.retain(|(k, _)| *k != "S3_PREFIX");
        pairs.push(("S3_PREFIX", "a//b"));
        let err = Config::try_from(raw(ws.path(), &pairs)).unwrap_err();
        assert_eq!(err.variable, "S3_PREFIX");
    }

    #[test]
    fn name_file_and_retention_are_read() {
        let ws = tempfile::tempdir().unwrap();
        let name_file = ws.path().join("snapshot-name");
        std::fs::write(&name_file, "vault-20261124T063700Z\n").unwrap();
        let c = Config::try_from(raw(
            ws.path(),
            &[
                ("BACKUP_DIR", &ws.path().display().to_string()),
                ("SNAPSHOT_NAME_FILE", &name_file.display().to_string()),
                ("RETAIN_LAST", "7"),
                ("RETAIN_MONTHLY", "12"),
                ("RETAIN_DRY_RUN", "yes"),
            ],
        ))
        .unwrap();
        assert_eq!(c.which, Which::Named("vault-20261124T063700Z".into()));
        assert_eq!(c.retention.last, Some(7));
        assert_eq!(c.retention.monthly, Some(12));
        assert!(c.dry_run);
        assert!(c.s3.is_none());
        assert!(!c.require_checksum);
    }

    #[test]
    fn a_gcs_bucket_or_an_azure_container_alone_is_a_store() {
        let ws = tempfile::tempdir().unwrap();
        let c = Config::try_from(raw(ws.path(), &[("GOOGLE_BUCKET", "b")])).unwrap();
        assert_eq!(c.gcs.unwrap().bucket, "b");
        let c = Config::try_from(raw(
            ws.path(),
            &[
                ("AZURE_CONTAINER_NAME", "c"),
                ("AZURE_STORAGE_ACCOUNT_NAME", "a"),
                ("AZURE_STORAGE_ACCOUNT_KEY", "a2V5"),
            ],
        ))
        .unwrap();
        let azure = c.azure.unwrap();
        assert_eq!(azure.container, "c");
        assert!(c.s3.is_none() && c.gcs.is_none() && c.backup_dir.is_none());
        assert!(!format!("{azure:?}").contains("a2V5"));
        let err = Config::try_from(raw(ws.path(), &[("GCS_PREFIX", "p")])).unwrap_err();
        assert_eq!(err.variable, "GCS_PREFIX");
    }

    #[rstest]
    #[case::both(&[("S3_OBJECT_LOCK_MODE", "governance"), ("S3_OBJECT_LOCK_DAYS", "30")], Ok(Some((LockMode::Governance, 30))))]
    #[case::compliance(&[("S3_OBJECT_LOCK_MODE", "COMPLIANCE"), ("S3_OBJECT_LOCK_DAYS", "1")], Ok(Some((LockMode::Compliance, 1))))]
    #[case::neither(&[], Ok(None))]
    #[case::mode_only(&[("S3_OBJECT_LOCK_MODE", "GOVERNANCE")], Err("S3_OBJECT_LOCK_MODE, S3_OBJECT_LOCK_DAYS"))]
    #[case::days_only(&[("S3_OBJECT_LOCK_DAYS", "7")], Err("S3_OBJECT_LOCK_MODE, S3_OBJECT_LOCK_DAYS"))]
    #[case::bad_mode(&[("S3_OBJECT_LOCK_MODE", "LEGAL_HOLD"), ("S3_OBJECT_LOCK_DAYS", "7")], Err("S3_OBJECT_LOCK_MODE"))]
    #[case::zero_days(&[("S3_OBJECT_LOCK_MODE", "GOVERNANCE"), ("S3_OBJECT_LOCK_DAYS", "0")], Err("S3_OBJECT_LOCK_DAYS"))]
    #[case::fraction(&[("S3_OBJECT_LOCK_MODE", "GOVERNANCE"), ("S3_OBJECT_LOCK_DAYS", "1.5")], Err("S3_OBJECT_LOCK_DAYS"))]
    fn object_lock_variables(
        #[case] extra: &[(&str, &str)],
        #[case] want: Result<Option<(LockMode, u32)>, &str>,
    ) {
        let ws = tempfile::tempdir().unwrap();
        let mut pairs = obc();
        pairs.extend_from_slice(extra);
        match (Config::try_from(raw(ws.path(), &pairs)), want) {
            (Ok(c), Ok(want)) => {
                assert_eq!(c.s3.unwrap().object_lock.map(|l| (l.mode, l.days)), want);
            }
            (Err(e), Err(var)) => assert_eq!(e.variable, var, "{e}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn a_lock_without_a_bucket_is_refused() {
        let ws = tempfile::tempdir().unwrap();
        let dir = ws.path().display().to_string();
        let err = Config::try_from(raw(
            ws.path(),
            &[
                ("BACKUP_DIR", &dir),
                ("S3_OBJECT_LOCK_MODE", "GOVERNANCE"),
                ("S3_OBJECT_LOCK_DAYS", "1"),
            ],
        ))
        .unwrap_err();
        assert_eq!(err.variable, "S3_OBJECT_LOCK_MODE");
    }

    #[rstest]
    #[case(&[("BUCKET_SSL", "false"), ("S3_TLS", "true")], "BUCKET_SSL, S3_TLS")]
    #[case(&[("BUCKET_SSL", "true"), ("S3_TLS", "false")], "BUCKET_SSL, S3_TLS")]
    #[case(&[("BUCKET_SSL", "sometimes")], "BUCKET_SSL")]
    fn a_contradicting_or_bad_bucket_ssl_is_refused(
        #[case] extra: &[(&str, &str)],
        #[case] variable: &str,
    ) {
        let ws = tempfile::tempdir().unwrap();
        let mut pairs = obc();
        pairs.extend_from_slice(extra);
        let err = Config::try_from(raw(ws.path(), &pairs)).unwrap_err();
        assert_eq!(err.variable, variable, "{err}");
    }
}
