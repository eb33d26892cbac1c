//! In-process adapters for a local run with no AWS, no Docker and no emulator:
//! [`MemoryStore`] behaves like the DynamoDB `JobStore` (every condition fails exactly
//! when DynamoDB's would) and [`MemoryQueue`] like SQS (visibility timeout, receive
//! counts, long polling, redrive to a dead-letter queue, change-visibility). Both are
//! safe to share between tasks and bounded in memory. The conformance suite of the
//! test kit runs against them and against the AWS adapters.

mod queue;
mod store;

use std::sync::Arc;

use offpath_core::{Ports, QueueSettings};

pub use queue::{MemoryQueue, QueueOptions};
pub use store::MemoryStore;

/// Most jobs and messages the embedded backend holds by default.
pub const CAPACITY: usize = 100_000;

/// A store, a jobs queue named `queue` and its dead-letter queue `queue`-dlq, each
/// holding up to `capacity` jobs or messages, with the queue `settings`.
pub fn ports(queue: &str, settings: &QueueSettings, capacity: usize) -> Ports {
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
        dlq: Some(dlq),
    }
}
