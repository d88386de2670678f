//! The Google Cloud Storage store: the `object_store` client built from [`GcsConfig`] for
//! reads, listing, small files and deletes, and a resumable upload for the snapshot.
//!
//! Why not `object_store`'s uploads: its multipart upload on GCS is the XML multipart API, which
//! the emulator this project tests against (fake-gcs-server) does not implement (its issue 852;
//! `object_store`'s own GCS tests skip multipart there for the same reason), and its plain `PUT`
//! is refused there too (XML uploads only with a signed URL), so the path a snapshot takes
//! could not be tested. The JSON API's resumable upload is GCS's documented way
//! to send a large object in chunks, both GCS and the emulator implement it, and it keeps the
//! contract: the object appears under its name only when the last chunk arrives, whole. It is
//! sent with `reqwest`, the HTTP client `object_store` itself uses, with the bearer token of
//! `object_store`'s own credential provider (service account, application default
//! credentials, or the metadata server that GKE Workload Identity answers).
//!
//! The copy is checked by reading it back ([`ServerChecksum::ReadBack`]). GCS states an MD5 and
//! a CRC32C of the object, but they prove the copy only against an MD5 computed in the read that
//! verified the workspace file (as S3's composite checksum is), which the sync step does not
//! compute; nor does the `store_verified_sha256` metric know an `md5` level.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::gcp::{GcpCredentialProvider, GoogleCloudStorageBuilder};
use vault_backup_common::ConfigError;

use crate::azure::{client_options, prefix, retry};
use crate::gcsconfig::GcsConfig;
use crate::object::{ObjectStoreBacked, ServerChecksum};
use crate::s3::request_timeout;
use crate::store::{ByteStream, Entry, Error, OBJECT_PART_SIZE, Result, Store, Writer};

/// The endpoint of GCS itself.
const DEFAULT_BASE_URL: &str = "https://storage.googleapis.com";
/// How many times one chunk is sent again after a failure before the upload gives up.
const CHUNK_RETRIES: u32 = 5;

/// Builds the GCS store.
///
/// # Errors
/// A [`ConfigError`] naming the variable if the credentials or the endpoint are unusable.
pub fn gcs(cfg: &GcsConfig) -> Result<Box<dyn Store>, ConfigError> {
    let base_url = base_url(cfg)?;
    let mut builder = GoogleCloudStorageBuilder::new()
        .with_bucket_name(&cfg.bucket)
        .with_base_url(&base_url)
        .with_retry(retry())
        .with_client_options(client_options(Some(&base_url)));
    if let Some(path) = &cfg.service_account_path {
        builder = builder.with_service_account_path(path);
    }
    if let Some(key) = &cfg.service_account_key {
        builder = builder.with_service_account_key(key.expose());
    }
    if let Some(path) = &cfg.application_credentials {
        builder = builder.with_application_credentials(path);
    }
    // Name the credential that was given: it is what a build error is about.
    let variable = if cfg.service_account_key.is_some() {
        "GOOGLE_SERVICE_ACCOUNT_KEY"
    } else if cfg.service_account_path.is_some() {
        "GOOGLE_SERVICE_ACCOUNT"
    } else if cfg.application_credentials.is_some() {
        "GOOGLE_APPLICATION_CREDENTIALS"
    } else {
        "GOOGLE_BUCKET"
    };
    let store = builder
        .build()
        .map_err(|e| ConfigError::new(variable, format!("cannot set up the GCS client: {e}")))?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(request_timeout())
        .build()
        .map_err(|e| {
            ConfigError::new(
                "GOOGLE_BASE_URL",
                format!("cannot set up the HTTP client for uploads: {e}"),
            )
        })?;
    let credentials = Arc::clone(store.credentials());
    Ok(Box::new(GcsStore {
        objects: ObjectStoreBacked {
            name: "gcs",
            url: format!("gs://{}", cfg.bucket),
            prefix: prefix("GCS_PREFIX", &cfg.prefix)?,
            inner: Arc::new(store) as Arc<dyn ObjectStore>,
            checksum: ServerChecksum::ReadBack,
        },
        upload: Arc::new(Uploads {
            http,
            credentials,
            upload_url: format!(
                "{base_url}/upload/storage/v1/b/{}/o",
                url::form_urlencoded::byte_serialize(cfg.bucket.as_bytes()).collect::<String>()
            ),
        }),
    }))
}

