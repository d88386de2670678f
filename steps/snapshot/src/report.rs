//! What a successful snapshot run produced: what the results, the log and the metrics report.

use std::path::PathBuf;

use vault_backup_common::Manifest;

/// What one successful run produced.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The snapshot's name (no suffix).
    pub name: String,
    /// The `.snap` file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256 (hex).
    pub sha256: String,
    /// The leader it came from.
    pub leader: String,
    /// The attempt that succeeded (1 = first).
    pub attempt: u32,
    /// The manifest written beside it.
    pub manifest: Manifest,
}
