//! Every write the system makes to a stored job, as data, and the one place the state
//! rules live. A [`Transition`] names a write; its [`Condition`] is a pure
//! precondition on the job as stored, and its [`Change`]s are the pure effect.
//! [`Transition::next`] is the specification: the embedded store applies it directly;
//! the DynamoDB store translates each [`Fact`] and each [`Change`] into one conditional
//! request and must agree with it (the test kit's property test holds every store to
//! it, step by step). Creating a job is [`JobStore::create`](crate::JobStore::create):
//! its one rule is that the id is new.

mod change;
mod condition;

use std::collections::BTreeSet;

pub use change::Change;
pub use condition::{Condition, Fact};

use crate::job::{DEAD_LETTERED, ErrorInfo, Job, Lease};
use crate::json::JsonText;
use crate::status::JobStatus;
use crate::webhook::EventKind;

/// How a job ends.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// With its output.
    Succeeded(JsonText),
    /// With an error.
    Failed(ErrorInfo),
    /// Cancelled.
    Cancelled,
}

impl End {
    /// The terminal status it leaves the job in.
    pub fn status(&self) -> JobStatus {
        match self {
            End::Succeeded(_) => JobStatus::Succeeded,
            End::Failed(_) => JobStatus::Failed,
            End::Cancelled => JobStatus::Cancelled,
        }
    }
}

/// How a part of a job that runs in parts is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Its worker finished it (it must hold the part under `token`); its chunks count
    /// as done.
    Done {
        /// The lease token.
        token: String,
        /// Chunks in the part.
        chunks: u64,
    },
    /// It gave up: held under `token`, or with `None` held by nobody (its worker died
    /// on its last attempt).
    Dead {
        /// The lease token, if a worker holds it.
        token: Option<String>,
        /// Why, for the job's error.
        error: String,
    },
    /// Its job was cancelled before it ran (nobody may hold it).
    Skipped,
}

/// One write to one stored job.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// A worker takes the job under `lease`: counts an attempt, records the first
    /// start.
    Claim {
        /// The new lease.
        lease: Lease,
        /// Now.
        now_epoch_ms: u64,
    },
    /// The holder's heartbeat: the lease ends later (expired or not).
    ExtendLease {
        /// The lease with its new end.
        lease: Lease,
    },
    /// The holder ends the job.
    Finish {
        /// The holder's lease token.
        token: String,
        /// How.
        end: End,
        /// Now.
        now_epoch_ms: u64,
    },
    /// The holder gives the job back to the queue (its message comes back after a
    /// backoff).
    Release {
        /// The holder's lease token.
        token: String,
        /// Now.
        now_epoch_ms: u64,
    },
    /// Fails a job no live worker holds: dead-lettering on the last receive, the sweep.
    Abandon {
        /// Why.
        error: ErrorInfo,
        /// Now.
        now_epoch_ms: u64,
    },
    /// A repair sent a queued job's message again, so no repair sends it again while
    /// that message can still be in the queue ([`crate::index::RESEND_AFTER`]).
    RecordResend {
        /// Now.
        now_epoch_ms: u64,
    },
    /// Cancels a queued job.
    CancelQueued {
        /// Now.
        now_epoch_ms: u64,
    },
    /// Asks a running job to stop; its worker ends it cancelled.
    RequestCancel,
    /// Removes a job that was never enqueued (the API, when the enqueue of a job
    /// without an idempotency key fails).
    Withdraw,
    /// Puts a dead-lettered job back for an operator's redrive, as read at `version`
    /// ([`Transition::revive`] builds it).
    Revive {
        /// The version the job was read at.
        version: u64,
        /// Its dead parts, for a job that runs in parts: they run again.
        dead_parts: Option<Vec<u32>>,
        /// Its webhook wants the completion event, which is due again when it ends.
        completion: bool,
        /// Now.
        now_epoch_ms: u64,
    },
    /// Splits a held job into `parts` parts of `chunks` chunks in all; its lease ends,
    /// its parts are claimed one by one from now on.
    FanOut {
        /// The holder's lease token.
        token: String,
        /// How many parts.
        parts: u32,
        /// Chunks in all.
        chunks: u64,
        /// Now.
        now_epoch_ms: u64,
    },
    /// A worker takes a part under `lease`: counts an attempt of the part.
    ClaimPart {
        /// The part.
        part: u32,
        /// The new lease.
        lease: Lease,
        /// Now.
        now_epoch_ms: u64,
    },
    /// The part holder's heartbeat (counts as activity of the job's parts).
    ExtendPartLease {
        /// The part.
        part: u32,
        /// The lease with its new end.
        lease: Lease,
        /// Now.
        now_epoch_ms: u64,
    },
    /// The part holder gives the part back.
    ReleasePart {
        /// The part.
        part: u32,
        /// The holder's lease token.
        token: String,
    },
    /// Settles a part.
    SettlePart {
        /// The part.
        part: u32,
        /// How.
        settle: Settle,
        /// Now.
        now_epoch_ms: u64,
    },
    /// Ends a job whose parts are all settled.
    FinishParts {
        /// How.
        end: End,
        /// Now.
        now_epoch_ms: u64,
    },
    /// Takes `kinds` out of the webhook outbox of a job whose finish time is still
    /// `finished_at` (a revive in between keeps its new event). The outbox empties when
    /// no event can follow: the job finished, or every kind its webhook can send is
    /// sent ([`Transition::events_sent`] builds it).
    EventsSent {
        /// The kinds sent.
        kinds: BTreeSet<EventKind>,
        /// The job's finish time as the sender read it.
        finished_at_epoch_ms: Option<u64>,
        /// No event can follow these: the outbox empties for good.
        last: bool,
    },
    /// Records a progress event at `now`, if the job's webhook wants one and the last
    /// was at least `min_gap_ms` before.
    ProgressEvent {
        /// Now.
        now_epoch_ms: u64,
        /// Fewest milliseconds between two progress events.
        min_gap_ms: u64,
    },
    /// Stops the job's webhook for good (its receiver answered `410 Gone`).
    WebhookGone,
}

