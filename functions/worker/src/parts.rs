//! Jobs that run in parts (documents): fan-out and fan-in over the job record.
//!
//! A document job's message is claimed like any job; the worker reads the document,
//! has the task split it, stores each part's input as a blob, records the split
//! (`fan_out`: the job's lease ends), sends one message per part, and only then
//! acknowledges the job's message, so a crash anywhere before leaves it to come back.
//! Each part's message claims the part under its own lease; parts of any jobs in one
//! batch run in one pass; a part's output is stored as a blob before the part is
//! settled. Whoever settles the last part (or finds every part settled) ends the job:
//! cancelled if a cancel was requested, failed `dead_lettered` naming the dead parts,
//! or succeeded once the parts' outputs are appended, in order, into the result.
//! Duplicate deliveries find their part settled or leased and run nothing; a dead
//! worker's part comes back when its lease and message do; a part that fails its last
//! attempt is settled dead and its message goes to the dead-letter queue, from which a
//! redrive (after `revive`) reruns only that part.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream;
use offpath_core::blob::{PARTS, part_key, result_key, upload_key};
use offpath_core::queue::message_group;
use offpath_core::webhook::PROGRESS_GAP_MS;
use offpath_core::{
    Assembled, BlobError, DEAD_LETTERED, End, ErrorInfo, Event, EventType, Job, JobId, JobMessage,
    JobStatus, JsonText, Lease, Model, PartOutput, QueueMessage, Settle, Source, StoreError,
    TaskEntry, Transition,
};
use tracing::Instrument;

use crate::claim::{Claim, Claimed, ClaimedPart};
use crate::inference::{Inference, Runner};
use crate::outcome::Outcome;
use crate::worker::Worker;

/// Blobs written or read at once.
const BLOB_CONCURRENCY: usize = 16;
/// The first bytes of a result the task reads for its output.
const HEAD_BYTES: u64 = 64 * 1024;

/// Why a document cannot be read.
enum Unreadable {
    /// It is not what the task takes: the job fails `invalid_input`.
    Input(String),
    /// Blob storage failed: try again later.
    Blobs(BlobError),
}

impl Worker {
    /// Claims part `part` of job `id`.
    pub(crate) async fn claim_part(
        &self,
        id: JobId,
        part: u32,
        message: &QueueMessage,
    ) -> Result<Claim, Outcome> {
        let now = self.clock.now_epoch_ms();
        let lease = self.new_lease(now);
        let job = match self
            .store
            .apply(
                id,
                &Transition::ClaimPart {
                    part,
                    lease: lease.clone(),
                    now_epoch_ms: now,
                },
            )
            .await
        {
            Ok(job) => job,
            Err(StoreError::NotFound) => {
                tracing::error!(job_id = %id, part, "message for a part of a job that does not exist; it goes to the dead-letter queue");
                return Err(Outcome::toward_dead_letter_queue());
            }
            Err(StoreError::Conflict(current)) => {
                return Err(self.part_unclaimable(*current, part, message).await);
            }
            Err(err) => {
                tracing::warn!(job_id = %id, part, error = %err, "part claim failed");
                return Err(Outcome::retry_after(
                    self.config.backoff.delay(message.receive_count),
                ));
            }
        };
        let parts = job
            .parts
            .as_ref()
            .expect("a claimed part's job runs in parts");
        let attempts = parts.attempts.get(&part).copied().unwrap_or(1);
        let receive_count = message.receive_count.max(attempts);
        tracing::info!(job_id = %id, part, attempt = attempts, "part claimed");
        if self
            .config
            .max_receive_count
            .is_some_and(|max| attempts > max)
        {
            // Its worker died on the part's last attempt (the sweep sent it again).
            let error = format!(
                "part {part} of {} gave up: its worker stopped on the last of {} attempts",
                parts.total,
                attempts - 1
            );
            let settle = Settle::Dead {
                token: Some(lease.token.clone()),
                error,
            };
            return Err(self.settle(id, part, settle).await);
        }
        let task = match self.tasks.get(job.task.as_str()) {
            Ok(task) => task.clone(),
            Err(unknown) => {
                let error = format!("part {part}: {unknown}");
                let settle = Settle::Dead {
                    token: Some(lease.token.clone()),
                    error,
                };
                return Err(self.settle(id, part, settle).await);
            }
        };
        match self.blobs.get(&part_key(id, part, "in")).await {
            Ok(input) => Ok(Claim::Part(ClaimedPart {
                job,
                part,
                lease,
                task,
                input: Arc::new(input),
                receive_count,
            })),
            Err(err) => {
                tracing::warn!(job_id = %id, part, error = %err, "cannot read the part's input");
                self.release_part(id, part, &lease).await;
                Err(Outcome::retry_after(
                    self.config.backoff.delay(receive_count),
                ))
            }
        }
    }

