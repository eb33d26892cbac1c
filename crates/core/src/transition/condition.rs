//! Preconditions: facts about a stored job, each one comparison of stored fields,
//! joined by and, or and not. A store that cannot read before it writes translates
//! each [`Fact`] into its own words (DynamoDB: a condition expression).

use crate::job::{Job, Parts};
use crate::status::JobStatus;
use crate::webhook::EventKind;

/// One fact about a stored job that a write can require. Each is one comparison of
/// stored fields; an absent field makes every comparison false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// The status is this one.
    Status(JobStatus),
    /// The job's lease is held under this token.
    LeaseHolder(String),
    /// The job's lease ended at or before this time.
    LeaseEnded(u64),
    /// A cancel was requested.
    CancelRequested,
    /// The job's error has this code.
    ErrorCode(String),
    /// The job finished at this time (`None`: it has not finished).
    FinishedAt(Option<u64>),
    /// The job was claimed this many times.
    Attempts(u32),
    /// The record is at this version.
    Version(u64),
    /// The job has a webhook.
    HasWebhook,
    /// The webhook's receiver is gone.
    WebhookGone,
    /// The webhook subscribes to this kind of event.
    Subscribed(EventKind),
    /// The last progress event went after this time.
    ProgressSentAfter(u64),
    /// The job runs in parts and this part is one of them.
    PartExists(u32),
    /// The part is settled.
    PartSettled(u32),
    /// A lease on the part lasts past this time.
    PartLeaseLive(u32, u64),
    /// The part's lease is held under this token.
    PartLeaseHolder(u32, String),
    /// The job runs in parts and every part is settled.
    AllPartsSettled,
}

/// A precondition: facts joined by and, or and not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The fact holds.
    Is(Fact),
    /// The condition does not hold.
    Not(Box<Condition>),
    /// Every condition holds.
    All(Vec<Condition>),
    /// Some condition holds.
    Any(Vec<Condition>),
}

impl Condition {
    /// True when the condition holds for `job`.
    pub fn holds(&self, job: &Job) -> bool {
        match self {
            Condition::Is(fact) => fact.holds(job),
            Condition::Not(condition) => !condition.holds(job),
            Condition::All(conditions) => conditions.iter().all(|c| c.holds(job)),
            Condition::Any(conditions) => conditions.iter().any(|c| c.holds(job)),
        }
    }
}

impl Fact {
    /// True when the fact holds for `job`.
    pub fn holds(&self, job: &Job) -> bool {
        let parts = job.parts.as_ref();
        let webhook = job.webhook.as_ref();
        match self {
            Fact::Status(status) => job.status == *status,
            Fact::LeaseHolder(token) => job.lease_owner.as_ref() == Some(token),
            Fact::LeaseEnded(at) => job.lease_until_epoch_ms.is_some_and(|until| until <= *at),
            Fact::CancelRequested => job.cancel_requested,
            Fact::ErrorCode(code) => job.error.as_ref().is_some_and(|e| e.code == *code),
            Fact::FinishedAt(at) => job.finished_at_epoch_ms == *at,
            Fact::Attempts(attempts) => job.attempts == *attempts,
            Fact::Version(version) => job.version == *version,
            Fact::HasWebhook => webhook.is_some(),
            Fact::WebhookGone => webhook.is_some_and(|w| w.gone),
            Fact::Subscribed(kind) => webhook.is_some_and(|w| w.events.contains(kind)),
            Fact::ProgressSentAfter(at) => {
                webhook.is_some_and(|w| w.progress_at_epoch_ms.is_some_and(|p| p > *at))
            }
            Fact::PartExists(part) => parts.is_some_and(|p| *part < p.total),
            Fact::PartSettled(part) => parts.is_some_and(|p| p.settled.contains(part)),
            Fact::PartLeaseLive(part, at) => {
                parts.is_some_and(|p| p.leases.get(part).is_some_and(|l| l.is_live(*at)))
            }
            Fact::PartLeaseHolder(part, token) => {
                parts.is_some_and(|p| p.leases.get(part).is_some_and(|l| l.token == *token))
            }
            Fact::AllPartsSettled => parts.is_some_and(Parts::all_settled),
        }
    }
}