/// A transition's name (and part), for layers that watch the store's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// [`Transition::Claim`].
    Claim,
    /// [`Transition::ExtendLease`].
    ExtendLease,
    /// [`Transition::Finish`], with the status it writes.
    Finish(JobStatus),
    /// [`Transition::Release`].
    Release,
    /// [`Transition::Abandon`].
    Abandon,
    /// [`Transition::RecordResend`].
    RecordResend,
    /// [`Transition::CancelQueued`].
    CancelQueued,
    /// [`Transition::RequestCancel`].
    RequestCancel,
    /// [`Transition::Withdraw`].
    Withdraw,
    /// [`Transition::Revive`].
    Revive,
    /// [`Transition::FanOut`].
    FanOut,
    /// [`Transition::ClaimPart`] of this part.
    ClaimPart(u32),
    /// [`Transition::ExtendPartLease`] of this part.
    ExtendPartLease(u32),
    /// [`Transition::ReleasePart`] of this part.
    ReleasePart(u32),
    /// [`Transition::SettlePart`] of this part.
    SettlePart(u32),
    /// [`Transition::FinishParts`].
    FinishParts,
    /// [`Transition::EventsSent`].
    EventsSent,
    /// [`Transition::ProgressEvent`].
    ProgressEvent,
    /// [`Transition::WebhookGone`].
    WebhookGone,
}

impl Step {
    /// True for the writes that end a job.
    pub fn finishes(self) -> bool {
        matches!(
            self,
            Step::Finish(_) | Step::Abandon | Step::CancelQueued | Step::FinishParts
        )
    }
}

/// What a transition does to the record.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// These changes, and the version goes up by one.
    Update(Vec<Change>),
    /// The record goes.
    Delete,
}

/// What the specification says a transition does to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The precondition does not hold: nothing changes.
    Refused,
    /// The job as it is after the write.
    Updated(Box<Job>),
    /// The record is gone.
    Deleted,
}

// The rules, each once.

/// The caller holds the job's lease.
fn held(token: &str) -> Condition {
    Condition::All(vec![
        Condition::Is(Fact::Status(JobStatus::Running)),
        Condition::Is(Fact::LeaseHolder(token.to_owned())),
    ])
}

/// No live worker holds the job: it is queued, or running under a lease that ended.
fn unheld(now: u64) -> Condition {
    Condition::Any(vec![
        Condition::Is(Fact::Status(JobStatus::Queued)),
        Condition::All(vec![
            Condition::Is(Fact::Status(JobStatus::Running)),
            Condition::Is(Fact::LeaseEnded(now)),
        ]),
    ])
}

