//! `pod-check`: a test-only step binary for the step runner's own tests.
//!
//! Run as a step (image `.../pod-check:<tag>`), it writes a line to the file named by
//! `POD_CHECK_WRITE` and exits 0, or prints the error and exits 1; with the variable unset it
//! just exits 0. So a test can show what a container may write to: a read-only root fails with
//! "Read-only file system", a volume does not, and the file a workspace receives is owned as
//! `runAsUser`/`fsGroup` say. With `POD_CHECK_ENV` set it first prints the names of its whole
//! environment, one line `env: A B C`, so a test can see nothing else reaches a container.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::var_os("POD_CHECK_ENV").is_some() {
        let mut names: Vec<String> = std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        names.sort();
        eprintln!("env: {}", names.join(" "));
    }
    let Some(path) = std::env::var_os("POD_CHECK_WRITE") else {
        return ExitCode::SUCCESS;
    };
    match std::fs::write(&path, "written by pod-check\n") {
        Ok(()) => {
            eprintln!("wrote {}", path.to_string_lossy());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", path.to_string_lossy());
            ExitCode::FAILURE
        }
    }
}
