//! The Vault and OpenBao side of vault-backup, shared by every step that talks to a cluster.
//!
//! Taking a snapshot and restoring one need the same careful client: TLS from `VAULT_CACERT`,
//! the leader found from any node without sending a credential to a node on another scheme,
//! the same logins (token, AppRole, Kubernetes), and the same streaming receive of a snapshot
//! that hashes it and checks the archive's own `SHA256SUMS` as it passes. They live here, once,
//! so that no step crate depends on another.

pub mod archive;
pub mod client;
pub mod config;
pub mod download;
pub mod error;
pub mod generate_root;
pub mod kv;
pub mod save;

pub use client::{
    AutopilotServer, AutopilotState, ClusterIdentity, Init, Leader, LeaderInfo, RecoveryProof,
    SealStatus, Unseal, Vault,
};
pub use config::{Auth, Tls, VaultEnv, VaultSettings};
pub use error::{Error, Result};
pub use generate_root::RootRefused;
pub use kv::{CasWrite, KvPath, KvValue};
pub use save::{Saved, Target, save_snapshot};
