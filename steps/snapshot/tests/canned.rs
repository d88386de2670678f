//! Failures a real server will not produce on demand, from a canned HTTP server: a body cut
//! short, a tampered archive, a sealed node. None may leave a `.snap` behind; each exits 1
//! after its retries. Plus configuration errors, which exit 2 with one line.

#![allow(clippy::case_sensitive_file_extension_comparisons)]

mod common;

use common::{files, run_bin};
use vault_backup_testbed::canned::{CannedVault, Setup, Snapshot, test_tls};

/// A small archive shaped like Vault's: a real gzip tar built in the test.
fn archive() -> Vec<u8> {
    archive_without("")
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
    let started = chrono::Utc::now();
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
    // Named when the transfer that succeeded started (after backoffs of 1 s and 2 s), not when
    // the run started.
    let stamp = sha
        .trim_start_matches("vault-")
        .trim_end_matches(".snap.sha256");
    let name_time = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc();
    assert!(
        name_time.timestamp() >= started.timestamp() + 2,
        "named {name_time}, run started {started}"
    );
}

#[test]
fn a_429_is_a_rate_limit_retried_not_an_election() {
    let server = CannedVault::start(vec![
        Snapshot::Status(429, "request path: rate limit quota exceeded".into()),
        Snapshot::Body(archive()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_against(&server, dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("429 Too Many Requests (a rate limit or lease count quota)")
            && stderr.contains("backing off"),
        "{stderr}"
    );
    assert!(!stderr.contains("election"), "{stderr}");
}

#[test]
fn the_namespace_is_not_sent_on_the_snapshot_request() {
    // Vault Enterprise serves sys/storage/raft/snapshot from the root namespace only.
    let server = CannedVault::start(vec![Snapshot::Body(archive())]);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", server.addr()),
        ("VAULT_TOKEN", "s.canned-token"),
        ("VAULT_NAMESPACE", "team-a"),
        ("SNAPSHOT_DIR", &dir.path().display().to_string()),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let snapshot: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.line.contains("/v1/sys/storage/raft/snapshot"))
        .collect();
    assert_eq!(snapshot.len(), 1);
    assert!(snapshot[0].has("x-vault-token"), "{snapshot:?}");
    assert!(!snapshot[0].has("x-vault-namespace"), "{snapshot:?}");
}

/// `archive()`'s members without `leave_out`, in Vault's order, with `SHA256SUMS` listing
/// `meta.json` and `state.bin` as Vault's does.
fn archive_without(leave_out: &str) -> Vec<u8> {
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
        if name == leave_out {
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[test]
fn a_missing_sealed_sums_file_is_refused_naming_upstream_issue_15258() {
    // What a standby served in upstream Vault issue 15258: everything but SHA256SUMS.sealed.
    let server = CannedVault::start(vec![Snapshot::Body(archive_without("SHA256SUMS.sealed"))]);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_against(&server, dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the archive has no SHA256SUMS.sealed") && stderr.contains("15258"),
        "{stderr}"
    );
    assert!(files(dir.path()).is_empty());
}

#[test]
fn another_missing_member_is_refused_without_blaming_issue_15258() {
    let server = CannedVault::start(vec![Snapshot::Body(archive_without("state.bin"))]);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_against(&server, dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("the archive has no state.bin"), "{stderr}");
    assert!(
        !stderr.contains("15258"),
        "issue 15258 is about SHA256SUMS.sealed only: {stderr}"
    );
    assert!(files(dir.path()).is_empty());
}

/// No request that reached `server` carried a credential.
fn assert_no_credential_reached(server: &CannedVault) {
    for r in server.requests() {
        assert!(
            !r.has("x-vault-token") && !r.has("authorization") && !r.line.contains("/login"),
            "a credential reached {}: {r:?}",
            server.addr()
        );
    }
}

#[test]
fn a_redirect_to_a_foreign_listener_is_not_followed_and_gets_no_token() {
    // A node that said it leads, then answers the snapshot request with a 307 elsewhere (as a
    // standby with disable_standby_reads does after losing an election). OpenBao only ever
    // redirects to the leader it knows, so a redirect to a foreign listener needs a canned node.
    let foreign = CannedVault::start(vec![Snapshot::Body(archive())]);
    let node = CannedVault::start(vec![Snapshot::Redirect(format!(
        "{}/v1/sys/storage/raft/snapshot",
        foreign.addr()
    ))]);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_against(&node, dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("redirected the snapshot to {}", foreign.addr())),
        "{stderr}"
    );
    assert_eq!(node.snapshot_requests(), 3, "one attempt and two retries");
    assert_eq!(
        foreign.requests().len(),
        0,
        "the foreign listener was never asked: {:?}",
        foreign.requests()
    );
    assert_no_credential_reached(&foreign);
    assert!(files(dir.path()).is_empty());
}

#[test]
fn a_redirect_to_the_leader_itself_is_followed() {
    // The same origin as the leader sys/leader named: followed, and the snapshot is saved.
    let node = CannedVault::start(vec![
        Snapshot::Redirect("/v1/sys/storage/raft/snapshot".into()),
        Snapshot::Body(archive()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_against(&node, dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(node.snapshot_requests(), 2);
    assert!(!stderr.contains("backing off"), "{stderr}");
    let sha = files(dir.path())
        .into_iter()
        .find(|f| f.ends_with(".snap.sha256"))
        .expect("a snapshot");
    common::sha256sum_check(dir.path(), &sha);
}

#[test]
fn a_leader_named_with_another_scheme_gets_no_credential() {
    // VAULT_ADDR is https; the standby names a plain-http leader (a mistaken api_addr, or
    // someone on the path). Nothing may go there in plain text: the run stops at once, exit 1.
    // A canned TLS standby, because OpenBao only names the api_addr its leader was given.
    let certs = tempfile::tempdir().unwrap();
    let tls = test_tls(certs.path());
    let plain = CannedVault::start(vec![Snapshot::Body(archive())]);
    let standby = CannedVault::start_with(
        vec![Snapshot::Status(500, "not expected here".into())],
        Setup {
            leader_address: Some(plain.addr().to_owned()),
            tls: Some(tls.clone()),
        },
    );
    assert!(standby.addr().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", standby.addr()),
        ("VAULT_CACERT", &tls.ca.display().to_string()),
        ("VAULT_TOKEN", "s.canned-token"),
        ("SNAPSHOT_DIR", &dir.path().display().to_string()),
        ("SNAPSHOT_RETRIES", "2"),
        ("SNAPSHOT_RETRY_DELAY", "1s"),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("Service of the active node") && stderr.contains(plain.addr()),
        "{stderr}"
    );
    assert!(!stderr.contains("backing off"), "not retried: {stderr}");
    assert!(
        standby
            .requests()
            .iter()
            .any(|r| r.line.contains("/v1/sys/leader")),
        "the standby was asked: {:?}",
        standby.requests()
    );
    assert_eq!(
        plain.connections(),
        0,
        "nothing was sent to the plain-http leader: {:?}",
        plain.requests()
    );
    assert_no_credential_reached(&plain);
    assert!(!stderr.contains("s.canned-token"));
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
        (
            vec![
                ("VAULT_ADDR", "http://127.0.0.1:1"),
                ("SNAPSHOT_DIR", d.as_str()),
                ("VAULT_TOKEN", "s.bad\u{7}token"),
            ],
            "VAULT_TOKEN: the token is not usable as an HTTP header value",
        ),
    ] {
        let (code, stderr) = run_bin(&envs);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(want), "want {want:?} in {stderr:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
        assert!(!stderr.contains("s.bad"), "no secret value: {stderr:?}");
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

/// A real server will not hold an election on demand in the middle of a snapshot stream: the
/// canned one says the leader's term moved on with every snapshot it served.
#[test]
fn an_election_while_the_snapshot_streamed_takes_it_once_more() {
    let server = CannedVault::start(vec![Snapshot::Body(archive())]);
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_bin(&[
        ("VAULT_ADDR", server.addr()),
        ("VAULT_TOKEN", CannedVault::ELECTION_TOKEN),
        ("SNAPSHOT_DIR", &dir.path().display().to_string()),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        server.snapshot_requests(),
        2,
        "once more, and only once: {stderr}"
    );
    assert_eq!(
        stderr
            .matches(
                "the leader's raft term changed while the snapshot streamed; taking it again (once)"
            )
            .count(),
        1,
        "{stderr}"
    );
    let left = files(dir.path());
    assert_eq!(
        left.len(),
        3,
        "one snapshot, its manifest and checksum: {left:?}"
    );
    let json = left.iter().find(|f| f.ends_with(".snap.json")).unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(json)).unwrap()).unwrap();
    assert_eq!(
        m["health"]["leader_term"], 4,
        "the second take's state: {m}"
    );
}