    /// The outcome for a part message whose part could not be claimed.
    async fn part_unclaimable(&self, current: Job, part: u32, message: &QueueMessage) -> Outcome {
        let now = self.clock.now_epoch_ms();
        let Some(parts) = current.parts.as_ref() else {
            if current.status.is_terminal() {
                return Outcome::done();
            }
            tracing::error!(job_id = %current.id, part, "message for a part of a job that was never split; it goes to the dead-letter queue");
            return Outcome::toward_dead_letter_queue();
        };
        if current.status.is_terminal() || part >= parts.total {
            Outcome::done()
        } else if parts.settled.contains(&part) {
            // A duplicate, or the message of the last part whose worker settled it and
            // then stopped: end the job if that is all that is left to do.
            if parts.all_settled() {
                self.end(current).await
            } else {
                Outcome::done()
            }
        } else if let Some(lease) = parts.leases.get(&part).filter(|l| l.is_live(now)) {
            if self.is_last_receive(message.receive_count) {
                // The lease holder has its own message; this one is a duplicate.
                Outcome::done()
            } else {
                let remaining = lease.until_epoch_ms - now;
                Outcome::retry_after(std::time::Duration::from_millis(remaining + 1000))
            }
        } else if current.cancel_requested {
            self.settle(current.id, part, Settle::Skipped).await
        } else {
            Outcome::retry_now()
        }
    }

    /// Runs a group of parts of `task` in one batched pass.
    pub(crate) async fn infer_parts(
        &self,
        task: TaskEntry,
        inputs: Vec<Arc<Vec<u8>>>,
    ) -> Vec<Inference<PartOutput>> {
        let name = task.name().clone();
        let run: Runner<Arc<Vec<u8>>, PartOutput> =
            Arc::new(move |model: &dyn Model, inputs: &[Arc<Vec<u8>>]| {
                let parts: Vec<&[u8]> = inputs.iter().map(|input| input.as_slice()).collect();
                task.run_parts(model, &parts)
            });
        self.run_batched(&name, inputs, run).await
    }

    /// Records what a part's pass did and decides its message's fate.
    pub(crate) async fn finish_part(
        &self,
        claimed: ClaimedPart,
        result: Inference<PartOutput>,
    ) -> Outcome {
        let ClaimedPart {
            job,
            part,
            lease,
            receive_count,
            ..
        } = claimed;
        let id = job.id;
        let total = job.parts.as_ref().map_or(0, |p| p.total);
        let public = result.public_cause();
        let cause = match result {
            Inference::Output(output) => {
                let key = part_key(id, part, "jsonl");
                if let Err(err) = self.blobs.put(&key, output.bytes).await {
                    tracing::warn!(job_id = %id, part, error = %err, "cannot store the part's output");
                    self.release_part(id, part, &lease).await;
                    return Outcome::retry_after(self.config.backoff.delay(receive_count));
                }
                let settle = Settle::Done {
                    token: lease.token.clone(),
                    chunks: output.chunks,
                };
                return self.settle(id, part, settle).await;
            }
            Inference::Failed(err) => err.to_string(),
            Inference::Crashed(panic) => format!("inference crashed: {panic}"),
        };
        if self.is_last_receive(receive_count) {
            tracing::error!(job_id = %id, part, %cause, "the part's last attempt failed; its message goes to the dead-letter queue");
            let error = format!(
                "part {part} of {total} gave up after {receive_count} attempts; last error: {public}"
            );
            let settle = Settle::Dead {
                token: Some(lease.token.clone()),
                error,
            };
            return match self.settle(id, part, settle).await {
                Outcome::Done => Outcome::retry_at_visibility_timeout(),
                retry => retry,
            };
        }
        tracing::warn!(job_id = %id, part, %cause, receive_count, "part failed; backing off");
        self.release_part(id, part, &lease).await;
        Outcome::retry_after(self.config.backoff.delay(receive_count))
    }

