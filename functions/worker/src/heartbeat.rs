//! The heartbeat. While a batch runs, its worker keeps every claim it holds and every
//! message of the batch short-lived ([`WorkerConfig::heartbeat`], 30 s by default) and
//! extends both every third of that. A worker that dies (a killed process, a Lambda
//! environment that vanishes) stops beating: its jobs' leases end and its messages
//! come back within one heartbeat, instead of after the queue's visibility timeout
//! (which stays six times the function's timeout, for the event source mapping's sake).
//! A slow worker that is alive keeps what it holds, up to the job timeout.
//!
//! The messages are made short-lived before anything of the batch is claimed, so a
//! worker that dies at any point after a claim leaves its messages hidden for one
//! heartbeat at most. Leases are extended before messages, and messages are kept one
//! second longer, so a message that comes back finds its job's lease over and is
//! claimed at once.
//!
//! [`WorkerConfig::heartbeat`]: crate::WorkerConfig::heartbeat

use std::sync::Mutex;
use std::time::Duration;

use futures::future::join_all;
use offpath_core::{JobId, Lease, StoreError, Transition};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::worker::Worker;

/// How much longer a message stays hidden than the lease of its job.
const MESSAGE_MARGIN: Duration = Duration::from_secs(1);

/// The claims a batch holds: what its heartbeat extends.
#[derive(Debug, Default)]
pub(crate) struct Holds(Mutex<Vec<Held>>);

/// One claim: of a job (`part` is `None`) or of one part of it.
#[derive(Debug, Clone)]
struct Held {
    id: JobId,
    part: Option<u32>,
    token: String,
}

impl Holds {
    /// Adds a claim of job `id` (or of its part `part`) under `token`.
    pub(crate) fn add(&self, id: JobId, part: Option<u32>, token: &str) {
        self.0.lock().expect("holds lock").push(Held {
            id,
            part,
            token: token.to_owned(),
        });
    }

    fn all(&self) -> Vec<Held> {
        self.0.lock().expect("holds lock").clone()
    }

    /// Forgets a claim that ended (finished, released, or taken over).
    fn remove(&self, held: &Held) {
        self.0
            .lock()
            .expect("holds lock")
            .retain(|h| h.token != held.token);
    }
}

impl Worker {
    /// A new lease from `now`: one heartbeat long.
    pub(crate) fn new_lease(&self, now_epoch_ms: u64) -> Lease {
        Lease {
            token: uuid::Uuid::new_v4().to_string(),
            until_epoch_ms: now_epoch_ms + self.config.heartbeat.as_millis() as u64,
        }
    }

    /// Makes the messages `receipt_handles` short-lived, then runs `work` while
    /// beating for them and the claims in `holds`; the beat stops (after the round in
    /// progress) when `work` ends.
    pub(crate) async fn with_heartbeat<T>(
        &self,
        receipt_handles: &[&str],
        holds: &Holds,
        work: impl Future<Output = T>,
    ) -> T {
        // Before `work` claims anything: otherwise a worker killed between a claim and
        // the first beat would leave that job's message hidden for the queue's whole
        // visibility timeout (minutes), not one heartbeat.
        self.extend_messages(receipt_handles).await;
        let stop = Notify::new();
        let work = async {
            let output = work.await;
            stop.notify_one();
            output
        };
        let (output, ()) = tokio::join!(work, self.beat(receipt_handles, holds, &stop));
        output
    }

    /// Extends leases, then messages, every third of a heartbeat (claims start with a
    /// whole one), until `stop` or the job timeout.
    async fn beat(&self, receipt_handles: &[&str], holds: &Holds, stop: &Notify) {
        let timeout = Instant::now() + self.config.job_timeout;
        let period = self.config.heartbeat / 3;
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = stop.notified() => return,
            }
            if Instant::now() >= timeout {
                tracing::warn!(
                    timeout_seconds = self.config.job_timeout.as_secs(),
                    "the batch ran past the job timeout: its jobs go back to the queue"
                );
                stop.notified().await;
                return;
            }
            self.extend_leases(holds).await;
            self.extend_messages(receipt_handles).await;
        }
    }

    /// Moves the end of every lease in `holds` one heartbeat from now; a claim that
    /// ended is forgotten.
    async fn extend_leases(&self, holds: &Holds) {
        let now = self.clock.now_epoch_ms();
        join_all(holds.all().into_iter().map(|held| async move {
            let lease = Lease {
                token: held.token.clone(),
                until_epoch_ms: now + self.config.heartbeat.as_millis() as u64,
            };
            let extended = match held.part {
                None => {
                    self.store
                        .apply(held.id, &Transition::ExtendLease { lease })
                        .await
                }
                Some(part) => {
                    self.store
                        .apply(
                            held.id,
                            &Transition::ExtendPartLease {
                                part,
                                lease,
                                now_epoch_ms: now,
                            },
                        )
                        .await
                }
            };
            match extended {
                Ok(_) => {}
                Err(StoreError::Conflict(_) | StoreError::NotFound) => holds.remove(&held),
                Err(err) => {
                    tracing::warn!(job_id = %held.id, part = held.part, error = %err,
                        "could not extend the lease; the next beat tries again");
                }
            }
        }))
        .await;
    }

    /// Hides the batch's messages one heartbeat (and a margin) from now (on SQS, one
    /// request per ten messages).
    async fn extend_messages(&self, receipt_handles: &[&str]) {
        let visibility =
            Duration::from_secs(self.config.heartbeat.as_secs_f64().ceil() as u64) + MESSAGE_MARGIN;
        let extended = self
            .queue
            .change_visibility_all(receipt_handles, visibility)
            .await;
        if let Err(err) = extended {
            tracing::warn!(error = %err, "could not extend the messages' visibility");
        }
    }
}
