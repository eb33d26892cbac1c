//! The worker: its ports, model, tasks and settings, built once per process (Lambda
//! init). What it does with a batch is in `handler.rs` (jobs) and `parts.rs` (jobs
//! that run in parts).

use std::sync::Arc;
use std::time::Duration;

use offpath_core::outbox::publish_or_log;
use offpath_core::{
    BlobStore, Clock, Job, JobQueue, JobStore, Model, Ports, Registry, SystemClock,
};

use crate::backoff::Backoff;
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

/// A batch-level failure: every message of the batch comes back.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Every message of the batch failed.
    #[error("all {0} messages of the batch failed")]
    AllFailed(usize),
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

    /// Hands the job's due webhook events to the webhooks queue; on failure they stay
    /// in its outbox for the sweep.
    pub(crate) async fn publish(&self, job: &Job) {
        publish_or_log(self.store.as_ref(), self.webhooks.as_ref(), job).await;
    }

    /// True when a message received this many times will not come back again.
    pub(crate) fn is_last_receive(&self, receive_count: u32) -> bool {
        self.config
            .max_receive_count
            .is_some_and(|max| receive_count >= max)
    }
}
