//! KV v2 secrets, one version at a time: what the recovery of single secrets reads from a
//! restored snapshot and writes back into the cluster.
//!
//! A recovered value must never silently replace a write that happened meanwhile, so every
//! write here is a check-and-set (`options.cas`) against the version read just before: KV v2
//! refuses it with 400 "check-and-set parameter did not match the current version" when the
//! secret moved on (OpenBao `builtin/logical/kv/path_data.go`, `validateCheckAndSetOption`), and
//! with `cas` 0 when a secret appeared where there was none (a path without metadata has
//! current version 0).
//!
//! Values travel only in request and response bodies and in [`serde_json::Map`]s handed to the
//! caller; no error or log line here holds one.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Map, Value};
use url::Url;
use vault_backup_common::Secret;

use crate::client::{Vault, base, detail};
use crate::error::{Error, Result};

/// A KV v2 secret: its mount and its path inside the mount (`secret` and `app/db` for
/// `secret/app/db`). A path ending in `/` names a folder (for [`Vault::kv2_list`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KvPath {
    /// The mount, without slashes (`secret`).
    pub mount: String,
    /// The path in the mount, without a leading slash (`app/db`, or `app/` for a folder).
    pub path: String,
}

impl KvPath {
    /// `<mount>/data/<path>`: the API path of the secret's values.
    #[must_use]
    pub fn data(&self) -> String {
        format!("{}/data/{}", self.mount, self.path)
    }

    /// `<mount>/metadata/<path>`: the API path of the secret's versions.
    #[must_use]
    pub fn metadata(&self) -> String {
        format!("{}/metadata/{}", self.mount, self.path)
    }

    /// Whether this names a folder (a trailing `/`).
    #[must_use]
    pub fn is_folder(&self) -> bool {
        self.path.is_empty() || self.path.ends_with('/')
    }
}

impl fmt::Display for KvPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.mount, self.path)
    }
}

/// What one version of a secret holds.
#[derive(Debug, Clone, PartialEq)]
pub enum KvValue {
    /// Its key/value pairs.
    Data(Map<String, Value>),
    /// The version exists but was deleted or destroyed (its data is gone; KV v2 answers 404
    /// with the version's metadata, or `data: null`).
    Deleted,
    /// There is no such secret (or version).
    Missing,
}

/// The answer to a check-and-set write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasWrite {
    /// Written as this new version.
    Written {
        /// The version KV v2 gave it.
        version: u64,
    },
    /// Refused: the secret is no longer at the version the write was checked against.
    Conflict {
        /// What Vault said.
        detail: String,
    },
}

/// The policy file a 403 on a recovery's read or write points to.
pub const RECOVER_POLICY: &str = "tekton/vault-recover-policy.hcl";

impl Vault {
    /// A KV request with `token` and the namespace, within the fixed limit of a short request.
    async fn kv_request(
        &self,
        addr: &Url,
        token: &Secret,
        method: reqwest::Method,
        api_path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, String)> {
        let url = format!("{}/v1/{api_path}", base(addr));
        let mut request = self
            .http
            .request(method, &url)
            .headers(self.namespace_header())
            .headers(Self::token_header(addr, token)?);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.exchange(addr, request, Duration::from_secs(30)).await
    }

    /// The error for a refused KV request: a 403 names the path and the capabilities the
    /// recovery's policy needs there.
    fn kv_refused(
        addr: &Url,
        status: StatusCode,
        body: &str,
        what: &'static str,
        api_path: &str,
        capabilities: &str,
    ) -> Error {
        match Self::refused(addr, status, body, what, api_path, capabilities) {
            Error::Forbidden { addr, what, .. } => Error::Forbidden {
                addr,
                what,
                needs: format!(
                    "path \"{api_path}\" {{ capabilities = {capabilities} }} (see {RECOVER_POLICY})"
                ),
            },
            other => other,
        }
    }

