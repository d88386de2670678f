//! The directory store: a PVC mounted as a Tekton workspace, written with `std::fs` and the
//! common crate's `fsutil` (temp file, fsync, rename, fsync the directory).

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::future::BoxFuture;
use vault_backup_common::{artifact, fsutil};

use crate::store::{ByteStream, DIR_CHUNK_SIZE, Entry, Error, Result, Store, Writer};

/// Builds the directory store over an existing directory.
#[must_use]
pub fn dir(path: &Path) -> Box<dyn Store> {
    Box::new(DirStore {
        dir: path.to_owned(),
    })
}

/// A local directory: a PVC mounted as a workspace.
struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    fn err(&self, action: &'static str, file: &str, e: std::io::Error) -> Error {
        Error::new("dir", action, self.location(file), e)
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

impl Store for DirStore {
    fn name(&self) -> &'static str {
        "dir"
    }

    fn location(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn chunk_size(&self) -> usize {
        DIR_CHUNK_SIZE
    }

    fn begin<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Box<dyn Writer>>> {
        Box::pin(async move {
            let dir = self.dir.clone();
            let tmp = blocking(move || fsutil::temp_file_in(&dir))
                .await
                .map_err(|e| self.err("creating a temp file for", file, e))?;
            let writer: Box<dyn Writer> = Box::new(DirWriter {
                tmp: Some(tmp),
                dir: self.dir.clone(),
                file: file.to_owned(),
            });
            Ok(writer)
        })
    }

    fn put<'a>(&'a self, file: &'a str, body: Vec<u8>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (dir, name) = (self.dir.clone(), file.to_owned());
            blocking(move || fsutil::write_atomic(&dir, &name, &body, true).map(drop))
                .await
                .map_err(|e| self.err("writing", file, e))
        })
    }

    fn read<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            match tokio::fs::read(self.dir.join(file)).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.err("reading", file, e)),
            }
        })
    }

    fn open<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<ByteStream>>> {
        Box::pin(async move {
            use tokio::io::AsyncReadExt as _;
            let f = match tokio::fs::File::open(self.dir.join(file)).await {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.err("reading", file, e)),
            };
            let target = self.location(file);
            let stream = futures::stream::try_unfold(f, move |mut f| {
                let target = target.clone();
                async move {
                    let mut buf = vec![0u8; DIR_CHUNK_SIZE];
                    let n = f
                        .read(&mut buf)
                        .await
                        .map_err(|e| Error::new("dir", "reading", target, e))?;
                    if n == 0 {
                        return Ok(None);
                    }
                    buf.truncate(n);
                    Ok(Some((Bytes::from(buf), f)))
                }
            });
            Ok(Some(stream.boxed()))
        })
    }

    fn size<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            match tokio::fs::metadata(self.dir.join(file)).await {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.err("reading the size of", file, e)),
            }
        })
    }

    fn reads_back_sha256(&self) -> bool {
        true
    }

    fn server_checksum<'a>(&'a self, _file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async { Ok(None) })
    }

    fn part_size(&self) -> Option<usize> {
        None
    }

    fn keeps_temp_files(&self) -> bool {
        true
    }

    fn sha256<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let path = self.dir.join(file);
            blocking(move || artifact::hash_file(&path).map(|(sha, _)| Some(sha)))
                .await
                .map_err(|e| self.err("reading back", file, e))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Entry>>> {
        Box::pin(async move {
            let dir = self.dir.clone();
            blocking(move || {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(&dir)? {
                    let entry = entry?;
                    if entry.file_type()?.is_file()
                        && let Ok(name) = entry.file_name().into_string()
                    {
                        let modified = entry.metadata()?.modified()?;
                        names.push(Entry::new(name, DateTime::<Utc>::from(modified)));
                    }
                }
                Ok(names)
            })
            .await
            .map_err(|e| self.err("listing", "", e))
        })
    }

    fn delete<'a>(&'a self, file: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (dir, name) = (self.dir.clone(), file.to_owned());
            blocking(move || {
                match std::fs::remove_file(dir.join(&name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                }
                fsutil::fsync_dir(&dir)
            })
            .await
            .map_err(|e| self.err("deleting", file, e))
        })
    }
}

/// A file being written to a hidden temp file in the directory; renamed into place on finish.
struct DirWriter {
    tmp: Option<tempfile::NamedTempFile>,
    dir: PathBuf,
    file: String,
}

impl DirWriter {
    fn err(&self, action: &'static str, e: std::io::Error) -> Error {
        Error::new(
            "dir",
            action,
            self.dir.join(&self.file).display().to_string(),
            e,
        )
    }
}

impl Writer for DirWriter {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let Some(mut tmp) = self.tmp.take() else {
                return Err(self.err("writing", std::io::Error::other("writer already failed")));
            };
            let result = tokio::task::spawn_blocking(move || {
                let r = tmp.write_all(&chunk);
                (tmp, r)
            })
            .await;
            match result {
                Ok((tmp, Ok(()))) => {
                    self.tmp = Some(tmp);
                    Ok(())
                }
                // Dropping the temp file removes it.
                Ok((_tmp, Err(e))) => Err(self.err("writing", e)),
                Err(e) => Err(self.err("writing", std::io::Error::other(e))),
            }
        })
    }

    fn copies_files(&self) -> bool {
        true
    }

    fn copy_from(
        &mut self,
        src: std::fs::File,
        len: u64,
    ) -> BoxFuture<'_, Result<(std::fs::File, u64)>> {
        Box::pin(async move {
            let Some(mut tmp) = self.tmp.take() else {
                return Err(self.err("writing", std::io::Error::other("writer already failed")));
            };
            // std::io::copy between two files copies in the kernel: the bytes never pass
            // through this process (measured: the user-space read and write of the copy were
            // most of the step's system time). The copy is checked by reading it back.
            let result = tokio::task::spawn_blocking(move || {
                use std::io::Read as _;
                let r = std::io::copy(&mut (&src).take(len), tmp.as_file_mut());
                (src, tmp, r)
            })
            .await;
            match result {
                Ok((src, tmp, Ok(n))) => {
                    self.tmp = Some(tmp);
                    Ok((src, n))
                }
                Ok((_, _tmp, Err(e))) => Err(self.err("writing", e)),
                Err(e) => Err(self.err("writing", std::io::Error::other(e))),
            }
        })
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let Some(tmp) = self.tmp.take() else {
                return Err(self.err("writing", std::io::Error::other("writer already failed")));
            };
            let (dir, file) = (self.dir.clone(), self.file.clone());
            // Replacing is deliberate: a re-run of the same snapshot rewrites it whole in one
            // rename, and its `.sha256` is replaced only after this copy was checked.
            blocking(move || fsutil::persist(tmp, &dir, &file, true).map(drop))
                .await
                .map_err(|e| self.err("syncing and renaming into place", e))
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            if let Some(tmp) = self.tmp.take() {
                blocking(move || tmp.close())
                    .await
                    .map_err(|e| self.err("removing the temp file for", e))?;
            }
            Ok(())
        })
    }
}
