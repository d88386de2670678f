//! One store contract, every store: the same cases run over the directory, S3 (SeaweedFS), GCS
//! (fake-gcs-server) and Azure Blob (Azurite), as `object_store` runs one suite over its
//! backends. Each case runs the shipped code (the sync step's `run_with` and binary, the
//! restore step's fetch) against a real server and checks the outcome through the server's
//! own listing, not through the store under test.
//!
//! The cases: upload and verify; a re-sync uploads nothing; a failed (aborted or abandoned)
//! upload leaves nothing visible; SIGTERM in the middle of an upload leaves no snapshot
//! visible; retention; the list of complete snapshots; a restore fetch.

// Our own file names, lower-case by construction.
#![allow(clippy::case_sensitive_file_extension_comparisons)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use snapshot_sync::{CancellationToken, Config, RawConfig, run_with};
use vault_backup_common::artifact::{self, Artifact};
use vault_backup_testbed::azurite::Azurite;
use vault_backup_testbed::check::{files, sha256sum_check};
use vault_backup_testbed::fake_gcs::FakeGcs;
use vault_backup_testbed::fixture;
use vault_backup_testbed::seaweed::SeaweedFs;
use vault_backup_testbed::venv;
use vault_restore::config::Source;

/// Where snapshots go inside a bucket or container.
const PREFIX: &str = "backups/vault";

/// The stores under test.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Dir,
    S3,
    Gcs,
    Azure,
}

/// A running store: its server (if any), the environment that selects it, and an independent
/// view of what it holds.
struct Backend {
    kind: Kind,
    dir: tempfile::TempDir,
    s3: Option<SeaweedFs>,
    gcs: Option<FakeGcs>,
    azure: Option<Azurite>,
}

impl Backend {
    fn start(kind: Kind) -> Self {
        let mut me = Self {
            kind,
            dir: tempfile::tempdir().unwrap(),
            s3: None,
            gcs: None,
            azure: None,
        };
        match kind {
            Kind::Dir => {}
            Kind::S3 => me.s3 = Some(SeaweedFs::start("backups")),
            Kind::Gcs => me.gcs = Some(FakeGcs::start("backups")),
            Kind::Azure => me.azure = Some(Azurite::start("backups")),
        }
        me
    }

    /// The store's name in the sync step's report.
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Dir => "dir",
            Kind::S3 => "s3",
            Kind::Gcs => "gcs",
            Kind::Azure => "azure",
        }
    }

    /// The variables that select this store, as a user sets them.
    fn env(&self) -> Vec<(String, String)> {
        let pairs = |v: &[(&str, String)]| {
            v.iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<Vec<_>>()
        };
        match self.kind {
            Kind::Dir => pairs(&[("BACKUP_DIR", self.dir.path().display().to_string())]),
            Kind::S3 => {
                let s3 = self.s3.as_ref().unwrap();
                pairs(&[
                    ("S3_ENDPOINT", s3.endpoint()),
                    ("S3_BUCKET", s3.bucket().to_owned()),
                    ("S3_PREFIX", PREFIX.to_owned()),
                    ("AWS_ACCESS_KEY_ID", s3.access_key().to_owned()),
                    ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_owned()),
                ])
            }
            Kind::Gcs => {
                let mut env = self.gcs.as_ref().unwrap().env();
                env.push(("GCS_PREFIX".into(), PREFIX.into()));
                env
            }
            Kind::Azure => {
                let mut env = self.azure.as_ref().unwrap().env();
                env.push(("AZURE_PREFIX".into(), PREFIX.into()));
                env
            }
        }
    }

    /// The sync step's configuration for `ws` with this store only.
    fn config(&self, ws: &Path, extra: &[(&str, &str)]) -> Config {
        let mut vars = self.env();
        vars.push(("SNAPSHOT_DIR".into(), ws.display().to_string()));
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let raw: RawConfig = vault_backup_common::env::from_iter(vars).unwrap();
        Config::try_from(raw).unwrap()
    }

    /// The store as the restore step opens it.
    fn restore_source(&self, ws: &Path) -> Source {
        let c = self.config(ws, &[]);
        match self.kind {
            Kind::Dir => Source::Dir(c.backup_dir.unwrap()),
            Kind::S3 => Source::S3(c.s3.unwrap()),
            Kind::Gcs => Source::Gcs(c.gcs.unwrap()),
            Kind::Azure => Source::Azure(c.azure.unwrap()),
        }
    }

    /// The file names the store holds, from the server's own listing (or the directory),
    /// sorted.
    fn files(&self) -> Vec<String> {
        let strip = |keys: Vec<String>| {
            let mut names: Vec<String> = keys
                .into_iter()
                .filter_map(|k| k.strip_prefix(&format!("{PREFIX}/")).map(str::to_owned))
                .collect();
            names.sort();
            names
        };
        match self.kind {
            Kind::Dir => files(self.dir.path()),
            Kind::S3 => strip(self.s3.as_ref().unwrap().keys(PREFIX)),
            Kind::Gcs => strip(self.gcs.as_ref().unwrap().keys(PREFIX)),
            Kind::Azure => strip(self.azure.as_ref().unwrap().keys(PREFIX)),
        }
    }

    /// The server's log, for a failing case.
    fn log(&self) -> String {
        match self.kind {
            Kind::Dir => String::new(),
            Kind::S3 => self.s3.as_ref().unwrap().log(),
            Kind::Gcs => self.gcs.as_ref().unwrap().log(),
            Kind::Azure => self.azure.as_ref().unwrap().log(),
        }
    }
}

