//! `JobStore` on the embedded database: each job a row holding its record as JSON,
//! with the columns the DynamoDB store keeps as index keys (owner and creation time,
//! due time, unfinished).

use std::time::Duration;

use async_trait::async_trait;
use offpath_core::activity::{ACTIVITY_RETENTION_MS, MINUTE_MS};
use offpath_core::transition::Next;
use offpath_core::{
    Activity, DuePage, Job, JobId, JobPage, JobStore, LIST_EXAMINE_LIMIT, ListPosition, ListQuery,
    MinuteActivity, NewJob, StoreError, Transition,
};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use crate::database::{Database, DbError};

/// Most jobs on one page of [`JobStore::due`].
const DUE_PAGE: usize = 100;

/// How often [`JobStore::wait_terminal`] reads the job again when no write of this
/// process woke it (a worker process may have finished it).
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Most expired jobs one purge deletes.
const PURGE_BATCH: usize = 1000;

/// A [`JobStore`] on the embedded database. Jobs past their TTL are deleted by
/// [`SqliteStore::purge_expired`], which also returns the freed pages to the disk.
#[derive(Clone)]
pub struct SqliteStore {
    database: Database,
    /// Told of every write of this process that makes a job terminal.
    finished: std::sync::Arc<Notify>,
}

impl SqliteStore {
    /// The store in `database`.
    pub fn new(database: Database) -> Self {
        SqliteStore {
            database,
            finished: std::sync::Arc::new(Notify::new()),
        }
    }

    /// Deletes jobs whose TTL passed at `now_epoch_s` (a page at a time) and returns
    /// the freed pages to the file system. Returns how many jobs went.
    pub async fn purge_expired(&self, now_epoch_s: u64) -> Result<usize, StoreError> {
        Ok(self
            .database
            .run(move |connection| {
                let mut deleted = 0;
                loop {
                    let page = connection.execute(
                        "DELETE FROM jobs WHERE id IN
                           (SELECT id FROM jobs WHERE expires_at <= ?1 LIMIT ?2)",
                        params![now_epoch_s as i64, PURGE_BATCH as i64],
                    )?;
                    deleted += page;
                    if page < PURGE_BATCH {
                        break;
                    }
                }
                // Each step of the pragma frees one page: step it to the end.
                let mut vacuum = connection.prepare("PRAGMA incremental_vacuum")?;
                let mut steps = vacuum.query([])?;
                while steps.next()?.is_some() {}
                Ok(deleted)
            })
            .await?)
    }
}

/// The job `id`, if stored.
fn read(connection: &Connection, id: JobId) -> Result<Option<Job>, DbError> {
    let record: Option<String> = connection
        .query_row(
            "SELECT record FROM jobs WHERE id = ?1",
            [id.to_string()],
            |row| row.get(0),
        )
        .optional()?;
    Ok(record.map(|r| serde_json::from_str(&r)).transpose()?)
}

/// Inserts or replaces `job`'s row.
fn write(connection: &Connection, job: &Job) -> Result<(), DbError> {
    connection.execute(
        "INSERT OR REPLACE INTO jobs (id, owner, created_at, due_at, unfinished, expires_at, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            job.id.to_string(),
            job.owner,
            job.created_at_epoch_ms as i64,
            job.due_at().map(|at| at as i64),
            !job.status.is_terminal(),
            job.expires_at_epoch_s as i64,
            serde_json::to_string(job)?,
        ],
    )?;
    Ok(())
}

