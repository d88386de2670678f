//! A throttling TCP proxy on loopback: a slow link in front of a real server.
//!
//! A restore of a large snapshot over a slow link is where per-request time limits bite (an S3
//! client's timeout, a Vault listener's `http_read_timeout`), and loopback is never slow. So a
//! test puts this proxy between the step and the real server (SeaweedFS, OpenBao): each
//! connection is relayed as it is, bytes unchanged (S3 signatures and TLS pass through), but
//! no faster than the given rate in each direction, per connection. It counts the bytes the
//! server sent, so a test can prove that nothing was fetched.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes per second in each direction of each connection; `None` relays at full speed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    /// From the server to the client (a download).
    pub down: Option<u64>,
    /// From the client to the server (an upload).
    pub up: Option<u64>,
}

/// A running proxy; stops accepting when dropped (relays under way run to their end).
#[derive(Debug)]
pub struct Throttle {
    addr: SocketAddr,
    down_bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Throttle {
    /// Starts a proxy on a free loopback port relaying to `upstream` (`host:port`, or a URL
    /// whose host and port are taken) at `rates`.
    ///
    /// # Panics
    /// If no port can be bound or `upstream` has no address.
    pub fn start(upstream: &str, rates: Rates) -> Self {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .expect("upstream is host:port");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let down_bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (down_bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (c2, s2) = (
                            client.try_clone().expect("clone"),
                            server.try_clone().expect("clone"),
                        );
                        let count = count.clone();
                        std::thread::spawn(move || relay(server, c2, rates.down, Some(&count)));
                        std::thread::spawn(move || relay(client, s2, rates.up, None));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            addr,
            down_bytes,
            stop,
        }
    }

    /// Its address as `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bytes the server has sent through it so far, all connections together.
    pub fn down_bytes(&self) -> u64 {
        self.down_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` into `to` at no more than `rate` bytes per second (measured from the first
/// byte, so the average holds over the whole connection), then closes `to`'s write side.
fn relay(mut from: TcpStream, mut to: TcpStream, rate: Option<u64>, count: Option<&AtomicU64>) {
    let mut buf = vec![0u8; 16 << 10];
    let mut sent = 0u64;
    let mut started: Option<Instant> = None;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let t0 = *started.get_or_insert_with(Instant::now);
        for piece in buf[..n].chunks(4 << 10) {
            if let Some(rate) = rate {
                #[allow(clippy::cast_precision_loss)]
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            if to.write_all(piece).is_err() {
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            sent += piece.len() as u64;
            if let Some(c) = count {
                c.fetch_add(piece.len() as u64, Ordering::SeqCst);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