fn at(d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A snapshot as the snapshot step leaves it, named `vault-<time>`.
fn write_snapshot(ws: &Path, time: DateTime<Utc>, bytes: u64) -> Artifact {
    fixture::write_snapshot(ws, "vault", time, bytes)
}

/// A large snapshot file of random bytes (no tar: quicker to make), with its sidecars.
fn write_big_snapshot(ws: &Path, time: DateTime<Utc>, bytes: u64) -> Artifact {
    fixture::write_big_snapshot(ws, "vault", time, bytes)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Upload and verify: the three files, checked by SHA-256, and what the store holds passes
/// `sha256sum -c` after a plain download.
fn upload_and_verify(kind: Kind) {
    let b = Backend::start(kind);
    let ws = tempfile::tempdir().unwrap();
    let a = write_snapshot(ws.path(), at(24, 6), 3 << 20);
    let summary = runtime()
        .block_on(run_with(
            b.config(ws.path(), &[]),
            &CancellationToken::new(),
            Utc::now(),
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    let report = &summary.stores[0];
    assert_eq!(report.store, b.name());
    assert!(report.ok() && !report.already_there, "{report:?}");
    assert_eq!(
        report
            .verification
            .map(snapshot_sync::upload::Verification::as_str),
        Some("sha256"),
        "{report:?}"
    );
    assert_eq!(
        b.files(),
        sorted(a.files_in_write_order().to_vec()),
        "{}",
        b.log()
    );
    // Through the store's own reads, as a person downloading would, then `sha256sum -c`.
    let store = vault_restore::fetch::open(&b.restore_source(ws.path())).unwrap();
    let dl = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        for f in [a.snap_file(), a.sha256_file()] {
            let body = store.read(&f).await.unwrap().unwrap();
            std::fs::write(dl.path().join(&f), body).unwrap();
        }
    });
    sha256sum_check(dl.path(), &a.sha256_file());
}

/// A second sync of the same snapshot finds it there and uploads nothing.
fn resync_uploads_nothing(kind: Kind) {
    let b = Backend::start(kind);
    let ws = tempfile::tempdir().unwrap();
    write_snapshot(ws.path(), at(24, 6), 1 << 20);
    let rt = runtime();
    let run = || {
        rt.block_on(run_with(
            b.config(ws.path(), &[]),
            &CancellationToken::new(),
            Utc::now(),
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log()))
    };
    let first = run();
    assert!(!first.stores[0].already_there);
    let before = b.files();
    let second = run();
    let report = &second.stores[0];
    assert!(report.ok() && report.already_there, "{report:?}");
    assert_eq!(
        report
            .verification
            .map(snapshot_sync::upload::Verification::as_str),
        Some("sha256")
    );
    assert_eq!(b.files(), before);
}

/// An upload given up (aborted, as on any failure) or abandoned (the process gone before
/// finishing) leaves nothing under the name: the store's `begin`/`write`/`abort` contract.
fn a_failed_upload_leaves_nothing_visible(kind: Kind) {
    let b = Backend::start(kind);
    let ws = tempfile::tempdir().unwrap();
    let store = vault_restore::fetch::open(&b.restore_source(ws.path())).unwrap();
    let chunk = Bytes::from(vec![7u8; store.chunk_size()]);
    runtime().block_on(async {
        let mut aborted = store.begin("vault-20261124T060000Z.snap").await.unwrap();
        for _ in 0..3 {
            aborted.write(chunk.clone()).await.unwrap();
        }
        aborted.abort().await.unwrap();

        let mut abandoned = store.begin("vault-20261124T070000Z.snap").await.unwrap();
        for _ in 0..3 {
            abandoned.write(chunk.clone()).await.unwrap();
        }
        drop(abandoned);

        for f in ["vault-20261124T060000Z.snap", "vault-20261124T070000Z.snap"] {
            assert_eq!(store.size(f).await.unwrap(), None, "{f} is visible");
        }
        let listed: Vec<String> = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        // The directory's temp files are its own business (removed once stale); nothing may
        // carry a snapshot's name.
        assert!(
            !listed.iter().any(|n| n.ends_with(".snap")),
            "the store lists {listed:?}"
        );
    });
    assert!(
        !b.files().iter().any(|n| n.ends_with(".snap")),
        "the server holds {:?}",
        b.files()
    );
}

/// SIGTERM while the snapshot is on its way: exit 1, and no snapshot visible (the directory
/// may have finished its local copy first; then it is whole, with its checksum file).
fn sigterm_mid_upload_leaves_no_snapshot_visible(kind: Kind) {
    let b = Backend::start(kind);
    let ws = tempfile::tempdir().unwrap();
    let a = write_big_snapshot(ws.path(), at(24, 6), 96 << 20);
    let mut cmd = Command::new(venv::workspace_bin("snapshot-sync"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("SNAPSHOT_DIR", ws.path())
        .envs(b.env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("upload started") {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.contains("upload started")),
        "{}",
        seen.join("\n")
    );
    run_ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let status = child.wait().unwrap();
    seen.extend(lines.map_while(Result::ok));
    let stderr = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    let held = b.files();
    assert!(!held.iter().any(|f| f.ends_with(".tmp")), "{held:?}");
    if held.contains(&a.snap_file()) {
        assert!(
            matches!(kind, Kind::Dir) && held.contains(&a.sha256_file()),
            "{held:?}\n{stderr}"
        );
        sha256sum_check(b.dir.path(), &a.sha256_file());
    }
    assert!(!held.contains(&a.sha256_file()) || held.contains(&a.snap_file()));
}

/// Retention: of five dated snapshots and the current one, `RETAIN_LAST=2` keeps two, and
/// leaves files that are not this prefix's snapshots alone.
fn retention(kind: Kind) {
    let b = Backend::start(kind);
    let rt = runtime();
    // Seed five earlier snapshots through the sync step itself, one run each.
    for d in 19..=23 {
        let ws = tempfile::tempdir().unwrap();
        write_snapshot(ws.path(), at(d, 6), 1 << 10);
        rt.block_on(run_with(
            b.config(ws.path(), &[]),
            &CancellationToken::new(),
            at(d, 7),
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    }
    let store = vault_restore::fetch::open(&b.restore_source(Path::new("/"))).unwrap();
    rt.block_on(store.put("README.md", b"not a snapshot".to_vec()))
        .unwrap();
    let ws = tempfile::tempdir().unwrap();
    let current = write_snapshot(ws.path(), at(24, 6), 1 << 10);
    let summary = rt
        .block_on(run_with(
            b.config(ws.path(), &[("RETAIN_LAST", "2")]),
            &CancellationToken::new(),
            at(24, 7),
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    let report = &summary.stores[0];
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.deleted.len(), 4, "{report:?}");
    let mut want: Vec<String> = [Artifact::timestamped("vault", at(23, 6)), current]
        .iter()
        .flat_map(|a| a.files_in_write_order().to_vec())
        .collect();
    want.push("README.md".into());
    assert_eq!(b.files(), sorted(want));
}

/// The list of complete snapshots: the newest with both its `.snap` and `.sha256`, not a newer
/// one without its checksum file.
fn newest_complete_snapshot(kind: Kind) {
    let b = Backend::start(kind);
    let store = vault_restore::fetch::open(&b.restore_source(Path::new("/"))).unwrap();
    let rt = runtime();
    rt.block_on(async {
        for (name, complete) in [
            ("vault-20261122T060000Z", true),
            ("vault-20261123T060000Z", true),
            ("vault-20261124T060000Z", false),
            ("other-20261125T060000Z", true),
        ] {
            store
                .put(&format!("{name}.snap"), b"x".to_vec())
                .await
                .unwrap();
            if complete {
                store
                    .put(&format!("{name}.snap.sha256"), b"y".to_vec())
                    .await
                    .unwrap();
            }
        }
        assert_eq!(
            vault_restore::fetch::newest(store.as_ref(), "vault")
                .await
                .unwrap(),
            "vault-20261123T060000Z"
        );
    });
}

/// A restore fetch: the restore step's own fetch of the newest snapshot, verified against its
/// `.sha256` and its archive's `SHA256SUMS`.
fn restore_fetch(kind: Kind) {
    let b = Backend::start(kind);
    let ws = tempfile::tempdir().unwrap();
    let a = write_snapshot(ws.path(), at(24, 6), 9 << 20);
    let rt = runtime();
    rt.block_on(run_with(
        b.config(ws.path(), &[]),
        &CancellationToken::new(),
        Utc::now(),
    ))
    .unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    let target = tempfile::tempdir().unwrap();
    let store = vault_restore::fetch::open(&b.restore_source(ws.path())).unwrap();
    let fetched = rt.block_on(async {
        let name = vault_restore::fetch::newest(store.as_ref(), "vault")
            .await
            .unwrap();
        let sidecars = vault_restore::fetch::sidecars(store.as_ref(), &name)
            .await
            .unwrap();
        vault_restore::fetch::fetch(
            store.as_ref(),
            &name,
            target.path(),
            sidecars,
            Duration::from_secs(120),
        )
        .await
        .unwrap()
    });
    assert_eq!(fetched.name, a.name());
    let (sha, bytes) = artifact::hash_file(&ws.path().join(a.snap_file())).unwrap();
    assert_eq!((fetched.sha256, fetched.bytes), (sha, bytes));
    assert!(fetched.manifest.is_some());
    assert_eq!(
        std::fs::read(&fetched.path).unwrap(),
        std::fs::read(ws.path().join(a.snap_file())).unwrap()
    );
}

/// Every case for one store, as a module of tests.
macro_rules! conformance {
    ($store:ident, $kind:expr) => {
        mod $store {
            use super::*;

            #[test]
            fn upload_and_verify() {
                super::upload_and_verify($kind);
            }
            #[test]
            fn resync_uploads_nothing() {
                super::resync_uploads_nothing($kind);
            }
            #[test]
            fn a_failed_upload_leaves_nothing_visible() {
                super::a_failed_upload_leaves_nothing_visible($kind);
            }
            #[test]
            fn sigterm_mid_upload_leaves_no_snapshot_visible() {
                super::sigterm_mid_upload_leaves_no_snapshot_visible($kind);
            }
            #[test]
            fn retention() {
                super::retention($kind);
            }
            #[test]
            fn newest_complete_snapshot() {
                super::newest_complete_snapshot($kind);
            }
            #[test]
            fn restore_fetch() {
                super::restore_fetch($kind);
            }
        }
    };
}

conformance!(dir, Kind::Dir);
conformance!(s3, Kind::S3);
conformance!(gcs, Kind::Gcs);
conformance!(azure, Kind::Azure);
