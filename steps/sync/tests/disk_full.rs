//! A directory store that runs out of space (a 20 MiB tmpfs, mounted as root) while a second
//! snapshot is synced beside one it already holds: the sync fails with ENOSPC and leaves nothing
//! of the new one, the copy it holds stays complete and passes `sha256sum -c`, and a sync of
//! that very snapshot again sees that it is already there.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A small tmpfs, unmounted (and its mount point removed) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and must run as root (see TESTBED.md, Disk full): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn env(ws: &Path, pvc: &Path) -> BTreeMap<String, String> {
    [("SNAPSHOT_DIR", s(ws)), ("BACKUP_DIR", s(pvc))]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

fn copy_all(from: &Path, to: &Path) {
    for f in files(from) {
        let _ = std::fs::remove_file(to.join(&f));
        std::fs::copy(from.join(&f), to.join(&f)).unwrap();
    }
}

fn snapshot_bytes(dir: &Path, file: &str) -> (Vec<u8>, PathBuf) {
    let p = dir.join(file);
    (std::fs::read(&p).unwrap(), p)
}

#[test]
fn a_full_pvc_fails_the_next_snapshot_leaves_the_held_copy_whole_and_it_is_already_there() {
    let pvc = Tmpfs::mount("20m");
    let ws = tempfile::tempdir().unwrap();
    let first = tempfile::tempdir().unwrap();

    // 12 MiB: one copy fits in 20 MiB, a second one beside it (its temp file) does not.
    let a = write_big_snapshot(ws.path(), "vault", at(2026, 11, 24, 6), 12 << 20);
    copy_all(ws.path(), first.path());
    let (code, stderr) = run_binary(&env(ws.path(), pvc.path()));
    assert_eq!(code, Some(0), "{stderr}");
    sha256sum_check(pvc.path(), &a.sha256_file());
    let (held, held_path) = snapshot_bytes(pvc.path(), &a.snap_file());
    let held_sum = std::fs::read(pvc.path().join(a.sha256_file())).unwrap();

    // The next snapshot (another name) needs room the PVC does not have.
    for f in files(ws.path()) {
        std::fs::remove_file(ws.path().join(f)).unwrap();
    }
    let next = write_big_snapshot(ws.path(), "vault", at(2026, 11, 25, 6), 12 << 20);
    assert_ne!(next, a);
    let (code, stderr) = run_binary(&env(ws.path(), pvc.path()));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("1 of 1 stores failed: dir"), "{stderr}");
    // The copy the store held is untouched and still checks out; nothing of the new snapshot
    // and no temp file is left.
    sha256sum_check(pvc.path(), &a.sha256_file());
    assert_eq!(std::fs::read(&held_path).unwrap(), held);
    assert_eq!(
        std::fs::read(pvc.path().join(a.sha256_file())).unwrap(),
        held_sum
    );
    let mut want = a.files_in_write_order().to_vec();
    want.sort();
    assert_eq!(files(pvc.path()), want);

    // The workspace holds the first snapshot again: the store has it already, so nothing is
    // copied, nothing needs space, and the run succeeds.
    for f in files(ws.path()) {
        std::fs::remove_file(ws.path().join(f)).unwrap();
    }
    copy_all(first.path(), ws.path());
    let (code, stderr) = run_binary(&env(ws.path(), pvc.path()));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("already in the store"), "{stderr}");
    assert!(!stderr.contains("upload started"), "{stderr}");
    sha256sum_check(pvc.path(), &a.sha256_file());
    assert_eq!(files(pvc.path()), want);
}
