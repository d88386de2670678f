//! SeaweedFS as a real S3 server on loopback (`weed mini`), for the sync step's tests and bench.
//!
//! `weed mini` runs master, volume, filer and S3 gateway in one process. With
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` in its environment it checks SigV4 signatures and
//! the SHA-256 checksums sent with PutObject and UploadPart, which is what the sync step relies
//! on. Every port it would open is given a free one, so tests can run side by side; its data sits
//! in a temp directory and the process is killed when the handle drops.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{Server, free_port, host, port_open, wait_until};
use crate::venv;

/// The access key the server is started with.
pub const ACCESS_KEY: &str = "testbed-access-key";
/// The secret key the server is started with.
pub const SECRET_KEY: &str = "testbed-secret-key-0123456789";
/// The region clients should sign for.
pub const REGION: &str = "us-east-1";

/// A running `weed mini` with one bucket; killed when dropped.
#[derive(Debug)]
pub struct SeaweedFs {
    server: Server,
    s3_port: u16,
    bucket: String,
    dir: TempDir,
}

impl SeaweedFs {
    /// Starts SeaweedFS with `bucket` created, and waits until the bucket answers over S3.
    ///
    /// # Panics
    /// If `weed` is not installed (`make testbed`), cannot start, or is not ready in 60 s.
    #[must_use]
    pub fn start(bucket: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for SeaweedFS");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("SeaweedFS data dir");
        let s3_port = free_port();
        let mut cmd = Command::new(venv::bin("weed"));
        cmd.arg("mini")
            .arg(format!("-dir={}", data.display()))
            .arg(format!("-ip={}", host()))
            .arg(format!("-ip.bind={}", host()))
            .args([
                "-master.telemetry=false",
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!("-bucket={bucket}"))
            .arg(format!("-s3.port={s3_port}"));
        // Every other listener gets its own free port: the defaults (6060, 9333, ...) would
        // collide between tests running in parallel.
        for flag in [
            "s3.port.grpc",
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "debug.port",
        ] {
            cmd.arg(format!("-{flag}={}", free_port()));
        }
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            // weed falls back to S3_BUCKET for -bucket; keep a caller's variable out of it.
            .env_remove("S3_BUCKET")
            .current_dir(dir.path());
        let server = Server::spawn("weed", cmd, &dir.path().join("weed.log"));
        let mut me = Self {
            server,
            s3_port,
            bucket: bucket.to_owned(),
            dir,
        };
        wait_until("SeaweedFS S3 port", Duration::from_secs(60), || {
            assert!(
                me.server.is_running(),
                "weed exited:\n{}",
                me.server.log_tail(40)
            );
            port_open(s3_port)
        });
        // The port opens before the filer and the bucket are ready; ask like a client would.
        wait_until("SeaweedFS bucket", Duration::from_secs(60), || {
            me.aws(&["s3api", "head-bucket", "--bucket", bucket])
                .status
                .success()
        });
        me
    }

    /// The S3 endpoint, `http://<host>:<port>` (127.0.0.1 unless the process runs Tasks).
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", host(), self.s3_port)
    }

    /// The S3 port on the test-bed host.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.s3_port
    }

    /// The bucket created at start.
    #[must_use]
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The access key id the server accepts.
    #[must_use]
    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    /// The secret access key the server accepts.
    #[must_use]
    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    /// The region to sign for.
    #[must_use]
    pub fn region(&self) -> &str {
        REGION
    }

    /// A scratch directory that lives as long as the server (for downloads).
    #[must_use]
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// The environment the `aws` CLI needs to talk to this server.
    #[must_use]
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            // awscli 2-style integrity headers are fine with SeaweedFS; keep the CLI's config
            // files out of the way so a developer's ~/.aws cannot change the outcome.
            (
                "AWS_CONFIG_FILE",
                self.dir.path().join("aws-config").display().to_string(),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir
                    .path()
                    .join("aws-credentials")
                    .display()
                    .to_string(),
            ),
        ]
    }

    /// Runs the `aws` CLI against this server (`--endpoint-url` added) and returns its output.
    ///
    /// # Panics
    /// If the CLI is not installed or cannot start.
    #[must_use]
    pub fn aws(&self, args: &[&str]) -> Output {
        Command::new(venv::bin("aws"))
            .arg("--endpoint-url")
            .arg(self.endpoint())
            .args(args)
            .envs(self.aws_env())
            .output()
            .expect("run the aws CLI")
    }

    /// Downloads `key` from the bucket into `dest` with `aws s3 cp`.
    ///
    /// # Panics
    /// If the download fails (with the CLI's stderr).
    pub fn download(&self, key: &str, dest: &Path) {
        let out = self.aws(&[
            "s3",
            "cp",
            "--only-show-errors",
            &format!("s3://{}/{key}", self.bucket),
            &dest.display().to_string(),
        ]);
        assert!(
            out.status.success(),
            "aws s3 cp of {key} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The keys in the bucket under `prefix` (all keys for `""`), sorted.
    ///
    /// # Panics
    /// If the listing fails.
    #[must_use]
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.keys_in(&self.bucket, prefix)
    }

    /// The keys of multipart uploads started and neither completed nor aborted.
    ///
    /// # Panics
    /// If the listing fails.
    #[must_use]
    pub fn pending_multipart_uploads(&self) -> Vec<String> {
        let out = self.aws(&[
            "s3api",
            "list-multipart-uploads",
            "--bucket",
            &self.bucket,
            "--query",
            "Uploads[].Key",
            "--output",
            "text",
        ]);
        assert!(
            out.status.success(),
            "listing multipart uploads failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|k| *k != "None")
            .map(str::to_owned)
            .collect()
    }

    /// Puts a small object with the CLI (to seed a bucket as another writer would).
    ///
    /// # Panics
    /// If the upload fails.
    pub fn put(&self, key: &str, body: &[u8]) {
        let src = self.dir.path().join(format!("put-{}", free_port()));
        std::fs::write(&src, body).expect("write upload source");
        let out = self.aws(&[
            "s3api",
            "put-object",
            "--bucket",
            &self.bucket,
            "--key",
            key,
            "--body",
            &src.display().to_string(),
        ]);
        let _ = std::fs::remove_file(&src);
        assert!(
            out.status.success(),
            "put of {key} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates another bucket, with S3 Object Lock enabled (and so versioning) when
    /// `object_lock` is set: `aws s3api create-bucket --object-lock-enabled-for-bucket`.
    ///
    /// # Panics
    /// If the CLI fails.
    pub fn create_bucket(&self, bucket: &str, object_lock: bool) {
        let mut args = vec!["s3api", "create-bucket", "--bucket", bucket];
        if object_lock {
            args.push("--object-lock-enabled-for-bucket");
        }
        self.aws_ok(&args);
    }

    /// Sets a bucket's default retention (`put-object-lock-configuration`): every new object
    /// version that asks for no lock of its own gets `mode` for `days`.
    ///
    /// # Panics
    /// If the CLI fails.
    pub fn set_default_retention(&self, bucket: &str, mode: &str, days: u32) {
        let config = format!(
            r#"{{"ObjectLockEnabled":"Enabled","Rule":{{"DefaultRetention":{{"Mode":"{mode}","Days":{days}}}}}}}"#
        );
        self.aws_ok(&[
            "s3api",
            "put-object-lock-configuration",
            "--bucket",
            bucket,
            "--object-lock-configuration",
            &config,
        ]);
    }

    /// `aws s3api head-object` of `key` in `bucket` with checksum mode enabled, as JSON
    /// (`ObjectLockMode`, `ObjectLockRetainUntilDate`, `LastModified`, `ChecksumSHA256`, ...).
    ///
    /// # Panics
    /// If the CLI fails or prints no JSON.
    #[must_use]
    pub fn head_object(&self, bucket: &str, key: &str) -> serde_json::Value {
        let out = self.aws_ok(&[
            "s3api",
            "head-object",
            "--bucket",
            bucket,
            "--key",
            key,
            "--checksum-mode",
            "ENABLED",
        ]);
        serde_json::from_slice(&out.stdout).expect("head-object prints JSON")
    }

    /// The keys under `prefix` in `bucket` (current versions only: what a listing shows).
    ///
    /// # Panics
    /// If the listing fails.
    #[must_use]
    pub fn keys_in(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.aws_ok(&[
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--prefix",
            prefix,
            "--query",
            "Contents[].Key",
            "--output",
            "text",
        ]);
        let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|k| *k != "None")
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    /// `aws s3api list-object-versions` under `prefix` in `bucket`, as JSON (`Versions`,
    /// `DeleteMarkers`).
    ///
    /// # Panics
    /// If the listing fails.
    #[must_use]
    pub fn versions(&self, bucket: &str, prefix: &str) -> serde_json::Value {
        let out = self.aws_ok(&[
            "s3api",
            "list-object-versions",
            "--bucket",
            bucket,
            "--prefix",
            prefix,
        ]);
        serde_json::from_slice(&out.stdout).expect("list-object-versions prints JSON")
    }

    /// Runs the `aws` CLI and asserts it succeeded.
    ///
    /// # Panics
    /// If it fails (with its stderr).
    pub fn aws_ok(&self, args: &[&str]) -> Output {
        let out = self.aws(args);
        assert!(
            out.status.success(),
            "aws {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The server's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        self.server.log()
    }
}
