//! Azurite as an Azure Blob emulator on loopback, for the Azure store's tests.
//!
//! Installed by `make testbed` with npm (`azurite`) into `.tools/npm`; only its blob service
//! (`azurite-blob`) is started, in a temp directory, with the well-known development account.
//! Containers are created and listed here with Shared Key requests signed by hand (curl sends
//! them), so a test's view of the container does not go through the store under test.
//!
//! Where it differs from Azure, measured against Azurite 3.35 (by hand and in the conformance
//! suite):
//! - Path-style URLs, `http://host:port/<account>/<container>/<blob>` (Azure:
//!   `https://<account>.blob.core.windows.net/<container>/<blob>`).
//! - Put Block / Put Block List behave as on Azure: uncommitted blocks are never listed as a
//!   blob, and a block list commits the blob whole. Uncommitted blocks of an abandoned upload
//!   are dropped by Azure after a week; Azurite keeps them until its garbage collection runs.
//! - A blob committed from a block list has no `Content-MD5`, on Azure as on Azurite; neither
//!   states a CRC64 for the whole blob. So the store reads the copy back to check it.
//! - `--skipApiVersionCheck`: an `object_store` newer than the emulator may send a newer
//!   `x-ms-version` than it knows.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::process::{Server, free_port, host, port_open, wait_until};
use crate::venv;

/// Azurite's well-known development account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Its well-known key (published in Azure's documentation; not a secret).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The storage API version the hand-signed requests speak.
const API_VERSION: &str = "2021-08-06";

/// A running Azurite blob service with one container; killed when dropped.
#[derive(Debug)]
pub struct Azurite {
    server: Server,
    port: u16,
    container: String,
    _dir: TempDir,
}

/// `azurite-blob` as `make testbed` installs it (`.tools/npm`).
///
/// # Panics
/// If it is not installed: run `make testbed`.
#[must_use]
pub fn binary() -> PathBuf {
    let p = std::env::var_os("VAULT_BACKUP_NPM")
        .map_or_else(|| venv::workspace_root().join(".tools/npm"), PathBuf::from)
        .join("node_modules/.bin/azurite-blob");
    assert!(
        p.exists(),
        "{} is missing: run `make testbed` first",
        p.display()
    );
    p
}

impl Azurite {
    /// Starts the blob service with `container` created.
    ///
    /// # Panics
    /// If it is not installed, cannot start, or is not ready in 60 s.
    #[must_use]
    pub fn start(container: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for Azurite");
        let port = free_port();
        let mut cmd = Command::new(binary());
        cmd.arg("--blobHost")
            .arg(host())
            .arg("--blobPort")
            .arg(port.to_string())
            .arg("--location")
            .arg(dir.path())
            // No telemetry: a test bed sends nothing anywhere (Azurite collects it by default).
            .args([
                "--silent",
                "--skipApiVersionCheck",
                "--disableProductStyleUrl",
                "--disableTelemetry",
            ])
            .current_dir(dir.path());
        let server = Server::spawn("azurite", cmd, &dir.path().join("azurite.log"));
        let mut me = Self {
            server,
            port,
            container: container.to_owned(),
            _dir: dir,
        };
        wait_until("Azurite blob port", Duration::from_secs(60), || {
            assert!(
                me.server.is_running(),
                "azurite exited:\n{}",
                me.server.log_tail(40)
            );
            port_open(port)
        });
        let (status, body) =
            me.request("PUT", &format!("/{container}"), &[("restype", "container")]);
        assert_eq!(status, 201, "creating container {container}: {body}");
        me
    }

    /// The account endpoint, `http://<host>:<port>/devstoreaccount1` (what
    /// `AZURE_STORAGE_ENDPOINT` takes).
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}/{ACCOUNT}", host(), self.port)
    }

    /// The container created at start.
    #[must_use]
    pub fn container(&self) -> &str {
        &self.container
    }

    /// The environment the steps need to use this container (no prefix).
    #[must_use]
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_CONTAINER_NAME".into(), self.container.clone()),
            ("AZURE_STORAGE_ACCOUNT_NAME".into(), ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY".into(), ACCOUNT_KEY.into()),
            ("AZURE_STORAGE_ENDPOINT".into(), self.endpoint()),
        ]
    }

    /// The committed blob names in the container under `prefix`, sorted (Azurite's own
    /// listing, not the store's).
    ///
    /// # Panics
    /// If the listing fails.
    #[must_use]
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = self.request(
            "GET",
            &format!("/{}", self.container),
            &[
                ("comp", "list"),
                ("prefix", prefix),
                ("restype", "container"),
            ],
        );
        assert_eq!(status, 200, "listing: {body}");
        let mut keys: Vec<String> = body
            .split("<Name>")
            .skip(1)
            .filter_map(|s| s.split_once("</Name>").map(|(n, _)| n.to_owned()))
            .collect();
        keys.sort();
        keys
    }

    /// The server's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// A Shared Key request with no body to `path` (under the account) with `query` (sorted by
    /// name); the status code and the body.
    fn request(&self, method: &str, path: &str, query: &[(&str, &str)]) -> (u16, String) {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let mut resource = format!("/{ACCOUNT}/{ACCOUNT}{path}");
        for (k, v) in query {
            resource.push_str(&format!("\n{k}:{v}"));
        }
        let to_sign = format!(
            "{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n{resource}"
        );
        let key = STANDARD.decode(ACCOUNT_KEY).expect("key is base64");
        let signature = STANDARD.encode(hmac_sha256(&key, to_sign.as_bytes()));
        let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let url = format!("{}{path}?{}", self.endpoint(), qs.join("&"));
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-X", method])
            .args(["-H", &format!("x-ms-date: {date}")])
            .args(["-H", &format!("x-ms-version: {API_VERSION}")])
            .args([
                "-H",
                &format!("Authorization: SharedKey {ACCOUNT}:{signature}"),
            ])
            .args(["-H", "Content-Length: 0"])
            .arg(&url)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
}

/// HMAC-SHA256 (RFC 2104), written out: one signature per test request does not justify a
/// crate.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}
