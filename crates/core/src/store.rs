//! The job store port. Every state change is one conditional write; a failed
//! condition comes back as [`StoreError::Conflict`] carrying the current record.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::activity::{Activity, MinuteActivity};
use crate::job::{ErrorInfo, Job, JobId, Lease, NewJob};
use crate::status::JobStatus;
use crate::task::TaskName;
use crate::webhook::EventKind;

/// Most index entries one listing page examines: a page whose filters match few jobs
/// comes back short (but with a cursor) rather than reading an owner's whole history.
pub const LIST_EXAMINE_LIMIT: usize = 1_000;

/// One page of the jobs the sweep must look at ([`JobStore::due`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DuePage {
    /// The jobs, as read now (strongly consistent).
    pub jobs: Vec<Job>,
    /// Where the next page starts (opaque to callers); `None` after the last page.
    pub next: Option<String>,
    /// Items the store returned for this page: index entries and job records.
    pub read: usize,
}

/// Where a listing page ends: the last job it examined. The next page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListPosition {
    /// The job's creation time.
    pub created_at_epoch_ms: u64,
    /// The job's id (orders jobs created in the same millisecond).
    pub id: JobId,
}

/// What to list ([`JobStore::list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery<'a> {
    /// Whose jobs.
    pub owner: &'a str,
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this task.
    pub task: Option<&'a TaskName>,
    /// Most jobs on the page.
    pub limit: usize,
    /// Start after this position (the previous page's `next`).
    pub after: Option<ListPosition>,
}

impl ListQuery<'_> {
    /// True when `job` passes the filters.
    pub fn matches(&self, job: &Job) -> bool {
        self.status.is_none_or(|status| job.status == status)
            && self.task.is_none_or(|task| job.task == *task)
    }
}

/// One page of an owner's jobs, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobPage {
    /// At most the query's `limit` jobs.
    pub jobs: Vec<Job>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<ListPosition>,
}

/// What can go wrong talking to a [`JobStore`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The job does not exist.
    #[error("job not found")]
    NotFound,
    /// A conditional write failed; this is the record as it is now.
    #[error("the job changed under us: it is {} now", .0.status)]
    Conflict(Box<Job>),
    /// The store cannot be reached or refused for load (throttling, timeout, outage).
    /// Retry later.
    #[error("job store unavailable: {0}")]
    Unavailable(String),
    /// The job is larger than the store accepts.
    #[error("job too large for the store: {0}")]
    TooLarge(String),
    /// Anything else: a misconfiguration or a corrupt record. Retrying will not help.
    #[error("job store error: {0}")]
    Other(String),
}

impl StoreError {
    /// True when the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// How a part of a job that runs in parts is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle<'a> {
    /// Its worker finished it (condition: held under `token`); its chunks count as
    /// done.
    Done {
        /// The lease token.
        token: &'a str,
        /// Chunks in the part.
        chunks: u64,
    },
    /// It gave up (condition: held under `token`, or with `None` held by nobody: its
    /// worker died on its last attempt).
    Dead {
        /// The lease token, if a worker holds it.
        token: Option<&'a str>,
        /// Why, for the job's error.
        error: &'a str,
    },
    /// Its job was cancelled before it ran (condition: held by nobody).
    Skipped,
}

