//! The pods' network, and the address the test-bed servers listen on.
//!
//! A pod has a loopback of its own and an IP on a non-loopback interface; a kubelet probes that
//! IP, and the servers a pod talks to (the Vault cluster, S3, the Pushgateway, the API server)
//! are outside it. So a test process that runs Tasks through the [`runner`] first takes a
//! network of its own: a bridge `vbb<i>` holding the host address `198.18.<i>.1/24` (a /24 out
//! of 198.18.0.0/15, the RFC 2544 benchmarking range, never routed on the internet), and each
//! pod is a network namespace `vbp<i>-<n>` with one end of a veth pair in the bridge and the
//! address `198.18.<i>.<n+2>`. Pods get no default route and the host forwards nothing into the
//! bridge, so nothing a pod sends leaves this machine.
//!
//! The index `i` is taken under an exclusive `flock` on `/tmp/vault-backup-podnet/<i>.lock`, so
//! nextest's parallel test processes never share one; whoever takes an index first deletes what
//! a killed process may have left under it (the bridge, the namespaces and the processes still
//! in them). The lock is released when the process exits; the bridge stays until the next taker
//! of the index removes it (a process has no drop for statics), while every pod namespace is
//! deleted when its [`PodNetns`] drops.
//!
//! [`bind_host`] is the address every test-bed server of this process listens on and
//! advertises: 127.0.0.1 until [`network`] is called, the bridge's host address after. The ~400
//! tests that never run a Task keep 127.0.0.1; a test that runs Tasks creates the network
//! before it starts its servers (`e2e::Environment` does).
//!
//! [`runner`]: crate::runner

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};

/// How many /24 networks 198.18.0.0/15 holds.
const NETWORKS: u16 = 512;

static NETWORK: OnceLock<Network> = OnceLock::new();

/// One test process's pod network: its bridge and host address.
#[derive(Debug)]
pub struct Network {
    index: u16,
    bridge: String,
    host: Ipv4Addr,
    next_pod: AtomicU16,
    // Held for the life of the process: the flock that makes the index ours.
    _lock: File,
}

/// A pod's network namespace, deleted (with its veth pair) on drop.
#[derive(Debug)]
pub struct PodNetns {
    /// The namespace's name, for `ip netns exec`.
    pub name: String,
    /// The pod IP (on `eth0` in the namespace).
    pub ip: Ipv4Addr,
}

/// The address the test-bed servers of this process listen on and advertise: the pod network's
/// host address once [`network`] has been called, else 127.0.0.1.
#[must_use]
pub fn bind_host() -> Ipv4Addr {
    NETWORK.get().map_or(Ipv4Addr::LOCALHOST, |n| n.host)
}

/// This process's pod network, created on first use.
///
/// # Panics
/// If no index is free, or `ip` fails (not root, no iproute2).
pub fn network() -> &'static Network {
    NETWORK.get_or_init(Network::take)
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e} (iproute2 installed?)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("pod network: {e} (the runner needs root for network namespaces)");
    }
}

fn address(index: u16, host: u8) -> Ipv4Addr {
    let [hi, lo] = index.to_be_bytes();
    Ipv4Addr::new(198, 18 + hi, lo, host)
}

impl Network {
    fn take() -> Self {
        // A fixed path, not $TMPDIR: the bridge names are machine-wide, so must the locks be.
        let dir = Path::new("/tmp/vault-backup-podnet");
        std::fs::create_dir_all(dir).expect("mkdir the pod network lock directory");
        for index in 0..NETWORKS {
            let path: PathBuf = dir.join(format!("{index}.lock"));
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if file.try_lock().is_err() {
                continue;
            }
            let bridge = format!("vbb{index}");
            Self::remove_stale(index, &bridge);
            let host = address(index, 1);
            must(&["link", "add", &bridge, "type", "bridge"]);
            must(&["addr", "add", &format!("{host}/24"), "dev", &bridge]);
            must(&["link", "set", &bridge, "up"]);
            return Self {
                index,
                bridge,
                host,
                next_pod: AtomicU16::new(0),
                _lock: file,
            };
        }
        panic!("pod network: all {NETWORKS} indexes are taken");
    }

    /// What a killed process left under this index.
    fn remove_stale(index: u16, bridge: &str) {
        let _ = ip(&["link", "del", bridge]);
        let prefix = format!("vbp{index}-");
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or_default();
                if name.starts_with(&prefix) {
                    // A killed test leaves its containers running in the namespace: end them.
                    if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
                        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                            let _ = Command::new("/bin/sh")
                                .args(["-c", "kill -KILL \"$1\"", "sh", pid])
                                .status();
                        }
                    }
                    let _ = ip(&["netns", "del", name]);
                }
            }
        }
    }

    /// The host's address on the bridge (what the pods reach the test bed at).
    #[must_use]
    pub fn host(&self) -> Ipv4Addr {
        self.host
    }

    /// A new pod's network namespace: loopback up, `eth0` in the bridge with the next pod IP,
    /// no default route.
    ///
    /// # Panics
    /// If the /24 is used up or `ip` fails.
    #[must_use]
    pub fn add_pod(&self) -> PodNetns {
        let n = self.next_pod.fetch_add(1, Ordering::Relaxed);
        assert!(
            n < 250,
            "pod network: more than 250 pods in one test process"
        );
        let name = format!("vbp{}-{n}", self.index);
        let veth = format!("vbh{}-{n}", self.index);
        let ip_addr = address(self.index, u8::try_from(n + 2).expect("below 252"));
        let _ = ip(&["netns", "del", &name]);
        must(&["netns", "add", &name]);
        let pod = PodNetns {
            name: name.clone(),
            ip: ip_addr,
        };
        must(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        must(&["link", "set", &veth, "master", &self.bridge, "up"]);
        must(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ip_addr}/24"),
            "dev",
            "eth0",
        ]);
        must(&["-n", &name, "link", "set", "eth0", "up"]);
        must(&["-n", &name, "link", "set", "lo", "up"]);
        pod
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        // Deleting the namespace deletes eth0 and with it the host end of the pair.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_map_to_distinct_24s_inside_198_18_0_0_15() {
        assert_eq!(address(0, 1), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(address(255, 2), Ipv4Addr::new(198, 18, 255, 2));
        assert_eq!(address(256, 1), Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(address(511, 9), Ipv4Addr::new(198, 19, 255, 9));
    }
}
