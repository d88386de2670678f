//! The S3 store: the `object_store` client built from [`S3Config`], and the S3-only read-back
//! of the checksum the server keeps.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::signer::{HeaderName, HeaderValue, Method, SignedUrlOptions, Signer};
use object_store::{BackoffConfig, Certificate, ClientOptions, ObjectStore, RetryConfig};
use vault_backup_common::ConfigError;

use crate::object::{ObjectStoreBacked, ServerChecksum};
use crate::s3config::S3Config;
use crate::store::{Error, Result, Store};

/// The S3 client's limit for one request, body included: 120 s. Tests lower it with the
/// test-only `VAULT_BACKUP_TEST_S3_REQUEST_TIMEOUT_MS`, so that a download longer than one
/// request's limit takes seconds rather than minutes; `retry_timeout` keeps its shipped ratio
/// (1.5x). Not a documented setting: users have no reason to change it.
pub(crate) fn request_timeout() -> Duration {
    std::env::var("VAULT_BACKUP_TEST_S3_REQUEST_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(120), Duration::from_millis)
}

/// Builds the S3 store.
///
/// # Errors
/// A [`ConfigError`] naming the variable if the CA bundle, the prefix or the endpoint is unusable.
pub fn s3(cfg: &S3Config) -> Result<Box<dyn Store>, ConfigError> {
    let mut options = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        // One 8 MiB part must fit in this even on a slow link.
        .with_timeout(request_timeout());
    if let Some(pem) = &cfg.ca_cert {
        let certs = Certificate::from_pem_bundle(pem)
            .map_err(|e| ConfigError::new("S3_CACERT", format!("not a PEM bundle: {e}")))?;
        if certs.is_empty() {
            return Err(ConfigError::new(
                "S3_CACERT",
                "holds no PEM certificate".to_owned(),
            ));
        }
        for cert in certs {
            options = options.with_root_certificate(cert);
        }
    }
    // The checksum read-back is one presigned HEAD sent with reqwest (object_store's head()
    // neither sends x-amz-checksum-mode nor returns the checksum headers); it trusts the same
    // roots, added to the system's as object_store does.
    let mut http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    if let Some(pem) = &cfg.ca_cert {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ConfigError::new("S3_CACERT", format!("not a PEM bundle: {e}")))?;
        http = http.tls_certs_merge(certs);
    }
    let http = http.build().map_err(|e| {
        ConfigError::new(
            "S3_CACERT",
            format!("cannot set up the HTTP client for checksum read-back: {e}"),
        )
    })?;
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: request_timeout() * 3 / 2,
    };
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&cfg.bucket)
        .with_region(&cfg.region)
        .with_access_key_id(&cfg.access_key_id)
        .with_secret_access_key(cfg.secret_access_key.expose())
        .with_checksum_algorithm(Checksum::SHA256)
        .with_retry(retry)
        .with_client_options(options);
    if let Some(endpoint) = &cfg.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    let variable = cfg.endpoint_variable;
    let store = builder
        .build()
        .map_err(|e| ConfigError::new(variable, format!("cannot set up the S3 client: {e}")))?;
    let prefix =
        if cfg.prefix.is_empty() {
            None
        } else {
            Some(ObjectPath::parse(&cfg.prefix).map_err(|e| {
                ConfigError::new("S3_PREFIX", format!("not a usable key prefix: {e}"))
            })?)
        };
    let store = Arc::new(store);
    Ok(Box::new(ObjectStoreBacked {
        name: "s3",
        url: format!("s3://{}", cfg.bucket),
        prefix,
        inner: Arc::clone(&store) as Arc<dyn ObjectStore>,
        checksum: ServerChecksum::S3(ChecksumReadBack {
            signer: store as Arc<dyn Signer>,
            http,
        }),
    }))
}

/// Reads back the SHA-256 checksum S3 keeps for an object: one presigned HEAD with
/// `x-amz-checksum-mode: ENABLED`, sent with reqwest.
pub(crate) struct ChecksumReadBack {
    /// Presigns the HEAD.
    signer: Arc<dyn Signer>,
    /// Sends it.
    http: reqwest::Client,
}

impl ChecksumReadBack {
    /// The `x-amz-checksum-sha256` of the object at `path` (the snapshot file `file` of
    /// `store`), or `None` if the server states none.
    pub(crate) async fn read(
        &self,
        store: &ObjectStoreBacked,
        path: &ObjectPath,
        file: &str,
    ) -> Result<Option<String>> {
        let mode = (
            HeaderName::from_static("x-amz-checksum-mode"),
            HeaderValue::from_static("ENABLED"),
        );
        let options =
            SignedUrlOptions::default().with_signed_header(mode.0.clone(), mode.1.clone());
        let url = self
            .signer
            .signed_url_opts(Method::HEAD, path, Duration::from_secs(300), &options)
            .await
            .map_err(|e| store.err("signing the checksum read-back of", file, e))?;
        let response = self
            .http
            .head(url.as_str())
            .header(mode.0.as_str(), "ENABLED")
            .send()
            .await
            .map_err(|e| {
                Error::new(
                    store.name,
                    "reading the checksum of",
                    store.location(file),
                    e,
                )
            })?;
        if !response.status().is_success() {
            return Err(Error::new(
                store.name,
                "reading the checksum of",
                store.location(file),
                format!("HEAD answered {}", response.status()),
            ));
        }
        Ok(response
            .headers()
            .get("x-amz-checksum-sha256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }
}
