//! The stores a snapshot is copied to, behind one trait: S3 (through `object_store`) and a
//! directory (a PVC mounted as a Tekton workspace). The only file that speaks to `object_store`.
//!
//! Uploading, verifying and retention are written once against [`Store`] and [`Writer`]; each
//! store supplies only what is particular to it:
//! - Any `object_store` backend (S3 today; GCS and Azure are a builder away): the snapshot goes
//!   up as a multipart upload in [`OBJECT_PART_SIZE`] parts, at most [`OBJECT_PARTS_IN_FLIGHT`]
//!   at a time, each with its SHA-256 in `x-amz-checksum-sha256` so the server checks every
//!   part; an aborted upload is aborted on the server too, so no object ever appears. After
//!   completion the copy is checked by its size and, where the server states one, by the
//!   SHA-256 checksum it keeps (see [`crate::checksum`]).
//! - A directory, written with `std::fs` and the common crate's `fsutil` rather than
//!   `object_store`'s `LocalFileSystem`: that one renames its staging file into place without
//!   syncing it first, so a power cut could leave a complete-looking name over missing data. The
//!   contract here is temp file, fsync, rename, fsync the directory.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::path::Path as ObjectPath;
use object_store::signer::{HeaderName, HeaderValue, Method, SignedUrlOptions, Signer};
use object_store::{
    BackoffConfig, Certificate, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig, WriteMultipart,
};
use vault_backup_common::{ConfigError, artifact, fsutil};

use crate::s3config::S3Config;

/// Part size of multipart uploads: large enough for few requests, small enough to bound memory.
pub const OBJECT_PART_SIZE: usize = 8 << 20;
/// Parts uploaded at once; with the part being read, memory stays near 4 × 8 MiB.
pub const OBJECT_PARTS_IN_FLIGHT: usize = 3;
/// Part size of ranged reads: each part is one request, within the client's timeout.
pub const READ_PART_SIZE: u64 = 8 << 20;
/// Write size for the directory store.
pub const DIR_CHUNK_SIZE: usize = 4 << 20;

/// A store operation that failed (after the retries `object_store` does itself).
#[derive(Debug, thiserror::Error)]
#[error("{store}: {action} {target} failed")]
pub struct Error {
    store: &'static str,
    action: &'static str,
    target: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl Error {
    fn new(
        store: &'static str,
        action: &'static str,
        target: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            store,
            action,
            target: target.into(),
            source: source.into(),
        }
    }
}

/// `Result` with a store [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A file as a store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file name (no directory or key prefix).
    pub name: String,
    /// When it was last written (an object's `Last-Modified`, a file's mtime).
    pub modified: DateTime<Utc>,
}

impl Entry {
    /// An entry named `name`, written at `modified`.
    pub fn new(name: impl Into<String>, modified: DateTime<Utc>) -> Self {
        Self {
            name: name.into(),
            modified,
        }
    }
}