    /// Gives a part back for another try. Best effort: if this fails, its lease ends.
    async fn release_part(&self, id: JobId, part: u32, lease: &Lease) {
        let release = Transition::ReleasePart {
            part,
            token: lease.token.clone(),
        };
        if let Err(err) = self.store.apply(id, &release).await {
            tracing::warn!(job_id = %id, part, error = %err, "could not release the part; its lease will expire");
        }
    }

    /// Settles a part and, if it was the last, ends the job.
    async fn settle(&self, id: JobId, part: u32, settle: Settle) -> Outcome {
        let now = self.clock.now_epoch_ms();
        match self
            .store
            .apply(
                id,
                &Transition::SettlePart {
                    part,
                    settle,
                    now_epoch_ms: now,
                },
            )
            .await
        {
            Ok(job) => {
                tracing::info!(job_id = %id, part, "part settled");
                if job.parts.as_ref().is_some_and(|p| p.all_settled()) {
                    self.end(job).await
                } else {
                    self.progress(&job, now).await;
                    Outcome::done()
                }
            }
            // Settled meanwhile, or its lease lost: the other holder settles it.
            Err(StoreError::Conflict(_)) => Outcome::done(),
            Err(err) => {
                tracing::warn!(job_id = %id, part, error = %err, "could not settle the part; retrying its message");
                Outcome::retry_at_visibility_timeout()
            }
        }
    }

    /// Sends a progress event when the job's webhook wants one and the last was at
    /// least a second ago (a conditional write decides among the workers). Best
    /// effort: progress is not repaired, the next part's settle sends a newer one.
    async fn progress(&self, job: &Job, now: u64) {
        if !job.webhook.as_ref().is_some_and(|w| w.wants_progress()) {
            return;
        }
        match self
            .store
            .apply(
                job.id,
                &Transition::ProgressEvent {
                    now_epoch_ms: now,
                    min_gap_ms: PROGRESS_GAP_MS,
                },
            )
            .await
        {
            Ok(_) => {
                let event = Event {
                    kind: EventType::Progress,
                    at: now,
                };
                let message = JobMessage::event(job.id, event);
                let group = message_group(&job.owner);
                if let Err(err) = self.webhooks.send(&message, &group).await {
                    tracing::warn!(job_id = %job.id, error = %err, "could not queue a progress event");
                }
            }
            Err(StoreError::Conflict(_)) => {} // one went less than a second ago
            Err(err) => {
                tracing::warn!(job_id = %job.id, error = %err, "could not record a progress event")
            }
        }
    }

    /// Ends a job whose parts are all settled: cancelled, failed or, with its result
    /// assembled, succeeded.
    async fn end(&self, job: Job) -> Outcome {
        let Some(parts) = job
            .parts
            .as_ref()
            .filter(|_| job.status == JobStatus::Running)
        else {
            return Outcome::done();
        };
        let now = self.clock.now_epoch_ms();
        let ended = if job.cancel_requested {
            self.store
                .apply(
                    job.id,
                    &Transition::FinishParts {
                        end: End::Cancelled,
                        now_epoch_ms: now,
                    },
                )
                .await
        } else if !parts.dead.is_empty() {
            let dead: Vec<&str> = parts.dead.values().map(String::as_str).collect();
            let error = ErrorInfo::new(DEAD_LETTERED, dead.join("; "));
            self.store
                .apply(
                    job.id,
                    &Transition::FinishParts {
                        end: End::Failed(error),
                        now_epoch_ms: now,
                    },
                )
                .await
        } else {
            let output = match self.assemble(&job).await {
                Ok(output) => output,
                Err(outcome) => return outcome,
            };
            self.store
                .apply(
                    job.id,
                    &Transition::FinishParts {
                        end: End::Succeeded(output),
                        now_epoch_ms: now,
                    },
                )
                .await
        };
        let failed = ended
            .as_ref()
            .is_ok_and(|job| job.status == JobStatus::Failed);
        let outcome = self.finish_write(job.id, ended).await;
        // The parts did their work, unless a redrive may still need the done parts'
        // outputs; otherwise their blobs would only wait for their expiry.
        if outcome == Outcome::done() && !failed {
            let prefix = format!("{PARTS}{}/", job.id);
            if let Err(err) = self.blobs.delete_prefix(&prefix).await {
                tracing::warn!(job_id = %job.id, error = %err, "could not delete the parts' blobs; they expire");
            }
        }
        outcome
    }

