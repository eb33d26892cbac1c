//! The job store port: create, read, apply a [`Transition`], and the index queries.
//! Every state change is one conditional write; a failed condition comes back as
//! [`StoreError::Conflict`] carrying the current record.

use std::time::Duration;

use async_trait::async_trait;

use crate::activity::{Activity, MinuteActivity};
use crate::job::{Job, JobId, NewJob};
use crate::status::JobStatus;
use crate::task_name::TaskName;
use crate::transition::Transition;

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

/// Persistent job state (DynamoDB in AWS, in memory locally). Every write to an
/// existing job is a [`Transition`]: the store checks its condition and makes its
/// changes in one atomic step, and holds no rules of its own.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Creates a queued job if no job with its id exists
    /// (condition: the id is absent). On conflict returns the existing job.
    async fn create(&self, job: &NewJob) -> Result<Job, StoreError>;

    /// Reads a job, strongly consistent.
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Makes one write to job `id`, atomically: when the transition's condition holds
    /// for the job as stored, its effect, and the job as it is after (as it was, for
    /// a write that deletes it); otherwise [`StoreError::Conflict`] with the job as it
    /// is, and nothing changes.
    async fn apply(&self, id: JobId, transition: &Transition) -> Result<Job, StoreError>;

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
}

/// Cancels a job: a queued job ends `cancelled` at once, a running one gets its cancel
/// requested. A terminal job is a [`StoreError::Conflict`].
pub async fn cancel(store: &dyn JobStore, id: JobId, now_epoch_ms: u64) -> Result<Job, StoreError> {
    // The job may move between the two writes; two rounds cover queued -> running.
    for _ in 0..2 {
        match store
            .apply(id, &Transition::CancelQueued { now_epoch_ms })
            .await
        {
            Err(StoreError::Conflict(current)) if current.status == JobStatus::Running => {}
            other => return other,
        }
        match store.apply(id, &Transition::RequestCancel).await {
            Err(StoreError::Conflict(current)) if current.status == JobStatus::Queued => {}
            other => return other,
        }
    }
    store.get(id).await?.ok_or(StoreError::NotFound)
}

/// Puts a dead-lettered job back for an operator's redrive ([`Transition::revive`], as
/// read now). A job that is not dead-lettered is a [`StoreError::Conflict`].
pub async fn revive(store: &dyn JobStore, id: JobId, now_epoch_ms: u64) -> Result<Job, StoreError> {
    let job = store.get(id).await?.ok_or(StoreError::NotFound)?;
    store
        .apply(id, &Transition::revive(&job, now_epoch_ms))
        .await
}