/// Nobody asked to cancel the job.
fn not_cancelled() -> Condition {
    Condition::Not(Box::new(Condition::Is(Fact::CancelRequested)))
}

/// The job has this status.
fn status(status: JobStatus) -> Condition {
    Condition::Is(Fact::Status(status))
}

/// A part of the job that runs in parts and is not settled yet.
fn unsettled(part: u32) -> Condition {
    Condition::All(vec![
        Condition::Is(Fact::PartExists(part)),
        Condition::Not(Box::new(Condition::Is(Fact::PartSettled(part)))),
    ])
}

/// No live lease holds the part.
fn part_unheld(part: u32, now: u64) -> Condition {
    Condition::Not(Box::new(Condition::Is(Fact::PartLeaseLive(part, now))))
}

/// The caller holds the part's lease.
fn part_held(part: u32, token: &str) -> Condition {
    Condition::All(vec![
        status(JobStatus::Running),
        Condition::Is(Fact::PartLeaseHolder(part, token.to_owned())),
    ])
}

/// The changes that end a job.
fn finish(end: &End, now: u64) -> Vec<Change> {
    let mut changes = vec![Change::Status(end.status())];
    match end {
        End::Succeeded(output) => changes.push(Change::Output(output.clone())),
        End::Failed(error) => changes.push(Change::Error(error.clone())),
        End::Cancelled => {}
    }
    changes.extend([Change::FinishedAt(now), Change::DropLease]);
    changes
}

impl Transition {
    /// The holder ends the job with `output`.
    pub fn complete(token: String, output: JsonText, now_epoch_ms: u64) -> Self {
        Transition::Finish {
            token,
            end: End::Succeeded(output),
            now_epoch_ms,
        }
    }

    /// The holder ends the job with `error`.
    pub fn fail(token: String, error: ErrorInfo, now_epoch_ms: u64) -> Self {
        Transition::Finish {
            token,
            end: End::Failed(error),
            now_epoch_ms,
        }
    }

    /// The holder ends a job whose cancel was requested.
    pub fn cancelled(token: String, now_epoch_ms: u64) -> Self {
        Transition::Finish {
            token,
            end: End::Cancelled,
            now_epoch_ms,
        }
    }

    /// Marks `kinds` of `job` (as read) sent. No event can follow when the job has
    /// finished, or when `kinds` cover every kind its webhook sends through the
    /// outbox (a job that has not finished can gain no other: only a revive adds one,
    /// and only to a finished job).
    pub fn events_sent(job: &Job, kinds: BTreeSet<EventKind>) -> Self {
        let covers_all = job.webhook.as_ref().is_none_or(|webhook| {
            webhook
                .events
                .iter()
                .all(|kind| *kind == EventKind::Progress || kinds.contains(kind))
        });
        Transition::EventsSent {
            last: job.finished_at_epoch_ms.is_some() || covers_all,
            finished_at_epoch_ms: job.finished_at_epoch_ms,
            kinds,
        }
    }

    /// The revive of `job` as read now: its dead parts run again (a job that runs in
    /// parts goes back to running), any other job goes back to the queue. Its attempts
    /// are kept; a webhook subscribed to completion gets that event back in its outbox.
    pub fn revive(job: &Job, now_epoch_ms: u64) -> Self {
        Transition::Revive {
            version: job.version,
            dead_parts: job
                .parts
                .as_ref()
                .map(|parts| parts.dead.keys().copied().collect()),
            completion: job
                .webhook
                .as_ref()
                .is_some_and(|w| !w.gone && w.events.contains(&EventKind::Completed)),
            now_epoch_ms,
        }
    }

