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
    /// Recover: the paths written back, and those left alone as equal.
    pub recovered: Option<Recovered>,
}

/// What a recovery did (`RESTORE_MODE=recover`): path names only.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Written back as a new version.
    pub paths: Vec<String>,
    /// Already equal in the cluster.
    pub unchanged: Vec<String>,
    /// Dry run: what a recovery would write.
    pub would_recover: Vec<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}
