//! Effects: changes to a stored job's fields, one field each. A store that cannot
//! read before it writes translates each [`Change`] into its own words (DynamoDB: an
//! update expression clause).

use std::collections::BTreeSet;

use crate::job::{ErrorInfo, Job, Lease, Parts};
use crate::json::JsonText;
use crate::status::JobStatus;
use crate::webhook::EventKind;

/// One change to a stored job's fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Sets the status.
    Status(JobStatus),
    /// Sets the lease (holder and end).
    Lease(Lease),
    /// Moves the lease's end.
    LeaseUntil(u64),
    /// Removes the lease.
    DropLease,
    /// Adds one to the attempts.
    CountAttempt,
    /// Sets the start time if the job never started.
    FirstStart(u64),
    /// Sets the output.
    Output(JsonText),
    /// Sets the error.
    Error(ErrorInfo),
    /// Removes the error.
    ClearError,
    /// Sets the finish time.
    FinishedAt(u64),
    /// Removes the finish time.
    ClearFinishedAt,
    /// Sets when the job last went back to the queue after a claim, and forgets an
    /// earlier re-send: the requeue is now the latest event of its message, even one
    /// in the same millisecond ([`Job::queued_due_at`]).
    RequeuedAt(u64),
    /// Sets when a repair last sent its message again.
    ResentAt(u64),
    /// Flags a cancel request.
    RequestCancel,
    /// Splits the job into parts: none settled, leased or tried yet.
    Split {
        /// How many parts.
        parts: u32,
        /// Chunks in all.
        chunks: u64,
        /// Now.
        at: u64,
    },
    /// Sets a part's lease.
    PartLease(u32, Lease),
    /// Removes a part's lease.
    DropPartLease(u32),
    /// Adds one to a part's attempts.
    CountPartAttempt(u32),
    /// Records activity of the parts.
    PartsTouched(u64),
    /// Settles a part.
    SettlePart(u32),
    /// Adds to the chunks done.
    ChunksDone(u64),
    /// Records a part as dead, with why.
    PartDead(u32, String),
    /// Unsettles parts and forgets their attempts (they run again).
    Unsettle(Vec<u32>),
    /// Forgets every dead part.
    ClearDeadParts,
    /// Puts kinds (back) in the webhook outbox.
    Unsend(BTreeSet<EventKind>),
    /// Takes kinds out of the webhook outbox.
    Sent(BTreeSet<EventKind>),
    /// Empties the webhook outbox.
    ClearOutbox,
    /// Marks the webhook's receiver gone.
    WebhookGone,
    /// Records when the last progress event went.
    ProgressAt(u64),
}

impl Change {
    /// Makes the change to `job`.
    pub fn apply(&self, job: &mut Job) {
        match self {
            Change::Status(status) => job.status = *status,
            Change::Lease(lease) => {
                job.lease_owner = Some(lease.token.clone());
                job.lease_until_epoch_ms = Some(lease.until_epoch_ms);
            }
            Change::LeaseUntil(until) => job.lease_until_epoch_ms = Some(*until),
            Change::DropLease => {
                job.lease_owner = None;
                job.lease_until_epoch_ms = None;
            }
            Change::CountAttempt => job.attempts += 1,
            Change::FirstStart(at) => {
                job.started_at_epoch_ms.get_or_insert(*at);
            }
            Change::Output(output) => job.output = Some(output.clone()),
            Change::Error(error) => job.error = Some(error.clone()),
            Change::ClearError => job.error = None,
            Change::FinishedAt(at) => job.finished_at_epoch_ms = Some(*at),
            Change::ClearFinishedAt => job.finished_at_epoch_ms = None,
            Change::RequeuedAt(at) => {
                job.requeued_at_epoch_ms = Some(*at);
                job.resent_at_epoch_ms = None;
            }
            Change::ResentAt(at) => job.resent_at_epoch_ms = Some(*at),
            Change::RequestCancel => job.cancel_requested = true,
            Change::Split { parts, chunks, at } => {
                job.parts = Some(Parts {
                    total: *parts,
                    chunks_total: *chunks,
                    touched_at_epoch_ms: *at,
                    ..Parts::default()
                })
            }
            Change::PartLease(part, lease) => {
                parts_of(job).leases.insert(*part, lease.clone());
            }
            Change::DropPartLease(part) => {
                parts_of(job).leases.remove(part);
            }
            Change::CountPartAttempt(part) => {
                *parts_of(job).attempts.entry(*part).or_default() += 1
            }
            Change::PartsTouched(at) => parts_of(job).touched_at_epoch_ms = *at,
            Change::SettlePart(part) => {
                parts_of(job).settled.insert(*part);
            }
            Change::ChunksDone(chunks) => parts_of(job).chunks_done += chunks,
            Change::PartDead(part, error) => {
                parts_of(job).dead.insert(*part, error.clone());
            }
            Change::Unsettle(unsettled) => {
                let parts = parts_of(job);
                for part in unsettled {
                    parts.settled.remove(part);
                    parts.attempts.remove(part);
                }
            }
            Change::ClearDeadParts => parts_of(job).dead.clear(),
            Change::Unsend(kinds) => {
                if let Some(webhook) = &mut job.webhook {
                    webhook.unsent.extend(kinds);
                }
            }
            Change::Sent(kinds) => {
                if let Some(webhook) = &mut job.webhook {
                    webhook.unsent.retain(|kind| !kinds.contains(kind));
                }
            }
            Change::ClearOutbox => {
                if let Some(webhook) = &mut job.webhook {
                    webhook.unsent.clear();
                }
            }
            Change::WebhookGone => {
                if let Some(webhook) = &mut job.webhook {
                    webhook.gone = true;
                }
            }
            Change::ProgressAt(at) => {
                if let Some(webhook) = &mut job.webhook {
                    webhook.progress_at_epoch_ms = Some(*at);
                }
            }
        }
    }
}

/// The parts of a job that runs in parts (the conditions checked that it does).
fn parts_of(job: &mut Job) -> &mut Parts {
    job.parts.get_or_insert_with(Parts::default)
}
