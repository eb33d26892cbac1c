//! The job queue port (SQS in AWS, in memory locally).

use std::time::Duration;

use async_trait::async_trait;

use crate::message::JobMessage;

/// A received message: what the worker reads of it, and the handle to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// The queue's id for the message.
    pub message_id: String,
    /// The handle for delete and change-visibility of this receive.
    pub receipt_handle: String,
    /// The raw body.
    pub body: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// When the message was sent (0 when the queue did not say).
    pub sent_at_epoch_ms: u64,
    /// The message group it was sent with (see [`message_group`]), if any.
    pub group: Option<String>,
}

/// What a batch handler (the worker, the webhook deliverer) says of a batch of
/// [`QueueMessage`]s: the messages to retry. The rest are acknowledged (deleted),
/// as the Lambda SQS event source mapping does with reported item failures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchReport {
    /// Message ids of the messages that must come back.
    pub retry: Vec<String>,
}

/// The message group of an owner's messages: the owner itself when it is a valid SQS
/// `MessageGroupId` (at most 128 printable ASCII characters), else a digest of it. SQS
/// fair queues (and the embedded queue) deliver across groups so that one owner's
/// backlog does not hold back another owner's jobs.
pub fn message_group(owner: &str) -> String {
    let valid =
        !owner.is_empty() && owner.len() <= 128 && owner.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        owner.to_owned()
    } else {
        use sha2::{Digest, Sha256};
        format!("sha256-{}", hex::encode(Sha256::digest(owner.as_bytes())))
    }
}

/// Messages waiting and in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Visible messages (approximate).
    pub visible: u64,
    /// Received and not yet deleted (approximate).
    pub in_flight: u64,
    /// Sent with a delay that has not yet passed (approximate).
    pub delayed: u64,
}

/// What can go wrong talking to a [`JobQueue`].
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

/// The queue that carries job ids from the API to the workers.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Enqueues a job message in `group` (its job's owner's [`message_group`]).
    async fn send(&self, message: &JobMessage, group: &str) -> Result<(), QueueError>;

    /// Receives up to `max` messages, waiting up to `wait` for the first (long polling).
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<QueueMessage>, QueueError>;

    /// Deletes a received message.
    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError>;

    /// Sets how long a received message stays invisible from now on.
    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError>;

    /// Sets how long several received messages stay invisible (SQS: one request per
    /// ten). Each message succeeds or fails alone; the first failure is returned.
    async fn change_visibility_all(
        &self,
        receipt_handles: &[&str],
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let mut first = Ok(());
        for handle in receipt_handles {
            let changed = self.change_visibility(handle, timeout).await;
            if first.is_ok() {
                first = changed;
            }
        }
        first
    }

    /// Approximate depth.
    async fn depth(&self) -> Result<QueueDepth, QueueError>;

    /// Deletes every message (SQS: PurgeQueue, at most once a minute per queue).
    async fn purge(&self) -> Result<(), QueueError>;

    /// The redrive policy's maxReceiveCount, if the queue has a dead-letter queue.
    async fn max_receive_count(&self) -> Result<Option<u32>, QueueError>;

    /// The queue's ARN, as event records name their source.
    fn arn(&self) -> &str;
}

/// The worker function's timeout in `template.yaml`; the job lease equals it.
pub const WORKER_TIMEOUT: Duration = Duration::from_secs(60);

/// How the jobs queue and its dead-letter queue behave, shared by `template.yaml`, the
/// provisioning code and the embedded queue (a test compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// How long a received message stays invisible. AWS advises at least six times
    /// the worker function's timeout.
    pub visibility_timeout: Duration,
    /// Receives before a message moves to the dead-letter queue.
    pub max_receive_count: u32,
    /// How long the jobs queue keeps a message.
    pub retention: Duration,
    /// How long the dead-letter queue keeps a message (the SQS maximum, 14 days).
    pub dlq_retention: Duration,
}

/// Most time one webhook delivery attempt may take.
pub const WEBHOOK_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook function's timeout (template.yaml).
pub const WEBHOOK_FUNCTION_TIMEOUT: Duration = Duration::from_secs(60);

impl QueueSettings {
    /// The webhooks queue: visibility six times the webhook function's timeout (AWS's
    /// guidance for an event source mapping), 33 receives (the deliverer's backoff of 5
    /// s doubling up to an hour spreads them over about 24 hours before the dead-letter
    /// queue), kept 4 days, 14 in the dead-letter queue.
    pub fn webhooks() -> Self {
        QueueSettings {
            visibility_timeout: WEBHOOK_FUNCTION_TIMEOUT * 6,
            max_receive_count: 33,
            ..QueueSettings::default()
        }
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            visibility_timeout: WORKER_TIMEOUT * 6,
            max_receive_count: 5,
            retention: Duration::from_secs(4 * 24 * 3600),
            dlq_retention: Duration::from_secs(14 * 24 * 3600),
        }
    }
}
