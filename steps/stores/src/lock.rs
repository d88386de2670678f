//! S3 Object Lock and object versions: what a bucket protects, writes that carry a lock, and the
//! versions a restore falls back to when every snapshot is hidden behind delete markers.
//!
//! Anyone holding the job's own S3 keys can delete every backup; a bucket with Object Lock keeps
//! each version until its retain-until date whatever those keys ask. `object_store` speaks none of
//! this: it has no lock attribute, and no call for the bucket's lock configuration, its
//! versioning or its object versions. Those few requests are built here and signed with
//! `object_store`'s own public [`AwsAuthorizer`] (no SigV4 of our own), then sent with reqwest;
//! everything else (parts, completion, reads) stays with `object_store`.
//!
//! Why not `object_store`'s own ways to add headers: `PutOptions::attributes` knows content
//! headers, storage class and `x-amz-meta-*` only; `extensions` are ignored by its S3 backend;
//! and `ClientOptions::with_default_headers` signs the same headers onto every request the client
//! sends (reads, lists, deletes, every part), fixed when the client is built, whereas a lock's
//! retain-until is per object: its upload time plus the days.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use object_store::aws::{AmazonS3, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

/// An Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` can shorten or remove the lock.
    Governance,
    /// No one can shorten or remove the lock until it expires, not even the account's root.
    Compliance,
}

impl LockMode {
    /// `GOVERNANCE` or `COMPLIANCE`, as S3 writes it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }

    /// Parses S3's spelling (case-insensitive, surrounding spaces ignored).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "GOVERNANCE" => Some(Self::Governance),
            "COMPLIANCE" => Some(Self::Compliance),
            _ => None,
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lock every object the sync step writes carries (`S3_OBJECT_LOCK_MODE`,
/// `S3_OBJECT_LOCK_DAYS`): retain-until is the object's upload time plus `days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// The mode.
    pub mode: LockMode,
    /// Whole days, at least 1.
    pub days: u32,
}

impl ObjectLock {
    /// The retain-until date of an object uploaded at `now`, to the second (S3 keeps no finer).
    #[must_use]
    pub fn retain_until(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let t = now + TimeDelta::days(i64::from(self.days));
        DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
    }

    /// The request headers that lock an object uploaded at `now`.
    fn headers(self, now: DateTime<Utc>) -> [(HeaderName, HeaderValue); 2] {
        let until = self
            .retain_until(now)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        [
            (
                HeaderName::from_static("x-amz-object-lock-mode"),
                HeaderValue::from_static(self.mode.as_str()),
            ),
            (
                HeaderName::from_static("x-amz-object-lock-retain-until-date"),
                HeaderValue::from_str(&until).expect("an RFC 3339 date is a header value"),
            ),
        ]
    }
}

/// Whether a bucket keeps object versions (`GetBucketVersioning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled: a DELETE removes the object.
    Off,
    /// Enabled: a plain DELETE only adds a delete marker; the data stays as a noncurrent version.
    Enabled,
    /// Was enabled, now suspended: older versions stay.
    Suspended,
}

impl fmt::Display for Versioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Enabled => "enabled",
            Self::Suspended => "suspended",
        })
    }
}

/// A bucket's default retention, applied by the server to every new object version that
/// asks for no lock of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRetention {
    /// The mode.
    pub mode: LockMode,
    /// The period in days (a period in years is given as 365 days a year, for reports only: the
    /// server computes the dates).
    pub days: u32,
}

/// What a bucket protects, as the server states it at the start of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// Whether it keeps versions.
    pub versioning: Versioning,
    /// Whether Object Lock is enabled on it (only possible with versioning).
    pub lock_enabled: bool,
    /// Its default retention, if one is set.
    pub default_retention: Option<DefaultRetention>,
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "versioning {}, Object Lock ", self.versioning)?;
        if !self.lock_enabled {
            return f.write_str("not enabled");
        }
        match self.default_retention {
            Some(d) => write!(f, "enabled, default retention {} {} days", d.mode, d.days),
            None => f.write_str("enabled, no default retention"),
        }
    }
}

