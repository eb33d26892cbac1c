//! Drives the worker handler from a queue the way the Lambda SQS event source mapping
//! does: receive a batch, build a real `SqsEvent`, call the handler, delete the
//! messages it did not report as failures (all of them stay when it errors).

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use lambda_runtime::{Context, LambdaEvent};
use offpath_core::{JobQueue, QueueMessage};
use tokio::sync::watch;

use crate::Worker;

/// How a poller receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSettings {
    /// Messages per batch (1-10), as the event source mapping's BatchSize.
    pub batch_size: u32,
    /// Long-poll wait per receive.
    pub wait: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        PollSettings {
            batch_size: 10,
            wait: Duration::from_secs(1),
        }
    }
}

/// Polls until `shutdown` turns true; the batch in hand is finished first.
pub async fn run(
    worker: Arc<Worker>,
    queue: Arc<dyn JobQueue>,
    settings: PollSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        let received = tokio::select! {
            received = queue.receive(settings.batch_size, settings.wait) => received,
            _ = shutdown.changed() => break,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(error = %err, "receive failed; retrying in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if !messages.is_empty() {
            process_batch(&worker, queue.as_ref(), messages).await;
        }
    }
}

/// Hands one received batch to the handler and deletes what it acknowledged.
pub async fn process_batch(worker: &Worker, queue: &dyn JobQueue, messages: Vec<QueueMessage>) {
    let event = sqs_event(queue.arn(), &messages);
    let payload = LambdaEvent::new(event, Context::default());
    let failed: Vec<String> = match worker.handle(payload).await {
        Ok(response) => response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect(),
        Err(err) => {
            tracing::warn!(error = %err, "batch failed; every message comes back");
            return;
        }
    };
    for message in messages.iter().filter(|m| !failed.contains(&m.message_id)) {
        if let Err(err) = queue.delete(&message.receipt_handle).await {
            tracing::warn!(message_id = %message.message_id, error = %err, "delete failed; the message will be delivered again");
        }
    }
}

/// The `SqsEvent` Lambda would receive for these messages.
pub fn sqs_event(queue_arn: &str, messages: &[QueueMessage]) -> SqsEvent {
    let region = queue_arn.split(':').nth(3).unwrap_or_default().to_owned();
    let mut event = SqsEvent::default();
    event.records = messages
        .iter()
        .map(|m| {
            let mut record = SqsMessage::default();
            record.message_id = Some(m.message_id.clone());
            record.receipt_handle = Some(m.receipt_handle.clone());
            record.body = Some(m.body.clone());
            record.md5_of_body = Some(m.md5_of_body.clone());
            record.attributes = [
                ("ApproximateReceiveCount", m.receive_count.to_string()),
                ("SentTimestamp", m.sent_at_epoch_ms.to_string()),
                (
                    "ApproximateFirstReceiveTimestamp",
                    m.first_received_at_epoch_ms.to_string(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            record.event_source = Some("aws:sqs".into());
            record.event_source_arn = Some(queue_arn.to_owned());
            record.aws_region = Some(region.clone());
            record
        })
        .collect();
    event
}
