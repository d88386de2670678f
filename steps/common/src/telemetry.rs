//! Logging set-up: readable text on a terminal, one JSON object per line in a container.
//!
//! `LOG_FORMAT=json` selects JSON (what the Task sets, so log collectors can parse it);
//! `RUST_LOG` filters as usual and defaults to `info`. Logs go to stderr; stdout is left for
//! `--version` and `--help`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless (the second call does nothing).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder
            .compact()
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
