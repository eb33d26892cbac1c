//! The job record and its public view.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Object, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

pub use crate::id::{InvalidJobId, JobId};
use crate::json::JsonText;
use crate::status::JobStatus;
use crate::task_name::TaskName;
use crate::webhook::{EventKind, Webhook};

/// The error code of a job that failed on its last receive (its message went to the
/// dead-letter queue) or whose worker died on its last attempt. Only such a job can be
/// revived by a redrive.
pub const DEAD_LETTERED: &str = "dead_lettered";

/// A worker's hold on a running job, or on one part of a job that runs in parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Unique per claim; finishing writes are conditional on it.
    pub token: String,
    /// When the lease expires.
    pub until_epoch_ms: u64,
}

impl Lease {
    /// True when the lease has not expired at `now`.
    pub fn is_live(&self, now_epoch_ms: u64) -> bool {
        self.until_epoch_ms > now_epoch_ms
    }
}

/// How the parts of a job that runs in parts stand (a document, split into parts of
/// chunks that run on many workers).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Parts {
    /// How many parts the job was split into.
    pub total: u32,
    /// Chunks in all the parts.
    pub chunks_total: u64,
    /// Chunks in the parts done so far (the job's progress).
    pub chunks_done: u64,
    /// Parts that need nothing more: done, skipped (the job was cancelled) or dead.
    pub settled: BTreeSet<u32>,
    /// Parts that gave up on their last attempt, with the error.
    pub dead: BTreeMap<u32, String>,
    /// Leases of parts being run (or whose worker died and whose lease runs out).
    pub leases: BTreeMap<u32, Lease>,
    /// Claims of each part so far.
    pub attempts: BTreeMap<u32, u32>,
    /// When a part was last claimed or settled, or the job split.
    pub touched_at_epoch_ms: u64,
}

impl Parts {
    /// True when every part is settled: the job can end.
    pub fn all_settled(&self) -> bool {
        self.settled.len() as u64 >= u64::from(self.total)
    }

    /// True when some part holds a lease that has not expired at `now`.
    pub fn any_live_lease(&self, now_epoch_ms: u64) -> bool {
        self.leases
            .values()
            .any(|lease| lease.is_live(now_epoch_ms))
    }
}

/// How far a job that runs in parts has come, in chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// Chunks done.
    pub done: u64,
    /// Chunks in all.
    pub total: u64,
}

/// A job's error as stored and shown: a stable snake_case code and a human sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = ErrorDetail)]
pub struct ErrorInfo {
    /// Stable, machine-readable code such as `invalid_input` or `dead_lettered`.
    pub code: String,
    /// A sentence for humans.
    pub message: String,
}

impl ErrorInfo {
    /// Builds an error from a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// What the API hands the store to create a job.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The job id.
    pub id: JobId,
    /// The authenticated principal that owns the job.
    pub owner: String,
    /// The task.
    pub task: TaskName,
    /// The validated task input, as the task's input type serialises it.
    pub input: JsonText,
    /// Hash of the request body, to tell a replay from key reuse.
    pub request_hash: String,
    /// The client's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// Creation time.
    pub created_at_epoch_ms: u64,
    /// When the store may forget the job (TTL), in epoch seconds.
    pub expires_at_epoch_s: u64,
    /// The job's webhook, if the client asked for one.
    pub webhook: Option<Webhook>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job id.
    pub id: JobId,
    /// The owner (authenticated principal).
    pub owner: String,
    /// The task.
    pub task: TaskName,
    /// Task input, as the task's input type serialised it.
    pub input: JsonText,
    /// Current status.
    pub status: JobStatus,
    /// Task output once succeeded, as the task serialised it.
    pub output: Option<JsonText>,
    /// Error once failed.
    pub error: Option<ErrorInfo>,
    /// How many times a worker claimed the job.
    pub attempts: u32,
    /// Creation time.
    pub created_at_epoch_ms: u64,
    /// First claim time.
    pub started_at_epoch_ms: Option<u64>,
    /// Time the job became terminal.
    pub finished_at_epoch_ms: Option<u64>,
    /// When it last went back to the queue after a claim (released, revived).
    pub requeued_at_epoch_ms: Option<u64>,
    /// When a repair (the sweep, a client's keyed retry) last sent its message again.
    pub resent_at_epoch_ms: Option<u64>,
    /// Token of the worker that holds the lease while running.
    pub lease_owner: Option<String>,
    /// End of the lease while running.
    pub lease_until_epoch_ms: Option<u64>,
    /// True once a cancel was requested for a running job.
    pub cancel_requested: bool,
    /// For a job that runs in parts, once it was split: how its parts stand.
    pub parts: Option<Parts>,
    /// Hash of the request that created the job.
    pub request_hash: String,
    /// The client's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// TTL: when the store may delete the job, epoch seconds.
    pub expires_at_epoch_s: u64,
    /// The job's webhook subscription and its outbox of events.
    pub webhook: Option<Webhook>,
    /// Incremented by every write.
    pub version: u64,
}

