//! Dead-letter queue operations for operators: inspect, move back, purge, and redrive
//! jobs (each job revived, then its message moved, one job at a time).

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use offpath_core::{JobId, JobMessage, JobStore, QueueError, StoreError};

use crate::sqs::{queue_arn, sqs_error, system_attribute};

/// How long messages being inspected or moved stay hidden from other readers.
const HOLD: Duration = Duration::from_secs(60);

/// A message in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message id.
    pub message_id: String,
    /// The handle of this read, to move or release the message.
    pub receipt_handle: String,
    /// Receives so far (in the jobs queue and here).
    pub receive_count: u32,
    /// When the message was first sent.
    pub sent_at_epoch_ms: u64,
    /// The raw body.
    pub body: String,
    /// The job it names, if the body is a job message.
    pub job_id: Option<JobId>,
    /// Its message group (the job's owner), kept when it moves back.
    pub group: Option<String>,
}

/// Which dead letters a redrive takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection<'a> {
    /// Every message, those that arrive while the redrive runs included.
    All,
    /// The messages with these message ids or job ids.
    Ids(&'a [String]),
}

impl Selection<'_> {
    fn takes(&self, letter: &DeadLetter) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => {
                ids.contains(&letter.message_id)
                    || letter
                        .job_id
                        .is_some_and(|id| ids.contains(&id.to_string()))
            }
        }
    }
}

/// What a redrive did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Redriven {
    /// Messages moved back, each after its job was revived.
    pub moved: Vec<DeadLetter>,
    /// Messages left in the dead-letter queue, and why.
    pub skipped: Vec<(DeadLetter, &'static str)>,
}

/// A redrive stopped: the store or a queue failed. Every message moved so far had its
/// job revived first; the rest stay in the dead-letter queue.
#[derive(Debug, thiserror::Error)]
#[error("redrive stopped after moving {moved} message(s): {cause}")]
pub struct RedriveError {
    /// Messages moved before it stopped.
    pub moved: usize,
    /// What failed.
    #[source]
    pub cause: RedriveFailure,
}

/// What failed during a redrive.
#[derive(Debug, thiserror::Error)]
pub enum RedriveFailure {
    /// Reviving a job.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or moving messages.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A dead-letter queue and the jobs queue its messages go back to.
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    client: Client,
    dlq_url: String,
    queue_url: String,
}

impl DeadLetterQueue {
    /// The pair of queues.
    pub fn new(client: Client, dlq_url: impl Into<String>, queue_url: impl Into<String>) -> Self {
        DeadLetterQueue {
            client,
            dlq_url: dlq_url.into(),
            queue_url: queue_url.into(),
        }
    }

    /// Reads every message (up to `max`) and holds them hidden for a minute; the caller
    /// moves some with [`Self::move_back`] and gives the rest back with [`Self::release`].
    pub async fn take(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut taken: Vec<DeadLetter> = Vec::new();
        while taken.len() < max {
            let output = self
                .client
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages((max - taken.len()).min(10) as i32)
                .visibility_timeout(HOLD.as_secs() as i32)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(sqs_error)?;
            if output.messages().is_empty() {
                break;
            }
            for m in output.messages() {
                let attribute = |name| system_attribute(m, name);
                let body = m.body().unwrap_or_default().to_owned();
                taken.push(DeadLetter {
                    message_id: m.message_id().unwrap_or_default().to_owned(),
                    receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
                    receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                        as u32,
                    sent_at_epoch_ms: attribute(MessageSystemAttributeName::SentTimestamp),
                    job_id: JobMessage::from_body(&body).ok().map(|m| m.job_id),
                    group: m
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                        .cloned(),
                    body,
                });
            }
        }
        Ok(taken)
    }

    /// Makes messages visible again at once.
    pub async fn release(&self, letters: &[DeadLetter]) -> Result<(), QueueError> {
        for letter in letters {
            self.client
                .change_message_visibility()
                .queue_url(&self.dlq_url)
                .receipt_handle(&letter.receipt_handle)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(sqs_error)?;
        }
        Ok(())
    }

