//! What the worker reads of an SQS record, decoded once at the edge. The Lambda event
//! source mapping and the local poller both deliver `SqsMessage`s; this is the one
//! place that reads their attributes.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};

use crate::WorkerError;

/// One record of a batch, as the handler uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// The id item failures are reported by.
    pub(crate) message_id: &'a str,
    /// The handle to change the message's visibility with.
    pub(crate) receipt_handle: Option<&'a str>,
    /// The body: a job message, or something that is not one.
    pub(crate) body: &'a str,
    /// Receives so far, this one included (1 when the attribute is missing).
    pub(crate) receive_count: u32,
    /// When the message was sent, if the record says.
    pub(crate) sent_at_epoch_ms: Option<u64>,
}

impl<'a> Record<'a> {
    /// Reads a record; `None` when it has no message id, which an item failure needs.
    pub(crate) fn from_sqs(message: &'a SqsMessage) -> Option<Self> {
        let attribute = |name: &str| message.attributes.get(name).and_then(|v| v.parse().ok());
        Some(Record {
            message_id: message.message_id.as_deref().filter(|id| !id.is_empty())?,
            receipt_handle: message.receipt_handle.as_deref(),
            body: message.body.as_deref().unwrap_or_default(),
            receive_count: attribute("ApproximateReceiveCount").unwrap_or(1) as u32,
            sent_at_epoch_ms: attribute("SentTimestamp"),
        })
    }
}

/// The records of a batch; an error when one has no message id (the batch cannot
/// report item failures, so SQS retries all of it).
pub(crate) fn records(event: &SqsEvent) -> Result<Vec<Record<'_>>, WorkerError> {
    event
        .records
        .iter()
        .map(Record::from_sqs)
        .collect::<Option<Vec<_>>>()
        .ok_or(WorkerError::MissingMessageId)
}
