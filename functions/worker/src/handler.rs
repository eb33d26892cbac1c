//! The batch handler.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::FutureExt;
use futures::future::join_all;
use lambda_runtime::LambdaEvent;
use offpath_core::{
    Clock, DEAD_LETTERED, ErrorInfo, Job, JobId, JobMessage, JobQueue, JobStatus, JobStore, Lease,
    Model, ModelError, StoreError, SystemClock, Task, TaskInput, metrics,
};
use serde_json::Value;
use tracing::Instrument;

use crate::backoff::Backoff;

/// Worker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// How long a claim holds a job: the job timeout.
    pub lease: Duration,
    /// The queue's maxReceiveCount; `None` when the queue has no dead-letter queue.
    pub max_receive_count: Option<u32>,
    /// Delays for messages that must come back.
    pub backoff: Backoff,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            lease: Duration::from_secs(60),
            max_receive_count: Some(5),
            backoff: Backoff::default(),
        }
    }
}

/// An invocation-level failure: SQS retries the whole batch.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A record came without a message id, so it cannot be reported on its own.
    #[error("an SQS record has no messageId; the batch cannot report item failures")]
    MissingMessageId,
    /// Every record of the batch failed.
    #[error("all {0} records of the batch failed")]
    AllFailed(usize),
}

/// What becomes of one record.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// Acknowledge: the message is deleted.
    Done,
    /// Report an item failure; the message comes back after `visibility` (or after
    /// the queue's visibility timeout when `None`).
    Retry(Option<Duration>),
}

/// A record whose job this invocation holds.
struct Claimed {
    job: Job,
    lease: Lease,
    input: TaskInput,
    receive_count: u32,
}

/// What inference did for one job.
enum Inference {
    Output(Value),
    Failed(ModelError),
    Crashed(String),
}

/// The worker: ports plus settings. Build it once per process (Lambda init).
#[derive(Clone)]
pub struct Worker {
    store: Arc<dyn JobStore>,
    queue: Arc<dyn JobQueue>,
    model: Arc<dyn Model>,
    config: WorkerConfig,
}

impl Worker {
    /// A worker over the given ports; time is the system clock.
    pub fn new(
        store: Arc<dyn JobStore>,
        queue: Arc<dyn JobQueue>,
        model: Arc<dyn Model>,
        config: WorkerConfig,
    ) -> Self {
        Worker {
            store,
            queue,
            model,
            config,
        }
    }