/// The jobs whose records `sql` selects (its only column) with `params`.
fn select(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Job>, DbError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement
        .query_map(params, |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .iter()
        .map(|record| serde_json::from_str(record))
        .collect::<Result<_, _>>()?)
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn create(&self, new: &NewJob) -> Result<Job, StoreError> {
        let job = Job::from_new(new.clone());
        let created = self
            .database
            .run(move |connection| {
                let transaction = connection.transaction()?;
                if let Some(existing) = read(&transaction, job.id)? {
                    return Ok(Err(existing));
                }
                write(&transaction, &job)?;
                transaction.commit()?;
                Ok(Ok(job))
            })
            .await?;
        created.map_err(|existing| StoreError::Conflict(Box::new(existing)))
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self
            .database
            .run(move |connection| read(connection, id))
            .await?)
    }

    /// The transition's specification ([`Transition::next`]), applied in one
    /// transaction.
    async fn apply(&self, id: JobId, transition: &Transition) -> Result<Job, StoreError> {
        let transition = transition.clone();
        let applied = self
            .database
            .run(move |connection| {
                let transaction = connection
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let Some(job) = read(&transaction, id)? else {
                    return Ok(Err(StoreError::NotFound));
                };
                let result = match transition.next(&job) {
                    Next::Refused => Err(StoreError::Conflict(Box::new(job))),
                    Next::Deleted => {
                        transaction.execute("DELETE FROM jobs WHERE id = ?1", [id.to_string()])?;
                        Ok(job)
                    }
                    Next::Updated(after) => {
                        write(&transaction, &after)?;
                        Ok(*after)
                    }
                };
                transaction.commit()?;
                Ok(result)
            })
            .await??;
        if applied.status.is_terminal() {
            self.finished.notify_waiters();
        }
        Ok(applied)
    }

    /// The cursor is the last entry's `at:id`.
    async fn due(&self, before: u64, cursor: Option<&str>) -> Result<DuePage, StoreError> {
        let after = match cursor {
            None => None,
            Some(cursor) => {
                let parsed = cursor.split_once(':').and_then(|(at, id)| {
                    Some((at.parse::<u64>().ok()?, id.parse::<JobId>().ok()?))
                });
                Some(
                    parsed
                        .ok_or_else(|| StoreError::Other(format!("bad due cursor {cursor:?}")))?,
                )
            }
        };
        let (at, id) = after.unwrap_or((0, JobId::MIN));
        let strictly_after = after.is_some();
        let rows = self
            .database
            .run(move |connection| {
                select(
                    connection,
                    "SELECT record FROM jobs
                     WHERE due_at IS NOT NULL AND due_at < ?1
                       AND (due_at > ?2 OR (due_at = ?2 AND (id > ?3 OR NOT ?4)))
                     ORDER BY due_at, id LIMIT ?5",
                    params![
                        before.min(i64::MAX as u64) as i64,
                        at as i64,
                        id.to_string(),
                        strictly_after,
                        DUE_PAGE as i64 + 1
                    ],
                )
            })
            .await?;
        let more = rows.len() > DUE_PAGE;
        let jobs: Vec<Job> = rows.into_iter().take(DUE_PAGE).collect();
        Ok(DuePage {
            read: jobs.len(),
            next: more
                .then(|| {
                    jobs.last()
                        .and_then(|job| Some(format!("{}:{}", job.due_at()?, job.id)))
                })
                .flatten(),
            jobs,
        })
    }

    async fn list(&self, query: &ListQuery<'_>) -> Result<JobPage, StoreError> {
        let owner = query.owner.to_owned();
        let (created, id) = match query.after {
            Some(after) => (after.created_at_epoch_ms, after.id),
            None => (u64::MAX, JobId::MAX),
        };
        let inclusive = query.after.is_none();
        // One more than may be examined, to know whether anything follows.
        let examined = self
            .database
            .run(move |connection| {
                select(
                    connection,
                    "SELECT record FROM jobs
                     WHERE owner = ?1
                       AND (created_at < ?2 OR (created_at = ?2 AND (id < ?3 OR (?4 AND id = ?3))))
                     ORDER BY created_at DESC, id DESC LIMIT ?5",
                    params![
                        owner,
                        created.min(i64::MAX as u64) as i64,
                        id.to_string(),
                        inclusive,
                        LIST_EXAMINE_LIMIT as i64 + 1
                    ],
                )
            })
            .await?;
        let mut page = JobPage::default();
        let mut rows = examined.into_iter().enumerate().peekable();
        while let Some((index, job)) = rows.next() {
            let position = ListPosition {
                created_at_epoch_ms: job.created_at_epoch_ms,
                id: job.id,
            };
            if query.matches(&job) {
                page.jobs.push(job);
            }
            if page.jobs.len() >= query.limit || index + 1 >= LIST_EXAMINE_LIMIT {
                page.next = rows.peek().is_some().then_some(position);
                break;
            }
        }
        Ok(page)
    }

    async fn unfinished_estimate(
        &self,
        owner: &str,
        _sample: JobId,
        at_most: u64,
    ) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        let limit = at_most.saturating_add(1).min(i64::MAX as u64) as i64;
        let count: i64 = self
            .database
            .run(move |connection| {
                Ok(connection.query_row(
                    "SELECT count(*) FROM
                       (SELECT 1 FROM jobs WHERE owner = ?1 AND unfinished = 1 LIMIT ?2)",
                    params![owner, limit],
                    |row| row.get(0),
                )?)
            })
            .await?;
        Ok(count as u64)
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
            let until = deadline.min(tokio::time::Instant::now() + WAIT_POLL);
            if tokio::time::timeout_at(until, finished).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return self.get(id).await;
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(self
            .database
            .run(|connection| Ok(connection.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?))
            .await
            .map(drop)?)
    }

    async fn add_activity(
        &self,
        minute_epoch_ms: u64,
        activity: &Activity,
    ) -> Result<(), StoreError> {
        let activity = *activity;
        Ok(self
            .database
            .run(move |connection| {
                let transaction = connection
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let expired = minute_epoch_ms.saturating_sub(ACTIVITY_RETENTION_MS);
                transaction.execute("DELETE FROM activity WHERE minute < ?1", [expired as i64])?;
                let mut total: Activity = transaction
                    .query_row(
                        "SELECT record FROM activity WHERE minute = ?1",
                        [minute_epoch_ms as i64],
                        |row| row.get::<_, String>(0),
                    )
                    .optional()?
                    .map(|record| serde_json::from_str(&record))
                    .transpose()?
                    .unwrap_or_default();
                total.add(&activity);
                transaction.execute(
                    "INSERT OR REPLACE INTO activity (minute, record) VALUES (?1, ?2)",
                    params![minute_epoch_ms as i64, serde_json::to_string(&total)?],
                )?;
                transaction.commit()?;
                Ok(())
            })
            .await?)
    }

    async fn activity(
        &self,
        last_minute_epoch_ms: u64,
        minutes: u32,
    ) -> Result<Vec<MinuteActivity>, StoreError> {
        let first =
            last_minute_epoch_ms.saturating_sub(u64::from(minutes.saturating_sub(1)) * MINUTE_MS);
        Ok(self
            .database
            .run(move |connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT minute, record FROM activity WHERE minute BETWEEN ?1 AND ?2 ORDER BY minute",
                )?;
                let rows = statement
                    .query_map(
                        params![first as i64, last_minute_epoch_ms as i64],
                        |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.into_iter()
                    .map(|(minute, record)| {
                        Ok(MinuteActivity {
                            minute_epoch_ms: minute as u64,
                            activity: serde_json::from_str(&record)?,
                        })
                    })
                    .collect()
            })
            .await?)
    }
}