/// The endpoint: `GOOGLE_BASE_URL`, else the `gcs_base_url` of a service account key (as
/// `object_store` reads it: the emulators' convention), else GCS itself. Uploads and
/// `object_store`'s requests must go to the same one.
fn base_url(cfg: &GcsConfig) -> Result<String, ConfigError> {
    if let Some(url) = &cfg.base_url {
        return Ok(url.clone());
    }
    let key = match (&cfg.service_account_key, &cfg.service_account_path) {
        (Some(key), _) => Some(key.expose().to_owned()),
        (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("GOOGLE_SERVICE_ACCOUNT", format!("cannot read {path}: {e}"))
        })?),
        (None, None) => None,
    };
    let from_key = key
        .and_then(|k| serde_json::from_str::<serde_json::Value>(&k).ok())
        .and_then(|v| v.get("gcs_base_url")?.as_str().map(str::to_owned));
    Ok(from_key.map_or_else(
        || DEFAULT_BASE_URL.to_owned(),
        |u| u.trim_end_matches('/').to_owned(),
    ))
}

/// GCS: `object_store` for everything but the snapshot's upload.
struct GcsStore {
    objects: ObjectStoreBacked,
    upload: Arc<Uploads>,
}

/// What a resumable upload needs: the client, the token, the bucket's upload URL.
struct Uploads {
    http: reqwest::Client,
    credentials: GcpCredentialProvider,
    upload_url: String,
}

impl Uploads {
    /// A request with the bearer token, if there is one (an emulator's key disables OAuth).
    async fn authorized(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, String> {
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| format!("cannot get a GCS token: {e}"))?;
        Ok(if credential.bearer.is_empty() {
            request
        } else {
            request.bearer_auth(&credential.bearer)
        })
    }
}

impl Store for GcsStore {
    fn name(&self) -> &'static str {
        self.objects.name()
    }
    fn location(&self, file: &str) -> String {
        self.objects.location(file)
    }
    fn chunk_size(&self) -> usize {
        self.objects.chunk_size()
    }
    fn begin<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Box<dyn Writer>>> {
        Box::pin(async move {
            let target = self.location(file);
            let err = |e: String| Error::new("gcs", "starting the resumable upload of", &target, e);
            let key = self.objects.path(file);
            let mut url =
                url::Url::parse(&self.upload.upload_url).map_err(|e| err(e.to_string()))?;
            url.query_pairs_mut()
                .append_pair("uploadType", "resumable")
                .append_pair("name", key.as_ref());
            let request = self
                .upload
                .http
                .post(url.as_str())
                .header("content-type", "application/json")
                .header("x-upload-content-type", "application/octet-stream")
                .body(r#"{"contentType":"application/octet-stream"}"#);
            let response = self
                .upload
                .authorized(request)
                .await
                .map_err(err)?
                .send()
                .await
                .map_err(|e| err(e.to_string()))?;
            if !response.status().is_success() {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                return Err(err(format!("answered {status}: {}", body.trim())));
            }
            let session = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| err("the answer has no Location (session URI)".to_owned()))?;
            let writer: Box<dyn Writer> = Box::new(ResumableWriter {
                uploads: Arc::clone(&self.upload),
                target,
                session,
                pending: BytesMut::new(),
                sent: 0,
            });
            Ok(writer)
        })
    }
    /// A small file goes up as a resumable upload of one chunk too: fake-gcs-server answers
    /// `object_store`'s XML `PUT` with 400 "invalid uploadType" (it takes XML uploads only
    /// with a signed URL), and one way to write serves both.
    fn put<'a>(&'a self, file: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut writer = self.begin(file).await?;
            writer.write(Bytes::from(body)).await?;
            writer.finish().await
        })
    }
    fn read<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        self.objects.read(file)
    }
    fn open<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<ByteStream>>> {
        self.objects.open(file)
    }
    fn size<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        self.objects.size(file)
    }
    fn sha256<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        self.objects.sha256(file)
    }
    fn server_checksum<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        self.objects.server_checksum(file)
    }
    fn part_size(&self) -> Option<usize> {
        self.objects.part_size()
    }
    fn reads_back_sha256(&self) -> bool {
        self.objects.reads_back_sha256()
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<Entry>>> {
        self.objects.list()
    }
    fn keeps_temp_files(&self) -> bool {
        self.objects.keeps_temp_files()
    }
    fn delete<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<()>> {
        self.objects.delete(file)
    }
}