impl Job {
    /// The record a [`NewJob`] becomes when created.
    pub fn from_new(new: NewJob) -> Self {
        Job {
            id: new.id,
            owner: new.owner,
            task: new.task,
            input: new.input,
            status: JobStatus::Queued,
            output: None,
            error: None,
            attempts: 0,
            created_at_epoch_ms: new.created_at_epoch_ms,
            started_at_epoch_ms: None,
            finished_at_epoch_ms: None,
            requeued_at_epoch_ms: None,
            resent_at_epoch_ms: None,
            lease_owner: None,
            lease_until_epoch_ms: None,
            cancel_requested: false,
            parts: None,
            request_hash: new.request_hash,
            idempotency_key: new.idempotency_key,
            expires_at_epoch_s: new.expires_at_epoch_s,
            webhook: new.webhook,
            version: 1,
        }
    }

    /// True when the job is running under a lease that has not expired at `now`.
    pub fn has_live_lease(&self, now_epoch_ms: u64) -> bool {
        self.status == JobStatus::Running
            && self
                .lease_until_epoch_ms
                .is_some_and(|until| until > now_epoch_ms)
    }

    /// The public view of the job.
    pub fn view(&self) -> JobView {
        JobView {
            id: self.id,
            task: self.task.clone(),
            status: self.status,
            created_at: rfc3339(self.created_at_epoch_ms),
            started_at: self.started_at_epoch_ms.map(rfc3339),
            finished_at: self.finished_at_epoch_ms.map(rfc3339),
            attempts: self.attempts,
            cancel_requested: self.cancel_requested.then_some(true),
            progress: self.parts.as_ref().map(|parts| Progress {
                done: parts.chunks_done,
                total: parts.chunks_total,
            }),
            output: self.output.clone(),
            error: self.error.clone(),
            webhook: self.webhook.as_ref().map(|webhook| WebhookView {
                url: webhook.url.clone(),
                events: webhook.events.iter().copied().collect(),
                unsent: webhook.unsent.iter().copied().collect(),
                gone: webhook.gone,
            }),
            input: None,
        }
    }
}

/// The job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Job)]
pub struct JobView {
    /// Job id.
    #[schema(value_type = String, format = Uuid)]
    pub id: JobId,
    /// The task.
    pub task: TaskName,
    /// Current status.
    pub status: JobStatus,
    /// RFC 3339 creation time.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339 first claim time.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(format = DateTime, nullable = false)]
    pub started_at: Option<String>,
    /// RFC 3339 time the job became terminal.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(format = DateTime, nullable = false)]
    pub finished_at: Option<String>,
    /// Number of claims so far.
    #[schema(minimum = 0)]
    pub attempts: u32,
    /// Present (true) once a cancel of a running job was requested.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(nullable = false)]
    pub cancel_requested: Option<bool>,
    /// For a job that runs in parts (a document), once it was split: chunks done and
    /// in all.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(nullable = false)]
    pub progress: Option<Progress>,
    /// The task's output once the job succeeded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<JobOutput>, nullable = false)]
    pub output: Option<JsonText>,
    /// The error once the job failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(nullable = false)]
    pub error: Option<ErrorInfo>,
    /// The webhook the job's events go to, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(nullable = false)]
    pub webhook: Option<WebhookView>,
    /// The job's input, when asked for (`GET /jobs/{id}?include=input`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<Object>, nullable = false)]
    pub input: Option<JsonText>,
}

/// The schema of a job's `output`: in the API's document, any of the registered
/// tasks' outputs. This type only names that schema.
#[derive(Debug)]
pub enum JobOutput {}

impl PartialSchema for JobOutput {
    fn schema() -> RefOr<Schema> {
        Object::builder()
            .schema_type(SchemaType::Type(Type::Object))
            .into()
    }
}

impl ToSchema for JobOutput {}

/// A job's webhook as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// Where events are POSTed.
    pub url: String,
    /// The events subscribed to.
    pub events: Vec<EventKind>,
    /// Subscribed events not yet handed to the webhooks queue (`started`,
    /// `completed`): due ones go within the sweep's minute.
    #[serde(default)]
    pub unsent: Vec<EventKind>,
    /// True once the receiver answered `410 Gone`: nothing more is sent.
    #[serde(default)]
    pub gone: bool,
}

/// An epoch time in milliseconds as RFC 3339 text, to the millisecond.
pub fn rfc3339(epoch_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(epoch_ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_formats_times_as_rfc3339() {
        let job = Job::from_new(NewJob {
            id: JobId::random(),
            owner: "o".into(),
            task: TaskName::new("embed"),
            input: JsonText::of(&serde_json::json!({})).unwrap(),
            request_hash: "h".into(),
            idempotency_key: None,
            created_at_epoch_ms: 1_700_000_000_123,
            expires_at_epoch_s: 1_700_086_400,
            webhook: None,
        });
        let view = job.view();
        assert_eq!(view.created_at, "2023-11-14T22:13:20.123Z");
        assert_eq!(view.status, JobStatus::Queued);
        let json = serde_json::to_value(&view).unwrap();
        assert!(json.get("output").is_none());
    }
}
