//! Dead-letter queue operations for operators, over any [`JobQueue`] pair (SQS, the
//! embedded queues): inspect, move back, purge, and redrive jobs (each job revived,
//! then its message moved, one job at a time). The CLI and the API's admin routes both
//! use them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::id::JobId;
use crate::message::JobMessage;
use crate::queue::{JobQueue, QueueDepth, QueueError};
use crate::store::{JobStore, StoreError, revive};

/// How long messages being inspected or moved stay hidden from other readers.
const HOLD: Duration = Duration::from_secs(60);

/// A message in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message id.
    pub message_id: String,
    /// The handle of this read, to move or release the message.
    pub receipt_handle: String,
    /// Receives so far (in the source queue and here).
    pub receive_count: u32,
    /// When the message was first sent.
    pub sent_at_epoch_ms: u64,
    /// The message, if the body is a job message.
    pub message: Option<JobMessage>,
    /// Its message group (the job's owner), kept when it moves back.
    pub group: Option<String>,
}

impl DeadLetter {
    /// The job the message names, if it is a job message.
    pub fn job_id(&self) -> Option<JobId> {
        self.message.as_ref().map(|m| m.job_id)
    }
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
    /// True when `letter` is selected.
    pub fn takes(&self, letter: &DeadLetter) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => {
                ids.contains(&letter.message_id)
                    || letter
                        .job_id()
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

/// A dead-letter queue and the queue its messages go back to.
#[derive(Clone)]
pub struct DeadLetters {
    dlq: Arc<dyn JobQueue>,
    queue: Arc<dyn JobQueue>,
}

impl DeadLetters {
    /// The pair of queues: messages of `dlq` move back to `queue`.
    pub fn new(dlq: Arc<dyn JobQueue>, queue: Arc<dyn JobQueue>) -> Self {
        DeadLetters { dlq, queue }
    }

    /// The dead-letter queue's approximate depth.
    pub async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.dlq.depth().await
    }

    /// Reads the messages (up to `max`) and holds them hidden for a minute; the caller
    /// moves some with [`Self::move_back`] and gives the rest back with
    /// [`Self::release`]. Queues have no peek: a listing is a read and a release.
    pub async fn take(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let mut taken: Vec<DeadLetter> = Vec::new();
        while taken.len() < max {
            let batch = (max - taken.len()).min(10) as u32;
            let messages = self.dlq.receive(batch, Duration::from_secs(1)).await?;
            if messages.is_empty() {
                break;
            }
            let handles: Vec<&str> = messages.iter().map(|m| m.receipt_handle.as_str()).collect();
            self.dlq.change_visibility_all(&handles, HOLD).await?;
            taken.extend(messages.into_iter().map(|m| DeadLetter {
                message: JobMessage::from_body(&m.body).ok(),
                message_id: m.message_id,
                receipt_handle: m.receipt_handle,
                receive_count: m.receive_count,
                sent_at_epoch_ms: m.sent_at_epoch_ms,
                group: m.group,
            }));
        }
        Ok(taken)
    }

    /// Makes messages visible again at once.
    pub async fn release(&self, letters: &[DeadLetter]) -> Result<(), QueueError> {
        let handles: Vec<&str> = letters.iter().map(|l| l.receipt_handle.as_str()).collect();
        self.dlq
            .change_visibility_all(&handles, Duration::ZERO)
            .await
    }

    /// Sends the message to the queue, then deletes it here: a failure between the two
    /// leaves a duplicate (harmless to the worker), never a loss. A message that is not
    /// a job message stays (`Ok(false)`).
    pub async fn move_back(&self, letter: &DeadLetter) -> Result<bool, QueueError> {
        let Some(message) = &letter.message else {
            return Ok(false);
        };
        let group = letter.group.as_deref().unwrap_or("offpath");
        self.queue.send(message, group).await?;
        self.dlq.delete(&letter.receipt_handle).await?;
        Ok(true)
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
        let Some(job_id) = letter.job_id() else {
            return Ok(Some("not a job message"));
        };
        match revive(store, job_id, SystemClock.now_epoch_ms()).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(StoreError::NotFound) => return Ok(Some("its job does not exist")),
            Err(err) => return Err(err.into()),
        }
        self.move_back(letter).await?;
        Ok(None)
    }

    /// Deletes every message in the dead-letter queue.
    pub async fn purge(&self) -> Result<(), QueueError> {
        self.dlq.purge().await
    }
}
