//! Failures a real server will not produce on demand, from a canned HTTP server: a body cut
//! short, a tampered archive, a sealed node. None may leave a `.snap` behind; each exits 1
//! after its retries. Plus configuration errors, which exit 2 with one line.

#![allow(clippy::case_sensitive_file_extension_comparisons)]

mod common;

use common::{files, run_bin};
use vault_backup_testbed::canned::{CannedVault, Snapshot};

/// A small archive shaped like Vault's, made by the same code path the archive unit tests use:
/// here from a real gzip tar built in the test.
fn archive() -> Vec<u8> {
    use flate2::{Compression, write::GzEncoder};
    use sha2::{Digest, Sha256};
    let state = vec![42u8; 200_000];
    let meta = format!(
        r#"{{"Version":1,"Index":7,"Term":3,"Size":{}}}"#,
        state.len()
    );
    let sums = format!(
        "{}  meta.json\n{}  state.bin\n",
        hex::encode(Sha256::digest(meta.as_bytes())),
        hex::encode(Sha256::digest(&state))
    );
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, data) in [
        ("meta.json", meta.as_bytes()),
        ("state.bin", &state[..]),
        ("SHA256SUMS", sums.as_bytes()),
        ("SHA256SUMS.sealed", b"sealed".as_slice()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn run_against(server: &CannedVault, dir: &std::path::Path) -> (i32, String) {
    run_bin(&[
        ("VAULT_ADDR", server.addr()),
        ("VAULT_TOKEN", "s.canned-token"),
        ("SNAPSHOT_DIR", &dir.display().to_string()),
        ("SNAPSHOT_RETRIES", "2"),
        ("SNAPSHOT_RETRY_DELAY", "1s"),
    ])
}

#[test]
fn a_body_cut_short_leaves_nothing_and_exits_1_after_retries() {
    let data = archive();
    let server = CannedVault::start(vec![Snapshot::CutAfter(data.clone(), data.len() / 2)]);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_against(&server, dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(server.snapshot_requests(), 3, "one attempt and two retries");
    assert!(
        stderr.contains("no verified snapshot after 3 attempts"),
        "{stderr}"
    );
    assert!(
        stderr.contains("backing off 1.0s, retry 1 of 2") && stderr.contains("retry 2 of 2"),
        "{stderr}"
    );
    assert!(
        files(dir.path()).is_empty(),
        "left behind: {:?}",
        files(dir.path())
    );
    assert!(!stderr.contains("s.canned-token"));
}

#[test]
fn a_tampered_archive_leaves_nothing_and_exits_1() {
    let mut data = archive();
    let at = data.len() / 2;
    data[at] ^= 0x5a;
    let server = CannedVault::start(vec![Snapshot::Body(data)]);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_against(&server, dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(server.snapshot_requests(), 3);
    assert!(stderr.contains("is not a whole raft snapshot"), "{stderr}");
    assert!(
        files(dir.path()).is_empty(),
        "left behind: {:?}",
        files(dir.path())
    );
}

#[test]
fn a_bad_first_answer_then_a_good_one_succeeds_on_retry() {
    let good = archive();
    let server = CannedVault::start(vec![
        Snapshot::CutAfter(good.clone(), 1000),
        Snapshot::Status(503, "Vault is sealed".into()),
        Snapshot::Body(good),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_against(&server, dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("is sealed"),
        "the sealed answer is reported: {stderr}"
    );
    let names = files(dir.path());
    assert_eq!(names.len(), 3, "{names:?}");
    let sha = names.iter().find(|f| f.ends_with(".snap.sha256")).unwrap();
    common::sha256sum_check(dir.path(), sha);
}

#[test]
fn a_missing_sealed_sums_file_is_refused() {
    // What a standby served in upstream Vault issue 15258.
    use flate2::{Compression, write::GzEncoder};
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_cksum();
    b.append_data(&mut h, "meta.json", &b"{}"[..]).unwrap();
    let data = b.into_inner().unwrap().finish().unwrap();
    let server = CannedVault::start(vec![Snapshot::Body(data)]);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_against(&server, dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("15258"), "{stderr}");
    assert!(files(dir.path()).is_empty());
}

#[test]
fn sigterm_during_the_download_removes_the_partial_file() {
    let data = archive();
    let server = CannedVault::start(vec![Snapshot::StallAfter(data.clone(), data.len() / 2)]);
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_vault-snapshot"))
        .env_clear()
        .envs([
            ("VAULT_ADDR", server.addr()),
            ("VAULT_TOKEN", "s.canned-token"),
            ("SNAPSHOT_DIR", &dir.path().display().to_string()),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The temp file exists once the body is streaming (the server then stalls mid-body).
    vault_backup_testbed::process::wait_until(
        "the partial download",
        std::time::Duration::from_secs(20),
        || {
            files(dir.path())
                .iter()
                .any(|f| f.starts_with(".vault-backup-"))
        },
    );
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interrupted by SIGTERM; the partial download was removed"),
        "{stderr}"
    );
    assert!(
        files(dir.path()).is_empty(),
        "left behind: {:?}",
        files(dir.path())
    );
}

#[test]
fn config_errors_exit_2_with_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    for (envs, want) in [
        (
            vec![("SNAPSHOT_DIR", d.as_str()), ("VAULT_TOKEN", "t")],
            "VAULT_ADDR: is required",
        ),
        (
            vec![
                ("VAULT_ADDR", "http://127.0.0.1:1"),
                ("SNAPSHOT_DIR", d.as_str()),
            ],
            "VAULT_TOKEN: no Vault login configured",
        ),
        (
            vec![
                ("VAULT_ADDR", "http://127.0.0.1:1"),
                ("SNAPSHOT_DIR", d.as_str()),
                ("VAULT_TOKEN", "t"),
                ("SNAPSHOT_RETRIES", "x"),
            ],
            "SNAPSHOT_RETRIES: expected a whole number",
        ),
    ] {
        let (code, stderr) = run_bin(&envs);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(want), "want {want:?} in {stderr:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
    }
}

#[test]
fn version_flag_prints_the_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vault-snapshot"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        concat!("vault-snapshot ", env!("CARGO_PKG_VERSION"))
    );
}
