//! In-process adapters for a local run with no AWS, no Docker and no emulator:
//! [`MemoryStore`] applies core's transitions as written (the specification the
//! DynamoDB store translates), [`MemoryQueue`] behaves like SQS (visibility timeout,
//! receive counts, long polling, redrive to a dead-letter queue, change-visibility)
//! and [`LocalBlobs`] like the S3 bucket, in a directory. All are safe to share between
//! tasks; the store and the queues are bounded in memory. The conformance suite of
//! the test kit runs against them and against the AWS adapters.

mod blobs;
mod queue;
mod store;

use std::sync::Arc;

use offpath_core::{Ports, QueueSettings};

pub use blobs::LocalBlobs;
pub use queue::{MemoryQueue, QueueOptions};
pub use store::MemoryStore;

/// Most jobs and messages the embedded backend holds by default.
pub const CAPACITY: usize = 100_000;

/// How the embedded backend is sized and behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Most jobs, and most messages in each queue.
    pub capacity: usize,
    /// Queues deliver fairly across owners (see [`QueueOptions::fair`]).
    pub fair: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity: CAPACITY,
            fair: true,
        }
    }
}

/// A store, a jobs queue named `queue` with `settings` and its dead-letter queue
/// `queue`-dlq, a webhooks queue `queue`-webhooks with `webhook_settings` and its
/// dead-letter queue `queue`-webhooks-dlq, sized and behaving as `options` says, and
/// `blobs`.
pub fn ports(
    queue: &str,
    settings: &QueueSettings,
    webhook_settings: &QueueSettings,
    options: Options,
    blobs: LocalBlobs,
) -> Ports {
    let capacity = options.capacity;
    let (jobs, dlq) = queue_pair(queue, settings, options);
    let (webhooks, webhooks_dlq) =
        queue_pair(&format!("{queue}-webhooks"), webhook_settings, options);
    Ports {
        store: Arc::new(MemoryStore::new(capacity)),
        queue: jobs,
        blobs: Arc::new(blobs),
        dlq: Some(dlq),
        webhooks,
        webhooks_dlq: Some(webhooks_dlq),
    }
}

/// A queue named `name` with `settings` and its dead-letter queue `name`-dlq.
fn queue_pair(
    name: &str,
    settings: &QueueSettings,
    backend: Options,
) -> (Arc<MemoryQueue>, Arc<MemoryQueue>) {
    let options = |name: String| QueueOptions {
        name,
        visibility_timeout: settings.visibility_timeout,
        capacity: backend.capacity,
        fair: backend.fair,
    };
    let dlq = Arc::new(MemoryQueue::new(options(format!("{name}-dlq"))));
    let queue = MemoryQueue::with_dead_letter_queue(
        options(name.to_owned()),
        Arc::clone(&dlq),
        settings.max_receive_count,
    );
    (Arc::new(queue), dlq)
}
