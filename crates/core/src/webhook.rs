//! Webhooks: what a job's subscriber asked for and the events it hears. Its outbox
//! (what a job's state implies to send, and how it is sent) is in [`crate::outbox`].
//! An event's id is derived from the job, the type and the time, so every resend of
//! one event carries the same `webhook-id`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::id::JobId;
use crate::status::JobStatus;

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
    pub(crate) fn completion(status: JobStatus) -> Option<EventType> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