/// One version of an object under the store's prefix, as `ListObjectVersions` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The file name (the key without the store's prefix).
    pub name: String,
    /// The version id.
    pub version_id: String,
    /// Whether it is the current version.
    pub latest: bool,
    /// Whether it is a delete marker (no data) rather than a version with data.
    pub delete_marker: bool,
    /// When it was written.
    pub modified: DateTime<Utc>,
    /// Its size (0 for a delete marker).
    pub size: u64,
}

/// The lock a HEAD states for one object version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRetention {
    /// The mode.
    pub mode: Option<LockMode>,
    /// Until when it cannot be deleted.
    pub retain_until: Option<DateTime<Utc>>,
    /// The version id the HEAD answered for.
    pub version_id: Option<String>,
}

/// Why a request of this module failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer (connection, TLS, timeout).
    #[error("no answer")]
    Http(#[source] reqwest::Error),
    /// The server answered with an error.
    #[error("the server answered {status}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// S3's error code (`AccessDenied`, ...), when the body has one.
        code: Option<String>,
    },
    /// The answer is not the XML S3 documents.
    #[error("unexpected answer: {0}")]
    Xml(String),
    /// The request could not be signed.
    #[error("signing the request")]
    Sign(#[source] object_store::Error),
}

impl ApiError {
    /// Whether the server refused the request (403): missing permission, or an object lock.
    #[must_use]
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Status { status, .. } if *status == StatusCode::FORBIDDEN)
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Http(_) => true,
            Self::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Self::Xml(_) | Self::Sign(_) => false,
        }
    }
}

/// The S3 requests `object_store` does not make, signed with its [`AwsAuthorizer`].
pub(crate) struct S3Api {
    http: reqwest::Client,
    /// `https://host/bucket` (path style) or `https://bucket.s3.region.amazonaws.com`.
    bucket_url: Url,
    credential: AwsCredential,
    region: String,
}

impl S3Api {
    /// An API client for the bucket at `bucket_url`.
    pub(crate) fn new(
        http: reqwest::Client,
        bucket_url: Url,
        key_id: &str,
        secret: &str,
        region: &str,
    ) -> Self {
        Self {
            http,
            bucket_url,
            credential: AwsCredential {
                key_id: key_id.to_owned(),
                secret_key: secret.to_owned(),
                token: None,
            },
            region: region.to_owned(),
        }
    }