    /// Appends the parts' outputs, in order, into the result and makes the output.
    async fn assemble(&self, job: &Job) -> Result<JsonText, Outcome> {
        let parts = job.parts.as_ref().expect("an assembled job runs in parts");
        let retry = |err: &dyn std::fmt::Display| {
            tracing::warn!(job_id = %job.id, error = %err, "cannot assemble the result; retrying");
            Outcome::retry_at_visibility_timeout()
        };
        let task = self.tasks.get(job.task.as_str()).map_err(|e| retry(&e))?;
        let input = task.read(&job.input).map_err(|e| retry(&e))?;
        let keys: Vec<String> = (0..parts.total)
            .map(|n| part_key(job.id, n, "jsonl"))
            .collect();
        let key = result_key(job.id);
        let bytes = self
            .blobs
            .concat(&key, &keys)
            .await
            .map_err(|e| retry(&e))?;
        let head = self
            .blobs
            .get_range(&key, 0..HEAD_BYTES.min(bytes))
            .await
            .map_err(|e| retry(&e))?;
        let assembled = Assembled {
            job: job.id,
            parts,
            head: &head,
            bytes,
            at_epoch_ms: self.clock.now_epoch_ms(),
        };
        tracing::info!(job_id = %job.id, bytes, "result assembled");
        task.document_output(&input, &assembled)
            .map_err(|e| retry(&e))
    }