/// One resumable upload: chunks of [`OBJECT_PART_SIZE`] (a multiple of the 256 KiB GCS asks
/// for), one at a time; the last chunk, sent by [`Writer::finish`], carries the total size and
/// makes the object appear.
struct ResumableWriter {
    uploads: Arc<Uploads>,
    target: String,
    /// The session URI: holds the upload's state on the server, and is its only credential.
    session: String,
    /// Bytes not sent yet: more than a chunk is sent as soon as it is there, so what remains
    /// for the final request is never empty unless the file is.
    pending: BytesMut,
    /// Bytes the server has acknowledged.
    sent: u64,
}

/// What the server says after a chunk.
enum Sent {
    /// The object exists, whole.
    Done,
    /// The upload goes on; the server holds this many bytes.
    Holds(u64),
}

impl ResumableWriter {
    /// Sends `data`, the bytes from `self.sent` on, as the last chunk if `last`; on a failure,
    /// asks the server how much it holds and sends the rest again, [`CHUNK_RETRIES`] times.
    async fn send(&mut self, data: Bytes, last: bool) -> Result<(), String> {
        let start = self.sent;
        let end = start + data.len() as u64;
        let total = if last {
            end.to_string()
        } else {
            "*".to_owned()
        };
        let mut attempt = 0;
        loop {
            let offset = usize::try_from(self.sent - start).unwrap_or(usize::MAX);
            let body = data.slice(offset.min(data.len())..);
            let range = if body.is_empty() {
                format!("bytes */{total}")
            } else {
                format!("bytes {}-{}/{total}", self.sent, end - 1)
            };
            let outcome = self.put(body, &range).await;
            let outcome = match outcome {
                Ok(sent) => Ok(sent),
                Err((retryable, e)) if retryable && attempt < CHUNK_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempt - 1)).await;
                    // Where the server is: it may hold part of the chunk, or all of it.
                    match self.put(Bytes::new(), &format!("bytes */{total}")).await {
                        Ok(s) => Ok(s),
                        Err((_, status_error)) => {
                            tracing::warn!(location = %self.target, attempt, "a chunk failed ({e}) and so did asking the server where it is ({status_error}); sending it again");
                            continue;
                        }
                    }
                }
                Err((_, e)) => Err(e),
            }?;
            match outcome {
                Sent::Done if last => return Ok(()),
                Sent::Done => {
                    return Err("the server finished the object before its last chunk".to_owned());
                }
                Sent::Holds(n) if n == end && !last => {
                    self.sent = n;
                    return Ok(());
                }
                Sent::Holds(n) if (start..=end).contains(&n) => {
                    // A server that keeps part of a chunk gets the rest; one that keeps none of
                    // it, again and again, is given up on like a failing one.
                    if n <= self.sent {
                        attempt += 1;
                        if attempt > CHUNK_RETRIES {
                            return Err(format!(
                                "the server keeps holding {n} bytes and takes no more"
                            ));
                        }
                    }
                    self.sent = n;
                }
                Sent::Holds(n) => {
                    return Err(format!(
                        "the server holds {n} bytes, outside this chunk's {start}..{end}"
                    ));
                }
            }
        }
    }

    /// One PUT to the session; the error says whether sending again may help.
    async fn put(&self, body: Bytes, range: &str) -> Result<Sent, (bool, String)> {
        let request = self
            .uploads
            .http
            .put(&self.session)
            .header("content-range", range)
            .body(body);
        let request = self
            .uploads
            .authorized(request)
            .await
            .map_err(|e| (true, e))?;
        let response = request.send().await.map_err(|e| (true, e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Sent::Done);
        }
        if status.as_u16() == 308 {
            // `Range: bytes=0-N` is what it holds; none means nothing yet.
            let held = response
                .headers()
                .get("range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit_once('-'))
                .and_then(|(_, last)| last.parse::<u64>().ok())
                .map_or(0, |last| last + 1);
            return Ok(Sent::Holds(held));
        }
        let retryable = status.is_server_error() || status.as_u16() == 429;
        let body = response.text().await.unwrap_or_default();
        Err((retryable, format!("answered {status}: {}", body.trim())))
    }
}

