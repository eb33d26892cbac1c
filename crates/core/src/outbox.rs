//! The webhook outbox: the events a job's state implies, recorded by the very write
//! that causes them (a job that starts or ends has an event due until it is marked
//! sent), then handed to the webhooks queue by [`publish`]; whoever dies in between,
//! the next publish (a worker, the API or the sweep) sends it.

use std::collections::BTreeSet;

use crate::job::Job;
use crate::message::JobMessage;
use crate::queue::{JobQueue, QueueError, message_group};
use crate::store::{JobStore, StoreError};
use crate::transition::Transition;
use crate::webhook::{Event, EventKind, EventType};

impl Job {
    /// The events the job's state implies that are still in its outbox, oldest first.
    pub fn due_events(&self) -> Vec<Event> {
        let Some(webhook) = self.webhook.as_ref().filter(|w| !w.gone) else {
            return Vec::new();
        };
        let mut due = Vec::new();
        if webhook.unsent.contains(&EventKind::Started)
            && let Some(at) = self.started_at_epoch_ms
        {
            due.push(Event {
                kind: EventType::Started,
                at,
            });
        }
        if webhook.unsent.contains(&EventKind::Completed)
            && let (Some(kind), Some(at)) = (
                EventType::completion(self.status),
                self.finished_at_epoch_ms,
            )
        {
            due.push(Event { kind, at });
        }
        due
    }

    /// What leaves the outbox once `sent` are in the webhooks queue: their kinds, and
    /// for a terminal job (or a gone receiver) every kind left, since none can happen
    /// any more (a job cancelled while queued never starts).
    pub fn sendable_done(&self, sent: &[Event]) -> BTreeSet<EventKind> {
        let Some(webhook) = &self.webhook else {
            return BTreeSet::new();
        };
        if self.status.is_terminal() || webhook.gone {
            return webhook.unsent.clone();
        }
        sent.iter().map(|event| event.kind.kind()).collect()
    }

    /// True when the job has events in its outbox.
    pub fn has_unsent_events(&self) -> bool {
        self.webhook.as_ref().is_some_and(|w| !w.unsent.is_empty())
    }
}

/// Handing events to the webhooks queue failed; the outbox keeps them for the next try.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The webhooks queue refused the message.
    #[error("could not queue a webhook event: {0}")]
    Queue(#[from] QueueError),
    /// The outbox could not be updated (the event may be sent again, with its id).
    #[error("could not mark webhook events sent: {0}")]
    Store(#[from] StoreError),
}

/// Sends the due events of `job` (as just written or read) to the webhooks queue and
/// takes them out of its outbox. Returns how many were sent. Sending twice is harmless:
/// a resend carries the same event id.
pub async fn publish(
    store: &dyn JobStore,
    webhooks: &dyn JobQueue,
    job: &Job,
) -> Result<usize, PublishError> {
    if !job.has_unsent_events() {
        return Ok(0);
    }
    let due = job.due_events();
    for event in &due {
        webhooks
            .send(
                &JobMessage::event(job.id, *event),
                &message_group(&job.owner),
            )
            .await?;
    }
    let kinds = job.sendable_done(&due);
    if !kinds.is_empty() {
        match store
            .apply(job.id, &Transition::events_sent(job, kinds))
            .await
        {
            // The job moved on (it ended, or was revived): its next publish sends what
            // is due then, these events again among them (same ids).
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(due.len())
}

/// [`publish`] for callers that carry on whatever happens: a failure is logged and the
/// outbox keeps the events for the sweep.
pub async fn publish_or_log(store: &dyn JobStore, webhooks: &dyn JobQueue, job: &Job) {
    if let Err(err) = publish(store, webhooks, job).await {
        tracing::warn!(job_id = %job.id, error = %err, "webhook events stay in the outbox; the sweep sends them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobId, NewJob};
    use crate::json::JsonText;
    use crate::status::JobStatus;
    use crate::task_name::TaskName;
    use crate::webhook::Webhook;

    fn job(events: &[EventKind]) -> Job {
        Job::from_new(NewJob {
            id: JobId::random(),
            owner: "o".into(),
            task: TaskName::new("embed"),
            input: JsonText::of(&serde_json::json!({})).unwrap(),
            request_hash: "h".into(),
            idempotency_key: None,
            created_at_epoch_ms: 1,
            expires_at_epoch_s: 2,
            webhook: Some(Webhook::new(
                "https://example.com/hook",
                events.iter().copied().collect(),
            )),
        })
    }

    #[test]
    fn state_implies_events_and_their_ids_are_stable() {
        let mut job = job(&[EventKind::Started, EventKind::Completed]);
        assert!(job.due_events().is_empty());
        job.status = JobStatus::Running;
        job.started_at_epoch_ms = Some(10);
        let started = job.due_events();
        assert_eq!(
            started,
            [Event {
                kind: EventType::Started,
                at: 10
            }]
        );
        assert_eq!(job.sendable_done(&started), [EventKind::Started].into());
        job.status = JobStatus::Failed;
        job.finished_at_epoch_ms = Some(20);
        let due = job.due_events();
        assert_eq!(due[1].kind, EventType::Failed);
        assert_eq!(due[1].id(job.id), due[1].id(job.id));
        assert_ne!(due[0].id(job.id), due[1].id(job.id));
        assert!(due[0].id(job.id).starts_with("msg_"));
    }

    #[test]
    fn terminal_jobs_clear_what_cannot_happen() {
        let mut job = job(&[
            EventKind::Started,
            EventKind::Progress,
            EventKind::Completed,
        ]);
        assert_eq!(
            job.webhook.as_ref().unwrap().unsent,
            [EventKind::Started, EventKind::Completed].into()
        );
        job.status = JobStatus::Cancelled;
        job.finished_at_epoch_ms = Some(5);
        let due = job.due_events();
        assert_eq!(due.len(), 1, "never started: only the completion");
        assert_eq!(due[0].kind, EventType::Cancelled);
        assert_eq!(
            job.sendable_done(&due),
            [EventKind::Started, EventKind::Completed].into()
        );
    }
}
