//! Webhooks: what a job's subscriber asked for, the events the job's state implies,
//! and the outbox that makes them durable. An event is recorded by the very write that
//! causes it (a job that starts or ends has an event due until it is marked sent), then
//! handed to the webhooks queue by [`publish`]; whoever dies in between, the next
//! publish (a worker, the API or the sweep) sends it. Its id is derived from the job,
//! the type and the time, so every resend of one event carries the same `webhook-id`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::job::{Job, JobId};
use crate::message::JobMessage;
use crate::queue::{JobQueue, QueueError, message_group};
use crate::status::JobStatus;
use crate::store::{JobStore, StoreError};

/// Fewest milliseconds between two progress events of one job.
pub const PROGRESS_GAP_MS: u64 = 1000;

/// What a subscriber can ask to hear about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The job's first claim (`job.started`).
    Started,
    /// A document job's chunks done so far (`job.progress`, at most one a second).
    Progress,
    /// The job ended (`job.succeeded`, `job.failed` or `job.cancelled`).
    Completed,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 3] = [
        EventKind::Started,
        EventKind::Progress,
        EventKind::Completed,
    ];

    /// The kind's name in requests and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Progress => "progress",
            EventKind::Completed => "completed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an event kind.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an event; expected started, progress or completed")]
pub struct UnknownEventKind(pub String);

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownEventKind(s.chars().take(64).collect()))
    }
}

/// The type of one delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum EventType {
    /// The job was claimed for the first time.
    #[serde(rename = "job.started")]
    Started,
    /// A document job made progress.
    #[serde(rename = "job.progress")]
    Progress,
    /// The job succeeded.
    #[serde(rename = "job.succeeded")]
    Succeeded,
    /// The job failed.
    #[serde(rename = "job.failed")]
    Failed,
    /// The job was cancelled.
    #[serde(rename = "job.cancelled")]
    Cancelled,
}

impl EventType {
    /// The type's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Started => "job.started",
            EventType::Progress => "job.progress",
            EventType::Succeeded => "job.succeeded",
            EventType::Failed => "job.failed",
            EventType::Cancelled => "job.cancelled",
        }
    }

    /// The subscription that covers it.
    pub fn kind(self) -> EventKind {
        match self {
            EventType::Started => EventKind::Started,
            EventType::Progress => EventKind::Progress,
            EventType::Succeeded | EventType::Failed | EventType::Cancelled => EventKind::Completed,
        }
    }

    /// The completion event of a terminal status.
    fn completion(status: JobStatus) -> Option<EventType> {
        match status {
            JobStatus::Succeeded => Some(EventType::Succeeded),
            JobStatus::Failed => Some(EventType::Failed),
            JobStatus::Cancelled => Some(EventType::Cancelled),
            JobStatus::Queued | JobStatus::Running => None,
        }
    }
}

/// One event of a job: what happened and when (the time of the write that caused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When, epoch milliseconds.
    pub at: u64,
}

impl Event {
    /// The event's `webhook-id`: the same for every delivery of this event of `job`.
    pub fn id(&self, job: JobId) -> String {
        let digest = Sha256::digest(format!("{job}\n{}\n{}", self.kind.as_str(), self.at));
        format!("msg_{}", &hex::encode(digest)[..32])
    }
}

/// A job's webhook subscription and outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Where events are POSTed.
    pub url: String,
    /// The kinds the subscriber asked for.
    pub events: BTreeSet<EventKind>,
    /// The outbox: subscribed kinds (`started`, `completed`) whose event is not yet
    /// handed to the webhooks queue. Set when the job is created; emptied as events
    /// are sent, or when they can no longer happen.
    pub unsent: BTreeSet<EventKind>,
    /// True once the receiver answered `410 Gone`: nothing more is sent.
    pub gone: bool,
    /// When the last progress event was sent, epoch milliseconds.
    pub progress_at_epoch_ms: Option<u64>,
}

impl Webhook {
    /// A subscription of `url` to `events`, every state event still to send.
    pub fn new(url: impl Into<String>, events: BTreeSet<EventKind>) -> Self {
        let unsent = events
            .iter()
            .copied()
            .filter(|kind| *kind != EventKind::Progress)
            .collect();
        Webhook {
            url: url.into(),
            events,
            unsent,
            gone: false,
            progress_at_epoch_ms: None,
        }
    }

    /// True when a progress event of the job is wanted.
    pub fn wants_progress(&self) -> bool {
        !self.gone && self.events.contains(&EventKind::Progress)
    }
}

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
    let done = job.sendable_done(&due);
    if !done.is_empty() {
        match store
            .events_sent(job.id, &done, job.finished_at_epoch_ms)
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
    use crate::job::NewJob;
    use crate::task::TaskName;

    fn job(events: &[EventKind]) -> Job {
        Job::from_new(NewJob {
            id: JobId::random(),
            owner: "o".into(),
            task: TaskName::new("embed"),
            input: serde_json::json!({}),
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

    #[test]
    fn kinds_parse_and_types_serialise() {
        assert_eq!(
            "progress".parse::<EventKind>().unwrap(),
            EventKind::Progress
        );
        assert!("finished".parse::<EventKind>().is_err());
        let event = Event {
            kind: EventType::Succeeded,
            at: 3,
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"type":"job.succeeded","at":3}"#
        );
    }
}
