//! Exit codes and the one place that maps errors to them.
//!
//! Every step's `main` is [`run_main_with_metrics`]: it sets up logging, reads the configuration
//! (exit 2 with one line naming the variable if it is unusable), runs the step on a tokio runtime,
//! maps the outcome to an exit code through [`ExitStatus`] and pushes the outcome to a Prometheus
//! Pushgateway. The codes are part of the interface and are listed in the README.

use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use crate::env::ConfigError;
use crate::metrics::{self, Metrics, Report};

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

/// Runs a step as a process: `--version`/`--help`, telemetry, configuration, runtime, exit code,
/// and then the run's outcome pushed to a Prometheus Pushgateway when `METRICS_PUSHGATEWAY_URL`
/// is set (see [`crate::metrics`]): the one place every step pushes. Errors are logged once,
/// each `#[source]` on its own `caused by:` line.
///
/// - The `METRICS_*` variables are read before the step's own configuration, best effort
///   ([`metrics::Pusher::from_env_or_warn`]): a value that cannot be used is one warning and no
///   push, and the step runs and exits exactly as it would unmonitored (monitoring must never
///   stop a backup).
/// - After the run, success or failure, the step's own gauges ([`Report::metrics`] of the
///   summary, or of the error) and its outcome ([`Metrics::outcome`]: exit code, wall time
///   since the process started, last success or last failure) are pushed under `step`. A step
///   configuration that does not load is pushed too, as a failure with exit code 2.
/// - `step` `None` pushes nothing (a mode of a binary whose runs must not overwrite the series
///   of its main mode, such as `taskrun-prune`'s guard).
/// - The push is best effort: it adds at most `METRICS_PUSH_TIMEOUT` and one warning line, and
///   never changes the exit code.
///
/// `--help` prints `usage` and then [`metrics::USAGE`]. The step runs on a tokio runtime of
/// the given [`Runtime`] flavor.
pub fn run_main_with_metrics<C, S, E, F, Fut>(
    name: &str,
    version: &str,
    usage: &str,
    step: Option<&str>,
    flavor: Runtime,
    load: impl FnOnce() -> Result<C, ConfigError>,
    run: F,
) -> ExitCode
where
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<S, E>>,
    S: Report,
    E: ExitStatus + Report,
{
    let started = Instant::now();
    if let Some(code) = answer_arguments(name, version, &format!("{usage}\n\n{}", metrics::USAGE)) {
        return code;
    }
    crate::telemetry::init();
    let Some(runtime) = runtime(flavor) else {
        return ExitCode::from(FAILED);
    };
    let pusher = {
        // The HTTP client is built inside the runtime it will run on.
        let _entered = runtime.enter();
        metrics::Pusher::from_env_or_warn()
    };
    let config = load();
    let mut gauges = Metrics::new();
    let code = match config {
        Err(e) => {
            config_error(&e);
            CONFIG
        }
        Ok(config) => match runtime.block_on(run(config)) {
            Ok(summary) => {
                summary.metrics(&mut gauges, SystemTime::now());
                OK
            }
            Err(e) => {
                report(&e);
                e.metrics(&mut gauges, SystemTime::now());
                e.exit_code()
            }
        },
    };
    if let Some(step) = step {
        gauges.outcome(code, started.elapsed(), SystemTime::now());
        runtime.block_on(metrics::push(pusher.as_ref(), step, &gauges));
    }
    ExitCode::from(code)
}

/// Answers `--version` and `--help`, and refuses any other argument; `None` when there is none.
fn answer_arguments(name: &str, version: &str, usage: &str) -> Option<ExitCode> {
    let arg = std::env::args().nth(1)?;
    Some(match arg.as_str() {
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
    })
}

/// Logs an unusable configuration: one line naming the variable.
fn config_error(e: &ConfigError) {
    tracing::error!(variable = %e.variable, "invalid configuration: {e}");
}

/// Which tokio runtime a step runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// All async work on the main thread, CPU-bound work on blocking threads: for a step whose
    /// work is one stream at a time, such as receiving a snapshot. Each chunk then wakes no
    /// other worker thread: on a 251 MB snapshot this took the snapshot step's system CPU from
    /// 0.25 s to 0.19 s and its wall time from 0.60 s to 0.54 s (issue 9).
    CurrentThread,
    /// One worker thread per core: for a step that moves several streams at once (sync's
    /// stores).
    MultiThread,
}

/// The tokio runtime a step runs on; `None` (logged) if it cannot start.
fn runtime(flavor: Runtime) -> Option<tokio::runtime::Runtime> {
    match flavor {
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .inspect_err(|e| tracing::error!("cannot start the async runtime: {e}"))
    .ok()
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
