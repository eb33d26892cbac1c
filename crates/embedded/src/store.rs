//! `JobStore` in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use offpath_core::activity::ACTIVITY_RETENTION_MS;
use offpath_core::{
    Activity, Clock, DEAD_LETTERED, DuePage, ErrorInfo, EventKind, Job, JobId, JobPage, JobStatus,
    JobStore, LIST_EXAMINE_LIMIT, Lease, ListPosition, ListQuery, MinuteActivity, NewJob, Parts,
    PartsEnd, Settle, StoreError, SystemClock,
};
use serde_json::Value;
use tokio::sync::Notify;

/// Nobody holds the job: queued, or running under an expired lease (DynamoDB: `UNHELD`).
fn unheld(job: &Job, now: u64) -> bool {
    job.status == JobStatus::Queued
        || (job.status == JobStatus::Running && job.lease_until_epoch_ms.is_some_and(|u| u < now))
}

/// The caller holds the lease.
fn held(job: &Job, token: &str) -> bool {
    job.status == JobStatus::Running && job.lease_owner.as_deref() == Some(token)
}

/// The job runs in parts, no cancel requested, and part `part` is unsettled and held
/// by no live lease (DynamoDB: `PART_CLAIMABLE`).
fn part_claimable(job: &Job, part: u32, now: u64) -> bool {
    job.status == JobStatus::Running
        && !job.cancel_requested
        && job.parts.as_ref().is_some_and(|parts| {
            part < parts.total
                && !parts.settled.contains(&part)
                && parts.leases.get(&part).is_none_or(|l| !l.is_live(now))
        })
}

/// The caller holds part `part`'s lease (DynamoDB: `PART_HELD`).
fn part_held(job: &Job, part: u32, token: &str) -> bool {
    job.status == JobStatus::Running
        && job
            .parts
            .as_ref()
            .and_then(|parts| parts.leases.get(&part))
            .is_some_and(|lease| lease.token == token)
}

/// The parts of a job that runs in parts (the conditions checked they exist).
fn parts_of(job: &mut Job) -> &mut Parts {
    job.parts.get_or_insert_with(Parts::default)
}

/// Most jobs on one page of [`JobStore::due`].
const DUE_PAGE: usize = 100;

/// The jobs and the indexes the DynamoDB store keeps as global secondary indexes.
#[derive(Default)]
struct Tables {
    jobs: HashMap<JobId, Job>,
    /// (due time, id) of jobs the sweep may need to look at ([`Job::due_at`]).
    due: BTreeSet<(u64, JobId)>,
    /// (owner, creation time, id) of every job, for listing.
    by_owner: BTreeSet<(String, u64, JobId)>,
    /// Each owner's queued and running jobs.
    unfinished: HashMap<String, u64>,
    /// Workers' totals by minute ([`JobStore::add_activity`]).
    activity: BTreeMap<u64, Activity>,
}

impl Tables {
    fn insert(&mut self, job: Job) {
        self.by_owner
            .insert((job.owner.clone(), job.created_at_epoch_ms, job.id));
        self.index(&job);
        self.jobs.insert(job.id, job);
    }

    fn remove(&mut self, id: JobId) {
        if let Some(job) = self.jobs.remove(&id) {
            self.by_owner
                .remove(&(job.owner.clone(), job.created_at_epoch_ms, job.id));
            self.unindex(&job);
        }
    }

    /// Adds the entries of the state-dependent indexes for `job`.
    fn index(&mut self, job: &Job) {
        if let Some(at) = job.due_at() {
            self.due.insert((at, job.id));
        }
        if !job.status.is_terminal() {
            *self.unfinished.entry(job.owner.clone()).or_default() += 1;
        }
    }

