//! `JobStore` in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use offpath_core::activity::ACTIVITY_RETENTION_MS;
use offpath_core::transition::Next;
use offpath_core::{
    Activity, Clock, DuePage, Job, JobId, JobPage, JobStore, LIST_EXAMINE_LIMIT, ListPosition,
    ListQuery, MinuteActivity, NewJob, StoreError, SystemClock, Transition,
};
use tokio::sync::Notify;

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

    fn remove(&mut self, id: JobId) -> Option<Job> {
        let job = self.jobs.remove(&id)?;
        self.by_owner
            .remove(&(job.owner.clone(), job.created_at_epoch_ms, job.id));
        self.unindex(&job);
        Some(job)
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

    /// The transition's specification ([`Transition::next`]), applied under the lock.
    async fn apply(&self, id: JobId, transition: &Transition) -> Result<Job, StoreError> {
        let mut tables = self.tables.lock().expect("store lock");
        let job = tables.jobs.get(&id).ok_or(StoreError::NotFound)?;
        match transition.next(job) {
            Next::Refused => Err(StoreError::Conflict(Box::new(job.clone()))),
            Next::Deleted => tables.remove(id).ok_or(StoreError::NotFound),
            Next::Updated(after) => {
                let after = *after;
                if let Some(before) = tables.jobs.insert(id, after.clone()) {
                    tables.unindex(&before);
                }
                tables.index(&after);
                if after.status.is_terminal() {
                    self.finished.notify_waiters();
                }
                Ok(after)
            }
        }
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
