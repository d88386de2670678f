//! Exit codes and the one place that maps errors to them.
//!
//! Every step's `main` is [`run_main`]: it sets up logging, reads the configuration (exit 2 with
//! one line naming the variable if it is unusable), runs the step on a tokio runtime and maps the
//! outcome to an exit code through [`ExitStatus`]. The codes are part of the interface and are
//! listed in the README.

use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;

use crate::env::ConfigError;

/// The step did what it was asked.
pub const OK: u8 = 0;
/// The run failed: after its retries, or some items failed while the step carried on past them.
pub const FAILED: u8 = 1;
/// The configuration is invalid: nothing was attempted.
pub const CONFIG: u8 = 2;

/// An error that knows which exit code it deserves.
pub trait ExitStatus: std::error::Error {
    /// [`FAILED`] or [`CONFIG`].
    fn exit_code(&self) -> u8;
}

impl ExitStatus for ConfigError {
    fn exit_code(&self) -> u8 {
        CONFIG
    }
}

/// Runs a step as a process: `--version`/`--help`, telemetry, configuration, runtime, exit code.
///
/// `load` reads the configuration from the environment; `run` does the work. Errors are logged
/// once, each `#[source]` on its own `caused by:` line.
pub fn run_main<C, S, E, F, Fut>(
    name: &str,
    version: &str,
    usage: &str,
    load: impl FnOnce() -> Result<C, ConfigError>,
    run: F,
) -> ExitCode
where
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<S, E>>,
    E: ExitStatus,
{
    if let Some(arg) = std::env::args().nth(1) {
        return match arg.as_str() {
            // Written with writeln! and its error ignored: `--help | head` must not panic.
            "--version" | "-V" => {
                let _ = writeln!(std::io::stdout(), "{name} {version}");
                ExitCode::SUCCESS
            }
            "--help" | "-h" => {
                let _ = writeln!(std::io::stdout(), "{name} {version}\n\n{usage}");
                ExitCode::SUCCESS
            }
            other => {
                eprintln!(
                    "{name}: unexpected argument {other:?}; configuration comes from environment variables (see --help)"
                );
                ExitCode::from(CONFIG)
            }
        };
    }
    crate::telemetry::init();
    let config = match load() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(variable = %e.variable, "invalid configuration: {e}");
            return ExitCode::from(CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(FAILED);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(_) => ExitCode::from(OK),
        Err(e) => {
            report(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Waits for SIGTERM (what Kubernetes sends when a TaskRun is cancelled or times out) or SIGINT
/// and returns its name; `None` at once if the handlers cannot be installed. Steps race their
/// work against it so that partial output is removed rather than left behind.
pub async fn termination() -> Option<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok()?;
    let mut int = signal(SignalKind::interrupt()).ok()?;
    tokio::select! {
        _ = term.recv() => Some("SIGTERM"),
        _ = int.recv() => Some("SIGINT"),
    }
}

/// A cancellation token that is cancelled when the process gets SIGTERM or SIGINT (see
/// [`termination`]); the signal's name is logged once. Must be called inside a tokio runtime.
#[must_use]
pub fn cancel_on_termination() -> tokio_util::sync::CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    let token = tokio_util::sync::CancellationToken::new();
    let trigger = token.clone();
    // The handlers are installed here, before this returns, so a signal that comes while the
    // step starts is not lost to the default action (exit 143).
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "termination requested; stopping");
        trigger.cancel();
    });
    token
}

/// The texts of an error's sources, outermost first, skipping a cause whose text its parent's
/// message already shows (`object_store` and `reqwest` errors repeat their source in their own
/// message). The one formatter every step uses, so a cause is never printed twice.
pub fn causes(err: &dyn std::error::Error) -> Vec<String> {
    let mut out = Vec::new();
    let mut last = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !last.contains(&text) {
            out.push(text.clone());
        }
        last = text;
        source = cause.source();
    }
    out
}

/// An error and its [`causes`] on one line, joined with `": "`: for a retry's log line or a
/// per-store report, where a multi-line chain would be split across log records.
#[must_use]
pub fn one_line(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    for cause in causes(err) {
        s.push_str(": ");
        s.push_str(&cause);
    }
    s
}

/// Logs an error, then each of its [`causes`] on its own `caused by:` line.
pub fn report(err: &dyn std::error::Error) {
    tracing::error!("{err}");
    for cause in causes(err) {
        tracing::error!("caused by: {cause}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);
    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn a_cause_already_in_its_parents_text_is_skipped() {
        let e = Outer(Middle(Inner));
        assert_eq!(causes(&e), vec!["middle: inner".to_owned()]);
        assert_eq!(one_line(&e), "outer: middle: inner");
    }

    #[test]
    fn an_error_without_sources_is_its_own_text() {
        assert_eq!(one_line(&Inner), "inner");
        assert!(causes(&Inner).is_empty());
    }
}
