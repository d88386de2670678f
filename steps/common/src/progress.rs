//! Progress of a long transfer: how often it is logged and how its rate is computed, the same in
//! every step.

use std::time::{Duration, Instant};

/// How often a long transfer logs its progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Megabytes (10^6) per second; a zero duration counts as a microsecond.
#[allow(clippy::cast_precision_loss)]
#[must_use]
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-6)
}

/// Tells a transfer loop when to log: at most once per [`PROGRESS_EVERY`].
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    started: Instant,
    last: Instant,
}

impl Progress {
    /// Starts the clock now.
    #[must_use]
    pub fn start() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: now,
        }
    }

    /// The rate so far in MB/s if a progress line is due (and marks it logged), else `None`.
    pub fn due(&mut self, bytes: u64) -> Option<f64> {
        if self.last.elapsed() < PROGRESS_EVERY {
            return None;
        }
        self.last = Instant::now();
        Some(mb_per_s(bytes, self.started.elapsed()))
    }

    /// Time since [`Progress::start`].
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_megabytes_per_second() {
        assert!((mb_per_s(10_000_000, Duration::from_secs(2)) - 5.0).abs() < 1e-9);
        assert!(mb_per_s(1, Duration::ZERO).is_finite());
    }

    #[test]
    fn nothing_is_due_at_the_start() {
        let mut p = Progress::start();
        assert_eq!(p.due(1), None);
    }
}