/// A place that holds snapshot files side by side, by file name.
pub trait Store: Send + Sync {
    /// The store's short name in logs and in the `synced-stores` result: `s3`, `dir`.
    fn name(&self) -> &'static str;
    /// Where `file` lives, as a person would look for it (`s3://bucket/prefix/file`, a path).
    fn location(&self, file: &str) -> String;
    /// The chunk size [`Writer::write`] works best with.
    fn chunk_size(&self) -> usize;
    /// Starts writing `file`; nothing is visible under its name until [`Writer::finish`].
    fn begin<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Box<dyn Writer>>>;
    /// Writes a small file whole.
    fn put<'a>(&'a self, file: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<()>>;
    /// The whole of a small `file`, or `None` if it does not exist.
    fn read<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;
    /// The whole of `file` as a stream of chunks, or `None` if it does not exist: for a
    /// snapshot, which is never held in memory. The default reads it whole with
    /// [`Store::read`]; the stores here override it to stream.
    fn open<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<ByteStream>>> {
        Box::pin(async move {
            Ok(self.read(file).await?.map(|body| {
                futures::stream::once(futures::future::ready(Ok(Bytes::from(body)))).boxed()
            }))
        })
    }
    /// The size of `file`, or `None` if it does not exist.
    fn size<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<u64>>>;
    /// The SHA-256 (hex) of `file` as stored, where the store can tell it cheaply; `None` where
    /// it cannot (S3 keeps per-part checksums that it verified on upload, not a whole-file one).
    fn sha256<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>>;
    /// The SHA-256 checksum the server keeps for `file`, as it states it (S3: the
    /// `x-amz-checksum-sha256` header of a HEAD with `x-amz-checksum-mode: ENABLED`, a composite
    /// `<base64>-<parts>` after a multipart upload); `None` if it states none, or the store
    /// has no such thing.
    fn server_checksum<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>>;
    /// The part size of multipart uploads, for the composite checksum computed while sending;
    /// `None` for a store that does not speak server checksums.
    fn part_size(&self) -> Option<usize>;
    /// Whether [`Store::sha256`] reads the whole copy back (then the upload need not hash the
    /// bytes it sends as well).
    fn reads_back_sha256(&self) -> bool;
    /// The files directly in the store (not below), with their modification times.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Entry>>>;
    /// Whether the store may hold this project's temp files (`.vault-backup-*.tmp`) that a
    /// killed run left behind: a directory does, an object store never shows a partial upload
    /// as an object.
    fn keeps_temp_files(&self) -> bool;
    /// Deletes `file`; a file already gone is not an error.
    fn delete<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// The bytes of a file, as a store reads them back.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A file being written to a store.
pub trait Writer: Send {
    /// Queues `chunk`, waiting first while the store has too much in flight.
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<()>>;
    /// Makes the file visible under its name, whole.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
    /// Gives up: nothing appears under the file's name and partial data is removed.
    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
    /// Whether [`Writer::copy_from`] works: the file is a local one, so bytes can be copied
    /// into it by the kernel without passing through this process.
    fn copies_files(&self) -> bool {
        false
    }
    /// Appends up to `len` bytes of `src` from its current position, copied by the kernel
    /// (`copy_file_range`, or `sendfile`/`splice` across filesystems, as `std::io::copy` picks);
    /// returns `src` and the bytes copied (0 at its end). Only where
    /// [`Writer::copies_files`] says so.
    fn copy_from(
        &mut self,
        src: std::fs::File,
        len: u64,
    ) -> BoxFuture<'_, Result<(std::fs::File, u64)>> {
        let _ = (src, len);
        Box::pin(async {
            Err(Error::new(
                "store",
                "copying a file into",
                "a store that cannot",
                "copy_from is not supported here",
            ))
        })
    }
}

impl fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Store({})", self.location(""))
    }
}

/// The S3 client's limit for one request, body included: 120 s. Tests lower it with the
/// test-only `VAULT_BACKUP_TEST_S3_REQUEST_TIMEOUT_MS`, so that a download longer than one
/// request's limit takes seconds rather than minutes; `retry_timeout` keeps its shipped ratio
/// (1.5x). Not a documented setting: users have no reason to change it.
fn request_timeout() -> Duration {
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
        signer: store as Arc<dyn Signer>,
        http,
    }))
}

/// Builds the directory store over an existing directory.
#[must_use]
pub fn dir(path: &Path) -> Box<dyn Store> {
    Box::new(DirStore {
        dir: path.to_owned(),
    })
}

/// Any `object_store` backend, with snapshot files under an optional key prefix.
struct ObjectStoreBacked {
    name: &'static str,
    url: String,
    prefix: Option<ObjectPath>,
    inner: Arc<dyn ObjectStore>,
    /// Presigns the checksum read-back.
    signer: Arc<dyn Signer>,
    /// Sends it.
    http: reqwest::Client,
}

impl ObjectStoreBacked {
    fn path(&self, file: &str) -> ObjectPath {
        match &self.prefix {
            Some(p) => p.clone().join(file),
            None => ObjectPath::from(file),
        }
    }

    fn err(&self, action: &'static str, file: &str, e: object_store::Error) -> Error {
        Error::new(self.name, action, self.location(file), e)
    }
}

