//! The check of a copy where the server states no checksum that proves it is the verified
//! bytes (GCS, Azure Blob): the copy is read back whole, in the ranged parts a restore reads,
//! and hashed. It costs one download of the snapshot; it proves what a restore will get.

use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::object::ObjectStoreBacked;
use crate::store::{Result, Store};

/// The SHA-256 (hex) of `file` as the store serves it, or `None` if it does not exist.
///
/// # Errors
/// A store [`crate::store::Error`] if a read fails.
pub(crate) async fn sha256(store: &ObjectStoreBacked, file: &str) -> Result<Option<String>> {
    let Some(mut stream) = store.open(file).await? else {
        return Ok(None);
    };
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        // Hashing 8 MiB takes milliseconds: not worth a trip to the blocking pool.
        hasher.update(&chunk);
    }
    Ok(Some(hex::encode(hasher.finalize())))
}
