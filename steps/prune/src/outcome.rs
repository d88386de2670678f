//! What a run did, as the step reports it.

/// What a run did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The namespace pruned.
    pub namespace: String,
    /// TaskRuns that matched the selector.
    pub listed: usize,
    /// List requests made.
    pub pages: usize,
    /// TaskRuns the plan deletes.
    pub planned: usize,
    /// TaskRuns deleted.
    pub deleted: usize,
    /// TaskRuns already gone when deleted (404): counted as done.
    pub already_gone: usize,
    /// TaskRuns kept.
    pub kept: usize,
    /// TaskRuns whose delete failed, by name.
    pub failed: Vec<String>,
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
}
