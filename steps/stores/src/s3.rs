//! The S3 store: the `object_store` client built from [`S3Config`], the S3-only read-back
//! of the checksum the server keeps, and Object Lock and object versions (see [`crate::lock`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use object_store::aws::{AmazonS3, AmazonS3Builder, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::signer::{HeaderName, HeaderValue, Method, SignedUrlOptions, Signer};
use object_store::{
    BackoffConfig, Certificate, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, RetryConfig,
};
use reqwest::Url;
use tokio::sync::OnceCell;
use vault_backup_common::ConfigError;

use crate::lock::{
    ApiError, LockedUpload, ObjectLock, ObjectRetention, ObjectVersion, Protection, S3Api,
};
use crate::object::{ObjectStoreBacked, ServerChecksum};
use crate::s3config::S3Config;
use crate::store::{ByteStream, Entry, Error, Result, Store, Writer};

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
        // One key at a time with a plain DELETE rather than DeleteObjects: the step deletes
        // one file per call anyway, and a refusal (a locked version, a policy that denies
        // deletes) then comes back as a 403 (PermissionDenied) instead of a per-key error inside
        // a 200 that object_store reports as a generic failure.
        .with_disable_bulk_delete(true)
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
    let api = api(cfg, http.clone())?;
    let store = Arc::new(store);
    let inner = ObjectStoreBacked {
        name: "s3",
        url: format!("s3://{}", cfg.bucket),
        prefix,
        inner: Arc::clone(&store) as Arc<dyn ObjectStore>,
        checksum: ServerChecksum::S3(ChecksumReadBack {
            signer: Arc::clone(&store) as Arc<dyn Signer>,
            http,
        }),
    };
    Ok(Box::new(S3Store {
        inner: Arc::new(inner),
        s3: store,
        api: Arc::new(api),
        lock: cfg.object_lock,
        protection: Arc::new(OnceCell::new()),
        pinned: Arc::new(BTreeMap::new()),
    }))
}

/// The client for the requests `object_store` does not make, for the same bucket and keys.
fn api(cfg: &S3Config, http: reqwest::Client) -> Result<S3Api, ConfigError> {
    let bucket_url = match &cfg.endpoint {
        Some(endpoint) => format!("{endpoint}/{}", cfg.bucket),
        None => format!("https://{}.s3.{}.amazonaws.com", cfg.bucket, cfg.region),
    };
    let bucket_url = Url::parse(&bucket_url).map_err(|e| {
        ConfigError::new(
            cfg.endpoint_variable,
            format!("not a usable bucket URL {bucket_url}: {e}"),
        )
    })?;
    Ok(S3Api::new(
        http,
        bucket_url,
        &cfg.access_key_id,
        cfg.secret_access_key.expose(),
        &cfg.region,
    ))
}

/// The S3 store: any `object_store` backend's behaviour, plus what only S3 has: Object Lock on
/// the objects it writes (when `S3_OBJECT_LOCK_*` ask for it), the bucket's protection, and
/// reads of older object versions.
struct S3Store {
    /// Everything an object store does.
    inner: Arc<ObjectStoreBacked>,
    /// The same client, for the part uploads of a locked multipart upload.
    s3: Arc<AmazonS3>,
    /// The requests `object_store` does not make.
    api: Arc<S3Api>,
    /// The lock every written object carries, if asked for.
    lock: Option<ObjectLock>,
    /// The bucket's protection, read once.
    protection: Arc<OnceCell<Protection>>,
    /// File name to version id: reads of these files go to that version.
    pinned: Arc<BTreeMap<String, String>>,
}

impl S3Store {
    fn api_err(&self, action: &'static str, file: &str, e: ApiError) -> Error {
        let refused = e.is_refused();
        let err = Error::new(self.inner.name, action, self.inner.location(file), e);
        if refused { err.refused() } else { err }
    }

    async fn cached_protection(&self) -> Result<Protection> {
        self.protection
            .get_or_try_init(|| async {
                self.api.protection().await.map_err(|e| {
                    self.api_err(
                        "reading the Object Lock configuration and versioning of the bucket at",
                        "",
                        e,
                    )
                })
            })
            .await
            .copied()
    }

    /// Options for a read of `file`: its pinned version, if any.
    fn get_options(&self, file: &str, head: bool) -> GetOptions {
        GetOptions {
            head,
            version: self.pinned.get(file).cloned(),
            ..GetOptions::default()
        }
    }
}

impl Store for S3Store {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn location(&self, file: &str) -> String {
        match self.pinned.get(file) {
            Some(v) => format!("{} (version {v})", self.inner.location(file)),
            None => self.inner.location(file),
        }
    }