    /// The transition's name.
    pub fn step(&self) -> Step {
        match self {
            Transition::Claim { .. } => Step::Claim,
            Transition::ExtendLease { .. } => Step::ExtendLease,
            Transition::Finish { end, .. } => Step::Finish(end.status()),
            Transition::Release { .. } => Step::Release,
            Transition::Abandon { .. } => Step::Abandon,
            Transition::RecordResend { .. } => Step::RecordResend,
            Transition::CancelQueued { .. } => Step::CancelQueued,
            Transition::RequestCancel => Step::RequestCancel,
            Transition::Withdraw => Step::Withdraw,
            Transition::Revive { .. } => Step::Revive,
            Transition::FanOut { .. } => Step::FanOut,
            Transition::ClaimPart { part, .. } => Step::ClaimPart(*part),
            Transition::ExtendPartLease { part, .. } => Step::ExtendPartLease(*part),
            Transition::ReleasePart { part, .. } => Step::ReleasePart(*part),
            Transition::SettlePart { part, .. } => Step::SettlePart(*part),
            Transition::FinishParts { .. } => Step::FinishParts,
            Transition::EventsSent { .. } => Step::EventsSent,
            Transition::ProgressEvent { .. } => Step::ProgressEvent,
            Transition::WebhookGone => Step::WebhookGone,
        }
    }

    /// The precondition on the job as stored.
    pub fn condition(&self) -> Condition {
        match self {
            Transition::Claim { now_epoch_ms, .. } | Transition::Abandon { now_epoch_ms, .. } => {
                unheld(*now_epoch_ms)
            }
            Transition::ExtendLease { lease } => held(&lease.token),
            Transition::Release { token, .. } => held(token),
            // Cancelled ends a job whose cancel was requested; the other ends need none.
            Transition::Finish {
                token,
                end: End::Cancelled,
                ..
            } => held(token),
            Transition::Finish { token, .. } | Transition::FanOut { token, .. } => {
                Condition::All(vec![held(token), not_cancelled()])
            }
            Transition::RecordResend { .. } | Transition::CancelQueued { .. } => {
                status(JobStatus::Queued)
            }
            Transition::RequestCancel => status(JobStatus::Running),
            Transition::Withdraw => Condition::All(vec![
                status(JobStatus::Queued),
                Condition::Is(Fact::Attempts(0)),
            ]),
            Transition::Revive { version, .. } => Condition::All(vec![
                status(JobStatus::Failed),
                Condition::Is(Fact::ErrorCode(DEAD_LETTERED.to_owned())),
                Condition::Is(Fact::Version(*version)),
            ]),
            Transition::ClaimPart {
                part, now_epoch_ms, ..
            } => Condition::All(vec![
                status(JobStatus::Running),
                not_cancelled(),
                unsettled(*part),
                part_unheld(*part, *now_epoch_ms),
            ]),
            Transition::ExtendPartLease { part, lease, .. } => part_held(*part, &lease.token),
            Transition::ReleasePart { part, token } => part_held(*part, token),
            Transition::SettlePart {
                part,
                settle,
                now_epoch_ms,
            } => {
                let holder = match settle {
                    Settle::Done { token, .. }
                    | Settle::Dead {
                        token: Some(token), ..
                    } => part_held(*part, token),
                    Settle::Dead { token: None, .. } | Settle::Skipped => {
                        part_unheld(*part, *now_epoch_ms)
                    }
                };
                Condition::All(vec![unsettled(*part), holder])
            }
            Transition::FinishParts { end, .. } => {
                let mut all = vec![
                    status(JobStatus::Running),
                    Condition::Is(Fact::AllPartsSettled),
                ];
                // A job whose cancel was requested never succeeds.
                if matches!(end, End::Succeeded(_)) {
                    all.push(not_cancelled());
                }
                Condition::All(all)
            }
            Transition::EventsSent {
                finished_at_epoch_ms,
                ..
            } => Condition::Is(Fact::FinishedAt(*finished_at_epoch_ms)),
            Transition::ProgressEvent {
                now_epoch_ms,
                min_gap_ms,
            } => Condition::All(vec![
                status(JobStatus::Running),
                Condition::Is(Fact::Subscribed(EventKind::Progress)),
                Condition::Not(Box::new(Condition::Is(Fact::WebhookGone))),
                Condition::Not(Box::new(Condition::Is(Fact::ProgressSentAfter(
                    now_epoch_ms.saturating_sub(*min_gap_ms),
                )))),
            ]),
            Transition::WebhookGone => Condition::Is(Fact::HasWebhook),
        }
    }

