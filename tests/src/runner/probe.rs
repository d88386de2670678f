//! Readiness probes from outside the pod, and Tekton's wait for ready sidecars.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::pod::{Pod, Running};

use super::RunError;
use super::container::Sidecar;

/// A readiness probe's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Http {
        host: Option<String>,
        port: u16,
        path: String,
    },
    Exec(Vec<String>),
}

/// A readiness probe and its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Probe {
    pub(super) action: Action,
    pub(super) initial_delay: Duration,
    pub(super) period: Duration,
    pub(super) timeout: Duration,
}

pub(super) fn seconds(v: &Value, default: u64) -> Duration {
    Duration::from_secs(v.as_u64().unwrap_or(default))
}

impl Probe {
    pub(super) fn from_yaml(
        what: &str,
        p: &Value,
        ports: &BTreeMap<String, u16>,
    ) -> Result<Self, RunError> {
        let port = |v: &Value| -> Result<u16, RunError> {
            match v {
                Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                Value::String(s) => ports.get(s).copied(),
                _ => None,
            }
            .ok_or_else(|| RunError::Task(format!("{what}: readinessProbe port {v} is unknown")))
        };
        let host = |v: &Value| v.as_str().map(str::to_owned);
        let action = if let Some(t) = p.get("tcpSocket") {
            Action::Tcp {
                host: host(&t["host"]),
                port: port(&t["port"])?,
            }
        } else if let Some(h) = p.get("httpGet") {
            if h["scheme"].as_str().is_some_and(|s| s != "HTTP") {
                return Err(RunError::Task(format!(
                    "{what}: only HTTP httpGet probes are modelled"
                )));
            }
            Action::Http {
                host: host(&h["host"]),
                port: port(&h["port"])?,
                path: h["path"].as_str().unwrap_or("/").to_owned(),
            }
        } else if let Some(e) = p.get("exec") {
            Action::Exec(
                e["command"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c.as_str().unwrap_or_default().to_owned())
                    .collect(),
            )
        } else {
            return Err(RunError::Task(format!(
                "{what}: readinessProbe has no tcpSocket, httpGet or exec"
            )));
        };
        Ok(Self {
            action,
            initial_delay: seconds(&p["initialDelaySeconds"], 0),
            period: seconds(&p["periodSeconds"], 10),
            timeout: seconds(&p["timeoutSeconds"], 1),
        })
    }

    /// The probe as a person would name it, with the address it goes to.
    fn describe(&self, pod_ip: std::net::Ipv4Addr) -> String {
        match &self.action {
            Action::Tcp { host, port } => format!(
                "tcpSocket {}:{port}",
                host.clone().unwrap_or_else(|| pod_ip.to_string())
            ),
            Action::Http { host, port, path } => format!(
                "httpGet http://{}:{port}{path}",
                host.clone().unwrap_or_else(|| pod_ip.to_string())
            ),
            Action::Exec(argv) => format!("exec {argv:?}"),
        }
    }

    /// One attempt, from outside the pod (the kubelet's side).
    fn succeeds(&self, pod_ip: std::net::Ipv4Addr, running: &Running) -> bool {
        use std::io::{Read as _, Write as _};
        let addr = |host: &Option<String>, port: u16| -> Option<std::net::SocketAddr> {
            let ip: std::net::IpAddr = match host {
                Some(h) => h.parse().ok()?,
                None => pod_ip.into(),
            };
            Some((ip, port).into())
        };
        match &self.action {
            Action::Tcp { host, port } => addr(host, *port)
                .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, self.timeout).is_ok()),
            Action::Http { host, port, path } => {
                let Some(a) = addr(host, *port) else {
                    return false;
                };
                let Ok(mut s) = std::net::TcpStream::connect_timeout(&a, self.timeout) else {
                    return false;
                };
                let _ = s.set_read_timeout(Some(self.timeout));
                if write!(s, "GET {path} HTTP/1.0\r\nHost: {a}\r\n\r\n").is_err() {
                    return false;
                }
                let mut head = [0u8; 12];
                if s.read_exact(&mut head).is_err() {
                    return false;
                }
                // "HTTP/1.1 200": a kubelet counts 200..=399 as success.
                std::str::from_utf8(&head[9..12])
                    .ok()
                    .and_then(|c| c.parse::<u16>().ok())
                    .is_some_and(|c| (200..400).contains(&c))
            }
            Action::Exec(argv) => Pod::exec(running, argv, self.timeout),
        }
    }
}

/// Waits until every sidecar is Ready (its probe succeeded) or has terminated, as Tekton's
/// `SidecarsReady` does, for at most `bound`.
pub(super) fn wait_for_sidecars(
    pod: &Pod,
    sidecars: &mut [(Sidecar, Running)],
    bound: Duration,
) -> Result<(), RunError> {
    let start = Instant::now();
    let mut ready = vec![false; sidecars.len()];
    let mut next = vec![start; sidecars.len()];
    for (i, (s, _)) in sidecars.iter().enumerate() {
        match &s.probe {
            None => ready[i] = true,
            Some(p) => next[i] = start + p.initial_delay,
        }
    }
    while !ready.iter().all(|r| *r) {
        for (i, (s, running)) in sidecars.iter_mut().enumerate() {
            if ready[i] {
                continue;
            }
            if !running.is_running() {
                // Terminated counts as ready in Tekton; the steps then meet what it left.
                ready[i] = true;
                continue;
            }
            let probe = s.probe.as_ref().expect("probed");
            if Instant::now() >= next[i] {
                ready[i] = probe.succeeds(pod.ip(), running);
                next[i] = Instant::now() + probe.period;
            }
        }
        if ready.iter().all(|r| *r) {
            break;
        }
        if start.elapsed() > bound {
            let (s, running) = sidecars
                .iter()
                .zip(&ready)
                .find(|(_, r)| !**r)
                .map(|(s, _)| s)
                .expect("one is not ready");
            return Err(RunError::SidecarNotReady {
                sidecar: s.name.clone(),
                probe: s.probe.as_ref().expect("probed").describe(pod.ip()),
                waited: bound,
                log: running.log_tail(30),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