    /// Removes the entries of the state-dependent indexes for `job`.
    fn unindex(&mut self, job: &Job) {
        if let Some(at) = job.due_at() {
            self.due.remove(&(at, job.id));
        }
        if !job.status.is_terminal()
            && let Some(count) = self.unfinished.get_mut(&job.owner)
        {
            *count -= 1;
            if *count == 0 {
                self.unfinished.remove(&job.owner);
            }
        }
    }
}

/// An in-memory [`JobStore`] holding at most `capacity` jobs; expired jobs (TTL) are
/// dropped when room is needed, and a full store refuses new jobs as unavailable.
/// Waiters for a job's end wake on the write that ends it.
#[derive(Clone)]
pub struct MemoryStore {
    tables: Arc<Mutex<Tables>>,
    capacity: usize,
    /// Told of every write that makes a job terminal.
    finished: Arc<Notify>,
}

impl MemoryStore {
    /// A store for up to `capacity` jobs.
    pub fn new(capacity: usize) -> Self {
        MemoryStore {
            tables: Arc::new(Mutex::new(Tables::default())),
            capacity,
            finished: Arc::new(Notify::new()),
        }
    }

    /// One conditional write: `condition` sees the current job, `apply` changes it.
    fn update(
        &self,
        id: JobId,
        condition: impl FnOnce(&Job) -> bool,
        apply: impl FnOnce(&mut Job),
    ) -> Result<Job, StoreError> {
        let mut tables = self.tables.lock().expect("store lock");
        let mut job = tables.jobs.get(&id).ok_or(StoreError::NotFound)?.clone();
        if !condition(&job) {
            return Err(StoreError::Conflict(Box::new(job)));
        }
        tables.unindex(&job);
        apply(&mut job);
        job.version += 1;
        tables.index(&job);
        tables.jobs.insert(id, job.clone());
        if job.status.is_terminal() {
            self.finished.notify_waiters();
        }
        Ok(job)
    }

    fn failed(job: &mut Job, error: &ErrorInfo, now: u64) {
        job.error = Some(error.clone());
        Self::finish(job, JobStatus::Failed, now);
    }

    fn finish(job: &mut Job, status: JobStatus, now: u64) {
        job.status = status;
        job.finished_at_epoch_ms = Some(now);
        job.lease_owner = None;
        job.lease_until_epoch_ms = None;
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn create(&self, new: &NewJob) -> Result<Job, StoreError> {
        let mut tables = self.tables.lock().expect("store lock");
        if let Some(existing) = tables.jobs.get(&new.id) {
            return Err(StoreError::Conflict(Box::new(existing.clone())));
        }
        if tables.jobs.len() >= self.capacity {
            let now_s = SystemClock.now_epoch_ms() / 1000;
            let expired: Vec<JobId> = tables
                .jobs
                .values()
                .filter(|job| job.expires_at_epoch_s <= now_s)
                .map(|job| job.id)
                .collect();
            for id in expired {
                tables.remove(id);
            }
            if tables.jobs.len() >= self.capacity {
                return Err(StoreError::Unavailable(format!(
                    "the embedded store holds its limit of {} jobs",
                    self.capacity
                )));
            }
        }
        let job = Job::from_new(new.clone());
        tables.insert(job.clone());
        Ok(job)
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self
            .tables
            .lock()
            .expect("store lock")
            .jobs
            .get(&id)
            .cloned())
    }

