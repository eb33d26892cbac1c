//! Drives a batch handler (the worker, or the webhook deliverer) from a queue the way
//! the Lambda SQS event source mapping does: receive a batch, build a real `SqsEvent`,
//! call the handler, delete the messages it did not report as failures (all of them
//! stay when it errors). A [`Pool`] runs several pollers, as Lambda runs several
//! function instances.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{Context, LambdaEvent};
use offpath_core::{JobQueue, QueueMessage};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Worker, WorkerError};

/// An SQS batch handler, as a Lambda function with an SQS event source runs one.
#[async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    /// Handles one batch; the messages to retry come back as item failures.
    async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, WorkerError>;
}

#[async_trait]
impl BatchHandler for Worker {
    async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, WorkerError> {
        Worker::handle(self, event).await
    }
}

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

/// Pollers feeding one handler from one queue, until stopped.
pub struct Pool {
    stop: watch::Sender<bool>,
    pollers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `count` pollers (at least one) of `handler` on `queue`.
    pub fn start(
        handler: Arc<dyn BatchHandler>,
        queue: Arc<dyn JobQueue>,
        settings: PollSettings,
        count: usize,
    ) -> Pool {
        let (stop, stopped) = watch::channel(false);
        let pollers = (0..count.max(1))
            .map(|_| {
                tokio::spawn(run(
                    Arc::clone(&handler),
                    Arc::clone(&queue),
                    settings,
                    stopped.clone(),
                ))
            })
            .collect();
        Pool { stop, pollers }
    }

    /// Stops the pollers after the batches in hand, as a Ctrl-C of `offpath dev` does.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for poller in self.pollers {
            if let Err(err) = poller.await {
                tracing::warn!(error = %err, "a poller ended abnormally");
            }
        }
    }

    /// Ends the pollers where they are, batches in hand included, as the death of
    /// their process would: what they held comes back after its visibility timeout.
    pub fn kill(self) {
        for poller in self.pollers {
            poller.abort();
        }
    }
}

/// Polls until `shutdown` turns true; the batch in hand is finished first.
pub async fn run(
    handler: Arc<dyn BatchHandler>,
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
            process_batch(handler.as_ref(), queue.as_ref(), messages).await;
        }
    }
}

/// Hands one received batch to the handler and deletes what it acknowledged.
pub async fn process_batch(
    handler: &dyn BatchHandler,
    queue: &dyn JobQueue,
    messages: Vec<QueueMessage>,
) {
    let event = sqs_event(queue.arn(), &messages);
    let payload = LambdaEvent::new(event, Context::default());
    let failed: Vec<String> = match handler.handle(payload).await {
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
            record.attributes = [
                ("ApproximateReceiveCount", m.receive_count.to_string()),
                ("SentTimestamp", m.sent_at_epoch_ms.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(m.group.clone().map(|g| ("MessageGroupId".to_owned(), g)))
            .collect();
            record.event_source = Some("aws:sqs".into());
            record.event_source_arn = Some(queue_arn.to_owned());
            record.aws_region = Some(region.clone());
            record
        })
        .collect();
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    /// The poller's event and the event source mapping's (the real AWS event in
    /// tests/fixtures) carry the same record to the handler.
    #[test]
    fn polled_records_read_as_lambda_records() {
        let fixture: SqsEvent =
            serde_json::from_str(include_str!("../../../tests/fixtures/sqs_event.json")).unwrap();
        let lambda = &fixture.records[0];
        let attribute = |name: &str| lambda.attributes[name].parse().unwrap();
        let polled = QueueMessage {
            message_id: lambda.message_id.clone().unwrap(),
            receipt_handle: lambda.receipt_handle.clone().unwrap(),
            body: lambda.body.clone().unwrap(),
            receive_count: attribute("ApproximateReceiveCount") as u32,
            sent_at_epoch_ms: attribute("SentTimestamp"),
            group: None,
        };
        let arn = lambda.event_source_arn.as_deref().unwrap();
        let event = sqs_event(arn, &[polled]);
        let local = &event.records[0];
        assert_eq!(Record::from_sqs(local), Record::from_sqs(lambda));
        assert!(Record::from_sqs(lambda).is_some());
        assert_eq!(
            (
                &local.event_source,
                &local.event_source_arn,
                &local.aws_region
            ),
            (
                &lambda.event_source,
                &lambda.event_source_arn,
                &lambda.aws_region
            )
        );
        // Both serialise to the same shape of record, so what Lambda hands the
        // function's runtime, the poller hands the handler.
        let keys = |m: &SqsMessage| {
            let value = serde_json::to_value(m).unwrap();
            value
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(local), keys(lambda));
    }
}
