//! A loopback HTTP proxy in front of a real S3 server that drops every `x-amz-checksum-*`
//! header from the answers to `HEAD` and `GET`: an S3-compatible server that states no checksum
//! for the objects it holds.
//!
//! SeaweedFS (like AWS) states the SHA-256 checksum of an object when asked with
//! `x-amz-checksum-mode: ENABLED`, and cannot be told not to; some S3-compatible servers in the
//! field never state one. The proxy turns the real server into such a store for the tests of
//! the sync step's `size-only` verification level, while everything else (signatures, per-part
//! checks, multipart uploads) is the real server's. The answers to `UploadPart` keep their
//! checksum headers: the client repeats them in `CompleteMultipartUpload`, and SeaweedFS refuses
//! a completion whose parts lack the checksums it was sent (400), as a server that checked them
//! should.
//!
//! Each connection carries one request: the proxy forwards it with `Connection: close`, strips
//! the checksum headers from the response head and answers `Connection: close` itself, so no
//! HTTP body ever has to be parsed (both directions are copied until the server closes). The
//! `Host` header is forwarded as the client sent it, so SigV4 signatures made for the proxy's
//! address still verify at the server.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A running proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct StripProxy {
    port: u16,
    stopped: Arc<AtomicBool>,
    stripped: Arc<AtomicUsize>,
}

impl StripProxy {
    /// Starts the proxy in front of `upstream` (`host:port`).
    ///
    /// # Panics
    /// If no loopback port can be bound.
    #[must_use]
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let stopped = Arc::new(AtomicBool::new(false));
        let stripped = Arc::new(AtomicUsize::new(0));
        let (stop, count, upstream) = (
            Arc::clone(&stopped),
            Arc::clone(&stripped),
            upstream.to_owned(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (upstream, count) = (upstream.clone(), Arc::clone(&count));
                std::thread::spawn(move || {
                    let _ = relay(client, &upstream, &count);
                });
            }
        });
        Self {
            port,
            stopped,
            stripped,
        }
    }

    /// The proxy's URL, to use as the S3 endpoint.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many `x-amz-checksum-*` headers were dropped so far.
    #[must_use]
    pub fn stripped(&self) -> usize {
        self.stripped.load(Ordering::SeqCst)
    }
}

impl Drop for StripProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads an HTTP head (up to and including the empty line) as lines without their CRLF.
fn read_head(r: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn write_head(w: &mut impl Write, lines: &[String]) -> std::io::Result<()> {
    let mut out = String::new();
    for l in lines {
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    w.write_all(out.as_bytes())
}

fn is_header(line: &str, name: &str) -> bool {
    line.split_once(':')
        .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
}

fn relay(client: TcpStream, upstream: &str, stripped: &AtomicUsize) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut request = read_head(&mut from_client)?;
    let reads = request
        .first()
        .is_some_and(|l| l.starts_with("HEAD ") || l.starts_with("GET "));
    request.retain(|l| !is_header(l, "connection"));
    let mut to_server = server.try_clone()?;
    write_head(&mut to_server, &request)?;
    // The request body (and anything after it) as it comes; the server closes after answering.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });

    let mut from_server = BufReader::new(server);
    let mut response = read_head(&mut from_server)?;
    let before = response.len();
    response.retain(|l| {
        !reads
            || !l
                .split_once(':')
                .is_some_and(|(n, _)| n.trim().to_ascii_lowercase().starts_with("x-amz-checksum-"))
    });
    stripped.fetch_add(before - response.len(), Ordering::SeqCst);
    response.retain(|l| !is_header(l, "connection"));
    let mut to_client = client;
    write_head(&mut to_client, &response)?;
    std::io::copy(&mut from_server, &mut to_client)?;
    to_client.shutdown(Shutdown::Both)
}
