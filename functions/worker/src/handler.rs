//! The batch handler.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::FutureExt;
use futures::future::join_all;
use lambda_runtime::LambdaEvent;
use offpath_core::webhook::publish_or_log;
use offpath_core::{
    BlobStore, Clock, DEAD_LETTERED, ErrorInfo, Job, JobId, JobMessage, JobQueue, JobStore, Lease,
    Model, ModelError, Ports, Prepared, Registry, StoreError, SystemClock, TaskEntry, TaskName,
    metrics,
};
use serde_json::Value;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::heartbeat::Holds;
use crate::outcome::Outcome;
use crate::panic::panic_text;
use crate::parts::ClaimedPart;
use crate::record::{Record, records};
use crate::tally::Tally;

/// Worker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The longest a batch keeps its jobs: past it the heartbeat stops, so a job hung
    /// in inference goes back to the queue (and, after its last receive, to the DLQ).
    pub job_timeout: Duration,
    /// How long a claim and a received message last without a heartbeat: a dead
    /// worker's jobs are claimable again this long after its last beat (see
    /// `heartbeat.rs`). The worker beats every third of it.
    pub heartbeat: Duration,
    /// The queue's maxReceiveCount; `None` when the queue has no dead-letter queue.
    pub max_receive_count: Option<u32>,
    /// Delays for messages that must come back.
    pub backoff: Backoff,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            job_timeout: Duration::from_secs(60),
            heartbeat: Duration::from_secs(30),
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

/// A record whose job this invocation holds, with its input ready to run.
pub(crate) struct Claimed {
    pub(crate) job: Job,
    pub(crate) lease: Lease,
    pub(crate) task: TaskEntry,
    pub(crate) input: Prepared,
    pub(crate) receive_count: u32,
}

/// What claiming a record gave this invocation.
pub(crate) enum Claim {
    /// A job to run in its task's batched pass.
    Job(Claimed),
    /// A document job to split into parts.
    Document(Claimed),
    /// A part of a document job to run in its task's batched pass over parts.
    Part(ClaimedPart),
}

/// One batched pass of a task over inputs of type `I`: one output each.
pub(crate) type Runner<I, O> =
    Arc<dyn Fn(&dyn Model, &[I]) -> Result<Vec<O>, ModelError> + Send + Sync>;

/// What inference did for one job.
pub(crate) enum Inference<T = Value> {
    Output(T),
    Failed(ModelError),
    Crashed(String),
}

impl<T> Inference<T> {
    /// A failed attempt as the job's error tells its client: one fixed phrase per kind
    /// of failure. The detail (a panic's text, a backend's message, which can name
    /// endpoints and ARNs) is only logged, with the job's id.
    pub(crate) fn public_cause(&self) -> &'static str {
        match self {
            Inference::Output(_) => "none",
            Inference::Failed(ModelError::Throttled { .. }) => "inference throttled",
            Inference::Failed(ModelError::Unavailable(_)) => "inference unavailable",
            Inference::Failed(ModelError::Rejected(_)) => "the model rejected the input",
            Inference::Crashed(_) => "inference crashed",
        }
    }
}

/// The worker: ports, model, tasks and settings. Build it once per process (Lambda
/// init).
#[derive(Clone)]
pub struct Worker {
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) queue: Arc<dyn JobQueue>,
    pub(crate) webhooks: Arc<dyn JobQueue>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) model: Arc<dyn Model>,
    pub(crate) tasks: Arc<Registry>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: WorkerConfig,
    pub(crate) tally: Tally,
}

impl Worker {
    /// A worker over the store and jobs queue of `ports`, running `tasks` on `model`;
    /// time is the system clock.
    pub fn new(
        ports: &Ports,
        model: Arc<dyn Model>,
        tasks: Arc<Registry>,
        config: WorkerConfig,
    ) -> Self {
        Worker {
            store: Arc::clone(&ports.store),
            queue: Arc::clone(&ports.queue),
            webhooks: Arc::clone(&ports.webhooks),
            blobs: Arc::clone(&ports.blobs),
            model,
            tasks,
            clock: Arc::new(SystemClock),
            config,
            tally: Tally::default(),
        }
    }

