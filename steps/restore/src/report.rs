//! What a successful restore or drill did: what the results, the log and the metrics report.

/// What one successful run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The restored snapshot's name.
    pub name: String,
    /// The whole run, in seconds.
    pub seconds: f64,
    /// Drill: the restored raft index; cluster: the manifest's (or the archive's).
    pub raft_index: u64,
    /// Drill: `ok` or `skipped`.
    pub canary: Option<&'static str>,
    /// Cluster: whether the cluster is sealed after the restore.
    pub sealed: Option<bool>,
    /// Cluster: the safety snapshot's name.
    pub safety_snapshot: Option<String>,
    /// Whether this was a drill (`RESTORE_MODE=drill`).
    pub drill: bool,
}
