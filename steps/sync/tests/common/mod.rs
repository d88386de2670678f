//! Shared fixtures for the sync step's integration tests: workspaces with real snapshot
//! artifacts, the binary with a clean environment, and checks with the tools a person would use.

#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use vault_backup_common::artifact::{self, Artifact, MANIFEST_VERSION, Manifest};
use vault_backup_testbed::seaweed::SeaweedFs;

pub const PREFIX_IN_BUCKET: &str = "backups/vault";

pub fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// Each test binary uses its own part of these.
#[allow(unused_imports)]
pub use vault_backup_testbed::fixture::{write_big_snapshot, write_snapshot};

/// `sha256sum FILE` → (hex, size).
pub fn sha256sum(path: &Path) -> (String, u64) {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.split_whitespace().next().unwrap().to_owned();
    (hex, std::fs::metadata(path).unwrap().len())
}

/// Flips one byte (XOR 0xff) in the middle of a file, well past any header.
pub fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

// Each test binary includes this module and uses a different part of it.
#[allow(unused_imports)]
pub use vault_backup_testbed::check::{files, sha256sum_check};

/// The environment for the binary with SeaweedFS as the S3 store, plain form.
pub fn s3_env(s3: &SeaweedFs) -> BTreeMap<String, String> {
    [
        ("S3_ENDPOINT", s3.endpoint()),
        ("S3_BUCKET", s3.bucket().to_owned()),
        ("S3_PREFIX", PREFIX_IN_BUCKET.to_owned()),
        ("AWS_ACCESS_KEY_ID", s3.access_key().to_owned()),
        ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The step's binary with exactly `env` (plus PATH), nothing inherited.
pub fn command(env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_snapshot-sync"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .envs(env)
        .stdin(Stdio::null());
    cmd
}

/// Runs the binary to completion.
pub fn run_binary(env: &BTreeMap<String, String>) -> (Option<i32>, String) {
    let Output { status, stderr, .. } = command(env).output().unwrap();
    (status.code(), String::from_utf8_lossy(&stderr).into_owned())
}

/// A running binary whose stderr lines arrive on a channel (and are kept for the assertion
/// messages).
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn spawn(env: &BTreeMap<String, String>) -> Self {
        let mut child = command(env)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing every one of `needles`.
    pub fn wait_for_line(&mut self, needles: &[&str], timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if needles.iter().all(|n| line.contains(n)) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {
                    panic!(
                        "no line with {needles:?} within {timeout:?}; stderr so far:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// Waits for the exit and returns the code and the whole of stderr.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status.code(), self.seen.join("\n"))
    }
}

/// A temp directory path as a string.
pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Stage dated snapshots (tiny `.snap` files with proper sidecars) in `dir`.
pub fn stage_dated(dir: &Path, prefix: &str, times: &[DateTime<Utc>]) -> Vec<Artifact> {
    times
        .iter()
        .map(|t| {
            let a = Artifact::timestamped(prefix, *t);
            let body = format!("snapshot taken at {t}\n");
            std::fs::write(dir.join(a.snap_file()), &body).unwrap();
            let (sha, bytes) = sha256sum(&dir.join(a.snap_file()));
            let m = Manifest {
                manifest_version: MANIFEST_VERSION,
                name: a.name().to_owned(),
                file: a.snap_file(),
                bytes,
                sha256: sha,
                created_at: *t,
                leader_address: "http://127.0.0.1:8200".into(),
                server_version: None,
                raft_index: 1,
                raft_term: 1,
                tool: "sync-tests".into(),
                canary: None,
                cluster_name: None,
                cluster_id: None,
                seal_type: None,
                health: None,
            };
            artifact::write_sidecars(dir, &a, &m).unwrap();
            a
        })
        .collect()
}

/// Copies every file of `dir` into the bucket under [`PREFIX_IN_BUCKET`] with one CLI call.
pub fn seed_bucket(s3: &SeaweedFs, dir: &Path) {
    seed_bucket_in(s3, s3.bucket(), dir);
}

/// Copies every file of `dir` into `bucket` under [`PREFIX_IN_BUCKET`] with one CLI call.
pub fn seed_bucket_in(s3: &SeaweedFs, bucket: &str, dir: &Path) {
    s3.aws_ok(&[
        "s3",
        "cp",
        "--recursive",
        "--only-show-errors",
        &s(dir),
        &format!("s3://{bucket}/{PREFIX_IN_BUCKET}/"),
    ]);
}

/// Keys under [`PREFIX_IN_BUCKET`], without the prefix.
pub fn bucket_files(s3: &SeaweedFs) -> Vec<String> {
    s3.keys(&format!("{PREFIX_IN_BUCKET}/"))
        .into_iter()
        .map(|k| {
            k.trim_start_matches(&format!("{PREFIX_IN_BUCKET}/"))
                .to_owned()
        })
        .collect()
}

pub fn path_of(dir: &Path, file: &str) -> PathBuf {
    dir.join(file)
}

/// Every object in the bucket with what identifies its bytes: `key etag size last-modified`,
/// one line each, sorted (a rewritten object gets a new ETag or at least a new Last-Modified).
pub fn bucket_objects(s3: &SeaweedFs) -> Vec<String> {
    let out = s3.aws(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        s3.bucket(),
        "--query",
        "Contents[].[Key,ETag,Size,LastModified]",
        "--output",
        "text",
    ]);
    assert!(
        out.status.success(),
        "listing failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty() && l.trim() != "None")
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// Every file in `dir` with its bytes and modification time, sorted by name.
pub fn dir_contents(dir: &Path) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    files(dir)
        .into_iter()
        .map(|f| {
            let p = dir.join(&f);
            let modified = std::fs::metadata(&p).unwrap().modified().unwrap();
            (f, std::fs::read(&p).unwrap(), modified)
        })
        .collect()
}