    /// The same worker reading time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Handles one SQS batch: claim, infer per task group, finish; returns the
    /// messages to retry as item failures.
    pub async fn handle(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, WorkerError> {
        let records = records(&event.payload)?;
        let holds = Holds::default();
        let handles: Vec<&str> = records.iter().filter_map(|r| r.receipt_handle).collect();
        let outcomes = self
            .with_heartbeat(&handles, &holds, self.run(&records, &holds))
            .await;
        let report = self.report(&records, &outcomes).await;
        self.tally
            .flush(self.store.as_ref(), self.clock.now_epoch_ms())
            .await;
        report
    }

    /// Claims, runs and finishes a batch's records (the heartbeat keeps what it
    /// claims in `holds`): one outcome per record.
    async fn run(&self, records: &[Record<'_>], holds: &Holds) -> Vec<Outcome> {
        let count = records.len();

        // 1. Decode and claim, each record on its own.
        let claims = join_all(records.iter().map(|record| {
            guarded(
                self.claim(record),
                self.config.backoff.delay(record.receive_count),
            )
        }))
        .await;

        let mut outcomes: Vec<Outcome> = Vec::with_capacity(count);
        let mut jobs: BTreeMap<TaskName, Vec<(usize, Claimed)>> = BTreeMap::new();
        let mut parts: BTreeMap<TaskName, Vec<(usize, ClaimedPart)>> = BTreeMap::new();
        let mut documents = Vec::new();
        for (index, claim) in claims.into_iter().enumerate() {
            outcomes.push(Outcome::done());
            match &claim {
                Ok(Claim::Job(c) | Claim::Document(c)) => holds.add(c.job.id, None, &c.lease.token),
                Ok(Claim::Part(c)) => holds.add(c.job.id, Some(c.part), &c.lease.token),
                Err(_) => {}
            }
            match claim {
                Ok(Claim::Job(claimed)) => {
                    let group = jobs.entry(claimed.task.name().clone()).or_default();
                    group.push((index, claimed));
                }
                Ok(Claim::Part(claimed)) => {
                    let group = parts.entry(claimed.task.name().clone()).or_default();
                    group.push((index, claimed));
                }
                Ok(Claim::Document(claimed)) => documents.push((index, claimed)),
                Err(outcome) => outcomes[index] = outcome,
            }
        }

        // 2. One forward pass per task group; documents split, each on its own.
        let mut finished = Vec::new();
        for group in jobs.into_values() {
            let task = group[0].1.task.clone();
            let inputs: Vec<Prepared> = group.iter().map(|(_, c)| c.input.clone()).collect();
            let results = self.infer(task, inputs).await;
            finished.extend(group.into_iter().zip(results));
        }
        let mut parts_run = Vec::new();
        for group in parts.into_values() {
            let task = group[0].1.task.clone();
            let inputs: Vec<Arc<Vec<u8>>> =
                group.iter().map(|(_, c)| Arc::clone(&c.input)).collect();
            let results = self.infer_parts(task, inputs).await;
            parts_run.extend(group.into_iter().zip(results));
        }

        // 3. Record the outcomes.
        let jobs_done = join_all(finished.into_iter().map(|((index, c), result)| {
            let fallback = self.config.backoff.delay(c.receive_count);
            let span = tracing::info_span!("job", job_id = %c.job.id);
            let step =
                async move { Ok::<_, Outcome>(self.finish(c, result).await) }.instrument(span);
            async move { (index, guarded(step, fallback).await) }
        }));
        let parts_done = join_all(parts_run.into_iter().map(|((index, c), result)| {
            let fallback = self.config.backoff.delay(c.receive_count);
            let span = tracing::info_span!("job", job_id = %c.job.id, part = c.part);
            let step =
                async move { Ok::<_, Outcome>(self.finish_part(c, result).await) }.instrument(span);
            async move { (index, guarded(step, fallback).await) }
        }));
        let documents_split = join_all(documents.into_iter().map(|(index, c)| {
            let fallback = self.config.backoff.delay(c.receive_count);
            let span = tracing::info_span!("job", job_id = %c.job.id);
            let step = async move { Ok::<_, Outcome>(self.split(c).await) }.instrument(span);
            async move { (index, guarded(step, fallback).await) }
        }));
        let (jobs_done, parts_done, documents_split) =
            futures::join!(jobs_done, parts_done, documents_split);
        for (index, outcome) in jobs_done
            .into_iter()
            .chain(parts_done)
            .chain(documents_split)
        {
            outcomes[index] = match outcome {
                Ok(outcome) | Err(outcome) => outcome,
            };
        }
        outcomes
    }

    /// Backs off the messages to retry, all at once (one by one, slow calls could keep
    /// the last message past its visibility timeout), and reports them as item
    /// failures.
    async fn report(
        &self,
        records: &[Record<'_>],
        outcomes: &[Outcome],
    ) -> Result<SqsBatchResponse, WorkerError> {
        let count = records.len();
        let mut back_offs = Vec::new();
        let mut response = SqsBatchResponse::default();
        for (record, outcome) in records.iter().zip(outcomes) {
            if *outcome == Outcome::Done {
                continue;
            }
            if let (Some(visibility), Some(handle)) = (outcome.visibility(), record.receipt_handle)
            {
                back_offs.push(self.back_off(handle, visibility));
            }
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = record.message_id.to_owned();
            response.batch_item_failures.push(failure);
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

    /// Decodes a record and claims its job or part. `Err` is the record's final
    /// outcome.
    async fn claim(&self, record: &Record<'_>) -> Result<Claim, Outcome> {
        let message = JobMessage::from_body(record.body).map_err(|err| {
            tracing::error!(message_id = record.message_id, error = %err,
                "malformed message; it goes to the dead-letter queue");
            Outcome::toward_dead_letter_queue()
        })?;
        let id = message.job_id;
        match message.part {
            None => {
                self.claim_job(id, record)
                    .instrument(tracing::info_span!("job", job_id = %id))
                    .await
            }
            Some(part) => {
                self.claim_part(id, part, record)
                    .instrument(tracing::info_span!("job", job_id = %id, part))
                    .await
            }
        }
    }

    /// Claims the job a record names and prepares its input.
    async fn claim_job(&self, id: JobId, record: &Record<'_>) -> Result<Claim, Outcome> {
        let receive_count = record.receive_count;
        let last = self.is_last_receive(receive_count);
        let now = self.clock.now_epoch_ms();
        let lease = self.new_lease(now);
        let job = match self.store.claim(id, &lease, now).await {
            Ok(job) => job,
            Err(StoreError::NotFound) => {
                tracing::error!(job_id = %id, "message for a job that does not exist; it goes to the dead-letter queue");
                return Err(Outcome::toward_dead_letter_queue());
            }
            Err(StoreError::Conflict(current)) if current.parts.is_some() => {
                return Err(self.resend_parts(&current, receive_count).await);
            }
            Err(StoreError::Conflict(current)) => return Err(self.unclaimable(&current, last)),
            Err(err) => {
                tracing::warn!(job_id = %id, error = %err, "claim failed");
                if last {
                    self.dead_letter_unheld(id, &err).await;
                }
                return Err(Outcome::retry_after(
                    self.config.backoff.delay(receive_count),
                ));
            }
        };
        tracing::info!(job_id = %id, attempt = job.attempts, receive_count, "job claimed");
        self.publish(&job).await;
        if let Some(sent) = record.sent_at_epoch_ms {
            self.tally.claimed(now.saturating_sub(sent));
        }
        if job.cancel_requested {
            let cancelled = self.store.finish_cancelled(id, &lease.token, now).await;
            self.finish_write(id, cancelled).await;
            return Err(Outcome::done());
        }
        let prepared = self
            .tasks
            .get(job.task.as_str())
            .map_err(|e| e.to_string())
            .and_then(|task| {
                let input = task.prepare(&job.input).map_err(|e| e.to_string())?;
                Ok((task.clone(), input))
            });
        match prepared {
            Ok((task, input)) => {
                let in_parts = task.runs_in_parts();
                let claimed = Claimed {
                    job,
                    lease,
                    task,
                    input,
                    receive_count,
                };
                Ok(if in_parts {
                    Claim::Document(claimed)
                } else {
                    Claim::Job(claimed)
                })
            }
            Err(problem) => {
                let error = ErrorInfo::new("invalid_input", problem);
                let written = self.store.fail(id, &lease.token, &error, now).await;
                Err(self.finish_write(id, written).await)
            }
        }
    }

    /// The outcome for a message whose job (or part) could not be claimed.
    pub(crate) fn unclaimable(&self, current: &Job, last: bool) -> Outcome {
        let now = self.clock.now_epoch_ms();
        if current.status.is_terminal() {
            tracing::info!(job_id = %current.id, status = %current.status, "duplicate delivery of a finished job");
            Outcome::done()
        } else if current.has_live_lease(now) {
            if last {
                // The lease holder has its own message; this one is a duplicate.
                Outcome::done()
            } else {
                let remaining = current.lease_until_epoch_ms.unwrap_or(now) - now;
                Outcome::retry_after(Duration::from_millis(remaining) + Duration::from_secs(1))
            }
        } else {
            Outcome::retry_now()
        }
    }

    /// Runs one group of jobs of `task` in one batched pass.
    async fn infer(&self, task: TaskEntry, inputs: Vec<Prepared>) -> Vec<Inference> {
        let name = task.name().clone();
        let run: Runner<Prepared, Value> =
            Arc::new(move |model: &dyn Model, inputs: &[Prepared]| task.run(model, inputs));
        self.run_batched(&name, inputs, run).await
    }

    /// Runs `inputs` on a blocking thread in one batched pass of `run`. If the pass
    /// fails or panics, each input runs alone, so one poisonous input fails only its
    /// own job (or part).
    pub(crate) async fn run_batched<I, O>(
        &self,
        task: &TaskName,
        inputs: Vec<I>,
        run: Runner<I, O>,
    ) -> Vec<Inference<O>>
    where
        I: Clone + Send + Sync + 'static,
        O: Send + 'static,
    {
        let count = inputs.len();
        match self.run_model(task, inputs.clone(), Arc::clone(&run)).await {
            Ok(outputs) => outputs.into_iter().map(Inference::Output).collect(),
            Err(whole) if count == 1 => vec![whole],
            Err(_) => {
                let mut results = Vec::with_capacity(count);
                for input in inputs {
                    results.push(
                        match self.run_model(task, vec![input], Arc::clone(&run)).await {
                            Ok(mut one) => Inference::Output(one.remove(0)),
                            Err(failed) => failed,
                        },
                    );
                }
                results
            }
        }
    }

    /// One batched pass of `run` over `inputs`: one output per input, or what went
    /// wrong.
    async fn run_model<I, O>(
        &self,
        task: &TaskName,
        inputs: Vec<I>,
        run: Runner<I, O>,
    ) -> Result<Vec<O>, Inference<O>>
    where
        I: Send + Sync + 'static,
        O: Send + 'static,
    {
        let model = Arc::clone(&self.model);
        let count = inputs.len();
        let started = std::time::Instant::now();
        let ran = tokio::task::spawn_blocking(move || run(model.as_ref(), &inputs)).await;
        metrics::inference(task.as_str(), started.elapsed().as_secs_f64() * 1000.0);
        match ran {
            Ok(Ok(outputs)) if outputs.len() == count => Ok(outputs),
            Ok(Ok(_)) => Err(Inference::Crashed(
                "the task returned the wrong number of outputs".into(),
            )),
            Ok(Err(err)) => Err(Inference::Failed(err)),
            Err(join) => Err(Inference::Crashed(match join.try_into_panic() {
                Ok(panic) => panic_text(panic.as_ref()),
                Err(join) => join.to_string(),
            })),
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
        let now = self.clock.now_epoch_ms();
        let public = result.public_cause();
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
                format!("gave up after {receive_count} attempts; last error: {public}"),
            );
            let written = self.store.fail(id, &lease.token, &error, now).await;
            if let Err(StoreError::Conflict(current)) = &written
                && current.cancel_requested
            {
                // Cancelled while it ran: it ends cancelled and its message is done.
                return self.finished_or_cancelled(id, &lease, written).await;
            }
            tracing::error!(job_id = %id, %cause, "last attempt failed; the message goes to the dead-letter queue");
            self.finish_write(id, written).await;
            return Outcome::retry_at_visibility_timeout();
        }
        tracing::warn!(job_id = %id, %cause, receive_count, "transient failure; backing off");
        if let Err(err) = self
            .store
            .release(id, &lease.token, self.clock.now_epoch_ms())
            .await
        {
            tracing::warn!(job_id = %id, error = %err, "could not release the lease; it will expire");
        }
        let delay = self.config.backoff.delay(receive_count);
        Outcome::retry_after(retry_after.map_or(delay, |hint| hint.max(delay)))
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
            let now = self.clock.now_epoch_ms();
            let cancelled = self.store.finish_cancelled(id, &lease.token, now).await;
            return self.finish_write(id, cancelled).await;
        }
        self.finish_write(id, written).await
    }

    /// The outcome of a finishing write, whose webhook event it publishes. A lost lease
    /// is acknowledged (the new owner finishes); an unreachable store retries the
    /// message.
    pub(crate) async fn finish_write(
        &self,
        id: JobId,
        written: Result<Job, StoreError>,
    ) -> Outcome {
        match written {
            Ok(job) => {
                tracing::info!(job_id = %id, status = %job.status, attempts = job.attempts, "job finished");
                self.tally.finished(&job);
                self.publish(&job).await;
                Outcome::done()
            }
            Err(StoreError::Conflict(current)) => {
                tracing::warn!(job_id = %id, status = %current.status, "lease lost before finishing; the new owner finishes");
                Outcome::done()
            }
            Err(err) => {
                tracing::warn!(job_id = %id, error = %err, "could not record the outcome; retrying the message");
                Outcome::retry_at_visibility_timeout()
            }
        }
    }

    /// Marks a job nobody holds as dead-lettered (best effort: the store may be down).
    /// The store's error is logged, not stored: its text can name endpoints and ARNs.
    async fn dead_letter_unheld(&self, id: JobId, cause: &StoreError) {
        tracing::error!(job_id = %id, error = %cause, "the job could not be claimed on its last receive");
        let error = ErrorInfo::new(
            DEAD_LETTERED,
            "gave up; last error: the job store was unavailable",
        );
        match self
            .store
            .abandon(id, &error, self.clock.now_epoch_ms())
            .await
        {
            Ok(job) => {
                tracing::error!(job_id = %id, "job dead-lettered");
                self.tally.finished(&job);
                self.publish(&job).await;
            }
            Err(err) => {
                tracing::warn!(job_id = %id, error = %err, "could not mark the job dead-lettered; it stays queued (redrive its message from the DLQ)")
            }
        }
    }

    /// Hands the job's due webhook events to the webhooks queue; on failure they stay
    /// in its outbox for the sweep.
    pub(crate) async fn publish(&self, job: &Job) {
        publish_or_log(self.store.as_ref(), self.webhooks.as_ref(), job).await;
    }

    pub(crate) fn is_last_receive(&self, receive_count: u32) -> bool {
        self.config
            .max_receive_count
            .is_some_and(|max| receive_count >= max)
    }
}

/// Runs one record's step, turning a panic into a retry.
pub(crate) async fn guarded<T>(
    step: impl Future<Output = Result<T, Outcome>>,
    retry_after: Duration,
) -> Result<T, Outcome> {
    match AssertUnwindSafe(step).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            tracing::error!(panic = %panic_text(panic.as_ref()), "record handling panicked; retrying it");
            Err(Outcome::retry_after(retry_after))
        }
    }
}
