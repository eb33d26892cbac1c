//! The SQS message body: a claim check, the input stays in the store (and, for a
//! document job's parts, in blob storage).

use serde::{Deserialize, Serialize};

use crate::id::JobId;
use crate::webhook::Event;

/// Current message format version.
pub const MESSAGE_VERSION: u32 = 1;

/// `{"v":1,"job_id":"…"}`, or `{"v":1,"job_id":"…","part":3}` for one part of a
/// job that runs in parts; on the webhooks queue
/// `{"v":1,"job_id":"…","event":{"type":"job.succeeded","at":…}}` for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    /// Format version; only 1 exists.
    pub v: u32,
    /// The job to run.
    pub job_id: JobId,
    /// The part of the job to run, for a job that runs in parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
    /// The event to deliver, on the webhooks queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
}

/// A message body that is not a job message.
#[derive(Debug, thiserror::Error)]
pub enum MalformedMessage {
    /// The body is not the expected JSON.
    #[error("message body is not {{\"v\":1,\"job_id\":\"<uuid>\"[,\"part\":<n>]}}: {0}")]
    Json(#[from] serde_json::Error),
    /// The body has a version this worker does not know.
    #[error("message version {0} is not supported (expected {MESSAGE_VERSION})")]
    Version(u32),
}

impl JobMessage {
    /// The message for a job.
    pub fn new(job_id: JobId) -> Self {
        JobMessage {
            v: MESSAGE_VERSION,
            job_id,
            part: None,
            event: None,
        }
    }

    /// The message for part `part` of a job.
    pub fn part(job_id: JobId, part: u32) -> Self {
        JobMessage {
            part: Some(part),
            ..Self::new(job_id)
        }
    }

    /// The message that delivers `event` of a job.
    pub fn event(job_id: JobId, event: Event) -> Self {
        JobMessage {
            event: Some(event),
            ..Self::new(job_id)
        }
    }

    /// The JSON body.
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a job message always serialises")
    }

    /// Decodes a body.
    pub fn from_body(body: &str) -> Result<Self, MalformedMessage> {
        let message: JobMessage = serde_json::from_str(body)?;
        if message.v != MESSAGE_VERSION {
            return Err(MalformedMessage::Version(message.v));
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let message = JobMessage::new(JobId::random());
        assert_eq!(JobMessage::from_body(&message.to_body()).unwrap(), message);
        assert!(JobMessage::from_body("not json").is_err());
        assert!(
            JobMessage::from_body(r#"{"v":2,"job_id":"0190b2a4-8f6e-7cc0-9b1e-3f4c5d6e7f80"}"#)
                .is_err()
        );
        assert!(JobMessage::from_body(r#"{"v":1,"job_id":"x"}"#).is_err());
        let part = JobMessage::part(JobId::random(), 3);
        assert!(part.to_body().ends_with(r#","part":3}"#));
        assert_eq!(JobMessage::from_body(&part.to_body()).unwrap(), part);
        assert!(!message.to_body().contains("part"));
        let event = JobMessage::event(
            JobId::random(),
            Event {
                kind: crate::webhook::EventType::Started,
                at: 7,
            },
        );
        assert!(
            event
                .to_body()
                .ends_with(r#","event":{"type":"job.started","at":7}}"#)
        );
        assert_eq!(JobMessage::from_body(&event.to_body()).unwrap(), event);
    }
}
