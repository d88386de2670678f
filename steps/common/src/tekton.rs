//! Tekton results: small values a step hands to the next step and to whoever reads the TaskRun.
//!
//! Tekton gives each result a file path (`$(results.snapshot-name.path)`); the Task passes it to
//! the step as `RESULT_SNAPSHOT_NAME_PATH`. Alternatively `RESULTS_DIR` names a directory and each
//! result is written to a file named after it. Values are written exactly, with no trailing
//! newline, because Tekton and `tkn` show the file's bytes as the result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where to write results; empty when the step runs outside Tekton.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Results {
    dir: Option<PathBuf>,
    paths: BTreeMap<String, PathBuf>,
}

/// The variable that names a result's own file: `snapshot-name` → `RESULT_SNAPSHOT_NAME_PATH`.
#[must_use]
pub fn path_variable(result: &str) -> String {
    format!(
        "RESULT_{}_PATH",
        result.to_ascii_uppercase().replace('-', "_")
    )
}

impl Results {
    /// Reads `RESULTS_DIR` and `RESULT_<NAME>_PATH` for each of `names` from the environment.
    #[must_use]
    pub fn from_env(names: &[&str]) -> Self {
        Self::from_lookup(names, |var| std::env::var(var).ok())
    }

    /// Like [`Results::from_env`], with a custom variable lookup (for tests).
    pub fn from_lookup(names: &[&str], lookup: impl Fn(&str) -> Option<String>) -> Self {
        let set = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
        let dir = set("RESULTS_DIR").map(PathBuf::from);
        let paths = names
            .iter()
            .filter_map(|n| set(&path_variable(n)).map(|p| ((*n).to_owned(), PathBuf::from(p))))
            .collect();
        Self { dir, paths }
    }

    /// Results written to files in `dir` (for tests and local runs).
    #[must_use]
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
            paths: BTreeMap::new(),
        }
    }

    /// The file `name` is written to, if any.
    #[must_use]
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.paths
            .get(name)
            .cloned()
            .or_else(|| self.dir.as_ref().map(|d| d.join(name)))
    }

    /// Writes `value` exactly (no trailing newline) to the result's file, if it has one.
    ///
    /// # Errors
    /// The I/O error, with the path, if the file cannot be written.
    pub fn write(&self, name: &str, value: &str) -> std::io::Result<Option<PathBuf>> {
        let Some(path) = self.path(name) else {
            return Ok(None);
        };
        write_exact(&path, value).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("result {name} at {}: {e}", path.display()),
            )
        })?;
        tracing::debug!(result = name, path = %path.display(), "result written");
        Ok(Some(path))
    }
}

fn write_exact(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names_follow_result_names() {
        assert_eq!(
            path_variable("snapshot-sha256"),
            "RESULT_SNAPSHOT_SHA256_PATH"
        );
    }

    #[test]
    fn own_path_wins_over_dir_and_values_have_no_newline() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own");
        let own_s = own.display().to_string();
        let d = dir.path().display().to_string();
        let results = Results::from_lookup(&["snapshot-name", "snapshot-bytes"], |v| match v {
            "RESULTS_DIR" => Some(d.clone()),
            "RESULT_SNAPSHOT_NAME_PATH" => Some(own_s.clone()),
            _ => None,
        });
        results.write("snapshot-name", "vault-1").unwrap();
        results.write("snapshot-bytes", "42").unwrap();
        assert_eq!(std::fs::read(&own).unwrap(), b"vault-1");
        assert_eq!(
            std::fs::read(dir.path().join("snapshot-bytes")).unwrap(),
            b"42"
        );
        assert!(!dir.path().join("snapshot-name").exists());
    }

    #[test]
    fn no_paths_writes_nothing() {
        let results = Results::from_lookup(&["x"], |_| None);
        assert_eq!(results.write("x", "1").unwrap(), None);
    }
}