/// How a job that runs in parts ends once every part is settled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PartsEnd<'a> {
    /// Every part done and the result assembled.
    Succeeded(&'a Value),
    /// Some part dead.
    Failed(&'a ErrorInfo),
    /// Cancelled while it ran.
    Cancelled,
}

/// Persistent job state (DynamoDB in AWS, in memory locally).
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Creates a queued job if no job with its id exists
    /// (condition: the id is absent). On conflict returns the existing job.
    async fn create(&self, job: &NewJob) -> Result<Job, StoreError>;

    /// Reads a job, strongly consistent.
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Claims a job for a worker (condition: queued, or running with an expired lease).
    /// Counts an attempt and records the first start time.
    async fn claim(&self, id: JobId, lease: &Lease, now_epoch_ms: u64) -> Result<Job, StoreError>;

    /// Moves the end of a job's lease to `lease.until_epoch_ms` (condition: running
    /// under `lease.token`, expired or not): its worker's heartbeat.
    async fn extend_lease(&self, id: JobId, lease: &Lease) -> Result<Job, StoreError>;

    /// Records success (condition: running under `lease_token`, no cancel requested).
    async fn complete(
        &self,
        id: JobId,
        lease_token: &str,
        output: &Value,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError>;

    /// Records failure (condition: running under `lease_token`, no cancel requested).
    async fn fail(
        &self,
        id: JobId,
        lease_token: &str,
        error: &ErrorInfo,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError>;

    /// Gives the job back to the queue (condition: running under `lease_token`); its
    /// message comes back after a backoff.
    async fn release(
        &self,
        id: JobId,
        lease_token: &str,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError>;

    /// Records that a repair sent a queued job's message again (condition: queued), so
    /// no repair sends it again while that message can still be in the queue
    /// ([`crate::index::RESEND_AFTER`]).
    async fn record_resend(&self, id: JobId, now_epoch_ms: u64) -> Result<Job, StoreError>;

    /// Ends a running job whose cancel was requested (condition: running under
    /// `lease_token`).
    async fn finish_cancelled(
        &self,
        id: JobId,
        lease_token: &str,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError>;

    /// Fails a job no live worker holds (condition: queued, or running with an expired
    /// lease): dead-letter marking on the last receive, and the sweep.
    async fn abandon(
        &self,
        id: JobId,
        error: &ErrorInfo,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError>;

    /// Cancels a queued job (condition: queued).
    async fn cancel_queued(&self, id: JobId, now_epoch_ms: u64) -> Result<Job, StoreError>;

    /// Asks a running job to stop (condition: running). The worker ends it cancelled.
    async fn request_cancel(&self, id: JobId) -> Result<Job, StoreError>;

    /// Removes a job that was never enqueued (condition: queued, never claimed). The API
    /// uses it to leave nothing behind when the enqueue of a job without an
    /// idempotency key fails.
    async fn delete_unstarted(&self, id: JobId) -> Result<(), StoreError>;

    /// Puts a dead-lettered job back for an operator's redrive (condition: failed with
    /// code `dead_lettered`). Its attempts are kept; a webhook subscribed to
    /// `completed` gets that event back in its outbox (the job will end again). A job that runs in parts goes back
    /// to running, its dead parts unsettled again (their messages are redriven too);
    /// any other job goes back to queued.
    async fn revive(&self, id: JobId) -> Result<Job, StoreError>;

    /// Splits a running job into `parts` parts of `chunks` chunks in all (condition:
    /// running under `lease_token`, no cancel requested). Its lease ends: from now on
    /// its parts are claimed one by one.
    async fn fan_out(
        &self,
        id: JobId,
        lease_token: &str,
        parts: u32,
        chunks: u64,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError>;

    /// Claims part `part` of a job that runs in parts (condition: the job is running
    /// in parts, no cancel requested, the part exists and is not settled, and no live
    /// lease holds it). Counts an attempt of the part.
    async fn claim_part(
        &self,
        id: JobId,
        part: u32,
        lease: &Lease,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError>;

    /// Moves the end of a part's lease to `lease.until_epoch_ms` (condition: the part
    /// is held under `lease.token`): its worker's heartbeat, which counts as activity
    /// of the job's parts.
    async fn extend_part_lease(
        &self,
        id: JobId,
        part: u32,
        lease: &Lease,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError>;

    /// Gives a part back (condition: held under `lease_token`).
    async fn release_part(
        &self,
        id: JobId,
        part: u32,
        lease_token: &str,
    ) -> Result<Job, StoreError>;

    /// Settles a part (condition: not settled yet, and as [`Settle`] says). The
    /// result shows whether every part is now settled.
    async fn settle_part(
        &self,
        id: JobId,
        part: u32,
        settle: Settle<'_>,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError>;

    /// Ends a job that runs in parts (condition: running in parts, every part settled;
    /// to succeed, also no cancel requested).
    async fn finish_parts(
        &self,
        id: JobId,
        end: PartsEnd<'_>,
        now_epoch_ms: u64,
    ) -> Result<Job, StoreError>;

    /// The jobs the sweep must look at once `before` is a grace before now, a page at
    /// a time (`cursor`: the previous page's `next`). Read from sparse indexes that
    /// hold only unfinished jobs and jobs with events in their webhook outbox, ordered
    /// by when each may need repair: a queued job by its creation, a running one by its
    /// lease's end (a job in parts by its parts' last activity), an outbox by the write
    /// that made an event due. A job whose time is before `before` is on a page; a
    /// finished job without events is on none, so the cost follows the work in flight,
    /// not the table's history.
    async fn due(&self, before_epoch_ms: u64, cursor: Option<&str>) -> Result<DuePage, StoreError>;

    /// One page of `query.owner`'s jobs, newest first, from an index by owner and
    /// creation time. A page examines at most [`LIST_EXAMINE_LIMIT`] jobs, so with
    /// filters it may hold fewer than `limit` jobs and still have a `next`.
    async fn list(&self, query: &ListQuery<'_>) -> Result<JobPage, StoreError>;

    /// About how many unfinished (queued or running) jobs `owner` has, for admission:
    /// counting stops a little past `at_most`, so the cost is bounded. `sample` is the
    /// job about to be created: a store that counts one slice of the owner's jobs (to
    /// keep any index key cool) counts the slice `sample` would join and scales up.
    async fn unfinished_estimate(
        &self,
        owner: &str,
        sample: JobId,
        at_most: u64,
    ) -> Result<u64, StoreError>;

    /// Takes `kinds` out of the job's webhook outbox (condition: the job's finish time
    /// is still `finished_at`, so a revive in between keeps its new event).
    async fn events_sent(
        &self,
        id: JobId,
        kinds: &BTreeSet<EventKind>,
        finished_at: Option<u64>,
    ) -> Result<Job, StoreError>;

    /// Records a progress event at `now` (condition: running, its webhook wants
    /// progress, and the last progress event was at least `min_gap_ms` before `now`).
    /// A conflict means: no event now.
    async fn progress_event(
        &self,
        id: JobId,
        now_epoch_ms: u64,
        min_gap_ms: u64,
    ) -> Result<Job, StoreError>;

    /// Stops the job's webhook for good: its receiver answered `410 Gone` (condition:
    /// the job has a webhook). The outbox empties.
    async fn webhook_gone(&self, id: JobId) -> Result<Job, StoreError>;

    /// Waits up to `wait` for the job to become terminal and returns it as it is then
    /// (`None`: no such job). This default polls with a consistent read, every 100 ms
    /// at first and then less often, up to once a second; a store that can be told of
    /// changes wakes at once.
    async fn wait_terminal(&self, id: JobId, wait: Duration) -> Result<Option<Job>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(100);
        loop {
            let job = self.get(id).await?;
            let now = tokio::time::Instant::now();
            if job.as_ref().is_none_or(|j| j.status.is_terminal()) || now >= deadline {
                return Ok(job);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(1));
        }
    }

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Adds `activity` to the totals of the minute starting at `minute_epoch_ms` (kept
    /// for [`ACTIVITY_RETENTION_MS`](crate::activity::ACTIVITY_RETENTION_MS)).
    async fn add_activity(
        &self,
        minute_epoch_ms: u64,
        activity: &Activity,
    ) -> Result<(), StoreError>;

    /// The totals of the `minutes` minutes up to and including the one starting at
    /// `last_minute_epoch_ms`, oldest first; minutes without activity are left out.
    async fn activity(
        &self,
        last_minute_epoch_ms: u64,
        minutes: u32,
    ) -> Result<Vec<MinuteActivity>, StoreError>;

    /// Cancels a job: a queued job ends `cancelled` at once, a running one gets its
    /// cancel requested. A terminal job is a [`StoreError::Conflict`].
    async fn cancel(&self, id: JobId, now_epoch_ms: u64) -> Result<Job, StoreError> {
        // The job may move between the two writes; two rounds cover queued -> running.
        for _ in 0..2 {
            match self.cancel_queued(id, now_epoch_ms).await {
                Err(StoreError::Conflict(current)) if current.status == JobStatus::Running => {}
                other => return other,
            }
            match self.request_cancel(id).await {
                Err(StoreError::Conflict(current)) if current.status == JobStatus::Queued => {}
                other => return other,
            }
        }
        self.get(id).await?.ok_or(StoreError::NotFound)
    }
}
