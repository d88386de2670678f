//! One pod on this machine, as a kubelet and a container runtime would make it: a network
//! namespace of its own (see [`crate::podnet`]) shared by its containers, and each container in
//! mount, PID, UTS and IPC namespaces of its own, chrooted into a root directory that holds its
//! image's content and its volumes, running as the uid, gid and groups its security context
//! gives, with only the environment it is given.
//!
//! The workspace forbids `unsafe`, so the namespaces are entered with the standard tools: each
//! container is a small shell script (written next to the pod) run as
//! `ip netns exec <pod> unshare --mount --uts --ipc --pid --fork --kill-child
//! --propagation private /bin/sh <script>`. The script mounts a tmpfs as the root, fills it
//! (image files bind-mounted read-only from the host, `/dev` nodes, `/proc`), bind-mounts the
//! volumes (`remount,bind,ro` for read-only ones), remounts the root read-only when
//! `readOnlyRootFilesystem` says so, sets the hostname and ends in
//! `exec env -u PWD chroot --userspec=U:G --groups=... <root> <argv>`. The script's own
//! environment is the container's (every tool is called by absolute path, so the image's `PATH`
//! does not matter to it, and `env -u PWD` drops the one variable `sh` adds). Dropping a running
//! container kills its PID 1, the init of its PID namespace, and with it everything in the
//! container (`unshare --kill-child` alone does not reach it: the parent-death signal is cleared
//! when `chroot` changes the uid).
//!
//! The test binaries are debug builds, dynamically linked to glibc: when a binary placed in a
//! root has an ELF interpreter, the host's `/lib`, `/lib64`, `/usr/lib` and `/usr/lib64` are
//! bind-mounted read-only into that root as well (symlinks kept as symlinks). Static binaries
//! (`VAULT_BACKUP_STEP_BIN_DIR` pointing at `make static`'s output) get no host libraries: the
//! root then holds exactly the image's files.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::podnet::{self, PodNetns};
use crate::process::Server;

/// Something a container's root holds besides its volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootEntry {
    /// A directory with this mode (e.g. an image's `/tmp`, 1777).
    Dir {
        /// Absolute path in the root.
        path: String,
        /// Its mode.
        mode: u32,
    },
    /// A file with this content (e.g. the image's `/etc/passwd`).
    File {
        /// Absolute path in the root.
        path: String,
        /// Its content.
        text: String,
    },
    /// A symbolic link (e.g. Debian's `/lib -> usr/lib`).
    Symlink {
        /// Absolute path in the root.
        path: String,
        /// What it points to.
        target: String,
    },
    /// A host file bind-mounted read-only (e.g. the image's binary).
    Bind {
        /// Absolute path in the root.
        path: String,
        /// The host file.
        host: PathBuf,
    },
}

/// A volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `mountPath`.
    pub path: String,
    /// The host directory (or file) that backs it.
    pub host: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// The uid, gid and supplementary groups a container's process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `runAsUser` (or the image's user).
    pub uid: u32,
    /// `runAsGroup` (or the image's group).
    pub gid: u32,
    /// Supplementary groups: the gid, `fsGroup`, `supplementalGroups`.
    pub groups: Vec<u32>,
}

/// Everything needed to start one container.
#[derive(Debug, Clone)]
pub struct Container {
    /// The container's name (`step-<name>` or `sidecar-<name>` in Tekton).
    pub name: String,
    /// The image's content.
    pub root: Vec<RootEntry>,
    /// The command and its arguments, as the container runtime would exec them.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// Who the process runs as.
    pub user: User,
    /// `readOnlyRootFilesystem: true`.
    pub read_only_root: bool,
    /// Volumes, workspaces, results.
    pub mounts: Vec<Mount>,
}

/// One pod: its network namespace, its directory (roots, scripts) and its hostname.
#[derive(Debug)]
pub struct Pod {
    net: PodNetns,
    dir: PathBuf,
    hostname: String,
}