impl Writer for ResumableWriter {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.pending.extend_from_slice(&chunk);
            while self.pending.len() > OBJECT_PART_SIZE {
                let data = self.pending.split_to(OBJECT_PART_SIZE).freeze();
                self.send(data, false)
                    .await
                    .map_err(|e| Error::new("gcs", "uploading a chunk of", &self.target, e))?;
            }
            Ok(())
        })
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let data = std::mem::take(&mut self.pending).freeze();
            match self.send(data, true).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    let target = self.target.clone();
                    // The session is useless now: cancel it rather than leave it a week.
                    let _ = self.abort().await;
                    Err(Error::new(
                        "gcs",
                        "completing the resumable upload of",
                        target,
                        e,
                    ))
                }
            }
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let request = self.uploads.http.delete(&self.session);
            let err = |e: String| {
                Error::new("gcs", "cancelling the resumable upload of", &self.target, e)
            };
            let response = self
                .uploads
                .authorized(request)
                .await
                .map_err(err)?
                .send()
                .await
                .map_err(|e| err(e.to_string()))?;
            // GCS answers a cancelled session with 499; 404/410 means it is gone already.
            match response.status().as_u16() {
                200..=299 | 404 | 410 | 499 => Ok(()),
                other => Err(err(format!("answered {other}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use vault_backup_common::env::Secret;

    use super::*;

    fn config(key: &str) -> GcsConfig {
        GcsConfig {
            bucket: "b".into(),
            prefix: String::new(),
            service_account_path: None,
            service_account_key: Some(Secret::new(key)),
            application_credentials: None,
            base_url: None,
        }
    }

    #[test]
    fn a_key_that_is_not_one_is_a_configuration_error_naming_it_without_its_text() {
        let err = gcs(&config("{\"private_key\": 42, \"secret-text\"")).unwrap_err();
        assert_eq!(err.variable, "GOOGLE_SERVICE_ACCOUNT_KEY");
        assert!(!err.to_string().contains("secret-text"), "{err}");
    }

    #[test]
    fn the_endpoint_is_the_variable_else_the_keys_else_gcs() {
        let emulator = r#"{"gcs_base_url": "http://127.0.0.1:4443/", "disable_oauth": true}"#;
        assert_eq!(
            base_url(&config(emulator)).unwrap(),
            "http://127.0.0.1:4443"
        );
        assert_eq!(base_url(&config("{}")).unwrap(), DEFAULT_BASE_URL);
        let mut c = config(emulator);
        c.base_url = Some("https://gcs.internal".into());
        assert_eq!(base_url(&c).unwrap(), "https://gcs.internal");
    }
}