    /// Sends the message to the jobs queue, then deletes it here: a failure between the
    /// two leaves a duplicate (harmless to the worker), never a loss.
    pub async fn move_back(&self, letter: &DeadLetter) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(&letter.body)
            .set_message_group_id(letter.group.clone())
            .send()
            .await
            .map_err(sqs_error)?;
        self.client
            .delete_message()
            .queue_url(&self.dlq_url)
            .receipt_handle(&letter.receipt_handle)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(())
    }

    /// Asks SQS to move every message back (StartMessageMoveTask). Endpoints without
    /// the API (moto) answer an error; callers then move messages one by one.
    pub async fn start_move_task(&self) -> Result<String, QueueError> {
        let source = queue_arn(&self.client, &self.dlq_url).await?;
        let destination = queue_arn(&self.client, &self.queue_url).await?;
        let output = self
            .client
            .start_message_move_task()
            .source_arn(source)
            .destination_arn(destination)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(output.task_handle().unwrap_or_default().to_owned())
    }

    /// Redrives dead-lettered jobs, one step per message: its job goes back to `queued`
    /// ([`JobStore::revive`]; a job not dead-lettered is left as it is), then its
    /// message moves to the jobs queue. Stopped anywhere, it leaves no revived job whose
    /// message is still here but the one in hand (which the sweep re-sends once its
    /// backoff has passed), and no message moved without its job revived. No message
    /// move task is used: it would also move messages whose jobs nobody revived (those
    /// arriving meanwhile, or beyond a read). Messages are read `batch` at a time until
    /// none selected is left (with [`Selection::All`], newcomers too).
    pub async fn redrive_jobs(
        &self,
        store: &dyn JobStore,
        selection: Selection<'_>,
        batch: usize,
    ) -> Result<Redriven, RedriveError> {
        let mut done = Redriven::default();
        let mut passed: HashSet<String> = HashSet::new();
        loop {
            let stop = |cause: RedriveFailure, moved: usize| RedriveError { moved, cause };
            let letters = self
                .take(batch)
                .await
                .map_err(|e| stop(e.into(), done.moved.len()))?;
            let (selected, others): (Vec<_>, Vec<_>) = letters
                .into_iter()
                .partition(|l| selection.takes(l) && !passed.contains(&l.message_id));
            self.release(&others)
                .await
                .map_err(|e| stop(e.into(), done.moved.len()))?;
            if selected.is_empty() {
                return Ok(done);
            }
            let mut pending = selected.into_iter();
            while let Some(letter) = pending.next() {
                match self.redrive_one(store, &letter).await {
                    Ok(None) => {
                        passed.insert(letter.message_id.clone());
                        done.moved.push(letter);
                    }
                    Ok(Some(reason)) => {
                        passed.insert(letter.message_id.clone());
                        let _ = self.release(std::slice::from_ref(&letter)).await;
                        done.skipped.push((letter, reason));
                    }
                    Err(cause) => {
                        let rest: Vec<DeadLetter> =
                            std::iter::once(letter).chain(pending).collect();
                        let _ = self.release(&rest).await;
                        return Err(stop(cause, done.moved.len()));
                    }
                }
            }
            if matches!(selection, Selection::Ids(_)) {
                return Ok(done);
            }
        }
    }

    /// Revives the job of `letter`, then moves it back; `Some(reason)` when it stays.
    async fn redrive_one(
        &self,
        store: &dyn JobStore,
        letter: &DeadLetter,
    ) -> Result<Option<&'static str>, RedriveFailure> {
        let Some(job_id) = letter.job_id else {
            return Ok(Some("not a job message"));
        };
        match store.revive(job_id).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(StoreError::NotFound) => return Ok(Some("its job does not exist")),
            Err(err) => return Err(err.into()),
        }
        self.move_back(letter).await?;
        Ok(None)
    }

    /// Deletes every message in the dead-letter queue.
    pub async fn purge(&self) -> Result<(), QueueError> {
        self.client
            .purge_queue()
            .queue_url(&self.dlq_url)
            .send()
            .await
            .map(|_| ())
            .map_err(sqs_error)
    }
}
