//! In-process adapters for a local run with no AWS, no Docker and no emulator:
//! [`MemoryStore`] behaves like the DynamoDB `JobStore` (every condition fails exactly
//! when DynamoDB's would), [`MemoryQueue`] like SQS (visibility timeout, receive
//! counts, long polling, redrive to a dead-letter queue, change-visibility) and
//! [`LocalBlobs`] like the S3 bucket, in a directory. All are safe to share between
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

/// A store, a jobs queue named `queue` and its dead-letter queue `queue`-dlq, each
/// holding up to `capacity` jobs or messages, with the queue `settings`, and `blobs`.
pub fn ports(queue: &str, settings: &QueueSettings, capacity: usize, blobs: LocalBlobs) -> Ports {
    let options = |name: String| QueueOptions {
        name,
        visibility_timeout: settings.visibility_timeout,
        capacity,
    };
    let dlq = Arc::new(MemoryQueue::new(options(format!("{queue}-dlq"))));
    let jobs = MemoryQueue::with_dead_letter_queue(
        options(queue.to_owned()),
        Arc::clone(&dlq),
        settings.max_receive_count,
    );
    Ports {
        store: Arc::new(MemoryStore::new(capacity)),
        queue: Arc::new(jobs),
        blobs: Arc::new(blobs),
        dlq: Some(dlq),
    }
}
