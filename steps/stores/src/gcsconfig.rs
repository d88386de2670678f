//! The Google Cloud Storage store's settings from the environment, under the names
//! `object_store`'s `GoogleCloudStorageBuilder::from_env` reads (`GOOGLE_*`), plus `GCS_PREFIX`.
//!
//! Credentials, in the order `object_store` tries them: a service account key file
//! (`GOOGLE_SERVICE_ACCOUNT`, alias `GOOGLE_SERVICE_ACCOUNT_PATH`) or its JSON
//! (`GOOGLE_SERVICE_ACCOUNT_KEY`); else application default credentials
//! (`GOOGLE_APPLICATION_CREDENTIALS`); else the instance metadata server, which is how GKE
//! Workload Identity hands a pod its service account (nothing to set).

use serde::Deserialize;
use vault_backup_common::env::{ConfigError, Secret};

/// The GCS variables, exactly as documented, unparsed.
#[derive(Debug, Default, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct GcsEnv {
    pub google_bucket: Option<String>,
    pub google_bucket_name: Option<String>,
    pub google_service_account: Option<String>,
    pub google_service_account_path: Option<String>,
    pub google_service_account_key: Option<String>,
    pub google_application_credentials: Option<String>,
    pub google_base_url: Option<String>,
    pub gcs_prefix: Option<String>,
}

/// Where and how to reach the GCS bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcsConfig {
    /// The bucket.
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// A service account key file.
    pub service_account_path: Option<String>,
    /// A service account key, as JSON (holds a private key).
    pub service_account_key: Option<Secret>,
    /// An application default credentials file.
    pub application_credentials: Option<String>,
    /// Another endpoint than `https://storage.googleapis.com` (an emulator, a private endpoint).
    pub base_url: Option<String>,
}

/// The GCS store's settings, or `None` if no bucket variable is set.
///
/// # Errors
/// A [`ConfigError`] naming the variable at fault.
pub fn gcs_config(raw: &GcsEnv) -> Result<Option<GcsConfig>, ConfigError> {
    let trimmed = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let bucket = match (
        trimmed(&raw.google_bucket),
        trimmed(&raw.google_bucket_name),
    ) {
        (Some(a), Some(b)) if a != b => {
            return Err(ConfigError::new(
                "GOOGLE_BUCKET, GOOGLE_BUCKET_NAME",
                "both are set and differ; set one of them",
            ));
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => {
            let stray = [
                ("GCS_PREFIX", &raw.gcs_prefix),
                ("GOOGLE_BASE_URL", &raw.google_base_url),
            ];
            if let Some((var, _)) = stray.iter().find(|(_, v)| v.is_some()) {
                return Err(ConfigError::new(
                    *var,
                    "is set but no GCS bucket is: set GOOGLE_BUCKET",
                ));
            }
            return Ok(None);
        }
    };
    let service_account_path = match (
        trimmed(&raw.google_service_account),
        trimmed(&raw.google_service_account_path),
    ) {
        (Some(a), Some(b)) if a != b => {
            return Err(ConfigError::new(
                "GOOGLE_SERVICE_ACCOUNT, GOOGLE_SERVICE_ACCOUNT_PATH",
                "both are set and differ; set one of them",
            ));
        }
        (a, b) => a.or(b),
    };
    let service_account_key = trimmed(&raw.google_service_account_key).map(Secret::new);
    if service_account_path.is_some() && service_account_key.is_some() {
        return Err(ConfigError::new(
            "GOOGLE_SERVICE_ACCOUNT, GOOGLE_SERVICE_ACCOUNT_KEY",
            "both are set; give the service account key as a file or as JSON, not both",
        ));
    }
    let base_url = trimmed(&raw.google_base_url)
        .map(|u| {
            let u = u.trim_end_matches('/').to_owned();
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains('/') => Ok(u),
                _ => Err(ConfigError::new(
                    "GOOGLE_BASE_URL",
                    format!("expected a URL such as https://storage.googleapis.com with no path, got {u:?}"),
                )),
            }
        })
        .transpose()?;
    Ok(Some(GcsConfig {
        bucket,
        prefix: key_prefix("GCS_PREFIX", raw.gcs_prefix.as_deref())?,
        service_account_path,
        service_account_key,
        application_credentials: trimmed(&raw.google_application_credentials),
        base_url,
    }))
}

/// A key prefix from `variable`: trimmed of `/`, no empty, `.` or `..` segment.
pub(crate) fn key_prefix(variable: &str, raw: Option<&str>) -> Result<String, ConfigError> {
    let prefix = raw.map(str::trim).unwrap_or_default().trim_matches('/');
    if prefix
        .split('/')
        .any(|seg| (seg.is_empty() && !prefix.is_empty()) || seg == "." || seg == "..")
        || prefix.chars().any(char::is_control)
    {
        return Err(ConfigError::new(
            variable,
            format!("expected a key prefix such as backups/vault, got {prefix:?}"),
        ));
    }
    Ok(prefix.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> GcsEnv {
        vault_backup_common::env::from_iter(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .unwrap()
    }

    #[test]
    fn nothing_set_is_no_store_and_a_stray_prefix_is_refused() {
        assert_eq!(gcs_config(&env(&[])).unwrap(), None);
        let err = gcs_config(&env(&[("GCS_PREFIX", "a")])).unwrap_err();
        assert_eq!(err.variable, "GCS_PREFIX");
    }

    #[test]
    fn bucket_key_and_prefix_are_read_and_the_key_is_redacted() {
        let c = gcs_config(&env(&[
            ("GOOGLE_BUCKET_NAME", "b1"),
            ("GOOGLE_SERVICE_ACCOUNT_KEY", "{\"private_key\":\"pk\"}"),
            ("GCS_PREFIX", "/vault/prod/"),
            ("GOOGLE_BASE_URL", "http://127.0.0.1:4443/"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.bucket, "b1");
        assert_eq!(c.prefix, "vault/prod");
        assert_eq!(c.base_url.as_deref(), Some("http://127.0.0.1:4443"));
        assert!(!format!("{c:?}").contains("pk"));
    }

    #[test]
    fn contradictions_and_bad_values_name_their_variable() {
        let cases: [(&[(&str, &str)], &str); 4] = [
            (
                &[("GOOGLE_BUCKET", "a"), ("GOOGLE_BUCKET_NAME", "b")],
                "GOOGLE_BUCKET, GOOGLE_BUCKET_NAME",
            ),
            (
                &[
                    ("GOOGLE_BUCKET", "a"),
                    ("GOOGLE_SERVICE_ACCOUNT", "/f"),
                    ("GOOGLE_SERVICE_ACCOUNT_KEY", "{}"),
                ],
                "GOOGLE_SERVICE_ACCOUNT, GOOGLE_SERVICE_ACCOUNT_KEY",
            ),
            (
                &[("GOOGLE_BUCKET", "a"), ("GOOGLE_BASE_URL", "ftp://x")],
                "GOOGLE_BASE_URL",
            ),
            (
                &[("GOOGLE_BUCKET", "a"), ("GCS_PREFIX", "a/../b")],
                "GCS_PREFIX",
            ),
        ];
        for (pairs, var) in cases {
            assert_eq!(gcs_config(&env(pairs)).unwrap_err().variable, var);
        }
    }
}