    /// Splits a claimed document job into parts.
    pub(crate) async fn split(&self, claimed: Claimed) -> Outcome {
        let Claimed {
            job,
            lease,
            task,
            input,
            receive_count,
        } = claimed;
        let id = job.id;
        let text = match self.document(&task, &input, &job.owner).await {
            Ok(text) => text,
            Err(Unreadable::Input(problem)) => return self.invalid(id, &lease, problem).await,
            Err(Unreadable::Blobs(err)) => {
                return self.retry_split(id, &lease, receive_count, &err).await;
            }
        };
        let (model, splitter) = (Arc::clone(&self.model), task.clone());
        let split =
            tokio::task::spawn_blocking(move || splitter.split(model.as_ref(), &input, &text))
                .instrument(tracing::info_span!("split"))
                .await;
        let split = match split {
            Ok(Ok(split)) => split,
            Ok(Err(problem)) => return self.invalid(id, &lease, problem.to_string()).await,
            Err(join) => return self.retry_split(id, &lease, receive_count, &join).await,
        };
        let total = split.parts.len() as u32;
        let stored =
            stream::iter(split.parts.into_iter().enumerate())
                .map(|(n, bytes)| async move {
                    self.blobs.put(&part_key(id, n as u32, "in"), bytes).await
                })
                .buffer_unordered(BLOB_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
        if let Some(Err(err)) = stored.into_iter().find(Result::is_err) {
            return self.retry_split(id, &lease, receive_count, &err).await;
        }
        let fanned = self
            .store
            .apply(
                id,
                &Transition::FanOut {
                    token: lease.token.clone(),
                    parts: total,
                    chunks: split.chunks,
                    now_epoch_ms: self.clock.now_epoch_ms(),
                },
            )
            .await;
        match fanned {
            Ok(job) => {
                tracing::info!(job_id = %id, parts = total, chunks = split.chunks, "job split into parts");
                self.resend_parts(&job, receive_count).await
            }
            Err(StoreError::Conflict(current))
                if current.cancel_requested
                    && current.lease_owner.as_deref() == Some(&lease.token) =>
            {
                let now = self.clock.now_epoch_ms();
                let cancelled = self
                    .store
                    .apply(id, &Transition::cancelled(lease.token.clone(), now))
                    .await;
                self.finish_write(id, cancelled).await
            }
            Err(StoreError::Conflict(_)) => Outcome::done(),
            Err(err) => self.retry_split(id, &lease, receive_count, &err).await,
        }
    }

    /// Fails a held job whose document is not what its task takes.
    async fn invalid(&self, id: JobId, lease: &Lease, problem: String) -> Outcome {
        let error = ErrorInfo::new("invalid_input", problem);
        let now = self.clock.now_epoch_ms();
        let written = self
            .store
            .apply(id, &Transition::fail(lease.token.clone(), error, now))
            .await;
        self.finish_write(id, written).await
    }

    /// The text of a document job: an upload of its owner, or inline.
    async fn document(
        &self,
        task: &TaskEntry,
        input: &offpath_core::Prepared,
        owner: &str,
    ) -> Result<String, Unreadable> {
        match task.source(input) {
            Some(Source::Text(text)) => Ok(text),
            Some(Source::Upload(upload)) => {
                let bytes = match self.blobs.get(&upload_key(owner, &upload)).await {
                    Ok(bytes) => bytes,
                    Err(BlobError::NotFound(_)) => {
                        return Err(Unreadable::Input(format!(
                            "upload {upload} does not exist (uploads are kept a day)"
                        )));
                    }
                    Err(err) => return Err(Unreadable::Blobs(err)),
                };
                String::from_utf8(bytes).map_err(|e| {
                    Unreadable::Input(format!(
                        "the upload is not UTF-8 text (invalid bytes at offset {})",
                        e.utf8_error().valid_up_to()
                    ))
                })
            }
            None => Err(Unreadable::Input("the task does not run in parts".into())),
        }
    }

    /// A split that failed on the way: the job is given back and its message retried.
    async fn retry_split(
        &self,
        id: JobId,
        lease: &Lease,
        receive_count: u32,
        cause: &(dyn std::fmt::Display + Sync),
    ) -> Outcome {
        tracing::warn!(job_id = %id, error = %cause, "could not split the job; retrying");
        if self.is_last_receive(receive_count) {
            let error = ErrorInfo::new(
                DEAD_LETTERED,
                format!(
                    "gave up after {receive_count} attempts to split the document (reading or storing it failed)"
                ),
            );
            let now = self.clock.now_epoch_ms();
            let written = self
                .store
                .apply(id, &Transition::fail(lease.token.clone(), error, now))
                .await;
            self.finish_write(id, written).await;
            return Outcome::retry_at_visibility_timeout();
        }
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
        Outcome::retry_after(self.config.backoff.delay(receive_count))
    }

    /// Sends a message for every part of a split job that is neither settled nor
    /// held (all of them right after the split): the job's message is acknowledged
    /// only once they are sent. With every part settled, it ends the job instead.
    pub(crate) async fn resend_parts(&self, job: &Job, receive_count: u32) -> Outcome {
        let Some(parts) = job.parts.as_ref() else {
            return Outcome::done();
        };
        if job.status.is_terminal() {
            return Outcome::done();
        }
        if parts.all_settled() {
            return self.end(job.clone()).await;
        }
        let now = self.clock.now_epoch_ms();
        let pending: Vec<u32> = (0..parts.total)
            .filter(|n| !parts.settled.contains(n))
            .filter(|n| parts.leases.get(n).is_none_or(|l| !l.is_live(now)))
            .collect();
        let sent = stream::iter(pending)
            .map(|n| async move {
                let group = message_group(&job.owner);
                self.queue.send(&JobMessage::part(job.id, n), &group).await
            })
            .buffer_unordered(BLOB_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        match sent.into_iter().find_map(Result::err) {
            None => Outcome::done(),
            Some(err) => {
                tracing::warn!(job_id = %job.id, error = %err, "could not send every part's message; the job's message comes back");
                Outcome::retry_after(self.config.backoff.delay(receive_count))
            }
        }
    }
}