    /// The URL of the bucket with a sub-resource query (`?object-lock=`), or of an object key.
    fn url(&self, key: Option<&ObjectPath>, query: &[(&str, &str)]) -> Url {
        let mut url = self.bucket_url.clone();
        if let Some(key) = key {
            let mut segments = url
                .path_segments_mut()
                .expect("an http(s) URL has path segments");
            segments.pop_if_empty();
            for part in key.parts() {
                segments.push(part.as_ref());
            }
        }
        if !query.is_empty() {
            // `uploads=` and `versions=` rather than bare names: the signature covers the query
            // as `name=`, and servers compare it so (bare `?uploads` fails on SeaweedFS).
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one signed request, retried a few times on no answer, 5xx or 429.
    async fn send(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(HeaderName, HeaderValue)],
        body: &Bytes,
    ) -> Result<(HeaderMap, Bytes), ApiError> {
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            match self.send_once(method, url, headers, body).await {
                Err(e) if e.is_retryable() && attempt < 4 => {
                    tracing::debug!(
                        "S3 {method} failed ({e}); backing off {:.1}s, retry {attempt} of 3",
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(HeaderName, HeaderValue)],
        body: &Bytes,
    ) -> Result<(HeaderMap, Bytes), ApiError> {
        let mut request = HttpRequest::new(HttpRequestBody::from(body.clone()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = url
            .as_str()
            .parse()
            .map_err(|e| ApiError::Xml(format!("not a URI: {e}")))?;
        for (name, value) in headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        AwsAuthorizer::new(&self.credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(ApiError::Sign)?;
        let response = self
            .http
            .request(method.clone(), url.clone())
            .headers(request.headers().clone())
            .body(body.clone())
            .send()
            .await
            .map_err(ApiError::Http)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(ApiError::Http)?;
        if !status.is_success() {
            let code = quick_xml::de::from_reader::<_, XmlError>(bytes.as_ref())
                .ok()
                .and_then(|e| e.code);
            return Err(ApiError::Status { status, code });
        }
        Ok((headers, bytes))
    }

    /// Object Lock and versioning of the bucket (`GetObjectLockConfiguration`,
    /// `GetBucketVersioning`).
    pub(crate) async fn protection(&self) -> Result<Protection, ApiError> {
        let versioning = {
            let (_, body) = self
                .send(
                    &Method::GET,
                    &self.url(None, &[("versioning", "")]),
                    &[],
                    &Bytes::new(),
                )
                .await?;
            let v: XmlVersioning = xml(&body)?;
            match v.status.as_deref() {
                Some("Enabled") => Versioning::Enabled,
                Some("Suspended") => Versioning::Suspended,
                _ => Versioning::Off,
            }
        };
        let lock = self
            .send(
                &Method::GET,
                &self.url(None, &[("object-lock", "")]),
                &[],
                &Bytes::new(),
            )
            .await;
        let config: XmlLockConfiguration = match lock {
            Ok((_, body)) => xml(&body)?,
            // A bucket without Object Lock: 404 ObjectLockConfigurationNotFoundError.
            Err(ApiError::Status { status, .. }) if status == StatusCode::NOT_FOUND => {
                return Ok(Protection {
                    versioning,
                    lock_enabled: false,
                    default_retention: None,
                });
            }
            Err(e) => return Err(e),
        };
        let default_retention = config.rule.and_then(|r| r.default_retention).and_then(|d| {
            let mode = LockMode::parse(d.mode.as_deref()?)?;
            let days = d.days.or_else(|| d.years.map(|y| y.saturating_mul(365)))?;
            Some(DefaultRetention { mode, days })
        });
        Ok(Protection {
            versioning,
            lock_enabled: config.object_lock_enabled.as_deref() == Some("Enabled"),
            default_retention,
        })
    }

    /// The lock a HEAD states for `key` (its current version, or `version`).
    pub(crate) async fn retention(
        &self,
        key: &ObjectPath,
        version: Option<&str>,
    ) -> Result<Option<ObjectRetention>, ApiError> {
        let query: Vec<(&str, &str)> = version.map(|v| ("versionId", v)).into_iter().collect();
        let url = self.url(Some(key), &query);
        let headers = match self.send(&Method::HEAD, &url, &[], &Bytes::new()).await {
            Ok((headers, _)) => headers,
            Err(ApiError::Status { status, .. }) if status == StatusCode::NOT_FOUND => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Ok(Some(ObjectRetention {
            mode: text("x-amz-object-lock-mode").and_then(LockMode::parse),
            retain_until: text("x-amz-object-lock-retain-until-date")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            version_id: text("x-amz-version-id").map(str::to_owned),
        }))
    }

    /// Every version and delete marker under `prefix` (`ListObjectVersions`, all pages).
    pub(crate) async fn versions(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> Result<Vec<ObjectVersion>, ApiError> {
        let prefix = prefix.map(|p| format!("{p}/")).unwrap_or_default();
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = vec![("versions", ""), ("prefix", prefix.as_str())];
            if let Some((key, version)) = &markers {
                query.push(("key-marker", key.as_str()));
                query.push(("version-id-marker", version.as_str()));
            }
            let (_, body) = self
                .send(&Method::GET, &self.url(None, &query), &[], &Bytes::new())
                .await?;
            let page: XmlListVersions = xml(&body)?;
            for (v, marker) in page
                .version
                .into_iter()
                .map(|v| (v, false))
                .chain(page.delete_marker.into_iter().map(|v| (v, true)))
            {
                let Some(name) = v.key.strip_prefix(&prefix) else {
                    continue;
                };
                // Directly under the prefix only, as the store's listing.
                if name.is_empty() || name.contains('/') {
                    continue;
                }
                let modified = DateTime::parse_from_rfc3339(&v.last_modified)
                    .map_err(|e| ApiError::Xml(format!("LastModified {}: {e}", v.last_modified)))?
                    .with_timezone(&Utc);
                out.push(ObjectVersion {
                    name: name.to_owned(),
                    version_id: v.version_id,
                    latest: v.is_latest.unwrap_or(false),
                    delete_marker: marker,
                    modified,
                    size: v.size.unwrap_or(0),
                });
            }
            if page.is_truncated != Some(true) {
                return Ok(out);
            }
            match (page.next_key_marker, page.next_version_id_marker) {
                (Some(k), Some(v)) => markers = Some((k, v)),
                _ => {
                    return Err(ApiError::Xml(
                        "a truncated version listing without NextKeyMarker/NextVersionIdMarker"
                            .into(),
                    ));
                }
            }
        }
    }

    /// `PutObject` of a small object with `lock`, and its SHA-256 in `x-amz-checksum-sha256`
    /// (AWS asks for Content-MD5 or an `x-amz-checksum-*` header on any upload that carries a
    /// lock). Returns the new version id, if the bucket keeps versions.
    pub(crate) async fn put_locked(
        &self,
        key: &ObjectPath,
        body: Bytes,
        lock: &ObjectLock,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, ApiError> {
        use base64::Engine as _;
        use sha2::Digest as _;
        let checksum =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body));
        let mut headers = lock.headers(now).to_vec();
        headers.push((
            HeaderName::from_static("x-amz-checksum-sha256"),
            HeaderValue::from_str(&checksum).expect("base64 is a header value"),
        ));
        let (answer, _) = self
            .send(&Method::PUT, &self.url(Some(key), &[]), &headers, &body)
            .await?;
        Ok(answer
            .get("x-amz-version-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    /// `CreateMultipartUpload` with `lock` and SHA-256 checksums announced for every part (which
    /// `object_store` then sends with each part). Returns the upload id.
    pub(crate) async fn create_multipart_locked(
        &self,
        key: &ObjectPath,
        lock: &ObjectLock,
        now: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        let mut headers = lock.headers(now).to_vec();
        headers.push((
            HeaderName::from_static("x-amz-checksum-algorithm"),
            HeaderValue::from_static("SHA256"),
        ));
        let (_, body) = self
            .send(
                &Method::POST,
                &self.url(Some(key), &[("uploads", "")]),
                &headers,
                &Bytes::new(),
            )
            .await?;
        let started: XmlInitiate = xml(&body)?;
        Ok(started.upload_id)
    }
}

fn xml<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    quick_xml::de::from_reader(body.as_ref()).map_err(|e| ApiError::Xml(e.to_string()))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct XmlError {
    code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct XmlVersioning {
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct XmlLockConfiguration {
    object_lock_enabled: Option<String>,
    rule: Option<XmlRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct XmlRule {
    default_retention: Option<XmlDefaultRetention>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct XmlDefaultRetention {
    mode: Option<String>,
    days: Option<u32>,
    years: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct XmlListVersions {
    is_truncated: Option<bool>,
    next_key_marker: Option<String>,
    next_version_id_marker: Option<String>,
    #[serde(default)]
    version: Vec<XmlVersion>,
    #[serde(default)]
    delete_marker: Vec<XmlVersion>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct XmlVersion {
    key: String,
    version_id: String,
    is_latest: Option<bool>,
    last_modified: String,
    size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct XmlInitiate {
    upload_id: String,
}

/// A multipart upload that [`S3Api::create_multipart_locked`] started, carried on with
/// `object_store`'s own part upload, completion and abort (its [`MultipartStore`]), so the parts
/// go up with their SHA-256 checksums and retries exactly as an unlocked upload's do.
pub(crate) struct LockedUpload {
    pub(crate) store: Arc<AmazonS3>,
    pub(crate) path: ObjectPath,
    pub(crate) upload_id: String,
    pub(crate) parts: Arc<Mutex<BTreeMap<usize, PartId>>>,
    pub(crate) next: usize,
}

impl fmt::Debug for LockedUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockedUpload({})", self.path)
    }
}

impl MultipartUpload for LockedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (store, path, id) = (
            Arc::clone(&self.store),
            self.path.clone(),
            self.upload_id.clone(),
        );
        let (idx, parts) = (self.next, Arc::clone(&self.parts));
        self.next += 1;
        Box::pin(async move {
            let part = store.put_part(&path, &id, idx, data).await?;
            parts.lock().expect("parts lock").insert(idx, part);
            Ok(())
        })
    }

    fn complete<'a, 'b>(&'a mut self) -> BoxFuture<'b, object_store::Result<PutResult>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            let parts: Vec<PartId> = std::mem::take(&mut *self.parts.lock().expect("parts lock"))
                .into_values()
                .collect();
            self.store
                .complete_multipart(&self.path, &self.upload_id, parts)
                .await
        })
    }

    fn abort<'a, 'b>(&'a mut self) -> BoxFuture<'b, object_store::Result<()>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            self.store
                .abort_multipart(&self.path, &self.upload_id)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retain_until_is_the_upload_time_plus_the_days_to_the_second() {
        let lock = ObjectLock {
            mode: LockMode::Governance,
            days: 1,
        };
        let now = DateTime::parse_from_rfc3339("2026-11-27T10:23:03.734Z")
            .unwrap()
            .with_timezone(&Utc);
        let [(mode_name, mode), (until_name, until)] = lock.headers(now);
        assert_eq!(mode_name.as_str(), "x-amz-object-lock-mode");
        assert_eq!(mode, "GOVERNANCE");
        assert_eq!(until_name.as_str(), "x-amz-object-lock-retain-until-date");
        assert_eq!(until, "2026-11-28T10:23:03Z");
    }

    #[test]
    fn a_version_listing_with_markers_and_versions_interleaved_parses() {
        // As SeaweedFS 4.48 answered after `aws s3 rm` of a locked object (shortened).
        let body = Bytes::from_static(
            br#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>locked</Name><Prefix>p/</Prefix><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated><DeleteMarker><Key>p/a.snap</Key><VersionId>m1</VersionId><IsLatest>true</IsLatest><LastModified>2026-11-27T10:23:03Z</LastModified></DeleteMarker><Version><Key>p/a.snap</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest><ETag>&#34;764e&#34;</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass><LastModified>2026-11-27T10:23:03Z</LastModified></Version><DeleteMarker><Key>p/b.snap</Key><VersionId>m2</VersionId><IsLatest>true</IsLatest><LastModified>2026-11-27T10:23:04Z</LastModified></DeleteMarker></ListVersionsResult>"#,
        );
        let page: XmlListVersions = xml(&body).unwrap();
        assert_eq!(page.version.len(), 1);
        assert_eq!(page.delete_marker.len(), 2);
        assert_eq!(page.version[0].size, Some(3));
    }

    #[test]
    fn lock_configurations_parse() {
        let with = Bytes::from_static(
            b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Years>1</Years></DefaultRetention></Rule></ObjectLockConfiguration>",
        );
        let c: XmlLockConfiguration = xml(&with).unwrap();
        let d = c.rule.unwrap().default_retention.unwrap();
        assert_eq!(
            (d.mode.as_deref(), d.days, d.years),
            (Some("COMPLIANCE"), None, Some(1))
        );
        let without: XmlLockConfiguration = xml(&Bytes::from_static(
            b"<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>",
        ))
        .unwrap();
        assert!(without.rule.is_none());
        assert_eq!(LockMode::parse(" governance"), Some(LockMode::Governance));
        assert_eq!(LockMode::parse("legal-hold"), None);
    }
}