    /// Handles one SQS batch: claim, infer per task group, finish; returns the
    /// messages to retry as item failures.
    pub async fn handle(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, WorkerError> {
        let records = event.payload.records;
        if records
            .iter()
            .any(|r| r.message_id.as_deref().unwrap_or("").is_empty())
        {
            return Err(WorkerError::MissingMessageId);
        }
        let count = records.len();

        // 1. Decode and claim, each record on its own.
        let claims = join_all(records.iter().map(|record| {
            guarded(
                self.claim(record),
                self.config.backoff.delay(receive_count(record)),
            )
        }))
        .await;

        let mut outcomes: Vec<Outcome> = Vec::with_capacity(count);
        let mut claimed: Vec<(usize, Claimed)> = Vec::new();
        for (index, claim) in claims.into_iter().enumerate() {
            match claim {
                Ok(c) => {
                    outcomes.push(Outcome::Done);
                    claimed.push((index, c));
                }
                Err(outcome) => outcomes.push(outcome),
            }
        }

        // 2. One forward pass per task group.
        let mut groups: BTreeMap<Task, Vec<(usize, Claimed)>> = BTreeMap::new();
        for (index, c) in claimed {
            groups.entry(c.input.task()).or_default().push((index, c));
        }
        let mut finished = Vec::new();
        for (task, group) in groups {
            let inputs: Vec<TaskInput> = group.iter().map(|(_, c)| c.input.clone()).collect();
            let results = self.infer(task, inputs).await;
            finished.extend(group.into_iter().zip(results));
        }

        // 3. Record the outcomes.
        let finishes = join_all(finished.into_iter().map(|((index, c), result)| {
            let fallback = self.config.backoff.delay(c.receive_count);
            let span = tracing::info_span!("job", job_id = %c.job.id);
            let step =
                async move { Ok::<_, Outcome>(self.finish(c, result).await) }.instrument(span);
            async move { (index, guarded(step, fallback).await) }
        }))
        .await;
        for (index, outcome) in finishes {
            outcomes[index] = match outcome {
                Ok(outcome) | Err(outcome) => outcome,
            };
        }

        // 4. Back off, all messages at once (one by one, slow calls could keep the
        // last message past its visibility timeout), and report.
        let mut back_offs = Vec::new();
        let mut response = SqsBatchResponse::default();
        for (record, outcome) in records.iter().zip(&outcomes) {
            if let Outcome::Retry(visibility) = outcome {
                if let (Some(visibility), Some(handle)) = (visibility, &record.receipt_handle) {
                    back_offs.push(self.back_off(handle, *visibility));
                }
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id.clone().unwrap_or_default();
                response.batch_item_failures.push(failure);
            }
        }
        join_all(back_offs).await;
        if count > 0 && response.batch_item_failures.len() == count {
            return Err(WorkerError::AllFailed(count));
        }
        Ok(response)
    }

    /// Hides a message for `visibility` before it comes back. Best effort: if this
    /// fails, the queue's visibility timeout applies.
    async fn back_off(&self, receipt_handle: &str, visibility: Duration) {
        if let Err(err) = self
            .queue
            .change_visibility(receipt_handle, visibility)
            .await
        {
            tracing::warn!(error = %err, "could not change message visibility");
        }
    }

    /// Decodes a record and claims its job. `Err` is the record's final outcome.
    async fn claim(&self, record: &SqsMessage) -> Result<Claimed, Outcome> {
        let receive_count = receive_count(record);
        let last = self.is_last_receive(receive_count);
        let message =
            JobMessage::from_body(record.body.as_deref().unwrap_or_default()).map_err(|err| {
                tracing::error!(message_id = ?record.message_id, error = %err,
                    "malformed message; it goes to the dead-letter queue");
                Outcome::Retry(Some(Duration::ZERO))
            })?;
        let id = message.job_id;
        self.claim_job(id, record, receive_count, last)
            .instrument(tracing::info_span!("job", job_id = %id))
            .await
    }

    /// Claims the job a record names and checks its input.
    async fn claim_job(
        &self,
        id: JobId,
        record: &SqsMessage,
        receive_count: u32,
        last: bool,
    ) -> Result<Claimed, Outcome> {
        let now = SystemClock.now_epoch_ms();
        let lease = Lease {
            token: uuid::Uuid::new_v4().to_string(),
            until_epoch_ms: now + self.config.lease.as_millis() as u64,
        };
        let job = match self.store.claim(id, &lease, now).await {
            Ok(job) => job,
            Err(StoreError::NotFound) => {
                tracing::error!(job_id = %id, "message for a job that does not exist; it goes to the dead-letter queue");
                return Err(Outcome::Retry(Some(Duration::ZERO)));
            }
            Err(StoreError::Conflict(current)) => return Err(self.unclaimable(&current, last)),
            Err(err) => {
                tracing::warn!(job_id = %id, error = %err, "claim failed");
                if last {
                    self.dead_letter_unheld(id, &err.to_string()).await;
                }
                return Err(Outcome::Retry(Some(
                    self.config.backoff.delay(receive_count),
                )));
            }
        };
        tracing::info!(job_id = %id, attempt = job.attempts, receive_count, "job claimed");
        if let Some(sent) = record
            .attributes
            .get("SentTimestamp")
            .and_then(|t| t.parse::<u64>().ok())
        {
            metrics::queue_wait(now.saturating_sub(sent));
        }
        if job.cancel_requested {
            self.finish_write(id, self.store.finish_cancelled(id, &lease.token, now).await);
            return Err(Outcome::Done);
        }
        let input = job
            .task
            .parse::<Task>()
            .map_err(|e| e.to_string())
            .and_then(|task| TaskInput::parse(task, &job.input).map_err(|e| e.to_string()));
        match input {
            Ok(input) => Ok(Claimed {
                job,
                lease,
                input,
                receive_count,
            }),
            Err(problem) => {
                let error = ErrorInfo::new("invalid_input", problem);
                let written = self.store.fail(id, &lease.token, &error, now).await;
                Err(self.finish_write(id, written))
            }
        }
    }

    /// The outcome for a message whose job could not be claimed.
    fn unclaimable(&self, current: &Job, last: bool) -> Outcome {
        let now = SystemClock.now_epoch_ms();
        if current.status.is_terminal() {
            tracing::info!(job_id = %current.id, status = %current.status, "duplicate delivery of a finished job");
            Outcome::Done
        } else if current.has_live_lease(now) {
            if last {
                // The lease holder has its own message; this one is a duplicate.
                Outcome::Done
            } else {
                let remaining = current.lease_until_epoch_ms.unwrap_or(now) - now;
                Outcome::Retry(Some(
                    Duration::from_millis(remaining) + Duration::from_secs(1),
                ))
            }
        } else {
            Outcome::Retry(Some(Duration::ZERO))
        }
    }

    /// Runs one task group on a blocking thread. If the batched pass fails or
    /// panics, each job runs alone, so one poisonous input fails only its own job.
    async fn infer(&self, task: Task, inputs: Vec<TaskInput>) -> Vec<Inference> {
        let count = inputs.len();
        match self.run_model(task, inputs.clone()).await {
            Inference::Output(Value::Array(outputs)) if outputs.len() == count => {
                outputs.into_iter().map(Inference::Output).collect()
            }
            Inference::Output(_) => (0..count).map(|_| wrong_count()).collect(),
            whole if count == 1 => vec![whole],
            _ => {
                let mut results = Vec::with_capacity(count);
                for input in inputs {
                    results.push(match self.run_model(task, vec![input]).await {
                        Inference::Output(Value::Array(mut one)) if one.len() == 1 => {
                            Inference::Output(one.remove(0))
                        }
                        Inference::Output(_) => wrong_count(),
                        other => other,
                    });
                }
                results
            }
        }
    }

    async fn run_model(&self, task: Task, inputs: Vec<TaskInput>) -> Inference {
        let model = Arc::clone(&self.model);
        let started = std::time::Instant::now();
        let ran = tokio::task::spawn_blocking(move || model.run(task, &inputs)).await;
        metrics::inference(task.as_str(), started.elapsed().as_secs_f64() * 1000.0);
        match ran {
            Ok(Ok(outputs)) => Inference::Output(Value::Array(outputs)),
            Ok(Err(err)) => Inference::Failed(err),
            Err(join) => Inference::Crashed(panic_text(join)),
        }
    }

    /// Records what inference did and decides the message's fate.
    async fn finish(&self, claimed: Claimed, result: Inference) -> Outcome {
        let Claimed {
            job,
            lease,
            receive_count,
            ..
        } = claimed;
        let id = job.id;
        let now = SystemClock.now_epoch_ms();
        let (cause, retry_after) = match result {
            Inference::Output(output) => {
                let written = self.store.complete(id, &lease.token, &output, now).await;
                return self.finished_or_cancelled(id, &lease, written).await;
            }
            Inference::Failed(err) if !err.is_transient() => {
                let error = ErrorInfo::new("inference_failed", err.to_string());
                let written = self.store.fail(id, &lease.token, &error, now).await;
                return self.finished_or_cancelled(id, &lease, written).await;
            }
            Inference::Failed(ModelError::Throttled { retry_after }) => {
                ("inference throttled".to_owned(), retry_after)
            }
            Inference::Failed(err) => (err.to_string(), None),
            Inference::Crashed(panic) => (format!("inference crashed: {panic}"), None),
        };
        if self.is_last_receive(receive_count) {
            let error = ErrorInfo::new(
                DEAD_LETTERED,
                format!("gave up after {receive_count} attempts; last error: {cause}"),
            );
            tracing::error!(job_id = %id, %cause, "last attempt failed; the message goes to the dead-letter queue");
            let written = self.store.fail(id, &lease.token, &error, now).await;
            self.finish_write(id, written);
            return Outcome::Retry(None);
        }
        tracing::warn!(job_id = %id, %cause, receive_count, "transient failure; backing off");
        if let Err(err) = self.store.release(id, &lease.token).await {
            tracing::warn!(job_id = %id, error = %err, "could not release the lease; it will expire");
        }
        let delay = self.config.backoff.delay(receive_count);
        Outcome::Retry(Some(retry_after.map_or(delay, |hint| hint.max(delay))))
    }

    /// After a finishing write: a cancel requested meanwhile ends the job cancelled.
    async fn finished_or_cancelled(
        &self,
        id: JobId,
        lease: &Lease,
        written: Result<Job, StoreError>,
    ) -> Outcome {
        if let Err(StoreError::Conflict(current)) = &written
            && current.cancel_requested
            && current.lease_owner.as_deref() == Some(&lease.token)
        {
            let now = SystemClock.now_epoch_ms();
            let cancelled = self.store.finish_cancelled(id, &lease.token, now).await;
            return self.finish_write(id, cancelled);
        }
        self.finish_write(id, written)
    }

    /// The outcome of a finishing write. A lost lease is acknowledged (the new owner
    /// finishes); an unreachable store retries the message.
    fn finish_write(&self, id: JobId, written: Result<Job, StoreError>) -> Outcome {
        match written {
            Ok(job) => {
                tracing::info!(job_id = %id, status = %job.status, attempts = job.attempts, "job finished");
                count_finished(&job);
                Outcome::Done
            }
            Err(StoreError::Conflict(current)) => {
                tracing::warn!(job_id = %id, status = %current.status, "lease lost before finishing; the new owner finishes");
                Outcome::Done
            }
            Err(err) => {
                tracing::warn!(job_id = %id, error = %err, "could not record the outcome; retrying the message");
                Outcome::Retry(None)
            }
        }
    }

    /// Marks a job nobody holds as dead-lettered (best effort: the store may be down).
    async fn dead_letter_unheld(&self, id: JobId, cause: &str) {
        let error = ErrorInfo::new(DEAD_LETTERED, format!("gave up; last error: {cause}"));
        match self
            .store
            .abandon(id, &error, SystemClock.now_epoch_ms())
            .await
        {
            Ok(job) => {
                tracing::error!(job_id = %id, "job dead-lettered");
                count_finished(&job);
            }
            Err(err) => {
                tracing::warn!(job_id = %id, error = %err, "could not mark the job dead-lettered; it stays queued (redrive its message from the DLQ)")
            }
        }
    }

    fn is_last_receive(&self, receive_count: u32) -> bool {
        self.config
            .max_receive_count
            .is_some_and(|max| receive_count >= max)
    }
}

/// Runs one record's step, turning a panic into a retry.
async fn guarded<T>(
    step: impl std::future::Future<Output = Result<T, Outcome>>,
    retry_after: Duration,
) -> Result<T, Outcome> {
    match AssertUnwindSafe(step).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %text, "record handling panicked; retrying it");
            Err(Outcome::Retry(Some(retry_after)))
        }
    }
}

/// Counts a job that reached a terminal state under its metric.
fn count_finished(job: &Job) {
    let name = match job.status {
        JobStatus::Succeeded => metrics::JOBS_SUCCEEDED,
        JobStatus::Failed if job.error.as_ref().is_some_and(|e| e.code == DEAD_LETTERED) => {
            metrics::JOBS_DEAD_LETTERED
        }
        JobStatus::Failed => metrics::JOBS_FAILED,
        JobStatus::Queued | JobStatus::Running | JobStatus::Cancelled => return,
    };
    metrics::count(name);
}

fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

fn panic_text(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into()),
        Err(join) => join.to_string(),
    }
}

fn wrong_count() -> Inference {
    Inference::Crashed("the model returned the wrong number of outputs".into())
}
