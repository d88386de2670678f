//! The pieces every vault-backup step needs and that must behave the same in all of them.
//!
//! A backup job is only trustworthy if its steps agree on the small things: how a
//! misconfiguration is reported (one line naming the variable, exit code 2), how logs look
//! (text on a terminal, JSON in a container), how Tekton results are written (exactly, with no
//! trailing newline) and, above all, what a finished snapshot looks like on disk. This crate
//! holds those contracts so that no step can drift from another.

pub mod artifact;
pub mod env;
pub mod exit;
pub mod fsutil;
pub mod metrics;
pub mod progress;
pub mod tekton;
pub mod telemetry;

pub use artifact::{Artifact, Manifest};
pub use env::{ConfigError, Secret};
pub use exit::{ExitStatus, Runtime, run_main_with_metrics};