impl Store for ObjectStoreBacked {
    fn name(&self) -> &'static str {
        self.name
    }

    fn location(&self, file: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{}/{p}/{file}", self.url),
            None => format!("{}/{file}", self.url),
        }
    }

    fn chunk_size(&self) -> usize {
        OBJECT_PART_SIZE
    }

    fn begin<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Box<dyn Writer>>> {
        Box::pin(async move {
            let upload = self
                .inner
                .put_multipart(&self.path(file))
                .await
                .map_err(|e| self.err("starting the multipart upload of", file, e))?;
            let writer: Box<dyn Writer> = Box::new(MultipartWriter {
                store: self.name,
                target: self.location(file),
                inner: WriteMultipart::new_with_chunk_size(upload, OBJECT_PART_SIZE),
            });
            Ok(writer)
        })
    }

    fn put<'a>(&'a self, file: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.inner
                .put(&self.path(file), PutPayload::from(body))
                .await
                .map(drop)
                .map_err(|e| self.err("uploading", file, e))
        })
    }

    fn read<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let got = match self.inner.get(&self.path(file)).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.err("reading", file, e)),
            };
            got.bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| self.err("reading", file, e))
        })
    }

    /// Reads the object in ranged parts of [`READ_PART_SIZE`], one part ahead of the reader,
    /// each its own request with its own timeout and retries, all pinned to the ETag (and
    /// version) the object had when the read began.
    ///
    /// Why not one `get()` of the whole object: the client's timeout runs until a response
    /// body has finished, and `object_store`'s resumption of a broken body
    /// (`client/get.rs`, `retry_stream`) gives up once its retry context is older than
    /// `retry_timeout`; so one GET of a large snapshot died after one or two timeouts
    /// whatever its progress (120 + 120 s here). A part of 8 MiB fits its timeout on any link
    /// that can restore at all, and the whole read is bounded by the caller
    /// (`RESTORE_TIMEOUT`), which the user can raise.
    fn open<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<ByteStream>>> {
        Box::pin(async move {
            let path = self.path(file);
            let meta = match self.inner.head(&path).await {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.err("reading", file, e)),
            };
            let (name, target, inner) = (self.name, self.location(file), Arc::clone(&self.inner));
            let (size, e_tag, version) = (meta.size, meta.e_tag, meta.version);
            let parts = (0..size.div_ceil(READ_PART_SIZE))
                .map(move |i| i * READ_PART_SIZE..((i + 1) * READ_PART_SIZE).min(size));
            let stream = futures::stream::iter(parts)
                .map(move |range| {
                    let options = object_store::GetOptions {
                        range: Some(object_store::GetRange::Bounded(range.clone())),
                        // If-Match: an object overwritten while it is read fails the read
                        // (412) instead of splicing two objects into one stream.
                        if_match: e_tag.clone(),
                        version: version.clone(),
                        ..object_store::GetOptions::default()
                    };
                    let (inner, path, target) = (Arc::clone(&inner), path.clone(), target.clone());
                    async move {
                        let read = async {
                            let got = inner.get_opts(&path, options).await?;
                            got.bytes().await
                        };
                        read.await.map_err(|e| {
                            let action = if matches!(e, object_store::Error::Precondition { .. }) {
                                "reading (the object changed while it was read; run again)"
                            } else {
                                "reading"
                            };
                            Error::new(
                                name,
                                action,
                                format!("{target} bytes {}-{}", range.start, range.end),
                                e,
                            )
                        })
                    }
                })
                // One part in flight ahead of the one being consumed keeps the link busy
                // while the reader hashes and writes.
                .buffered(2);
            Ok(Some(stream.boxed()))
        })
    }

    fn size<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            match self.inner.head(&self.path(file)).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err("reading the size of", file, e)),
            }
        })
    }

    fn sha256<'a>(&'a self, _file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async { Ok(None) })
    }

    fn reads_back_sha256(&self) -> bool {
        false
    }

    fn server_checksum<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let mode = (
                HeaderName::from_static("x-amz-checksum-mode"),
                HeaderValue::from_static("ENABLED"),
            );
            let options =
                SignedUrlOptions::default().with_signed_header(mode.0.clone(), mode.1.clone());
            let url = self
                .signer
                .signed_url_opts(
                    Method::HEAD,
                    &self.path(file),
                    Duration::from_secs(300),
                    &options,
                )
                .await
                .map_err(|e| self.err("signing the checksum read-back of", file, e))?;
            let response = self
                .http
                .head(url.as_str())
                .header(mode.0.as_str(), "ENABLED")
                .send()
                .await
                .map_err(|e| {
                    Error::new(self.name, "reading the checksum of", self.location(file), e)
                })?;
            if !response.status().is_success() {
                return Err(Error::new(
                    self.name,
                    "reading the checksum of",
                    self.location(file),
                    format!("HEAD answered {}", response.status()),
                ));
            }
            Ok(response
                .headers()
                .get("x-amz-checksum-sha256")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned))
        })
    }

    fn part_size(&self) -> Option<usize> {
        Some(OBJECT_PART_SIZE)
    }

    fn keeps_temp_files(&self) -> bool {
        false
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Entry>>> {
        Box::pin(async move {
            let depth = self.prefix.as_ref().map_or(0, ObjectPath::parts_count);
            let metas: Vec<_> = self
                .inner
                .list(self.prefix.as_ref())
                .try_collect()
                .await
                .map_err(|e| self.err("listing", "", e))?;
            Ok(metas
                .into_iter()
                .filter(|m| m.location.parts_count() == depth + 1)
                .filter_map(|m| {
                    m.location
                        .filename()
                        .map(|name| Entry::new(name, m.last_modified))
                })
                .collect())
        })
    }

    fn delete<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.inner.delete(&self.path(file)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.err("deleting", file, e)),
            }
        })
    }
}

