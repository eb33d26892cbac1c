//! The job record and its public view.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::status::JobStatus;
use crate::task::TaskName;
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

/// A job's id: a UUID, random (v7) or derived from the owner and idempotency key (v8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(Uuid);

impl JobId {
    /// The smallest id (all zeros), a bound for ranges.
    pub const MIN: JobId = JobId(Uuid::nil());
    /// The largest id (all ones), a bound for ranges.
    pub const MAX: JobId = JobId(Uuid::max());

    /// A fresh time-ordered id (UUIDv7) whose other 74 bits are all random, so it
    /// cannot be guessed from an id made just before it.
    pub fn random() -> Self {
        let random: [u8; 10] = rand::random();
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        JobId(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
    }

    /// The id derived from a 16-byte digest (see [`crate::idempotency::job_id_for_key`]).
    pub fn from_digest(bytes: [u8; 16]) -> Self {
        JobId(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }

    /// Which of `shards` index partitions the job's entries go to: its id's low bits,
    /// which are random (v7) or a digest (v8), so jobs spread evenly.
    pub fn shard(&self, shards: u32) -> u32 {
        (self.0.as_u128() % u128::from(shards.max(1))) as u32
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A string that is not a job id.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a job id")]
pub struct InvalidJobId(pub String);

impl TryFrom<String> for JobId {
    type Error = InvalidJobId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> Self {
        id.to_string()
    }
}

impl FromStr for JobId {
    type Err = InvalidJobId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical hyphenated form names a job; other spellings do not alias it.
        match Uuid::try_parse(s) {
            Ok(uuid) if uuid.hyphenated().to_string() == s => Ok(JobId(uuid)),
            _ => Err(InvalidJobId(s.chars().take(64).collect())),
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
    /// The validated task input.
    pub input: Value,
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
    /// Task input (JSON).
    pub input: Value,
    /// Current status.
    pub status: JobStatus,
    /// Task output once succeeded.
    pub output: Option<Value>,
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
    #[schema(value_type = Option<crate::task::JobOutput>, nullable = false)]
    pub output: Option<Value>,
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
    pub input: Option<Value>,
}

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
    fn ids_parse_only_in_canonical_form() {
        let id = JobId::random();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        assert!(id.to_string().to_uppercase().parse::<JobId>().is_err());
        assert!("../etc/passwd".parse::<JobId>().is_err());
        assert!(id.to_string().replace('-', "").parse::<JobId>().is_err());
    }

    #[test]
    fn view_formats_times_as_rfc3339() {
        let job = Job::from_new(NewJob {
            id: JobId::random(),
            owner: "o".into(),
            task: TaskName::new("embed"),
            input: serde_json::json!({}),
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
