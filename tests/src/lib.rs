//! Real servers on loopback for the vault-backup tests and the demo.
//!
//! The steps talk to Vault, S3 and Kubernetes; a backup tool tested against mocks proves little
//! about the day someone restores. So the tests start the real thing where it can be installed
//! here: OpenBao (the Vault-compatible server, real raft and snapshot API) and SeaweedFS (S3 with
//! signature and checksum checks), both installed by `make testbed` into `.venv`. Only the
//! Kubernetes API is a stand-in ([`kube_standin`]), because no API server installs here.
//!
//! Every server listens on a free port of 127.0.0.1 (or, in a test process that runs Tasks through
//! the [`runner`], of the pod network's host address: see [`podnet`]), keeps its data in a temp
//! directory and is killed when its handle drops. Its log is kept so a failing test can print it.

// Test support: a panic with a clear message is the error handling, and every helper's result
// is meant to be used.
#![allow(clippy::missing_panics_doc, clippy::must_use_candidate)]

pub mod azurite;
pub mod canned;
pub mod check;
pub mod e2e;
pub mod fake_gcs;
pub mod fixture;
pub mod kube_standin;
pub mod openbao;
pub mod pod;
pub mod podnet;
pub mod process;
pub mod pushgateway;
pub mod runner;
pub mod seaweed;
pub mod strip_proxy;
pub mod throttle;
pub mod transit;
pub mod venv;
