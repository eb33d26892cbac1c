//! The blob storage port (S3 in AWS, a local directory for the embedded backend): the
//! claim check for payloads that fit neither a job item nor a message (uploaded
//! documents, the parts of a document job, its result).
//!
//! Keys live under three prefixes, each with a lifetime that the S3 bucket's lifecycle
//! rules and the local directory's expiry both apply ([`LIFETIMES`]), so no blob
//! outlives its use without an expiry.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;

/// Most bytes in one uploaded document (10 MiB).
pub const MAX_UPLOAD_BYTES: u64 = 10 * 1024 * 1024;

/// Documents clients uploaded: `uploads/<owner digest>/<upload id>`.
pub const UPLOADS: &str = "uploads/";
/// Inputs and outputs of a document job's parts: `parts/<job id>/<part>.in|.jsonl`.
pub const PARTS: &str = "parts/";
/// Finished results: `results/<job id>.jsonl`.
pub const RESULTS: &str = "results/";

/// How long blobs under each prefix live (S3 lifecycle rules and local expiry): an
/// upload must be used within a day, parts only matter while their job runs, results
/// live as long as the longest job TTL (30 days).
pub const LIFETIMES: [(&str, Duration); 3] = [
    (UPLOADS, Duration::from_secs(24 * 3600)),
    (PARTS, Duration::from_secs(3 * 24 * 3600)),
    (RESULTS, Duration::from_secs(30 * 24 * 3600)),
];

/// What can go wrong talking to a [`BlobStore`].
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob at this key.
    #[error("no blob at {0}")]
    NotFound(String),
    /// The store cannot be reached or refused for load. Retry later.
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a misconfiguration or a bad key. Retrying will not help.
    #[error("blob store error: {0}")]
    Other(String),
}

impl BlobError {
    /// True when the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, BlobError::Unavailable(_))
    }
}

/// A URL a client uses without other credentials, and until when it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    /// The URL.
    pub url: String,
    /// When it stops working, epoch seconds.
    pub expires_at_epoch_s: u64,
}

/// Bytes by key.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `bytes` at `key`, replacing what was there.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError>;

    /// The whole blob (for blobs known to be small: a part's input or output).
    async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError>;

    /// Bytes `range` of the blob, clamped to its end (the head of a result, whose
    /// first line says how long its embeddings are).
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, BlobError>;

    /// The blob's size, or `None` when there is none.
    async fn size(&self, key: &str) -> Result<Option<u64>, BlobError>;

    /// Writes the blobs `parts`, one after another, to `key` without holding them all
    /// in memory; returns the size written.
    async fn concat(&self, key: &str, parts: &[String]) -> Result<u64, BlobError>;

    /// Deletes the blobs whose keys start with `prefix`; returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError>;

    /// A URL that a client PUTs the blob to, for `valid` from now (a presigned S3
    /// URL); `None` when clients upload through the API instead (the local store).
    async fn upload_url(&self, key: &str, valid: Duration) -> Result<Option<SignedUrl>, BlobError>;

    /// A URL that a client GETs the blob from, for `valid` from now; `None` when
    /// the API serves the blob itself (the local store).
    async fn download_url(
        &self,
        key: &str,
        valid: Duration,
    ) -> Result<Option<SignedUrl>, BlobError>;
}

/// An owner's digest, as the keys of its uploads hold it.
pub fn owner_digest(owner: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(owner.as_bytes())[..16])
}

/// The key of an upload: its owner's digest keeps one owner's upload ids from naming
/// another's blobs.
pub fn upload_key(owner: &str, upload: &str) -> String {
    uploaded_key(&owner_digest(owner), upload)
}

/// The key of an upload, from its owner's digest.
pub fn uploaded_key(owner_digest: &str, upload: &str) -> String {
    format!("{UPLOADS}{owner_digest}/{upload}")
}

/// The key of a part's input (`.in`) or output (`.jsonl`).
pub fn part_key(job: crate::JobId, part: u32, suffix: &str) -> String {
    format!("{PARTS}{job}/{part:06}.{suffix}")
}

/// The key of a document job's result.
pub fn result_key(job: crate::JobId) -> String {
    format!("{RESULTS}{job}.jsonl")
}
