//! Where vault-backup keeps snapshots: S3, Google Cloud Storage and Azure Blob (through
//! `object_store`) and a directory, behind one trait, and each store's settings read from the
//! environment under the same names in every step.
//!
//! The sync step writes to these stores and the restore step reads back from them; both parse
//! `BUCKET_*`/`S3_*` with [`s3config`], `GOOGLE_*`/`GCS_PREFIX` with [`gcsconfig`] and
//! `AZURE_*` with [`azureconfig`], and open the same [`store::Store`], so a bucket that the
//! sync step can write is one the restore step can read.

mod azure;
pub mod azureconfig;
pub mod checksum;
mod dir;
mod gcs;
pub mod gcsconfig;
pub mod lock;
mod object;
mod readback;
mod s3;
pub mod s3config;
pub mod store;

pub use azureconfig::{AzureConfig, AzureEnv};
pub use gcsconfig::{GcsConfig, GcsEnv};
pub use s3config::{S3Config, S3Env};
pub use store::{ByteStream, Entry, Error, Result, Store, Writer};