/// A container started in the background (a sidecar); killed when dropped.
#[derive(Debug)]
pub struct Running {
    /// The container.
    pub container: Container,
    server: Server,
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn ip_program() -> &'static str {
    if Path::new("/usr/sbin/ip").exists() {
        "/usr/sbin/ip"
    } else {
        "/sbin/ip"
    }
}

/// Whether an ELF file names a program interpreter (a dynamically linked executable).
///
/// # Errors
/// If the file cannot be read.
pub fn has_interpreter(path: &Path) -> std::io::Result<bool> {
    let mut head = Vec::new();
    std::fs::File::open(path)?
        .take(64 * 1024)
        .read_to_end(&mut head)?;
    Ok(elf_interpreter(&head))
}

/// Whether an ELF64 little-endian image has a `PT_INTERP` program header (within `head`).
fn elf_interpreter(head: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| head.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        head.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        head.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if head.get(..4) != Some(b"\x7fELF") || head.get(4) != Some(&2) || head.get(5) != Some(&1) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| u32_at(phoff + i * usize::from(phentsize)) == Some(PT_INTERP))
}

/// The host's library directories, for a root whose binaries need the host's loader: a symlink
/// stays a symlink (Debian's merged `/usr`), a directory is bind-mounted read-only.
#[must_use]
pub fn host_libraries() -> Vec<RootEntry> {
    let mut out = Vec::new();
    for dir in ["/usr/lib", "/usr/lib64", "/lib", "/lib64"] {
        let path = Path::new(dir);
        if let Ok(target) = std::fs::read_link(path) {
            out.push(RootEntry::Symlink {
                path: dir.to_owned(),
                target: target.display().to_string(),
            });
        } else if path.is_dir() {
            out.push(RootEntry::Bind {
                path: dir.to_owned(),
                host: path.to_owned(),
            });
        }
    }
    out
}

/// The lines of [`script`] that put the image's content into the root `r`.
fn root_entries(s: &mut String, c: &Container, r: &str, staging: &Path) {
    let at = |p: &str| q(&format!("{r}{p}"));
    for (n, entry) in c.root.iter().enumerate() {
        match entry {
            RootEntry::Dir { path, mode } => {
                let _ = writeln!(
                    s,
                    "/usr/bin/mkdir -p {0}\n/usr/bin/chmod {mode:o} {0}",
                    at(path)
                );
            }
            RootEntry::Symlink { path, target } => {
                let _ = writeln!(
                    s,
                    "/usr/bin/mkdir -p \"$(/usr/bin/dirname {0})\"\n/usr/bin/ln -s {1} {0}",
                    at(path),
                    q(target)
                );
            }
            RootEntry::File { path, text } => {
                let file = staging.join(format!("file-{n}"));
                std::fs::write(&file, text).expect("write a root file");
                let _ = writeln!(
                    s,
                    "/usr/bin/mkdir -p \"$(/usr/bin/dirname {0})\"\n/usr/bin/cp {1} {0}\n/usr/bin/chmod 644 {0}",
                    at(path),
                    q(&file.display().to_string())
                );
            }
            RootEntry::Bind { path, host } => {
                let make = if host.is_dir() {
                    format!("/usr/bin/mkdir -p {}", at(path))
                } else {
                    format!(
                        "/usr/bin/mkdir -p \"$(/usr/bin/dirname {0})\"\n/usr/bin/touch {0}",
                        at(path)
                    )
                };
                let _ = writeln!(
                    s,
                    "{make}\n/usr/bin/mount --bind {1} {0}\n/usr/bin/mount -o remount,bind,ro {0}",
                    at(path),
                    q(&host.display().to_string())
                );
            }
        }
    }
}

