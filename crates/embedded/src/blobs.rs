//! `BlobStore` in a local directory: documents, parts and results are files, never
//! held in memory by the store. Clients upload and download through the API (the
//! store gives no URLs of its own), and [`LocalBlobs::expire`] deletes what outlived
//! its prefix's lifetime, as the S3 bucket's lifecycle rules do.

use std::io::ErrorKind;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use offpath_core::blob::LIFETIMES;
use offpath_core::{BlobError, BlobStore, SignedUrl};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Blobs as files below a root directory.
#[derive(Debug, Clone)]
pub struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    /// Blobs below `root` (created when missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| {
            BlobError::Other(format!(
                "cannot create the blob directory {}: {e}",
                root.display()
            ))
        })?;
        Ok(LocalBlobs { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key`: keys are relative paths of plain segments.
    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        let plain = !key.is_empty()
            && key.split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
        if plain {
            Ok(self.root.join(key))
        } else {
            Err(BlobError::Other(format!("{key:?} is not a blob key")))
        }
    }

    /// Deletes the blobs older than their prefix's lifetime at `now`; returns how many.
    pub async fn expire(&self, now: SystemTime) -> Result<usize, BlobError> {
        let mut deleted = 0;
        for (prefix, lifetime) in LIFETIMES {
            let dir = self.root.join(prefix.trim_end_matches('/'));
            for file in files(&dir).await? {
                let modified = tokio::fs::metadata(&file)
                    .await
                    .and_then(|m| m.modified())
                    .map_err(io(&file))?;
                let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
                if age > lifetime {
                    remove(&file).await?;
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }
}

/// An I/O error on `path` as a blob error.
fn io(path: &Path) -> impl Fn(std::io::Error) -> BlobError + '_ {
    move |err| match err.kind() {
        ErrorKind::NotFound => BlobError::NotFound(path.display().to_string()),
        _ => BlobError::Unavailable(format!("{}: {err}", path.display())),
    }
}

async fn remove(path: &Path) -> Result<(), BlobError> {
    match tokio::fs::remove_file(path).await {
        Err(err) if err.kind() != ErrorKind::NotFound => Err(io(path)(err)),
        _ => Ok(()),
    }
}

/// Every file below `dir` (none when it does not exist).
async fn files(dir: &Path) -> Result<Vec<PathBuf>, BlobError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(io(&dir)(err)),
        };
        while let Some(entry) = entries.next_entry().await.map_err(io(&dir))? {
            let kind = entry.file_type().await.map_err(io(&entry.path()))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        let path = self.path(key)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        }
        // Written beside, then renamed: a reader never sees half a blob.
        let partial = path.with_extension(format!("partial-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&partial, bytes)
            .await
            .map_err(io(&partial))?;
        tokio::fs::rename(&partial, &path).await.map_err(io(&path))
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        let path = self.path(key)?;
        tokio::fs::read(&path).await.map_err(io(&path))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BlobError> {
        let path = self.path(key)?;
        let mut file = tokio::fs::File::open(&path).await.map_err(io(&path))?;
        file.seek(std::io::SeekFrom::Start(range.start))
            .await
            .map_err(io(&path))?;
        let mut bytes = Vec::new();
        file.take(range.end.saturating_sub(range.start))
            .read_to_end(&mut bytes)
            .await
            .map_err(io(&path))?;
        Ok(bytes)
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io(&path)(err)),
        }
    }

    async fn concat(&self, key: &str, parts: &[String]) -> Result<u64, BlobError> {
        let path = self.path(key)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        }
        let partial = path.with_extension(format!("partial-{}", uuid::Uuid::new_v4().simple()));
        let mut out = tokio::fs::File::create(&partial)
            .await
            .map_err(io(&partial))?;
        let mut written = 0;
        for part in parts {
            let source = self.path(part)?;
            let mut input = tokio::fs::File::open(&source).await.map_err(io(&source))?;
            written += tokio::io::copy(&mut input, &mut out)
                .await
                .map_err(io(&partial))?;
        }
        out.flush().await.map_err(io(&partial))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(io(&path))?;
        Ok(written)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError> {
        let mut deleted = 0;
        // A prefix is a directory below the root, or the start of file names in one.
        let (dir, start) = match prefix.rsplit_once('/') {
            Some((dir, start)) => (self.path(dir)?, start),
            None => (self.root.clone(), prefix),
        };
        for file in files(&dir).await? {
            let relative = file.strip_prefix(&dir).unwrap_or(&file);
            if relative.to_string_lossy().starts_with(start) {
                remove(&file).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    async fn upload_url(
        &self,
        _key: &str,
        _valid: Duration,
    ) -> Result<Option<SignedUrl>, BlobError> {
        Ok(None)
    }

    async fn download_url(
        &self,
        _key: &str,
        _valid: Duration,
    ) -> Result<Option<SignedUrl>, BlobError> {
        Ok(None)
    }
}
