//! The S3 store's settings from the environment, in either form: an ObjectBucketClaim's
//! `BUCKET_HOST`/`BUCKET_PORT`/`BUCKET_NAME`/`BUCKET_REGION`/`BUCKET_SSL` with the AWS key
//! pair, or plain `S3_ENDPOINT`/`S3_BUCKET`; plus `S3_PREFIX`, `S3_TLS` and `S3_CACERT`.
//!
//! The sync step and the restore step read them alike: each holds an [`S3Env`] as a
//! `#[serde(flatten)]` field of its raw configuration and parses it here, once.

use serde::Deserialize;
use vault_backup_common::env::{self as cfg, ConfigError, Secret};

use crate::lock::ObjectLock;

/// The S3 variables, exactly as documented, unparsed (`None` or non-empty).
#[derive(Debug, Default, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct S3Env {
    pub bucket_host: Option<String>,
    pub bucket_port: Option<String>,
    pub bucket_name: Option<String>,
    pub bucket_region: Option<String>,
    pub bucket_subregion: Option<String>,
    pub bucket_ssl: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_prefix: Option<String>,
    pub s3_tls: Option<String>,
    pub s3_cacert: Option<String>,
}

/// Where and how to reach the S3 bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// `http(s)://host[:port]`; `None` means AWS itself (virtual-hosted addressing).
    pub endpoint: Option<String>,
    /// The variable the endpoint came from, for error messages.
    pub endpoint_variable: &'static str,
    /// The bucket.
    pub bucket: String,
    /// The region to sign for.
    pub region: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// Key prefix without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// A PEM bundle to trust, read from `S3_CACERT` and checked to hold at least one
    /// certificate.
    pub ca_cert: Option<Vec<u8>>,
    /// The lock every object written carries (the sync step's `S3_OBJECT_LOCK_MODE` and
    /// `S3_OBJECT_LOCK_DAYS`); `None` writes objects as the bucket's defaults have them.
    pub object_lock: Option<ObjectLock>,
}

/// The S3 store's settings from either form, or `None` if no bucket variable is set.
///
/// # Errors
/// A [`ConfigError`] naming the variable at fault.
pub fn s3_config(raw: &S3Env) -> Result<Option<S3Config>, ConfigError> {
    let trimmed = |v: &Option<String>| v.as_deref().map(str::trim).map(str::to_owned);
    let bucket = match (trimmed(&raw.bucket_name), trimmed(&raw.s3_bucket)) {
        (Some(a), Some(b)) if a != b => {
            return Err(ConfigError::new(
                "BUCKET_NAME, S3_BUCKET",
                "both are set and differ; set BUCKET_NAME (ObjectBucketClaim) or S3_BUCKET, not both",
            ));
        }
        (Some(a), _) => Some(a),
        (None, b) => b,
    };
    let Some(bucket) = bucket else {
        // Anything S3-specific without a bucket is a mistake worth stopping for.
        let stray = [
            ("BUCKET_HOST", &raw.bucket_host),
            ("BUCKET_PORT", &raw.bucket_port),
            ("BUCKET_REGION", &raw.bucket_region),
            ("BUCKET_SUBREGION", &raw.bucket_subregion),
            ("BUCKET_SSL", &raw.bucket_ssl),
            ("S3_ENDPOINT", &raw.s3_endpoint),
            ("S3_PREFIX", &raw.s3_prefix),
            ("S3_TLS", &raw.s3_tls),
            ("S3_CACERT", &raw.s3_cacert),
        ];
        if let Some((var, _)) = stray.iter().find(|(_, v)| v.is_some()) {
            return Err(ConfigError::new(
                *var,
                "is set but no bucket is: set BUCKET_NAME (ObjectBucketClaim) or S3_BUCKET",
            ));
        }
        return Ok(None);
    };
    let tls = s3_tls(raw)?;
    let (endpoint, endpoint_variable) = s3_endpoint(raw, tls)?;
    if !tls && raw.s3_cacert.is_some() {
        return Err(ConfigError::new(
            "S3_CACERT",
            "is set but TLS is off (S3_TLS or BUCKET_SSL is false); a CA bundle only applies to https",
        ));
    }
    let access_key_id = trimmed(&raw.aws_access_key_id).ok_or_else(|| {
        ConfigError::new(
            "AWS_ACCESS_KEY_ID",
            "is required for the S3 store but not set",
        )
    })?;
    let secret_access_key = raw
        .aws_secret_access_key
        .as_deref()
        .map(|s| Secret::new(s.trim()))
        .ok_or_else(|| {
            ConfigError::new(
                "AWS_SECRET_ACCESS_KEY",
                "is required for the S3 store but not set",
            )
        })?;
    let prefix = trimmed(&raw.s3_prefix)
        .map(|p| p.trim_matches('/').to_owned())
        .unwrap_or_default();
    if prefix
        .split('/')
        .any(|seg| (seg.is_empty() && !prefix.is_empty()) || seg == "." || seg == "..")
        || prefix.chars().any(char::is_control)
    {
        return Err(ConfigError::new(
            "S3_PREFIX",
            format!("expected a key prefix such as backups/vault, got {prefix:?}"),
        ));
    }
    let ca_cert = raw.s3_cacert.as_deref().map(ca_bundle).transpose()?;
    Ok(Some(S3Config {
        endpoint,
        endpoint_variable,
        bucket,
        region: trimmed(&raw.bucket_region).unwrap_or_else(|| "us-east-1".to_owned()),
        access_key_id,
        secret_access_key,
        prefix,
        ca_cert,
        object_lock: None,
    }))
}

