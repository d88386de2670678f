//! Any `object_store` backend as a [`Store`]: multipart uploads with bounded parts in flight,
//! ranged reads pinned to the object's ETag, listing and deleting under a key prefix.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::store::{
    ByteStream, Entry, Error, OBJECT_PART_SIZE, OBJECT_PARTS_IN_FLIGHT, READ_PART_SIZE, Result,
    Store, Writer,
};

/// Any `object_store` backend, with snapshot files under an optional key prefix.
pub(crate) struct ObjectStoreBacked {
    /// The store's short name (`s3`).
    pub(crate) name: &'static str,
    /// The bucket as a URL (`s3://bucket`), for locations in logs.
    pub(crate) url: String,
    /// The key prefix snapshot files live under.
    pub(crate) prefix: Option<ObjectPath>,
    /// The client.
    pub(crate) inner: Arc<dyn ObjectStore>,
    /// How the checksum the server keeps is read back: particular to each service.
    pub(crate) checksum: ServerChecksum,
}

/// How a backend reads back the checksum its server keeps for an object (`object_store`'s
/// `head()` returns none of them).
pub(crate) enum ServerChecksum {
    /// S3's `x-amz-checksum-sha256`, from a presigned HEAD.
    S3(crate::s3::ChecksumReadBack),
    /// None that the sync step can compare with what it verified (GCS states an MD5, which the
    /// sync step does not compute; Azure none for a block list): the copy is read back and
    /// hashed (`readback.rs`).
    ReadBack,
}

impl ObjectStoreBacked {
    /// The key of `file`.
    pub(crate) fn path(&self, file: &str) -> ObjectPath {
        match &self.prefix {
            Some(p) => p.clone().join(file),
            None => ObjectPath::from(file),
        }
    }

    /// A [`Writer`] over a started multipart upload of `file`.
    pub(crate) fn writer(&self, file: &str, upload: Box<dyn MultipartUpload>) -> Box<dyn Writer> {
        Box::new(MultipartWriter {
            store: self.name,
            target: self.location(file),
            inner: WriteMultipart::new_with_chunk_size(upload, OBJECT_PART_SIZE),
        })
    }

    /// [`Store::open`] of `file` at `version` (the current one for `None`).
    pub(crate) fn open_at<'a>(
        &'a self,
        file: &'a str,
        version: Option<String>,
    ) -> BoxFuture<'a, Result<Option<ByteStream>>> {
        Box::pin(async move {
            let path = self.path(file);
            // A pinned version (a restore from object versions) is read by its id; else the
            // current one.
            let head = object_store::GetOptions {
                head: true,
                version: version.clone(),
                ..object_store::GetOptions::default()
            };
            let meta = match self.inner.get_opts(&path, head).await.map(|r| r.meta) {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.err("reading", file, e)),
            };
            let (name, target, inner) = (self.name, self.location(file), Arc::clone(&self.inner));
            let (size, e_tag, version) = (meta.size, meta.e_tag, meta.version);
            let parts = (0..size.div_ceil(READ_PART_SIZE))
                .map(move |i| i * READ_PART_SIZE..((i + 1) * READ_PART_SIZE).min(size));
            let stream = futures::stream::iter(parts)
                .map(move |range| {
                    let options = object_store::GetOptions {
                        range: Some(object_store::GetRange::Bounded(range.clone())),
                        // If-Match: an object overwritten while it is read fails the read
                        // (412) instead of splicing two objects into one stream.
                        if_match: e_tag.clone(),
                        version: version.clone(),
                        ..object_store::GetOptions::default()
                    };
                    let (inner, path, target) = (Arc::clone(&inner), path.clone(), target.clone());
                    async move {
                        let read = async {
                            let got = inner.get_opts(&path, options).await?;
                            got.bytes().await
                        };
                        read.await.map_err(|e| {
                            let action = if matches!(e, object_store::Error::Precondition { .. }) {
                                "reading (the object changed while it was read; run again)"
                            } else {
                                "reading"
                            };
                            Error::new(
                                name,
                                action,
                                format!("{target} bytes {}-{}", range.start, range.end),
                                e,
                            )
                        })
                    }
                })
                // One part in flight ahead of the one being consumed keeps the link busy
                // while the reader hashes and writes.
                .buffered(2);
            Ok(Some(stream.boxed()))
        })
    }

    /// An error while doing `action` to `file`.
    pub(crate) fn err(&self, action: &'static str, file: &str, e: object_store::Error) -> Error {
        Error::new(self.name, action, self.location(file), e)
    }
}

