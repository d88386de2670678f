//! Retention per store: a pure plan ([`plan`]) and the one place that carries it out
//! ([`apply`]).
//!
//! The decision which snapshots to keep is a pure function of a listing, a policy and `now`,
//! tested without a store; [`apply`] lists the store, logs the plan and deletes what it says
//! (or stops after the log line on a dry run).

pub mod apply;
pub mod plan;

pub use apply::{Applied, apply, complete_snapshots, remove_stale_temp_files};
pub use plan::{
    Decision, Policy, Reason, Snapshot, TEMP_MAX_AGE, plan, snapshots_from_files, stale_temp_files,
};
