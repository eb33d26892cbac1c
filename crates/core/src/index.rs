//! Where a job sits in the store's sparse indexes: the rule both stores follow (the
//! DynamoDB store keeps its global secondary indexes by it, the embedded store its
//! in-memory ones), so the sweep reads only jobs that may need it.

use std::time::Duration;

use crate::job::{Job, Lease};
use crate::status::JobStatus;
use crate::transition::Change;

/// How long a message sent again by a repair (the sweep, a client's keyed retry) can
/// still be in the jobs queue: the queue's retention (4 days). Until then the job's
/// message is not sent again, however long the backlog.
pub const RESEND_AFTER: Duration = Duration::from_secs(4 * 24 * 3600);

/// The longest a retried message stays hidden: the worker's backoff cap. A job given
/// back to the queue has its message back within this.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(15 * 60);

/// Partition keys of the sweep's indexes: the job id's shard among these. At 10,000
/// jobs/s each job writes its index entries about four times (created, claimed,
/// finished), so 64 keys keep each well under DynamoDB's 1,000 writes/s per partition.
pub const DUE_SHARDS: u32 = 64;

/// Slices of an owner's unfinished jobs in the admission index (keys `owner#slice`):
/// one owner's burst spreads over this many partition keys.
pub const OWNER_SLICES: u32 = 16;

impl Job {
    /// When the sweep may need to look at this job because of its state: a queued job
    /// when its message may be lost ([`Job::queued_due_at`]), a running one from its
    /// lease's end (a job in parts from its parts' last activity). `None` once it is
    /// finished.
    pub fn unfinished_due_at(&self) -> Option<u64> {
        match self.status {
            JobStatus::Queued => Some(self.queued_due_at()),
            JobStatus::Running => Some(match &self.parts {
                Some(parts) => parts.touched_at_epoch_ms,
                None => self
                    .lease_until_epoch_ms
                    .unwrap_or(self.created_at_epoch_ms),
            }),
            _ => None,
        }
    }

    /// When a queued job's message may be lost: a message a repair sent again can be in
    /// the queue until it expires ([`RESEND_AFTER`]); one given back after a claim
    /// (release, revive) is visible again within [`MAX_RETRY_DELAY`]; a new job's is
    /// sent at its creation. The latest of these events counts (a requeue forgets an
    /// earlier re-send, so two in the same millisecond are ordered by their writes).
    pub fn queued_due_at(&self) -> u64 {
        // Records written before `requeued_at` existed: from the first start.
        let requeued = self
            .requeued_at_epoch_ms
            .or(self.started_at_epoch_ms.filter(|_| self.attempts > 0));
        let from_requeue = requeued.map(|at| at + MAX_RETRY_DELAY.as_millis() as u64);
        match self.resent_at_epoch_ms {
            Some(resent) if requeued.is_none_or(|at| resent >= at) => {
                resent + RESEND_AFTER.as_millis() as u64
            }
            _ => from_requeue.unwrap_or(self.created_at_epoch_ms),
        }
    }

    /// When the sweep may need to send this job's webhook events: the write that made
    /// the oldest event in its outbox due (a finished job's end, if its outbox holds
    /// only events that can no longer happen). `None` while nothing is due.
    pub fn outbox_due_at(&self) -> Option<u64> {
        if !self.has_unsent_events() {
            return None;
        }
        let due = self.due_events().iter().map(|event| event.at).min();
        due.or(self.finished_at_epoch_ms)
    }

    /// The earlier of [`Job::unfinished_due_at`] and [`Job::outbox_due_at`].
    pub fn due_at(&self) -> Option<u64> {
        match (self.unfinished_due_at(), self.outbox_due_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Where a write moves the job in the sparse indexes, for a store that writes
/// without reading first (DynamoDB keeps index keys on the record and sets them in the
/// same request as the changes). It follows from the changes, as [`Job::due_at`]
/// follows from the job: a store that reads the job before it writes derives its
/// indexes from the job instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reindex {
    /// The job's entry in the index of unfinished jobs (and the admission index).
    pub due: DueMove,
    /// The job's entry in the index of webhook outboxes.
    pub outbox: OutboxMove,
}

/// A write's move in the index of unfinished jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DueMove {
    /// Stays where it is.
    #[default]
    Stay,
    /// Moves to this time ([`Job::unfinished_due_at`]).
    To(u64),
    /// Leaves it and the admission index: the job finished.
    Leave,
    /// Joins it (and the admission index) again at this time: a finished job revived.
    Rejoin(u64),
}

/// A write's move in the index of webhook outboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutboxMove {
    /// Stays where it is.
    #[default]
    Stay,
    /// An event became due at this time: the entry moves there.
    Due(u64),
    /// The due events went: out of the index until another is due.
    Sent,
    /// The outbox is empty for good: out of the index.
    Emptied,
    /// The outbox holds an event again (not due yet).
    Refilled,
}

impl Reindex {
    /// The moves of a write making `changes`.
    pub fn of(changes: &[Change]) -> Self {
        let mut moves = Reindex::default();
        let mut due = None;
        let mut finishes = false;
        let mut revives = false;
        for change in changes {
            match change {
                Change::Status(status) if status.is_terminal() => finishes = true,
                Change::ClearFinishedAt => revives = true,
                Change::Lease(Lease { until_epoch_ms, .. })
                | Change::LeaseUntil(until_epoch_ms) => due = Some(*until_epoch_ms),
                Change::RequeuedAt(at) => due = Some(at + MAX_RETRY_DELAY.as_millis() as u64),
                Change::ResentAt(at) => due = Some(at + RESEND_AFTER.as_millis() as u64),
                Change::PartsTouched(at) | Change::Split { at, .. } => due = Some(*at),
                Change::FirstStart(at) | Change::FinishedAt(at) => {
                    moves.outbox = OutboxMove::Due(*at)
                }
                Change::Sent(_) => moves.outbox = OutboxMove::Sent,
                Change::ClearOutbox => moves.outbox = OutboxMove::Emptied,
                Change::Unsend(_) => moves.outbox = OutboxMove::Refilled,
                _ => {}
            }
        }
        moves.due = match (finishes, revives, due) {
            (true, _, _) => DueMove::Leave,
            (false, true, Some(at)) => DueMove::Rejoin(at),
            (false, false, Some(at)) => DueMove::To(at),
            (false, _, None) => DueMove::Stay,
        };
        moves
    }
}
