//! Where vault-backup keeps snapshots: S3 (any `object_store` backend) and a directory, behind
//! one trait, and the S3 settings read from the environment under the same names in every step.
//!
//! The sync step writes to these stores and the restore step reads back from them; both parse
//! `BUCKET_*`/`S3_*` with [`s3config`] and open the same [`store::Store`], so a bucket that the
//! sync step can write is one the restore step can read.

pub mod checksum;
mod dir;
pub mod lock;
mod object;
mod s3;
pub mod s3config;
pub mod store;

pub use s3config::{S3Config, S3Env};
pub use store::{ByteStream, Entry, Error, Result, Store, Writer};
