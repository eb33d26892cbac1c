//! The SQS message body: a claim check, the input stays in the store.

use serde::{Deserialize, Serialize};

use crate::job::JobId;

/// Current message format version.
pub const MESSAGE_VERSION: u32 = 1;

/// `{"v":1,"job_id":"…"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    /// Format version; only 1 exists.
    pub v: u32,
    /// The job to run.
    pub job_id: JobId,
}

/// A message body that is not a job message.
#[derive(Debug, thiserror::Error)]
pub enum MalformedMessage {
    /// The body is not the expected JSON.
    #[error("message body is not {{\"v\":1,\"job_id\":\"<uuid>\"}}: {0}")]
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
    }
}