    async fn claim(&self, id: JobId, lease: &Lease, now: u64) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| unheld(job, now),
            |job| {
                job.status = JobStatus::Running;
                job.lease_owner = Some(lease.token.clone());
                job.lease_until_epoch_ms = Some(lease.until_epoch_ms);
                job.attempts += 1;
                job.started_at_epoch_ms.get_or_insert(now);
            },
        )
    }

    async fn extend_lease(&self, id: JobId, lease: &Lease) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| held(job, &lease.token),
            |job| job.lease_until_epoch_ms = Some(lease.until_epoch_ms),
        )
    }

    async fn complete(
        &self,
        id: JobId,
        token: &str,
        output: &Value,
        now: u64,
    ) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| held(job, token) && !job.cancel_requested,
            |job| {
                job.output = Some(output.clone());
                Self::finish(job, JobStatus::Succeeded, now);
            },
        )
    }

    async fn fail(
        &self,
        id: JobId,
        token: &str,
        error: &ErrorInfo,
        now: u64,
    ) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| held(job, token) && !job.cancel_requested,
            |job| Self::failed(job, error, now),
        )
    }

    async fn release(&self, id: JobId, token: &str, now: u64) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| held(job, token),
            |job| {
                job.status = JobStatus::Queued;
                job.requeued_at_epoch_ms = Some(now);
                job.lease_owner = None;
                job.lease_until_epoch_ms = None;
            },
        )
    }

    async fn finish_cancelled(&self, id: JobId, token: &str, now: u64) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| held(job, token),
            |job| Self::finish(job, JobStatus::Cancelled, now),
        )
    }

    async fn abandon(&self, id: JobId, error: &ErrorInfo, now: u64) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| unheld(job, now),
            |job| Self::failed(job, error, now),
        )
    }

    async fn cancel_queued(&self, id: JobId, now: u64) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| job.status == JobStatus::Queued,
            |job| Self::finish(job, JobStatus::Cancelled, now),
        )
    }

    async fn request_cancel(&self, id: JobId) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| job.status == JobStatus::Running,
            |job| job.cancel_requested = true,
        )
    }

    async fn revive(&self, id: JobId) -> Result<Job, StoreError> {
        let now = SystemClock.now_epoch_ms();
        self.update(
            id,
            |job| {
                job.status == JobStatus::Failed
                    && job.error.as_ref().is_some_and(|e| e.code == DEAD_LETTERED)
            },
            |job| {
                job.error = None;
                job.finished_at_epoch_ms = None;
                if let Some(webhook) = job.webhook.as_mut().filter(|w| !w.gone)
                    && webhook.events.contains(&EventKind::Completed)
                {
                    webhook.unsent.insert(EventKind::Completed);
                }
                job.status = match &mut job.parts {
                    Some(parts) => {
                        for part in std::mem::take(&mut parts.dead).into_keys() {
                            parts.settled.remove(&part);
                            parts.attempts.remove(&part);
                        }
                        JobStatus::Running
                    }
                    None => {
                        job.requeued_at_epoch_ms = Some(now);
                        JobStatus::Queued
                    }
                };
            },
        )
    }

    async fn record_resend(&self, id: JobId, now: u64) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| job.status == JobStatus::Queued,
            |job| job.resent_at_epoch_ms = Some(now),
        )
    }

    async fn fan_out(
        &self,
        id: JobId,
        token: &str,
        parts: u32,
        chunks: u64,
        now: u64,
    ) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| held(job, token) && !job.cancel_requested,
            |job| {
                job.lease_owner = None;
                job.lease_until_epoch_ms = None;
                job.parts = Some(Parts {
                    total: parts,
                    chunks_total: chunks,
                    touched_at_epoch_ms: now,
                    ..Parts::default()
                });
            },
        )
    }

    async fn claim_part(
        &self,
        id: JobId,
        part: u32,
        lease: &Lease,
        now: u64,
    ) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| part_claimable(job, part, now),
            |job| {
                let parts = parts_of(job);
                parts.leases.insert(part, lease.clone());
                *parts.attempts.entry(part).or_default() += 1;
                parts.touched_at_epoch_ms = now;
            },
        )
    }

    async fn extend_part_lease(
        &self,
        id: JobId,
        part: u32,
        lease: &Lease,
        now: u64,
    ) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| part_held(job, part, &lease.token),
            |job| {
                let parts = parts_of(job);
                parts.leases.insert(part, lease.clone());
                parts.touched_at_epoch_ms = now;
            },
        )
    }

    async fn release_part(&self, id: JobId, part: u32, token: &str) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| part_held(job, part, token),
            |job| {
                parts_of(job).leases.remove(&part);
            },
        )
    }

    async fn settle_part(
        &self,
        id: JobId,
        part: u32,
        settle: Settle<'_>,
        now: u64,
    ) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| {
                let unsettled = job
                    .parts
                    .as_ref()
                    .is_some_and(|parts| part < parts.total && !parts.settled.contains(&part));
                let unheld = job
                    .parts
                    .as_ref()
                    .and_then(|parts| parts.leases.get(&part))
                    .is_none_or(|lease| !lease.is_live(now));
                unsettled
                    && match settle {
                        Settle::Done { token, .. }
                        | Settle::Dead {
                            token: Some(token), ..
                        } => part_held(job, part, token),
                        Settle::Dead { token: None, .. } | Settle::Skipped => unheld,
                    }
            },
            |job| {
                let parts = parts_of(job);
                parts.leases.remove(&part);
                parts.settled.insert(part);
                parts.touched_at_epoch_ms = now;
                match settle {
                    Settle::Done { chunks, .. } => parts.chunks_done += chunks,
                    Settle::Dead { error, .. } => {
                        parts.dead.insert(part, error.to_owned());
                    }
                    Settle::Skipped => {}
                }
            },
        )
    }

    async fn finish_parts(
        &self,
        id: JobId,
        end: PartsEnd<'_>,
        now: u64,
    ) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| {
                job.status == JobStatus::Running
                    && job.parts.as_ref().is_some_and(Parts::all_settled)
                    && !(matches!(end, PartsEnd::Succeeded(_)) && job.cancel_requested)
            },
            |job| match end {
                PartsEnd::Succeeded(output) => {
                    job.output = Some(output.clone());
                    Self::finish(job, JobStatus::Succeeded, now);
                }
                PartsEnd::Failed(error) => Self::failed(job, error, now),
                PartsEnd::Cancelled => Self::finish(job, JobStatus::Cancelled, now),
            },
        )
    }

    async fn delete_unstarted(&self, id: JobId) -> Result<(), StoreError> {
        let mut tables = self.tables.lock().expect("store lock");
        let job = tables.jobs.get(&id).ok_or(StoreError::NotFound)?;
        if job.status != JobStatus::Queued || job.attempts != 0 {
            return Err(StoreError::Conflict(Box::new(job.clone())));
        }
        tables.remove(id);
        Ok(())
    }

    /// The cursor is the last entry's `at:id`.
    async fn due(&self, before: u64, cursor: Option<&str>) -> Result<DuePage, StoreError> {
        let start = match cursor {
            None => Bound::Unbounded,
            Some(cursor) => {
                let parsed = cursor
                    .split_once(':')
                    .and_then(|(at, id)| Some((at.parse().ok()?, id.parse().ok()?)));
                let entry = parsed
                    .ok_or_else(|| StoreError::Other(format!("bad due cursor {cursor:?}")))?;
                Bound::Excluded(entry)
            }
        };
        let tables = self.tables.lock().expect("store lock");
        let entries: Vec<(u64, JobId)> = tables
            .due
            .range((start, Bound::Unbounded))
            .take_while(|(at, _)| *at < before)
            .take(DUE_PAGE + 1)
            .copied()
            .collect();
        let more = entries.len() > DUE_PAGE;
        let page = &entries[..entries.len().min(DUE_PAGE)];
        let jobs: Vec<Job> = page.iter().map(|(_, id)| tables.jobs[id].clone()).collect();
        Ok(DuePage {
            read: jobs.len(),
            next: more
                .then(|| page.last().map(|(at, id)| format!("{at}:{id}")))
                .flatten(),
            jobs,
        })
    }

    async fn list(&self, query: &ListQuery<'_>) -> Result<JobPage, StoreError> {
        let owner = query.owner.to_owned();
        let end = match query.after {
            Some(after) => Bound::Excluded((owner.clone(), after.created_at_epoch_ms, after.id)),
            None => Bound::Included((owner.clone(), u64::MAX, JobId::MAX)),
        };
        let tables = self.tables.lock().expect("store lock");
        let mut entries = tables
            .by_owner
            .range((Bound::Included((owner, 0, JobId::MIN)), end))
            .rev();
        let mut page = JobPage::default();
        let mut examined = 0;
        for (_, created, id) in entries.by_ref() {
            examined += 1;
            let job = &tables.jobs[id];
            if query.matches(job) {
                page.jobs.push(job.clone());
            }
            if page.jobs.len() >= query.limit || examined >= LIST_EXAMINE_LIMIT {
                page.next = Some(ListPosition {
                    created_at_epoch_ms: *created,
                    id: *id,
                });
                break;
            }
        }
        if entries.next().is_none() {
            page.next = None;
        }
        Ok(page)
    }

    async fn unfinished_estimate(
        &self,
        owner: &str,
        _sample: JobId,
        at_most: u64,
    ) -> Result<u64, StoreError> {
        let tables = self.tables.lock().expect("store lock");
        let count = tables.unfinished.get(owner).copied().unwrap_or(0);
        Ok(count.min(at_most.saturating_add(1)))
    }

    async fn events_sent(
        &self,
        id: JobId,
        kinds: &BTreeSet<EventKind>,
        finished_at: Option<u64>,
    ) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| job.finished_at_epoch_ms == finished_at,
            |job| {
                if let Some(webhook) = &mut job.webhook {
                    webhook.unsent.retain(|kind| !kinds.contains(kind));
                }
            },
        )
    }

    async fn progress_event(
        &self,
        id: JobId,
        now: u64,
        min_gap_ms: u64,
    ) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| {
                job.status == JobStatus::Running
                    && job.webhook.as_ref().is_some_and(|w| {
                        w.wants_progress()
                            && w.progress_at_epoch_ms
                                .is_none_or(|at| at + min_gap_ms <= now)
                    })
            },
            |job| {
                if let Some(webhook) = &mut job.webhook {
                    webhook.progress_at_epoch_ms = Some(now);
                }
            },
        )
    }

    async fn webhook_gone(&self, id: JobId) -> Result<Job, StoreError> {
        self.update(
            id,
            |job| job.webhook.is_some(),
            |job| {
                if let Some(webhook) = &mut job.webhook {
                    webhook.gone = true;
                    webhook.unsent.clear();
                }
            },
        )
    }

    async fn wait_terminal(&self, id: JobId, wait: Duration) -> Result<Option<Job>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the read, so an end written in between still wakes us.
            let finished = self.finished.notified();
            let job = self.get(id).await?;
            if job.as_ref().is_none_or(|j| j.status.is_terminal()) {
                return Ok(job);
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return self.get(id).await;
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn add_activity(
        &self,
        minute_epoch_ms: u64,
        activity: &Activity,
    ) -> Result<(), StoreError> {
        let mut tables = self.tables.lock().expect("store lock");
        let expired = minute_epoch_ms.saturating_sub(ACTIVITY_RETENTION_MS);
        tables.activity = tables.activity.split_off(&expired);
        tables
            .activity
            .entry(minute_epoch_ms)
            .or_default()
            .add(activity);
        Ok(())
    }

    async fn activity(
        &self,
        last_minute_epoch_ms: u64,
        minutes: u32,
    ) -> Result<Vec<MinuteActivity>, StoreError> {
        let tables = self.tables.lock().expect("store lock");
        let first = last_minute_epoch_ms.saturating_sub(
            u64::from(minutes.saturating_sub(1)) * offpath_core::activity::MINUTE_MS,
        );
        Ok(tables
            .activity
            .range(first..=last_minute_epoch_ms)
            .map(|(&minute_epoch_ms, &activity)| MinuteActivity {
                minute_epoch_ms,
                activity,
            })
            .collect())
    }
}