    /// The effect on the job as stored.
    pub fn effect(&self) -> Effect {
        let changes = match self {
            Transition::Claim {
                lease,
                now_epoch_ms,
            } => vec![
                Change::Status(JobStatus::Running),
                Change::Lease(lease.clone()),
                Change::CountAttempt,
                Change::FirstStart(*now_epoch_ms),
            ],
            Transition::ExtendLease { lease } => vec![Change::LeaseUntil(lease.until_epoch_ms)],
            Transition::Finish {
                end, now_epoch_ms, ..
            }
            | Transition::FinishParts { end, now_epoch_ms } => finish(end, *now_epoch_ms),
            Transition::Release { now_epoch_ms, .. } => vec![
                Change::Status(JobStatus::Queued),
                Change::RequeuedAt(*now_epoch_ms),
                Change::DropLease,
            ],
            Transition::Abandon {
                error,
                now_epoch_ms,
            } => finish(&End::Failed(error.clone()), *now_epoch_ms),
            Transition::RecordResend { now_epoch_ms } => vec![Change::ResentAt(*now_epoch_ms)],
            Transition::CancelQueued { now_epoch_ms } => finish(&End::Cancelled, *now_epoch_ms),
            Transition::RequestCancel => vec![Change::RequestCancel],
            Transition::Withdraw => return Effect::Delete,
            Transition::Revive {
                dead_parts,
                completion,
                now_epoch_ms,
                ..
            } => {
                let mut changes = vec![Change::ClearError, Change::ClearFinishedAt];
                // The job will end again: its completion event is due again.
                if *completion {
                    changes.push(Change::Unsend([EventKind::Completed].into()));
                }
                match dead_parts {
                    Some(dead) => changes.extend([
                        Change::Status(JobStatus::Running),
                        Change::ClearDeadParts,
                        Change::Unsettle(dead.clone()),
                        Change::PartsTouched(*now_epoch_ms),
                    ]),
                    None => changes.extend([
                        Change::Status(JobStatus::Queued),
                        Change::RequeuedAt(*now_epoch_ms),
                    ]),
                }
                changes
            }
            Transition::FanOut {
                parts,
                chunks,
                now_epoch_ms,
                ..
            } => vec![
                Change::DropLease,
                Change::Split {
                    parts: *parts,
                    chunks: *chunks,
                    at: *now_epoch_ms,
                },
            ],
            Transition::ClaimPart {
                part,
                lease,
                now_epoch_ms,
            } => vec![
                Change::PartLease(*part, lease.clone()),
                Change::CountPartAttempt(*part),
                Change::PartsTouched(*now_epoch_ms),
            ],
            Transition::ExtendPartLease {
                part,
                lease,
                now_epoch_ms,
            } => vec![
                Change::PartLease(*part, lease.clone()),
                Change::PartsTouched(*now_epoch_ms),
            ],
            Transition::ReleasePart { part, .. } => vec![Change::DropPartLease(*part)],
            Transition::SettlePart {
                part,
                settle,
                now_epoch_ms,
            } => {
                let mut changes = vec![
                    Change::DropPartLease(*part),
                    Change::SettlePart(*part),
                    Change::PartsTouched(*now_epoch_ms),
                ];
                match settle {
                    Settle::Done { chunks, .. } => changes.push(Change::ChunksDone(*chunks)),
                    Settle::Dead { error, .. } => {
                        changes.push(Change::PartDead(*part, error.clone()))
                    }
                    Settle::Skipped => {}
                }
                changes
            }
            Transition::EventsSent { last: true, .. } => vec![Change::ClearOutbox],
            Transition::EventsSent { kinds, .. } => vec![Change::Sent(kinds.clone())],
            Transition::ProgressEvent { now_epoch_ms, .. } => {
                vec![Change::ProgressAt(*now_epoch_ms)]
            }
            Transition::WebhookGone => vec![Change::WebhookGone, Change::ClearOutbox],
        };
        Effect::Update(changes)
    }

    /// The specification: what this write does to `job` as stored.
    pub fn next(&self, job: &Job) -> Next {
        if !self.condition().holds(job) {
            return Next::Refused;
        }
        match self.effect() {
            Effect::Delete => Next::Deleted,
            Effect::Update(changes) => {
                let mut job = job.clone();
                for change in &changes {
                    change.apply(&mut job);
                }
                job.version += 1;
                Next::Updated(Box::new(job))
            }
        }
    }
}
