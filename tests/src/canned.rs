//! A canned Vault for edge cases a real server will not produce on demand.
//!
//! OpenBao never cuts a snapshot short or serves a tampered archive when asked to, yet those are
//! exactly the failures a backup must catch (older Vault versions truncated snapshots without an
//! error). This tiny HTTP/1.1 server answers `sys/leader` and `sys/seal-status` as a healthy
//! raft leader would and serves the snapshot path as the test says: a whole body, a body cut
//! short (the connection closes mid-chunk), a redirect, or a fixed status. Everything else is a
//! 404. It can also play a standby that names another leader, speak TLS, and it records every
//! request it saw, so a test can prove where a credential did (not) go.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the snapshot path answers.
#[derive(Debug, Clone)]
pub enum Snapshot {
    /// 200 with this body, chunked, no Content-Length (as Vault does).
    Body(Vec<u8>),
    /// 200, then the first `n` bytes of this body, then the connection drops.
    CutAfter(Vec<u8>, usize),
    /// This status with a Vault-style error body.
    Status(u16, String),
    /// 200, then the first `n` bytes of this body, then nothing more while the connection stays
    /// open: a transfer still under way, for a test to interrupt.
    StallAfter(Vec<u8>, usize),
    /// 307 to this `Location` with an empty body, as a standby with `disable_standby_reads`
    /// (or Vault OSS) answers.
    Redirect(String),
}

/// How a canned server presents itself beyond its snapshot plan.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// `Some(url)`: `sys/leader` says this node is a standby and names `url` as the leader;
    /// `None`: it says it is the active node.
    pub leader_address: Option<String>,
    /// Serve HTTPS with this certificate and key (PEM files, see [`test_tls`]).
    pub tls: Option<TlsFiles>,
}

/// A test CA and a server certificate for `127.0.0.1` and `localhost` signed by it.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate, for the client's trust (`VAULT_CACERT`).
    pub ca: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// Makes a test CA and a server certificate in `dir` (with the `openssl` CLI, as the OpenBao
/// test clusters do).
#[must_use]
pub fn test_tls(dir: &Path) -> TlsFiles {
    let ca = crate::openbao::tls_material(dir);
    TlsFiles {
        ca,
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// One request a canned server received.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// The request line, e.g. `GET /v1/sys/leader HTTP/1.1`.
    pub line: String,
    /// Its headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// Whether it carried a header of this (lower-case) name.
    #[must_use]
    pub fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }
}

/// A running canned server; stops accepting when dropped.
#[derive(Debug)]
pub struct CannedVault {
    addr: String,
    snapshot_requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

/// What every connection of one server shares.
struct Shared {
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    plan: Vec<Snapshot>,
    leader: String,
    is_self: bool,
}

/// A connection the canned server can answer on: plain TCP or TLS over it.
trait Conn: Read + Write {
    /// Closes the connection at once (a body cut short).
    fn close(&mut self);
}

impl Conn for TcpStream {
    fn close(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn close(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

fn tls_config(files: &TlsFiles) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .expect("read the test certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("parse the test certificate");
    let key = PrivateKeyDer::from_pem_file(&files.key).expect("read the test key");
    let config = rustls::ServerConfig::builder_with_provider(
        rustls::crypto::aws_lc_rs::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("a usable test certificate");
    Arc::new(config)
}

impl CannedVault {
    /// The token that makes `sys/storage/raft/autopilot/state` answer, with the leader's
    /// term moving on with every snapshot served: an election while each snapshot streams.
    pub const ELECTION_TOKEN: &'static str = "s.canned-election";

    /// Starts on a free port as a healthy active node. The snapshot path answers `plan[0]` for
    /// the first request, `plan[1]` for the second, and the last entry for every request after
    /// that.
    pub fn start(plan: Vec<Snapshot>) -> Self {
        Self::start_with(plan, Setup::default())
    }

    /// Starts on a free port, presenting itself as `setup` says.
    ///
    /// # Panics
    /// If `plan` is empty, or no port can be bound, or the TLS files are unusable.
    pub fn start_with(plan: Vec<Snapshot>, setup: Setup) -> Self {
        assert!(!plan.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let scheme = if setup.tls.is_some() { "https" } else { "http" };
        let addr = format!("{scheme}://{}", listener.local_addr().expect("addr"));
        let snapshot_requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            count: snapshot_requests.clone(),
            seen: seen.clone(),
            plan,
            is_self: setup.leader_address.is_none(),
            leader: setup.leader_address.unwrap_or_else(|| addr.clone()),
        });
        let tls = setup.tls.as_ref().map(tls_config);
        let conns = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                conns.fetch_add(1, Ordering::SeqCst);
                let (shared, tls) = (shared.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(stream, &shared),
                    Some(config) => {
                        if let Ok(conn) = rustls::ServerConnection::new(config) {
                            serve(rustls::StreamOwned::new(conn, stream), &shared);
                        }
                    }
                });
            }
        });
        Self {
            addr,
            snapshot_requests,
            connections,
            seen,
        }
    }

