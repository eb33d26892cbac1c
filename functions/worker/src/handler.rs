//! The batch handler: claim each message's job or part, run each task group in one
//! pass, record the outcomes, report the messages to retry.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::join_all;
use offpath_core::{
    BatchReport, DEAD_LETTERED, ErrorInfo, Job, JobId, JobMessage, JsonText, Lease, Model,
    ModelError, Prepared, QueueMessage, StoreError, TaskEntry, TaskName, Transition,
};
use tracing::Instrument;

use crate::claim::{Claim, Claimed, ClaimedPart};
use crate::heartbeat::Holds;
use crate::inference::{Inference, Runner};
use crate::outcome::Outcome;
use crate::panic::panic_text;
use crate::worker::{Worker, WorkerError};

impl Worker {
    /// Handles one batch of the jobs queue's messages: claim, infer per task group,
    /// finish; returns the messages to retry.
    pub async fn handle(&self, batch: &[QueueMessage]) -> Result<BatchReport, WorkerError> {
        let holds = Holds::default();
        let handles: Vec<&str> = batch.iter().map(|m| m.receipt_handle.as_str()).collect();
        let outcomes = self
            .with_heartbeat(&handles, &holds, self.run(batch, &holds))
            .await;
        let report = self.report(batch, &outcomes).await;
        self.tally
            .flush(self.store.as_ref(), self.clock.now_epoch_ms())
            .await;
        report
    }

    /// Claims, runs and finishes a batch's messages (the heartbeat keeps what it
    /// claims in `holds`): one outcome per message.
    async fn run(&self, batch: &[QueueMessage], holds: &Holds) -> Vec<Outcome> {
        let count = batch.len();

        // 1. Decode and claim, each message on its own.
        let claims = join_all(batch.iter().map(|message| {
            guarded(
                self.claim(message),
                self.config.backoff.delay(message.receive_count),
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
    /// the last message past its visibility timeout), and reports them.
    async fn report(
        &self,
        batch: &[QueueMessage],
        outcomes: &[Outcome],
    ) -> Result<BatchReport, WorkerError> {
        let count = batch.len();
        let mut back_offs = Vec::new();
        let mut report = BatchReport::default();
        for (message, outcome) in batch.iter().zip(outcomes) {
            if *outcome == Outcome::Done {
                continue;
            }
            if let Some(visibility) = outcome.visibility() {
                back_offs.push(self.back_off(&message.receipt_handle, visibility));
            }
            report.retry.push(message.message_id.clone());
        }
        join_all(back_offs).await;
        if count > 0 && report.retry.len() == count {
            return Err(WorkerError::AllFailed(count));
        }
        Ok(report)
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

    /// Decodes a message and claims its job or part. `Err` is the message's final
    /// outcome.
    async fn claim(&self, received: &QueueMessage) -> Result<Claim, Outcome> {
        let message = JobMessage::from_body(&received.body).map_err(|err| {
            tracing::error!(message_id = received.message_id, error = %err,
                "malformed message; it goes to the dead-letter queue");
            Outcome::toward_dead_letter_queue()
        })?;
        let id = message.job_id;
        match message.part {
            None => {
                self.claim_job(id, received)
                    .instrument(tracing::info_span!("job", job_id = %id))
                    .await
            }
            Some(part) => {
                self.claim_part(id, part, received)
                    .instrument(tracing::info_span!("job", job_id = %id, part))
                    .await
            }
        }
    }

    /// Claims the job a message names and reads its input.
    async fn claim_job(&self, id: JobId, message: &QueueMessage) -> Result<Claim, Outcome> {
        let receive_count = message.receive_count;
        let last = self.is_last_receive(receive_count);
        let now = self.clock.now_epoch_ms();
        let lease = self.new_lease(now);
        let job = match self
            .store
            .apply(
                id,
                &Transition::Claim {
                    lease: lease.clone(),
                    now_epoch_ms: now,
                },
            )
            .await
        {
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
        if message.sent_at_epoch_ms > 0 {
            self.tally
                .claimed(now.saturating_sub(message.sent_at_epoch_ms));
        }
        if job.cancel_requested {
            let cancelled = self
                .store
                .apply(id, &Transition::cancelled(lease.token.clone(), now))
                .await;
            self.finish_write(id, cancelled).await;
            return Err(Outcome::done());
        }
        let prepared = self
            .tasks
            .get(job.task.as_str())
            .map_err(|e| e.to_string())
            .and_then(|task| {
                let input = task.read(&job.input).map_err(|e| e.to_string())?;
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
                let written = self
                    .store
                    .apply(id, &Transition::fail(lease.token.clone(), error, now))
                    .await;
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
        let run: Runner<Prepared, JsonText> =
            Arc::new(move |model: &dyn Model, inputs: &[Prepared]| task.run(model, inputs));
        self.run_batched(&name, inputs, run).await
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
                let written = self
                    .store
                    .apply(id, &Transition::complete(lease.token.clone(), output, now))
                    .await;
                return self.finished_or_cancelled(id, &lease, written).await;
            }
            Inference::Failed(err) if !err.is_transient() => {
                let error = ErrorInfo::new("inference_failed", err.to_string());
                let written = self
                    .store
                    .apply(id, &Transition::fail(lease.token.clone(), error, now))
                    .await;
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
            let written = self
                .store
                .apply(id, &Transition::fail(lease.token.clone(), error, now))
                .await;
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
            .apply(
                id,
                &Transition::Release {
                    token: lease.token.clone(),
                    now_epoch_ms: self.clock.now_epoch_ms(),
                },
            )
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
            let cancelled = self
                .store
                .apply(id, &Transition::cancelled(lease.token.clone(), now))
                .await;
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
            .apply(
                id,
                &Transition::Abandon {
                    error,
                    now_epoch_ms: self.clock.now_epoch_ms(),
                },
            )
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