/// The shell script that builds `c`'s root in `root` and execs its command there.
#[must_use]
pub fn script(c: &Container, root: &Path, staging: &Path, hostname: &str) -> String {
    let r = root.display().to_string();
    let at = |p: &str| q(&format!("{r}{p}"));
    let mut s = String::from("set -e\n");
    let _ = writeln!(s, "/usr/bin/mount -t tmpfs -o mode=0755 tmpfs {}", q(&r));
    let _ = writeln!(s, "/usr/bin/mkdir -p {} {}", at("/dev"), at("/proc"));
    for dev in ["null", "zero", "full", "random", "urandom"] {
        let p = format!("/dev/{dev}");
        let _ = writeln!(
            s,
            "/usr/bin/touch {0}\n/usr/bin/mount --bind {1} {0}",
            at(&p),
            q(&p)
        );
    }
    root_entries(&mut s, c, &r, staging);
    // Longest mount path last, so a mount inside another lands on top of it.
    let mut mounts = c.mounts.clone();
    mounts.sort_by_key(|m| m.path.len());
    for m in &mounts {
        let make = if m.host.is_dir() {
            format!("/usr/bin/mkdir -p {}", at(&m.path))
        } else {
            format!(
                "/usr/bin/mkdir -p \"$(/usr/bin/dirname {0})\"\n/usr/bin/touch {0}",
                at(&m.path)
            )
        };
        let _ = writeln!(
            s,
            "{make}\n/usr/bin/mount --bind {1} {0}",
            at(&m.path),
            q(&m.host.display().to_string())
        );
        if m.read_only {
            let _ = writeln!(s, "/usr/bin/mount -o remount,bind,ro {}", at(&m.path));
        }
    }
    let _ = writeln!(s, "/usr/bin/mount -t proc proc {}", at("/proc"));
    if c.read_only_root {
        let _ = writeln!(s, "/usr/bin/mount -o remount,ro {}", q(&r));
    }
    let _ = writeln!(
        s,
        "/usr/bin/printf %s {} > /proc/sys/kernel/hostname",
        q(hostname)
    );
    let groups: Vec<String> = c.user.groups.iter().map(u32::to_string).collect();
    let argv: Vec<String> = c.argv.iter().map(|a| q(a)).collect();
    let _ = writeln!(
        s,
        "exec /usr/bin/env -u PWD /usr/sbin/chroot --userspec={}:{} --groups={} {} {}",
        c.user.uid,
        c.user.gid,
        groups.join(","),
        q(&r),
        argv.join(" ")
    );
    s
}

impl Pod {
    /// A new pod named `name` (its hostname), with its files under `dir`.
    ///
    /// # Panics
    /// If the network namespace cannot be made (see [`podnet::network`]).
    #[must_use]
    pub fn new(name: &str, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir pod dir");
        let hostname: String = name.chars().take(63).collect();
        Self {
            net: podnet::network().add_pod(),
            dir: dir.to_owned(),
            hostname,
        }
    }

    /// The pod IP.
    #[must_use]
    pub fn ip(&self) -> Ipv4Addr {
        self.net.ip
    }