/// Whether to use https: `S3_TLS` if set, else the bucket claim's `BUCKET_SSL`, else true. Both
/// set and different is a contradiction worth stopping for rather than guessing.
///
/// `BUCKET_SUBREGION`, which lib-bucket-provisioner writes beside `BUCKET_REGION`, is read and
/// deliberately not used: requests are signed for `BUCKET_REGION`, and no S3 endpoint takes a
/// subregion in addressing or signing.
fn s3_tls(raw: &S3Env) -> Result<bool, ConfigError> {
    let explicit = raw
        .s3_tls
        .as_deref()
        .map(|v| cfg::parse_bool("S3_TLS", Some(v), true))
        .transpose()?;
    let claim = raw
        .bucket_ssl
        .as_deref()
        .map(|v| cfg::parse_bool("BUCKET_SSL", Some(v), true))
        .transpose()?;
    match (explicit, claim) {
        (Some(tls), Some(ssl)) if tls != ssl => Err(ConfigError::new(
            "BUCKET_SSL, S3_TLS",
            format!(
                "the bucket claim says BUCKET_SSL={ssl} but S3_TLS={tls}; drop S3_TLS to follow the claim, or set it to agree"
            ),
        )),
        (Some(tls), _) => Ok(tls),
        (None, Some(ssl)) => Ok(ssl),
        (None, None) => Ok(true),
    }
}

/// Reads `S3_CACERT` and checks that it parses as one or more PEM certificates, so that a bad
/// bundle stops the step here rather than after the snapshot was hashed.
fn ca_bundle(path: &str) -> Result<Vec<u8>, ConfigError> {
    let path = path.trim();
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::new("S3_CACERT", format!("cannot read {path}: {e}")))?;
    match object_store::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        Ok(_) => Err(ConfigError::new(
            "S3_CACERT",
            format!("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        )),
        Err(e) => Err(ConfigError::new(
            "S3_CACERT",
            format!("{path} is not a PEM certificate bundle: {e}"),
        )),
    }
}

/// The S3 endpoint URL from `BUCKET_HOST`/`BUCKET_PORT` or `S3_ENDPOINT`, with the variable it
/// came from; `None` for AWS itself.
fn s3_endpoint(raw: &S3Env, tls: bool) -> Result<(Option<String>, &'static str), ConfigError> {
    let trimmed = |v: &Option<String>| v.as_deref().map(str::trim).map(str::to_owned);
    let tls_set = raw.s3_tls.is_some() || raw.bucket_ssl.is_some();
    let scheme = if tls { "https" } else { "http" };
    let endpoint = match (trimmed(&raw.bucket_host), trimmed(&raw.s3_endpoint)) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "BUCKET_HOST, S3_ENDPOINT",
                "both are set; set BUCKET_HOST (ObjectBucketClaim) or S3_ENDPOINT, not both",
            ));
        }
        (Some(host), None) => {
            if host.contains("://") || host.contains('/') || host.contains(' ') {
                return Err(ConfigError::new(
                    "BUCKET_HOST",
                    format!("expected a host name such as s3.example.com, got {host:?}"),
                ));
            }
            let port = cfg::parse_count("BUCKET_PORT", raw.bucket_port.as_deref(), 1, 65_535)?;
            let url = match port {
                Some(p) => format!("{scheme}://{host}:{p}"),
                None => format!("{scheme}://{host}"),
            };
            (Some(url), "BUCKET_HOST")
        }
        (None, Some(ep)) => {
            if raw.bucket_port.is_some() {
                return Err(ConfigError::new(
                    "BUCKET_PORT",
                    "is set without BUCKET_HOST; with S3_ENDPOINT put the port in the URL",
                ));
            }
            let ep = ep.trim_end_matches('/');
            let url = if let Some(rest) = ep
                .strip_prefix("https://")
                .map(|r| (r, true))
                .or_else(|| ep.strip_prefix("http://").map(|r| (r, false)))
            {
                let (rest, url_tls) = rest;
                if tls_set && url_tls != tls {
                    return Err(ConfigError::new(
                        "S3_TLS, S3_ENDPOINT",
                        "S3_TLS contradicts the scheme of S3_ENDPOINT; drop S3_TLS or fix the URL",
                    ));
                }
                if rest.is_empty() || rest.contains('/') || rest.contains(' ') {
                    return Err(ConfigError::new(
                        "S3_ENDPOINT",
                        format!(
                            "expected a URL such as https://s3.example.com:9000 with no path, got {ep:?}"
                        ),
                    ));
                }
                ep.to_owned()
            } else if ep.contains("://") || ep.contains('/') || ep.contains(' ') {
                return Err(ConfigError::new(
                    "S3_ENDPOINT",
                    format!("expected an http(s) URL or host[:port], got {ep:?}"),
                ));
            } else {
                format!("{scheme}://{ep}")
            };
            (Some(url), "S3_ENDPOINT")
        }
        (None, None) => {
            if raw.bucket_port.is_some() {
                return Err(ConfigError::new(
                    "BUCKET_PORT",
                    "is set without BUCKET_HOST",
                ));
            }
            (None, "BUCKET_REGION")
        }
    };
    Ok(endpoint)
}
