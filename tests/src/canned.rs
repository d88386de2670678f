//! A canned Vault for edge cases a real server will not produce on demand.
//!
//! OpenBao never cuts a snapshot short or serves a tampered archive when asked to, yet those are
//! exactly the failures a backup must catch (older Vault versions truncated snapshots without an
//! error). This tiny HTTP/1.1 server answers `sys/leader` and `sys/seal-status` as a healthy
//! raft leader would and serves the snapshot path as the test says: a whole body, a body cut
//! short (the connection closes mid-chunk), or a fixed status. Everything else is a 404.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
}

/// A running canned server; stops accepting when dropped.
#[derive(Debug)]
pub struct CannedVault {
    addr: String,
    snapshot_requests: Arc<AtomicUsize>,
}

impl CannedVault {
    /// Starts on a free port. The snapshot path answers `plan[0]` for the first request,
    /// `plan[1]` for the second, and the last entry for every request after that.
    pub fn start(plan: Vec<Snapshot>) -> Self {
        assert!(!plan.is_empty());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let snapshot_requests = Arc::new(AtomicUsize::new(0));
        let plan = Arc::new(plan);
        let count = snapshot_requests.clone();
        let me = addr.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (count, p, me) = (count.clone(), plan.clone(), me.clone());
                std::thread::spawn(move || serve(stream, &count, &p, &me));
            }
        });
        Self {
            addr,
            snapshot_requests,
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
}

/// Reads one HTTP/1.1 request: its request line and body (by Content-Length).
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length];
    std::io::Read::read_exact(reader, &mut body).ok()?;
    Some((request_line, body))
}

fn serve(stream: TcpStream, count: &AtomicUsize, plan: &[Snapshot], me: &str) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut out = stream;
    loop {
        let Some((request_line, _body)) = read_request(&mut reader) else {
            return;
        };
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_owned();
        let keep_going = match path.as_str() {
            "/v1/sys/leader" => json(
                &mut out,
                200,
                &format!(
                    r#"{{"ha_enabled":true,"is_self":true,"leader_address":"{me}","leader_cluster_address":""}}"#
                ),
            ),
            "/v1/sys/seal-status" => json(
                &mut out,
                200,
                r#"{"sealed":false,"version":"canned","storage_type":"raft"}"#,
            ),
            "/v1/sys/storage/raft/snapshot" => {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let answer = plan[n.min(plan.len() - 1)].clone();
                match answer {
                    Snapshot::Body(data) => chunked(&mut out, &data, None),
                    Snapshot::CutAfter(data, cut) => chunked(&mut out, &data, Some(cut)),
                    Snapshot::StallAfter(data, cut) => {
                        stall(&mut out, &data[..cut.min(data.len())]);
                        false
                    }
                    Snapshot::Status(code, msg) => {
                        json(&mut out, code, &format!(r#"{{"errors":["{msg}"]}}"#))
                    }
                }
            }
            _ => json(&mut out, 404, r#"{"errors":[]}"#),
        };
        if !keep_going {
            return;
        }
    }
}

fn json(out: &mut TcpStream, status: u16, body: &str) -> bool {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())
        .and_then(|()| out.write_all(body.as_bytes()))
        .is_ok()
}

fn stall(out: &mut TcpStream, data: &[u8]) {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(format!("{:x}\r\n", data.len()).as_bytes());
    let _ = out.write_all(data);
    let _ = out.write_all(b"\r\n");
    let _ = out.flush();
    // Hold the connection open until the client goes away.
    let mut buf = [0u8; 1];
    let _ = std::io::Read::read(out, &mut buf);
}

fn chunked(out: &mut TcpStream, data: &[u8], cut: Option<usize>) -> bool {
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
        let _ = out.shutdown(std::net::Shutdown::Both);
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
    let Some((request_line, body)) = read_request(&mut reader) else {
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