    /// Its address, e.g. `http://127.0.0.1:40000`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// How many snapshot requests it has answered.
    pub fn snapshot_requests(&self) -> usize {
        self.snapshot_requests.load(Ordering::SeqCst)
    }

    /// How many TCP connections it accepted (a client that only tried a TLS handshake counts).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every whole request it received, in order.
    ///
    /// # Panics
    /// If a serving thread panicked while recording.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("requests lock").clone()
    }
}

/// One HTTP/1.1 request: its request line, headers (names lower-cased) and body.
struct Request {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (the body by Content-Length).
fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        if header == "\r\n" {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            if name == "content-length" {
                content_length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        line: line.trim_end().to_owned(),
        headers,
        body,
    })
}

fn serve<C: Conn>(stream: C, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    loop {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        shared
            .seen
            .lock()
            .expect("requests lock")
            .push(SeenRequest {
                line: request.line.clone(),
                headers: request.headers,
            });
        let path = request
            .line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_owned();
        let out = reader.get_mut();
        let keep_going = match path.as_str() {
            "/v1/sys/leader" => json(
                out,
                200,
                &format!(
                    r#"{{"ha_enabled":true,"is_self":{},"leader_address":"{}","leader_cluster_address":""}}"#,
                    shared.is_self, shared.leader
                ),
            ),
            "/v1/sys/seal-status" => json(
                out,
                200,
                r#"{"sealed":false,"version":"canned","storage_type":"raft"}"#,
            ),
            "/v1/sys/storage/raft/snapshot" => {
                let n = shared.count.fetch_add(1, Ordering::SeqCst);
                let answer = shared.plan[n.min(shared.plan.len() - 1)].clone();
                match answer {
                    Snapshot::Body(data) => chunked(out, &data, None),
                    Snapshot::CutAfter(data, cut) => chunked(out, &data, Some(cut)),
                    Snapshot::StallAfter(data, cut) => {
                        stall(out, &data[..cut.min(data.len())]);
                        false
                    }
                    Snapshot::Status(code, msg) => {
                        json(out, code, &format!(r#"{{"errors":["{msg}"]}}"#))
                    }
                    Snapshot::Redirect(location) => {
                        let head = format!(
                            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
                        );
                        out.write_all(head.as_bytes()).is_ok()
                    }
                }
            }
            // Only for ELECTION_TOKEN: an election during every snapshot stream (the leader's
            // term is 3 plus the snapshots served so far). Other tokens get the 404 every
            // unknown path gets, so other tests see an unknown health.
            "/v1/sys/storage/raft/autopilot/state"
                if headers_have(&shared.seen, "x-vault-token", CannedVault::ELECTION_TOKEN) =>
            {
                let term = 3 + shared.count.load(Ordering::SeqCst);
                json(
                    out,
                    200,
                    &format!(
                        r#"{{"data":{{"healthy":true,"failure_tolerance":1,"leader":"node1","voters":["node1","node2","node3"],"servers":{{"node1":{{"last_term":{term},"last_index":100,"healthy":true}}}}}}}}"#
                    ),
                )
            }
            _ => json(out, 404, r#"{"errors":[]}"#),
        };
        if !keep_going {
            return;
        }
    }
}

/// Whether the last request seen carried header `name` with `value`.
fn headers_have(seen: &Mutex<Vec<SeenRequest>>, name: &str, value: &str) -> bool {
    seen.lock()
        .expect("requests lock")
        .last()
        .is_some_and(|r| r.headers.iter().any(|(n, v)| n == name && v == value))
}

fn json(out: &mut impl Write, status: u16, body: &str) -> bool {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())
        .and_then(|()| out.write_all(body.as_bytes()))
        .is_ok()
}

fn stall(out: &mut impl Conn, data: &[u8]) {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(format!("{:x}\r\n", data.len()).as_bytes());
    let _ = out.write_all(data);
    let _ = out.write_all(b"\r\n");
    let _ = out.flush();
    // Hold the connection open until the client goes away.
    let mut buf = [0u8; 1];
    let _ = out.read(&mut buf);
}

fn chunked(out: &mut impl Conn, data: &[u8], cut: Option<usize>) -> bool {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
    if out.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let end = cut.unwrap_or(data.len()).min(data.len());
    for chunk in data[..end].chunks(16 * 1024) {
        if out
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || out.write_all(chunk).is_err()
            || out.write_all(b"\r\n").is_err()
        {
            return false;
        }
    }
    if cut.is_some() {
        let _ = out.flush();
        out.close();
        return false;
    }
    out.write_all(b"0\r\n\r\n").is_ok()
}

/// A Kubernetes TokenReview endpoint that accepts one service-account JWT, so that Vault's
/// Kubernetes auth method can be tested without a cluster: OpenBao posts the client's JWT to
/// `POST /apis/authentication.k8s.io/v1/tokenreviews` and trusts the answer.
#[derive(Debug)]
pub struct TokenReviewer {
    addr: String,
    reviews: Arc<AtomicUsize>,
}

/// The service account the [`TokenReviewer`] vouches for.
pub const SERVICE_ACCOUNT: (&str, &str, &str) = (
    "vault-backup",
    "vault-backup",
    "0b1c6a52-6c1e-4d56-9a2e-3d1b2f4c5e6a",
);

impl TokenReviewer {
    /// Starts on a free port; `jwt` is the one token it says is valid.
    pub fn start(jwt: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let reviews = Arc::new(AtomicUsize::new(0));
        let (count, jwt) = (reviews.clone(), jwt.to_owned());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (count, jwt) = (count.clone(), jwt.clone());
                std::thread::spawn(move || review(stream, &count, &jwt));
            }
        });
        Self { addr, reviews }
    }

    /// Its address, the `kubernetes_host` to configure.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// How many reviews it answered.
    pub fn reviews(&self) -> usize {
        self.reviews.load(Ordering::SeqCst)
    }

    /// An unsigned service-account JWT with the claims Vault reads (it verifies through the
    /// TokenReview, not the signature, when no public keys are configured).
    pub fn service_account_jwt() -> String {
        let (ns, name, uid) = SERVICE_ACCOUNT;
        let header = r#"{"alg":"RS256","kid":"test"}"#;
        let claims = format!(
            r#"{{"iss":"kubernetes/serviceaccount","sub":"system:serviceaccount:{ns}:{name}","kubernetes.io/serviceaccount/namespace":"{ns}","kubernetes.io/serviceaccount/service-account.name":"{name}","kubernetes.io/serviceaccount/service-account.uid":"{uid}","kubernetes.io/serviceaccount/secret.name":"{name}-token"}}"#
        );
        format!(
            "{}.{}.{}",
            b64url(header.as_bytes()),
            b64url(claims.as_bytes()),
            b64url(b"not-a-signature")
        )
    }
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn review(stream: TcpStream, count: &AtomicUsize, jwt: &str) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut out = stream;
    let Some(Request {
        line: request_line,
        body,
        ..
    }) = read_request(&mut reader)
    else {
        return;
    };
    if !request_line.contains("/apis/authentication.k8s.io/v1/tokenreviews") {
        json(&mut out, 404, "{}");
        return;
    }
    count.fetch_add(1, Ordering::SeqCst);
    let asked: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let (ns, name, uid) = SERVICE_ACCOUNT;
    let status = if asked["spec"]["token"] == jwt {
        format!(
            r#"{{"authenticated":true,"user":{{"username":"system:serviceaccount:{ns}:{name}","uid":"{uid}","groups":["system:serviceaccounts","system:serviceaccounts:{ns}"]}}}}"#
        )
    } else {
        r#"{"authenticated":false,"error":"invalid bearer token"}"#.to_owned()
    };
    json(
        &mut out,
        201,
        &format!(
            r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","status":{status}}}"#
        ),
    );
}