    fn chunk_size(&self) -> usize {
        self.inner.chunk_size()
    }

    fn begin<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Box<dyn Writer>>> {
        let Some(lock) = self.lock else {
            return self.inner.begin(file);
        };
        Box::pin(async move {
            let path = self.inner.path(file);
            let upload_id = self
                .api
                .create_multipart_locked(&path, &lock, Utc::now())
                .await
                .map_err(|e| self.api_err("starting the locked multipart upload of", file, e))?;
            let upload = LockedUpload {
                store: Arc::clone(&self.s3),
                path,
                upload_id,
                parts: Arc::default(),
                next: 0,
            };
            Ok(self.inner.writer(file, Box::new(upload)))
        })
    }

    fn put<'a>(&'a self, file: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        let Some(lock) = self.lock else {
            return self.inner.put(file, body);
        };
        Box::pin(async move {
            self.api
                .put_locked(&self.inner.path(file), body.into(), &lock, Utc::now())
                .await
                .map(drop)
                .map_err(|e| self.api_err("uploading (locked)", file, e))
        })
    }

    fn read<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        if !self.pinned.contains_key(file) {
            return self.inner.read(file);
        }
        Box::pin(async move {
            let path = self.inner.path(file);
            let got = match self
                .inner
                .inner
                .get_opts(&path, self.get_options(file, false))
                .await
            {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.inner.err("reading", file, e)),
            };
            got.bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| self.inner.err("reading", file, e))
        })
    }

    fn open<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<ByteStream>>> {
        self.inner.open_at(file, self.pinned.get(file).cloned())
    }

    fn size<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        if !self.pinned.contains_key(file) {
            return self.inner.size(file);
        }
        Box::pin(async move {
            let path = self.inner.path(file);
            match self
                .inner
                .inner
                .get_opts(&path, self.get_options(file, true))
                .await
            {
                Ok(got) => Ok(Some(got.meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.inner.err("reading the size of", file, e)),
            }
        })
    }

    fn sha256<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        self.inner.sha256(file)
    }

    fn server_checksum<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        self.inner.server_checksum(file)
    }

    fn part_size(&self) -> Option<usize> {
        self.inner.part_size()
    }

    fn reads_back_sha256(&self) -> bool {
        self.inner.reads_back_sha256()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Entry>>> {
        self.inner.list()
    }

    fn keeps_temp_files(&self) -> bool {
        self.inner.keeps_temp_files()
    }

    /// A plain DELETE: in a versioned bucket it adds a delete marker and the data stays as a
    /// noncurrent version (a lifecycle rule frees it). A 403 in a bucket with Object Lock is
    /// marked as a refusal: the object is held by its lock.
    fn delete<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.inner.inner.delete(&self.inner.path(file)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e @ object_store::Error::PermissionDenied { .. }) => {
                    let locked = self.cached_protection().await.is_ok_and(|p| p.lock_enabled);
                    let err = self.inner.err("deleting", file, e);
                    Err(if locked { err.refused() } else { err })
                }
                Err(e) => Err(self.inner.err("deleting", file, e)),
            }
        })
    }

    fn protection(&self) -> BoxFuture<'_, Result<Option<Protection>>> {
        Box::pin(async move { self.cached_protection().await.map(Some) })
    }

    fn retention<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<ObjectRetention>>> {
        Box::pin(async move {
            // Without Object Lock on the bucket no object is locked: no HEAD per snapshot.
            if !self.cached_protection().await?.lock_enabled {
                return Ok(None);
            }
            self.api
                .retention(
                    &self.inner.path(file),
                    self.pinned.get(file).map(String::as_str),
                )
                .await
                .map_err(|e| self.api_err("reading the lock of", file, e))
        })
    }

    fn version<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            match self.inner.inner.head(&self.inner.path(file)).await {
                // A bucket whose versioning was suspended names new versions "null".
                Ok(meta) => Ok(meta.version.filter(|v| v != "null")),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.inner.err("reading the version of", file, e)),
            }
        })
    }

    fn versions(&self) -> BoxFuture<'_, Result<Vec<ObjectVersion>>> {
        Box::pin(async move {
            self.api
                .versions(self.inner.prefix.as_ref())
                .await
                .map_err(|e| self.api_err("listing the object versions under", "", e))
        })
    }

    fn pinned(&self, versions: Vec<(String, String)>) -> Option<Box<dyn Store>> {
        Some(Box::new(S3Store {
            inner: Arc::clone(&self.inner),
            s3: Arc::clone(&self.s3),
            api: Arc::clone(&self.api),
            lock: self.lock,
            protection: Arc::clone(&self.protection),
            pinned: Arc::new(versions.into_iter().collect()),
        }))
    }
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
