//! The job queue port (SQS in AWS, in memory locally).

use std::time::Duration;

use async_trait::async_trait;

use crate::error::QueueError;
use crate::message::JobMessage;

/// A received message with the attributes the worker needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// The queue's id for the message.
    pub message_id: String,
    /// The handle for delete and change-visibility of this receive.
    pub receipt_handle: String,
    /// The raw body.
    pub body: String,
    /// MD5 of the body, as SQS reports it.
    pub md5_of_body: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// When the message was sent.
    pub sent_at_epoch_ms: u64,
    /// When the message was first received.
    pub first_received_at_epoch_ms: u64,
}

/// Messages waiting and in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Visible messages (approximate).
    pub visible: u64,
    /// Received and not yet deleted (approximate).
    pub in_flight: u64,
}

/// The queue that carries job ids from the API to the workers.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Enqueues a job message.
    async fn send(&self, message: &JobMessage) -> Result<(), QueueError>;

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

    /// Approximate depth.
    async fn depth(&self) -> Result<QueueDepth, QueueError>;

    /// The redrive policy's maxReceiveCount, if the queue has a dead-letter queue.
    async fn max_receive_count(&self) -> Result<Option<u32>, QueueError>;

    /// The queue's ARN, as event records name their source.
    fn arn(&self) -> &str;
}
