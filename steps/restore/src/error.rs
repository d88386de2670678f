//! What can stop a restore or a drill, and its exit code: 2 for configuration (including a
//! `RESTORE_CONFIRM` that does not name the snapshot), 1 for everything else.

use std::path::PathBuf;
use std::time::Duration;

use vault_backup_common::ExitStatus;
use vault_backup_common::env::ConfigError;
use vault_backup_common::exit;

/// The restore step's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure of the restore step. Messages name the object or node, then the cause, then a
/// hint; they never contain a token, key or secret id.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `RESTORE_CONFIRM` does not name the snapshot that `SNAPSHOT_NAME` left to the store.
    #[error(
        "RESTORE_CONFIRM: names {confirm:?} but the newest complete snapshot in {store} is {name:?}; set RESTORE_CONFIRM (or SNAPSHOT_NAME and RESTORE_CONFIRM) to the exact snapshot name. Nothing was restored"
    )]
    NotConfirmed {
        /// What `RESTORE_CONFIRM` says.
        confirm: String,
        /// The snapshot that would be restored.
        name: String,
        /// The store.
        store: String,
    },
    /// A forced restore into a cluster other than the snapshot's source, not confirmed as
    /// `RESTORE_CONFIRM=<snapshot>@<target cluster_name>`, or confirmed for another target.
    #[error(
        "RESTORE_CONFIRM: {problem}; set RESTORE_CONFIRM={name}@{target_name} if you mean to replace the data of the cluster at {addr} with this snapshot. Nothing was fetched or restored"
    )]
    TargetNotConfirmed {
        /// What does not match, with both identities.
        problem: String,
        /// The snapshot.
        name: String,
        /// The target's `cluster_name` (or a placeholder when it does not say).
        target_name: String,
        /// The leader asked.
        addr: String,
    },
    /// `CANARY_PATH` is set for the drill but the snapshot's manifest records no canary.
    #[error(
        "the manifest of {name} records no canary, but CANARY_PATH is set: the drill cannot prove the snapshot holds that run's data. Set CANARY_PATH on the backup's snapshot step too (the same mount and path), or unset it for the drill. Nothing was restored"
    )]
    CanaryNotRecorded {
        /// The snapshot.
        name: String,
    },
    /// The token cannot do what the restore needs (`sys/capabilities-self`), found before any
    /// byte of the snapshot is fetched.
    #[error(
        "the login at {addr} may not {what} (its capabilities there: {has}); its policy needs {needs} (see {policy}). Nothing was fetched or restored"
    )]
    Capabilities {
        /// The leader.
        addr: String,
        /// What it may not do, e.g. `restore through sys/storage/raft/snapshot-force`.
        what: String,
        /// The capabilities it has on that path.
        has: String,
        /// What it needs.
        needs: String,
        /// The policy file.
        policy: &'static str,
    },
    /// The target refused the login's token on `sys/capabilities-self`, which every token with
    /// the `default` policy may ask: found before any byte of the snapshot is fetched.
    #[error(
        "vault at {addr} refused the login's token (403 on sys/capabilities-self): it is invalid, expired or of another cluster (check the login variables against the cluster at VAULT_ADDR), or it lacks the default policy (then add path \"sys/capabilities-self\" {{ capabilities = [\"update\"] }} to its policy). Nothing was fetched or restored"
    )]
    LoginRefused {
        /// The leader.
        addr: String,
    },
    /// Talking to Vault or receiving a snapshot failed.
    #[error(transparent)]
    Vault(#[from] vault_backup_vault::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] vault_backup_stores::Error),
    /// The store holds no complete snapshot with this prefix.
    #[error(
        "{store} holds no complete snapshot named {prefix}-<timestamp> (one with its .sha256); check the store variables and SNAPSHOT_PREFIX"
    )]
    NoSnapshot {
        /// The store.
        store: String,
        /// The prefix.
        prefix: String,
    },
    /// A file of the snapshot is missing from the store.
    #[error("{object} does not exist; check SNAPSHOT_NAME and the store")]
    Missing {
        /// The object or path.
        object: String,
    },
    /// The `.sha256` or the manifest cannot be read.
    #[error("{object} is not usable: {detail}")]
    BadSidecar {
        /// The object or path.
        object: String,
        /// What is wrong.
        detail: String,
    },
    /// The fetched snapshot does not hash to its `.sha256`.
    #[error(
        "{object} hashes to {actual} but its .sha256 says {expected}; the copy is damaged and was not restored anywhere"
    )]
    ChecksumMismatch {
        /// The object.
        object: String,
        /// The digest in the `.sha256`.
        expected: String,
        /// The digest of the bytes fetched.
        actual: String,
    },
    /// A local file could not be written.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The safety snapshot of the target's current state failed: nothing was restored.
    #[error("the safety snapshot of {addr} before the restore failed, so nothing was restored")]
    SafetySnapshot {
        /// The target.
        addr: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// Something did not happen in time.
    #[error("{what} within {after:?}; raise RESTORE_TIMEOUT if it needs longer")]
    Timeout {
        /// What was awaited, e.g. `vault at X did not become active`.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// The scratch node is not fresh.
    #[error(
        "the scratch node at {addr} is already initialized; the drill and the recovery restore only into a fresh, uninitialized node (point VAULT_ADDR for the drill, RECOVER_SCRATCH_ADDR for the recovery, at the Task's sidecar, whose storage is an emptyDir)"
    )]
    NotFresh {
        /// The node.
        addr: String,
    },
    /// The snapshot's source cluster and the target have seals of different kinds (Shamir and
    /// an auto-unseal, or two auto-unseals): the restored keyring would not open.
    #[error(
        "the seals differ: {name} was taken from a cluster with a {source_seal} seal, but {target} has a {target_seal} seal; the restored keyring opens only with the source's seal, so the restore would leave it sealed for good. {hint}"
    )]
    SealsDiffer {
        /// The snapshot.
        name: String,
        /// The source cluster's seal type (the manifest's, or as the server's refusal says).
        source_seal: String,
        /// The target, e.g. `the cluster at https://vault-0:8200`.
        target: String,
        /// The target's seal type.
        target_seal: String,
        /// What was and was not done, and what to do.
        hint: String,
    },
    /// The target auto-unseals and is sealed after the restore: its seal did not open the
    /// restored keyring.
    #[error(
        "the cluster at {addr} is sealed after the restore of {name}: its {target_seal} seal could not open the restored keyring, which was sealed by the source cluster's seal ({source_seal}): the seals differ, or the KMS key is another. The cluster's data was replaced; the safety snapshot {safety} holds its state before the restore"
    )]
    SealedAfterRestore {
        /// The leader the restore went to.
        addr: String,
        /// The snapshot.
        name: String,
        /// The target's seal type.
        target_seal: String,
        /// The source's seal type, or `unrecorded`.
        source_seal: String,
        /// The safety snapshot's name.
        safety: String,
    },
    /// The auto-unseal scratch node sealed after the restore: its seal cannot open the
    /// restored keyring.
    #[error(
        "the scratch node at {addr} sealed after the restore: its {seal_type} seal could not open the restored keyring, which the source cluster's seal sealed; give the drill's node the source cluster's seal stanza, reaching the same key (for transit: the same address, mount_path and key_name)"
    )]
    ScratchSealed {
        /// The node.
        addr: String,
        /// Its seal type.
        seal_type: String,
    },
    /// The recovery keys do not match the restored data's recovery configuration.
    #[error(
        "the recovery keys in DRILL_RECOVERY_KEYS_FILE are not those of the restored snapshot at {addr} ({detail}); they must be the recovery keys of the cluster the snapshot was taken from"
    )]
    WrongRecoveryKeys {
        /// The node.
        addr: String,
        /// What the node said.
        detail: String,
    },
    /// The unseal keys do not unseal the restored data.
    #[error(
        "the unseal keys in DRILL_UNSEAL_KEYS_FILE do not unseal the restored snapshot at {addr} ({detail}); they must be the keys of the cluster the snapshot was taken from"
    )]
    WrongUnsealKeys {
        /// The node.
        addr: String,
        /// What Vault said, or how many keys were short.
        detail: String,
    },
    /// The canary the manifest promises is not in the restored data.
    #[error(
        "the canary {path} that the manifest of {name} records is missing from the restored data: the snapshot does not hold that run's data"
    )]
    CanaryMissing {
        /// The snapshot.
        name: String,
        /// `<mount>/data/<path>`.
        path: String,
    },
    /// Terminated by a signal.
    #[error(
        "interrupted by {0}; a partial download was removed (a restore request already sent may still complete on the server)"
    )]
    Interrupted(&'static str),
    /// Some paths of a recovery were not recovered (the others were, or were equal).
    #[error(
        "{count} path(s) not recovered: {paths}. The results recovered-paths and unchanged-paths name the rest"
    )]
    RecoverFailed {
        /// How many.
        count: usize,
        /// Each path with why (never a value).
        paths: String,
    },
    /// The source's keys made no root token on the restored data.
    #[error(
        "the keys in {variable} made no root token on the restored snapshot at {addr} ({detail}); they must be the {kind} keys of the cluster the snapshot was taken from"
    )]
    RootTokenRefused {
        /// The scratch node.
        addr: String,
        /// `DRILL_UNSEAL_KEYS_FILE` or `DRILL_RECOVERY_KEYS_FILE`.
        variable: &'static str,
        /// `unseal` or `recovery`.
        kind: &'static str,
        /// What the node said, or how many keys were short.
        detail: String,
    },
    /// The scratch root token could not be revoked.
    #[error(
        "the root token made on the scratch node at {addr} could not be revoked; it ends with the node (the Task's sidecar stops with the pod), but check that nothing else reaches that node"
    )]
    ScratchTokenNotRevoked {
        /// The scratch node.
        addr: String,
        /// Why.
        #[source]
        source: Box<vault_backup_vault::Error>,
    },
    /// The restored canary differs from the manifest's.
    #[error(
        "the canary {path} in the restored data differs from the manifest of {name}: {differences}"
    )]
    CanaryMismatch {
        /// The snapshot.
        name: String,
        /// `<mount>/data/<path>`.
        path: String,
        /// Which fields differ, with both values (the canary holds no secret).
        differences: String,
    },
}

impl Error {
    /// The exit code's class: configuration (2) or failure (1).
    #[must_use]
    pub fn is_config(&self) -> bool {
        match self {
            Self::Config(_) | Self::NotConfirmed { .. } | Self::TargetNotConfirmed { .. } => true,
            Self::Vault(e) => e.is_config(),
            _ => false,
        }
    }
}

impl ExitStatus for Error {
    fn exit_code(&self) -> u8 {
        if self.is_config() {
            exit::CONFIG
        } else {
            exit::FAILED
        }
    }
}
