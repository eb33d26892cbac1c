//! The port properties (tests/conformance) against the embedded adapters: the same
//! checks the DynamoDB and SQS adapters pass in tests/aws_adapters.rs.

#[macro_use]
mod conformance;

use std::sync::Arc;
use std::time::Duration;

use offpath_core::{JobQueue, JobStore};
use offpath_embedded::{MemoryQueue, MemoryStore, QueueOptions};

async fn store() -> Arc<dyn JobStore> {
    Arc::new(MemoryStore::new(10_000))
}

/// Visibility timeout 2 s and maxReceiveCount 3, as the AWS suite's queues.
async fn queues() -> (Arc<dyn JobQueue>, Arc<dyn JobQueue>) {
    let options = |name: &str| QueueOptions {
        name: name.into(),
        visibility_timeout: Duration::from_secs(2),
        capacity: 10_000,
    };
    let dlq = Arc::new(MemoryQueue::new(options("dlq")));
    let queue = MemoryQueue::with_dead_letter_queue(options("jobs"), dlq.clone(), 3);
    (Arc::new(queue), dlq)
}

conformance_suite!(store: store(), queues: queues());

#[tokio::test]
async fn a_full_store_refuses_new_jobs_as_unavailable() {
    conformance::a_full_store_refuses_new_jobs(Arc::new(MemoryStore::new(2))).await;
}