/// A multipart upload with bounded parts in flight.
struct MultipartWriter {
    store: &'static str,
    target: String,
    inner: WriteMultipart,
}

impl Writer for MultipartWriter {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.inner
                .wait_for_capacity(OBJECT_PARTS_IN_FLIGHT)
                .await
                .map_err(|e| Error::new(self.store, "uploading a part of", &self.target, e))?;
            self.inner.put(chunk);
            Ok(())
        })
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            // On error, WriteMultipart::finish aborts the upload itself.
            let Self {
                store,
                target,
                inner,
            } = *self;
            inner
                .finish()
                .await
                .map(drop)
                .map_err(|e| Error::new(store, "completing the multipart upload of", target, e))
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let Self {
                store,
                target,
                inner,
            } = *self;
            inner
                .abort()
                .await
                .map_err(|e| Error::new(store, "aborting the multipart upload of", target, e))
        })
    }
}

/// A local directory: a PVC mounted as a workspace.
struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    fn err(&self, action: &'static str, file: &str, e: std::io::Error) -> Error {
        Error::new("dir", action, self.location(file), e)
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

impl Store for DirStore {
    fn name(&self) -> &'static str {
        "dir"
    }

    fn location(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn chunk_size(&self) -> usize {
        DIR_CHUNK_SIZE
    }

    fn begin<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Box<dyn Writer>>> {
        Box::pin(async move {
            let dir = self.dir.clone();
            let tmp = blocking(move || fsutil::temp_file_in(&dir))
                .await
                .map_err(|e| self.err("creating a temp file for", file, e))?;
            let writer: Box<dyn Writer> = Box::new(DirWriter {
                tmp: Some(tmp),
                dir: self.dir.clone(),
                file: file.to_owned(),
            });
            Ok(writer)
        })
    }

    fn put<'a>(&'a self, file: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (dir, name) = (self.dir.clone(), file.to_owned());
            blocking(move || fsutil::write_atomic(&dir, &name, &body, true).map(drop))
                .await
                .map_err(|e| self.err("writing", file, e))
        })
    }

    fn read<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            match tokio::fs::read(self.dir.join(file)).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.err("reading", file, e)),
            }
        })
    }

    fn open<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<ByteStream>>> {
        Box::pin(async move {
            use tokio::io::AsyncReadExt as _;
            let f = match tokio::fs::File::open(self.dir.join(file)).await {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.err("reading", file, e)),
            };
            let target = self.location(file);
            let stream = futures::stream::try_unfold(f, move |mut f| {
                let target = target.clone();
                async move {
                    let mut buf = vec![0u8; DIR_CHUNK_SIZE];
                    let n = f
                        .read(&mut buf)
                        .await
                        .map_err(|e| Error::new("dir", "reading", target, e))?;
                    if n == 0 {
                        return Ok(None);
                    }
                    buf.truncate(n);
                    Ok(Some((Bytes::from(buf), f)))
                }
            });
            Ok(Some(stream.boxed()))
        })
    }

    fn size<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            match tokio::fs::metadata(self.dir.join(file)).await {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.err("reading the size of", file, e)),
            }
        })
    }

    fn reads_back_sha256(&self) -> bool {
        true
    }

    fn server_checksum<'a>(&'a self, _file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async { Ok(None) })
    }

    fn part_size(&self) -> Option<usize> {
        None
    }

    fn keeps_temp_files(&self) -> bool {
        true
    }

    fn sha256<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let path = self.dir.join(file);
            blocking(move || artifact::hash_file(&path).map(|(sha, _)| Some(sha)))
                .await
                .map_err(|e| self.err("reading back", file, e))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Entry>>> {
        Box::pin(async move {
            let dir = self.dir.clone();
            blocking(move || {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(&dir)? {
                    let entry = entry?;
                    if entry.file_type()?.is_file()
                        && let Ok(name) = entry.file_name().into_string()
                    {
                        let modified = entry.metadata()?.modified()?;
                        names.push(Entry::new(name, DateTime::<Utc>::from(modified)));
                    }
                }
                Ok(names)
            })
            .await
            .map_err(|e| self.err("listing", "", e))
        })
    }

    fn delete<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (dir, name) = (self.dir.clone(), file.to_owned());
            blocking(move || {
                match std::fs::remove_file(dir.join(&name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                }
                fsutil::fsync_dir(&dir)
            })
            .await
            .map_err(|e| self.err("deleting", file, e))
        })
    }
}