    /// The pod's name (and hostname).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.hostname
    }

    fn command(&self, c: &Container) -> Command {
        let base = self.dir.join("containers").join(&c.name);
        let root = base.join("root");
        let staging = base.join("staging");
        std::fs::create_dir_all(&root).expect("mkdir container root");
        std::fs::create_dir_all(&staging).expect("mkdir container staging");
        let script_path = base.join("start.sh");
        std::fs::write(&script_path, script(c, &root, &staging, &self.hostname))
            .expect("write container script");
        let mut cmd = Command::new(ip_program());
        cmd.args(["netns", "exec", &self.net.name])
            .args([
                "/usr/bin/unshare",
                "--mount",
                "--uts",
                "--ipc",
                "--pid",
                "--fork",
                "--kill-child",
                "--propagation",
                "private",
                "/bin/sh",
            ])
            .arg(&script_path)
            .env_clear()
            .envs(c.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `c` in the background (a sidecar), its output appended to `log`.
    #[must_use]
    pub fn start(&self, c: &Container, log: &Path) -> Running {
        let server = Server::spawn(&c.name, self.command(c), log);
        Running {
            container: c.clone(),
            server,
        }
    }

    /// Runs `c` to its end (a step): its exit code and its stderr (echoed line by line, prefixed
    /// with `label`, when `echo`). Its stdout is discarded.
    ///
    /// # Panics
    /// If the process cannot be started.
    #[must_use]
    pub fn run(&self, c: &Container, label: &str, echo: bool) -> (i32, String) {
        let mut child = self
            .command(c)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start container {}: {e}", c.name));
        let mut stderr = String::new();
        for line in BufReader::new(child.stderr.take().expect("stderr"))
            .lines()
            .map_while(Result::ok)
        {
            if echo {
                eprintln!("[{label}] {line}");
            }
            stderr.push_str(&line);
            stderr.push('\n');
        }
        let status = child.wait().expect("wait for container");
        (status.code().unwrap_or(-1), stderr)
    }

    /// Runs `argv` inside a running container, as its user, in all its namespaces and its
    /// root (a kubelet's exec probe): whether it exited 0 within `timeout`.
    #[must_use]
    pub fn exec(running: &Running, argv: &[String], timeout: Duration) -> bool {
        let Some(pid) = running.pid() else {
            return false;
        };
        let user = &running.container.user;
        let child = Command::new("/usr/bin/nsenter")
            .arg(format!("--target={pid}"))
            .args([
                "--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd",
            ])
            .arg(format!("--setuid={}", user.uid))
            .arg(format!("--setgid={}", user.gid))
            .arg("--")
            .args(argv)
            .env_clear()
            .envs(running.container.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            return false;
        };
        let start = std::time::Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // `--kill-child` does not reach the container: its parent-death signal is cleared when
        // chroot changes the uid. Killing the PID namespace's init ends every process in it.
        if let Some(pid) = self.pid() {
            // The shell's builtin kill: no procps needed.
            let _ = Command::new("/bin/sh")
                .args(["-c", "kill -KILL \"$1\"", "sh", &pid.to_string()])
                .status();
        }
    }
}

impl Running {
    /// The container's main process, as the host sees it (the child of `unshare`).
    fn pid(&self) -> Option<u32> {
        let parent = self.server.id()?;
        let children =
            std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Whether the container is still running.
    pub fn is_running(&mut self) -> bool {
        self.server.is_running()
    }

    /// The container's output so far, its last `lines` lines.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        self.server.log_tail(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(q("a'b"), "'a'\\''b'");
    }

    #[test]
    fn dynamic_and_static_binaries_are_told_apart() {
        // This test binary is a glibc debug build: it has an interpreter.
        let me = std::env::current_exe().unwrap();
        assert!(has_interpreter(&me).unwrap());
        // OpenBao's release binary is a static Go build.
        assert!(!has_interpreter(&crate::venv::bao()).unwrap());
        assert!(!elf_interpreter(b"\x7fELF\x02\x01"));
        assert!(!elf_interpreter(b"#!/bin/sh\n"));
    }

    #[test]
    fn the_script_mounts_volumes_read_only_and_the_root_read_only_when_asked() {
        let c = Container {
            name: "step-x".into(),
            root: vec![],
            argv: vec!["/usr/local/bin/x".into()],
            env: vec![],
            user: User {
                uid: 65532,
                gid: 65532,
                groups: vec![65532, 1000],
            },
            read_only_root: true,
            mounts: vec![Mount {
                path: "/etc/ca".into(),
                host: "/nonexistent-dir".into(),
                read_only: true,
            }],
        };
        let s = script(&c, Path::new("/r"), Path::new("/s"), "pod");
        assert!(s.contains("/usr/bin/mount --bind '/nonexistent-dir' '/r/etc/ca'"));
        assert!(s.contains("/usr/bin/mount -o remount,bind,ro '/r/etc/ca'"));
        assert!(s.contains("/usr/bin/mount -o remount,ro '/r'"));
        assert!(s.ends_with(
            "chroot --userspec=65532:65532 --groups=65532,1000 '/r' '/usr/local/bin/x'\n"
        ));
    }
}