impl Store for ObjectStoreBacked {
    fn name(&self) -> &'static str {
        self.name
    }

    fn location(&self, file: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{}/{p}/{file}", self.url),
            None => format!("{}/{file}", self.url),
        }
    }

    fn chunk_size(&self) -> usize {
        OBJECT_PART_SIZE
    }

    fn begin<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Box<dyn Writer>>> {
        Box::pin(async move {
            let upload = self
                .inner
                .put_multipart(&self.path(file))
                .await
                .map_err(|e| self.err("starting the multipart upload of", file, e))?;
            Ok(self.writer(file, upload))
        })
    }

    fn put<'a>(&'a self, file: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.inner
                .put(&self.path(file), PutPayload::from(body))
                .await
                .map(drop)
                .map_err(|e| self.err("uploading", file, e))
        })
    }

    fn read<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let got = match self.inner.get(&self.path(file)).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.err("reading", file, e)),
            };
            got.bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| self.err("reading", file, e))
        })
    }

    /// Reads the object in ranged parts of [`READ_PART_SIZE`], one part ahead of the reader,
    /// each its own request with its own timeout and retries, all pinned to the ETag (and
    /// version) the object had when the read began.
    ///
    /// Why not one `get()` of the whole object: the client's timeout runs until a response
    /// body has finished, and `object_store`'s resumption of a broken body
    /// (`client/get.rs`, `retry_stream`) gives up once its retry context is older than
    /// `retry_timeout`; so one GET of a large snapshot died after one or two timeouts
    /// whatever its progress (120 + 120 s here). A part of 8 MiB fits its timeout on any link
    /// that can restore at all, and the whole read is bounded by the caller
    /// (`RESTORE_TIMEOUT`), which the user can raise.
    fn open<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<ByteStream>>> {
        self.open_at(file, None)
    }

    fn size<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            match self.inner.head(&self.path(file)).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err("reading the size of", file, e)),
            }
        })
    }

    fn sha256<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            match &self.checksum {
                ServerChecksum::ReadBack => crate::readback::sha256(self, file).await,
                ServerChecksum::S3(_) => Ok(None),
            }
        })
    }

    fn reads_back_sha256(&self) -> bool {
        matches!(self.checksum, ServerChecksum::ReadBack)
    }

    fn server_checksum<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            match &self.checksum {
                ServerChecksum::S3(s3) => s3.read(self, &self.path(file), file).await,
                ServerChecksum::ReadBack => Ok(None),
            }
        })
    }

    fn part_size(&self) -> Option<usize> {
        // The composite checksum is S3's; the others are checked by reading back.
        matches!(self.checksum, ServerChecksum::S3(_)).then_some(OBJECT_PART_SIZE)
    }

    fn keeps_temp_files(&self) -> bool {
        false
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Entry>>> {
        Box::pin(async move {
            let depth = self.prefix.as_ref().map_or(0, ObjectPath::parts_count);
            let metas: Vec<_> = self
                .inner
                .list(self.prefix.as_ref())
                .try_collect()
                .await
                .map_err(|e| self.err("listing", "", e))?;
            Ok(metas
                .into_iter()
                .filter(|m| m.location.parts_count() == depth + 1)
                .filter_map(|m| {
                    m.location
                        .filename()
                        .map(|name| Entry::new(name, m.last_modified))
                })
                .collect())
        })
    }

    fn delete<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.inner.delete(&self.path(file)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.err("deleting", file, e)),
            }
        })
    }
}

/// A multipart upload with bounded parts in flight.
struct MultipartWriter {
    store: &'static str,
    target: String,
    inner: WriteMultipart,
}

impl Writer for MultipartWriter {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.inner
                .wait_for_capacity(OBJECT_PARTS_IN_FLIGHT)
                .await
                .map_err(|e| Error::new(self.store, "uploading a part of", &self.target, e))?;
            self.inner.put(chunk);
            Ok(())
        })
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            // On error, WriteMultipart::finish aborts the upload itself.
            let Self {
                store,
                target,
                inner,
            } = *self;
            inner
                .finish()
                .await
                .map(drop)
                .map_err(|e| Error::new(store, "completing the multipart upload of", target, e))
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let Self {
                store,
                target,
                inner,
            } = *self;
            inner
                .abort()
                .await
                .map_err(|e| Error::new(store, "aborting the multipart upload of", target, e))
        })
    }
}
