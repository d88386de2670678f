//! Child processes for test servers: free ports, logs kept in a file, killed on drop.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The address test-bed servers listen on and advertise: 127.0.0.1, or the pod network's host
/// address in a process that runs Tasks (see [`crate::podnet::bind_host`]).
#[must_use]
pub fn host() -> String {
    crate::podnet::bind_host().to_string()
}

/// A TCP port on [`host`] that was free a moment ago.
///
/// # Panics
/// If no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind((crate::podnet::bind_host(), 0))
        .expect("bind the test-bed host, port 0")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running server process; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Server {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    ///
    /// # Panics
    /// If the program cannot be started.
    #[must_use]
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Self {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("open server log");
        let err = out.try_clone().expect("clone log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        }
    }

    /// Kills the process now (as a crash would) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id, while it has not been killed through this handle.
    #[must_use]
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and not killed through this handle.
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The server's log so far (for a failing test to print).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log, prefixed with the server's name.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let start = all.len().saturating_sub(lines);
        all[start..].iter().fold(String::new(), |mut out, l| {
            out.push('[');
            out.push_str(&self.name);
            out.push_str("] ");
            out.push_str(l);
            out.push('\n');
            out
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {}'s log ---\n{}",
                self.name,
                self.log_tail(40)
            );
        }
        self.kill();
    }
}

/// Polls `ready` every 50 ms until it returns true or `timeout` passes.
///
/// # Panics
/// On timeout, with `what` in the message.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether something accepts TCP connections on [`host`]`:port`.
#[must_use]
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &(crate::podnet::bind_host(), port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
}