/// A file being written to a hidden temp file in the directory; renamed into place on finish.
struct DirWriter {
    tmp: Option<tempfile::NamedTempFile>,
    dir: PathBuf,
    file: String,
}

impl DirWriter {
    fn err(&self, action: &'static str, e: std::io::Error) -> Error {
        Error::new(
            "dir",
            action,
            self.dir.join(&self.file).display().to_string(),
            e,
        )
    }
}

impl Writer for DirWriter {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let Some(mut tmp) = self.tmp.take() else {
                return Err(self.err("writing", std::io::Error::other("writer already failed")));
            };
            let result = tokio::task::spawn_blocking(move || {
                let r = tmp.write_all(&chunk);
                (tmp, r)
            })
            .await;
            match result {
                Ok((tmp, Ok(()))) => {
                    self.tmp = Some(tmp);
                    Ok(())
                }
                // Dropping the temp file removes it.
                Ok((_tmp, Err(e))) => Err(self.err("writing", e)),
                Err(e) => Err(self.err("writing", std::io::Error::other(e))),
            }
        })
    }

    fn copies_files(&self) -> bool {
        true
    }

    fn copy_from(
        &mut self,
        src: std::fs::File,
        len: u64,
    ) -> BoxFuture<'_, Result<(std::fs::File, u64)>> {
        Box::pin(async move {
            let Some(mut tmp) = self.tmp.take() else {
                return Err(self.err("writing", std::io::Error::other("writer already failed")));
            };
            // std::io::copy between two files copies in the kernel: the bytes never pass
            // through this process (measured: the user-space read and write of the copy were
            // most of the step's system time). The copy is checked by reading it back.
            let result = tokio::task::spawn_blocking(move || {
                use std::io::Read as _;
                let r = std::io::copy(&mut (&src).take(len), tmp.as_file_mut());
                (src, tmp, r)
            })
            .await;
            match result {
                Ok((src, tmp, Ok(n))) => {
                    self.tmp = Some(tmp);
                    Ok((src, n))
                }
                Ok((_, _tmp, Err(e))) => Err(self.err("writing", e)),
                Err(e) => Err(self.err("writing", std::io::Error::other(e))),
            }
        })
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let Some(tmp) = self.tmp.take() else {
                return Err(self.err("writing", std::io::Error::other("writer already failed")));
            };
            let (dir, file) = (self.dir.clone(), self.file.clone());
            // Replacing is deliberate: a re-run of the same snapshot rewrites it whole in one
            // rename, and its `.sha256` is replaced only after this copy was checked.
            blocking(move || fsutil::persist(tmp, &dir, &file, true).map(drop))
                .await
                .map_err(|e| self.err("syncing and renaming into place", e))
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if let Some(tmp) = self.tmp.take() {
                blocking(move || tmp.close())
                    .await
                    .map_err(|e| self.err("removing the temp file for", e))?;
            }
            Ok(())
        })
    }
}
