//! The webhook deliverer: a batch handler for the webhooks queue. Each message names one event of one job; the deliverer reads the
//! job as it is now, POSTs `{"type", "timestamp", "data": <job view>}` signed for the
//! job's owner, and acknowledges on `2xx`. On `410 Gone` it stops the job's webhook and
//! acknowledges. Anything else comes back after an exponential backoff with jitter
//! (ChangeMessageVisibility), until the queue's maxReceiveCount moves it to the webhooks
//! dead-letter queue (33 receives: about 24 hours with the default backoff). Events of
//! one job in one batch go one after another in the order of their times, and a failed
//! one holds back the later ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use offpath_core::job::rfc3339;
use offpath_core::{
    BatchReport, Event, EventType, JobId, JobMessage, JobQueue, JobStore, JobView, Ports,
    QueueMessage, StoreError, Transition,
};
use offpath_webhooks::{Attempt, Sender};
use serde::Serialize;

use crate::Backoff;
use crate::WorkerError;
use crate::poller::BatchHandler;

/// The backoff between delivery attempts: 5 s doubling up to an hour, ±20%. With the
/// webhooks queue's 33 receives the last attempt comes about 24.4 hours after the
/// first (5 s + 10 s + ... + 2,560 s, then 23 hours), then the dead-letter queue.
pub const WEBHOOK_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(5),
    max: Duration::from_secs(3600),
};

/// Delivers webhook events.
#[derive(Clone)]
pub struct Deliverer {
    store: Arc<dyn JobStore>,
    webhooks: Arc<dyn JobQueue>,
    sender: Arc<Sender>,
    backoff: Backoff,
}

/// A delivery's body: what happened, when (the time of the write that caused it), and
/// the job as it is now (its output carried as the text the worker stored).
#[derive(Serialize)]
struct EventBody {
    #[serde(rename = "type")]
    kind: EventType,
    timestamp: String,
    data: JobView,
}

/// What became of one message.
enum Delivery {
    /// Acknowledge it.
    Done,
    /// Let it come back after this long.
    Retry(Duration),
}

impl Deliverer {
    /// A deliverer reading jobs from `ports.store`, backing off on `ports.webhooks`,
    /// sending with `sender`, waiting `backoff` between attempts.
    pub fn new(ports: &Ports, sender: Sender, backoff: Backoff) -> Self {
        Deliverer {
            store: Arc::clone(&ports.store),
            webhooks: Arc::clone(&ports.webhooks),
            sender: Arc::new(sender),
            backoff,
        }
    }

    /// Delivers one batch of the webhooks queue's messages; returns the messages to
    /// retry.
    pub async fn handle(&self, batch: &[QueueMessage]) -> Result<BatchReport, WorkerError> {
        let mut by_job: BTreeMap<JobId, Vec<(Event, &QueueMessage)>> = BTreeMap::new();
        let mut retries = Vec::new();
        for record in batch {
            match JobMessage::from_body(&record.body) {
                Ok(JobMessage {
                    job_id,
                    event: Some(event),
                    ..
                }) => by_job.entry(job_id).or_default().push((event, record)),
                _ => {
                    // Not an event: back at once, so it soon reaches the dead-letter
                    // queue for a look.
                    tracing::error!(message_id = record.message_id, "malformed webhook message");
                    retries.push((record, Duration::ZERO));
                }
            }
        }
        let delivered = join_all(
            by_job
                .into_iter()
                .map(|(job, events)| self.deliver_in_order(job, events)),
        )
        .await;
        retries.extend(
            delivered
                .into_iter()
                .flatten()
                .filter_map(|(record, delivery)| match delivery {
                    Delivery::Retry(delay) => Some((record, delay)),
                    Delivery::Done => None,
                }),
        );
        let back_offs = retries.iter().map(|(record, delay)| async move {
            let handle = &record.receipt_handle;
            if let Err(err) = self.webhooks.change_visibility(handle, *delay).await {
                tracing::warn!(error = %err, "could not delay a webhook retry");
            }
        });
        join_all(back_offs).await;
        Ok(BatchReport {
            retry: retries
                .into_iter()
                .map(|(record, _)| record.message_id.clone())
                .collect(),
        })
    }

    /// One job's events, oldest first; after a failure the later ones wait too.
    async fn deliver_in_order<'r>(
        &self,
        job: JobId,
        mut events: Vec<(Event, &'r QueueMessage)>,
    ) -> Vec<(&'r QueueMessage, Delivery)> {
        events.sort_by_key(|(event, _)| event.at);
        let mut results = Vec::with_capacity(events.len());
        let mut held: Option<Duration> = None;
        for (event, record) in events {
            let delivery = match held {
                Some(delay) => Delivery::Retry(delay),
                None => self.deliver(job, event, record.receive_count).await,
            };
            if let Delivery::Retry(delay) = delivery {
                held = Some(delay);
            }
            results.push((record, delivery));
        }
        results
    }

    /// One attempt at one event.
    async fn deliver(&self, id: JobId, event: Event, receive_count: u32) -> Delivery {
        let retry = Delivery::Retry(self.backoff.delay_near(receive_count));
        let job = match self.store.get(id).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                tracing::info!(job_id = %id, "webhook event of a job that no longer exists: dropped");
                return Delivery::Done;
            }
            Err(err) => {
                tracing::warn!(job_id = %id, error = %err, "could not read the job of a webhook event");
                return retry;
            }
        };
        let Some(webhook) = job.webhook.as_ref().filter(|w| !w.gone) else {
            return Delivery::Done;
        };
        let body = EventBody {
            kind: event.kind,
            timestamp: rfc3339(event.at),
            data: job.view(),
        };
        let body = serde_json::to_string(&body).expect("an event body serialises");
        let event_id = event.id(id);
        match self
            .sender
            .send(&webhook.url, &job.owner, &event_id, body)
            .await
        {
            Attempt::Delivered => {
                tracing::info!(job_id = %id, event = event.kind.as_str(), webhook_id = %event_id, receive_count, "webhook delivered");
                Delivery::Done
            }
            Attempt::Gone => {
                tracing::info!(job_id = %id, "the receiver answered 410 Gone: no more webhooks for this job");
                match self.store.apply(id, &Transition::WebhookGone).await {
                    Ok(_) | Err(StoreError::NotFound | StoreError::Conflict(_)) => Delivery::Done,
                    Err(err) => {
                        tracing::warn!(job_id = %id, error = %err, "could not record the webhook gone");
                        retry
                    }
                }
            }
            Attempt::Failed(why) => {
                tracing::warn!(job_id = %id, event = event.kind.as_str(), webhook_id = %event_id, receive_count, %why, "webhook delivery failed; retrying later");
                retry
            }
            Attempt::Refused(why) => {
                tracing::error!(job_id = %id, %why, "webhook URL refused at delivery: the event is dropped");
                Delivery::Done
            }
        }
    }
}

#[async_trait]
impl BatchHandler for Deliverer {
    async fn handle(&self, batch: &[QueueMessage]) -> Result<BatchReport, WorkerError> {
        Deliverer::handle(self, batch).await
    }
}
