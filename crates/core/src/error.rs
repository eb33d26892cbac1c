//! Errors of the ports, typed so callers can tell retryable from permanent.

use serde::{Deserialize, Serialize};

use crate::job::Job;

/// The error code of a job that failed on its last receive (its message went to the
/// dead-letter queue) or whose worker died on its last attempt. Only such a job can be
/// revived by a redrive.
pub const DEAD_LETTERED: &str = "dead_lettered";

/// A job's error as stored and shown: a stable snake_case code and a human sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Stable, machine-readable code such as `invalid_input` or `dead_lettered`.
    pub code: String,
    /// A sentence for humans.
    pub message: String,
}

impl ErrorInfo {
    /// Builds an error from a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// What can go wrong talking to a [`crate::JobStore`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The job does not exist.
    #[error("job not found")]
    NotFound,
    /// A conditional write failed; this is the record as it is now.
    #[error("the job changed under us: it is {} now", .0.status)]
    Conflict(Box<Job>),
    /// The store cannot be reached or refused for load (throttling, timeout, outage).
    /// Retry later.
    #[error("job store unavailable: {0}")]
    Unavailable(String),
    /// The job is larger than the store accepts.
    #[error("job too large for the store: {0}")]
    TooLarge(String),
    /// Anything else: a misconfiguration or a corrupt record. Retrying will not help.
    #[error("job store error: {0}")]
    Other(String),
}

impl StoreError {
    /// True when the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// What can go wrong talking to a [`crate::JobQueue`].
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue cannot be reached or refused for load. Retry later.
    #[error("job queue unavailable: {0}")]
    Unavailable(String),
    /// The receipt handle is no longer valid (the message was received again or deleted).
    #[error("receipt handle no longer valid: {0}")]
    StaleReceipt(String),
    /// Anything else: a misconfiguration. Retrying will not help.
    #[error("job queue error: {0}")]
    Other(String),
}

impl QueueError {
    /// True when the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, QueueError::Unavailable(_))
    }
}