    /// The current version of the secret at `path` (`GET <mount>/metadata/<path>`): `None`
    /// when it has no metadata (never written, or its metadata deleted), which a write must
    /// then check against version 0.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::Sealed`], [`Error::Http`] or transport errors.
    pub async fn kv2_current_version(
        &self,
        addr: &Url,
        token: &Secret,
        path: &KvPath,
    ) -> Result<Option<u64>> {
        let api = path.metadata();
        let (status, body) = self
            .kv_request(addr, token, reqwest::Method::GET, &api, None)
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Self::kv_refused(
                addr,
                status,
                &body,
                "the metadata read of",
                &api,
                "[\"read\"]",
            ));
        }
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["data"]["current_version"]
            .as_u64()
            .map(Some)
            .ok_or_else(|| Error::Http {
                addr: base(addr),
                what: "a KV v2 metadata read",
                status: status.as_u16(),
                detail: format!("the metadata of {path} holds no current_version"),
            })
    }

    /// The secrets under the folder `folder` (`LIST <mount>/metadata/<folder>`), recursively,
    /// sorted: each secret's full path. A folder that does not exist lists nothing.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::Sealed`], [`Error::Http`] or transport errors.
    pub async fn kv2_list(
        &self,
        addr: &Url,
        token: &Secret,
        folder: &KvPath,
    ) -> Result<Vec<KvPath>> {
        let mut found = Vec::new();
        let mut folders = vec![folder.path.clone()];
        while let Some(dir) = folders.pop() {
            let at = KvPath {
                mount: folder.mount.clone(),
                path: dir.clone(),
            };
            let api = at.metadata();
            // `GET ...?list=true` is Vault's documented spelling of the LIST method.
            let (status, body) = self
                .kv_request(
                    addr,
                    token,
                    reqwest::Method::GET,
                    &format!("{api}?list=true"),
                    None,
                )
                .await?;
            if status == StatusCode::NOT_FOUND {
                continue;
            }
            if !status.is_success() {
                return Err(Self::kv_refused(
                    addr,
                    status,
                    &body,
                    "the listing of",
                    &api,
                    "[\"list\"]",
                ));
            }
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            for key in v["data"]["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let full = format!("{dir}{key}");
                if key.ends_with('/') {
                    folders.push(full);
                } else {
                    found.push(KvPath {
                        mount: folder.mount.clone(),
                        path: full,
                    });
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Version `version` of the secret at `path` (`None`: the current one).
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::Sealed`], [`Error::Http`] or transport errors.
    pub async fn kv2_read(
        &self,
        addr: &Url,
        token: &Secret,
        path: &KvPath,
        version: Option<u64>,
    ) -> Result<KvValue> {
        let api = match version {
            Some(v) => format!("{}?version={v}", path.data()),
            None => path.data(),
        };
        let (status, body) = self
            .kv_request(addr, token, reqwest::Method::GET, &api, None)
            .await?;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == StatusCode::NOT_FOUND {
            // A deleted or destroyed version answers 404 with its metadata; a secret that
            // never was answers 404 with an empty error list.
            return Ok(if v["data"]["metadata"].is_object() {
                KvValue::Deleted
            } else {
                KvValue::Missing
            });
        }
        if !status.is_success() {
            return Err(Self::kv_refused(
                addr,
                status,
                &body,
                "the read of",
                &path.data(),
                "[\"read\"]",
            ));
        }
        Ok(match v["data"]["data"].as_object() {
            Some(data) => KvValue::Data(data.clone()),
            None => KvValue::Deleted,
        })
    }

    /// Writes `data` as a new version of the secret at `path`, only if its current version is
    /// still `cas` (0: only if it has none).
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::Sealed`], [`Error::Http`] or transport errors; a
    /// check-and-set refusal is [`CasWrite::Conflict`], not an error.
    pub async fn kv2_write_cas(
        &self,
        addr: &Url,
        token: &Secret,
        path: &KvPath,
        data: &Map<String, Value>,
        cas: u64,
    ) -> Result<CasWrite> {
        let api = path.data();
        let body = serde_json::json!({ "options": { "cas": cas }, "data": data });
        let (status, text) = self
            .kv_request(addr, token, reqwest::Method::POST, &api, Some(&body))
            .await?;
        if status.is_success() {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Ok(CasWrite::Written {
                version: v["data"]["version"].as_u64().unwrap_or_default(),
            });
        }
        let said = detail(&text);
        if status == StatusCode::BAD_REQUEST && said.contains("check-and-set") {
            return Ok(CasWrite::Conflict { detail: said });
        }
        Err(Self::kv_refused(
            addr,
            status,
            &text,
            "the write to",
            &api,
            "[\"create\", \"update\"]",
        ))
    }
}

/// Splits `<mount>/<path>` (e.g. `secret/app/db`, or `secret/app/` for everything under
/// `app/`) into its mount and path. The mount is the first segment: a mount at a nested path
/// (`kv/team-a/`) cannot be named, since nothing in the text says where the mount ends.
///
/// # Errors
/// A message saying what is wrong (for the configuration error naming the variable).
pub fn parse_kv_path(text: &str) -> std::result::Result<KvPath, String> {
    let text = text.trim();
    let (mount, path) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} names no path in a mount; write <mount>/<path>, e.g. secret/app/db, or secret/app/ for every secret under app/"))?;
    if mount.is_empty() || path.starts_with('/') || path.contains("//") {
        return Err(format!(
            "{text:?} is not <mount>/<path> (an empty segment); write e.g. secret/app/db"
        ));
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("{text:?} holds a . or .. segment"));
    }
    if path.starts_with("data/") || path.starts_with("metadata/") {
        return Err(format!(
            "{text:?} names the API path; write the secret's path as the kv CLI does, without data/ or metadata/ (e.g. {mount}/{})",
            path.split_once('/').map_or("", |p| p.1)
        ));
    }
    Ok(KvPath {
        mount: mount.to_owned(),
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_at_the_mount_and_folders_end_in_a_slash() {
        let p = parse_kv_path("secret/app/db").unwrap();
        assert_eq!(p.mount, "secret");
        assert_eq!(p.data(), "secret/data/app/db");
        assert_eq!(p.metadata(), "secret/metadata/app/db");
        assert!(!p.is_folder());
        assert!(parse_kv_path("secret/app/").unwrap().is_folder());
        assert!(parse_kv_path("secret/").unwrap().is_folder());
        for bad in [
            "secret",
            "/secret/app",
            "secret//app",
            "secret/../x",
            "secret/data/app",
        ] {
            assert!(parse_kv_path(bad).is_err(), "{bad}");
        }
    }
}
