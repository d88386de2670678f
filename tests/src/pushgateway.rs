//! The Prometheus Pushgateway as a real server on loopback, for the metrics tests; and where the
//! Prometheus tools (`promtool`) are.
//!
//! Both come from Debian packages (`prometheus-pushgateway`, `prometheus`) that `make testbed`
//! installs. The Pushgateway keeps its metrics in memory only (no persistence file), listens on
//! a free port and is killed when the handle drops; [`Pushgateway::metrics`] reads back what the
//! steps pushed, parsed from its `/metrics` page.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{Server, free_port, host, port_open, wait_until};

/// A program installed from a Debian package (`prometheus-pushgateway`, `promtool`): found on
/// `PATH`, else in `/usr/bin`.
///
/// # Panics
/// If it is not installed: run `make testbed`.
#[must_use]
pub fn debian_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: run `make testbed`"))
}

/// One series read back from `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name.
    pub name: String,
    /// Its labels (the grouping labels `job`, `task`, `step` and the empty `instance` included).
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The label's value, `""` if absent.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }

    /// The series in PromQL selector syntax, `name{a="b",...}`, as a promtool test's
    /// `input_series` names it (empty labels left out, as Prometheus does).
    pub fn selector(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| {
                format!(
                    "{k}=\"{}\"",
                    v.replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n")
                )
            })
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// A running `prometheus-pushgateway`; killed when dropped.
#[derive(Debug)]
pub struct Pushgateway {
    server: Server,
    port: u16,
    _dir: TempDir,
}

impl Pushgateway {
    /// Starts a Pushgateway with no persistence and waits until it reports ready.
    ///
    /// # Panics
    /// If it is not installed (`make testbed`), cannot start, or is not ready in 30 s.
    #[must_use]
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the Pushgateway");
        let port = free_port();
        let mut cmd = Command::new(debian_bin("prometheus-pushgateway"));
        cmd.arg(format!("--web.listen-address={}:{port}", host()))
            // In memory only: the Debian default file is under /var/lib and shared.
            .arg("--persistence.file=")
            .current_dir(dir.path());
        let server = Server::spawn("pushgateway", cmd, &dir.path().join("pushgateway.log"));
        let mut me = Self {
            server,
            port,
            _dir: dir,
        };
        wait_until("the Pushgateway", Duration::from_secs(30), || {
            assert!(
                me.server.is_running(),
                "the Pushgateway exited:\n{}",
                me.server.log_tail(40)
            );
            port_open(port) && me.get("/-/ready").0 == 200
        });
        me
    }

    /// Its base URL, `http://<host>:<port>` (what `METRICS_PUSHGATEWAY_URL` is set to).
    pub fn url(&self) -> String {
        format!("http://{}:{}", host(), self.port)
    }

    /// Its port on the test-bed host.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it, as an outage would; the port then refuses connections.
    pub fn stop(&mut self) {
        self.server.kill();
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// `GET path`: the status code and the body.
    ///
    /// # Panics
    /// If the server cannot be reached or the answer is not HTTP.
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut stream =
            TcpStream::connect((crate::podnet::bind_host(), self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        // HTTP/1.0: the server closes the connection after one plain (not chunked) answer.
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}:{}\r\n\r\n",
            host(),
            self.port
        )
        .expect("send request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read answer");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"));
        (status, body.to_owned())
    }

    /// Every series on `/metrics` whose name starts with `prefix` (`"vault_backup_"`).
    ///
    /// # Panics
    /// If the page cannot be read or parsed.
    pub fn metrics(&self, prefix: &str) -> Vec<Sample> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        parse(&body)
            .into_iter()
            .filter(|s| s.name.starts_with(prefix))
            .collect()
    }

    /// The value of `name` in the group of `step` (any task), if pushed.
    pub fn value(&self, name: &str, step: &str) -> Option<f64> {
        self.metrics(name)
            .into_iter()
            .find(|s| s.name == name && s.label("step") == step)
            .map(|s| s.value)
    }
}

/// Parses the text exposition format (comments skipped).
///
/// # Panics
/// On a line that is not `name[{labels}] value`.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("cannot parse {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &after[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_and_go_floats() {
        let text = "# HELP x y\nx{a=\"1\",b=\"q\\\"\\\\\\n\"} 1.7956773215570285e+09\nplain 3\n";
        let got = parse(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "x");
        assert_eq!(got[0].label("b"), "q\"\\\n");
        assert!((got[0].value - 1_795_677_321.557_028_5).abs() < 1e-6);
        assert!((got[1].value - 3.0).abs() < f64::EPSILON);
        assert_eq!(got[0].selector(), "x{a=\"1\",b=\"q\\\"\\\\\\n\"}");
    }
}
