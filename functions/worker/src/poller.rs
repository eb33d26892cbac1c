//! Drives a batch handler (the worker, or the webhook deliverer) from a queue the way
//! the Lambda SQS event source mapping does: receive a batch, call the handler, delete
//! the messages it did not report for retry (all of them stay when it errors). A
//! [`Pool`] runs several pollers, as Lambda runs several function instances.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use offpath_core::{BatchReport, JobQueue, QueueMessage};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Worker, WorkerError};

/// A handler of a queue's message batches, as a Lambda function with an SQS event
/// source runs one.
#[async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    /// Handles one batch; the messages to retry come back in the report.
    async fn handle(&self, batch: &[QueueMessage]) -> Result<BatchReport, WorkerError>;
}

#[async_trait]
impl BatchHandler for Worker {
    async fn handle(&self, batch: &[QueueMessage]) -> Result<BatchReport, WorkerError> {
        Worker::handle(self, batch).await
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
    let retry = match handler.handle(&messages).await {
        Ok(report) => report.retry,
        Err(err) => {
            tracing::warn!(error = %err, "batch failed; every message comes back");
            return;
        }
    };
    for message in messages.iter().filter(|m| !retry.contains(&m.message_id)) {
        if let Err(err) = queue.delete(&message.receipt_handle).await {
            tracing::warn!(message_id = %message.message_id, error = %err, "delete failed; the message will be delivered again");
        }
    }
}
