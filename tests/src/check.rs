//! Checks a person restoring a backup would make, shared by every test that needs them.

use std::path::Path;
use std::process::Command;

/// `sha256sum -c FILE` in `dir`, as a user checks a backup before restoring it.
///
/// # Panics
/// If the check fails, with what `sha256sum` said.
pub fn sha256sum_check(dir: &Path, file: &str) {
    let out = Command::new("sha256sum")
        .arg("-c")
        .arg(file)
        .current_dir(dir)
        .output()
        .expect("sha256sum");
    assert!(
        out.status.success(),
        "sha256sum -c {file} in {}: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The names of the files in `dir`, sorted.
///
/// # Panics
/// If the directory cannot be read.
pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}
