//! The port properties (the test kit's conformance suite) against the embedded
//! adapters: the same checks the DynamoDB and SQS adapters pass in aws_adapters.rs.

use std::sync::Arc;

use offpath_core::{BlobStore, JobQueue, JobStore};
use offpath_embedded::{MemoryQueue, MemoryStore, QueueOptions};
use offpath_testkit::{Backend, Stack, conformance, fast_queue};

async fn store() -> Arc<dyn JobStore> {
    Stack::new(Backend::Embedded, fast_queue())
        .await
        .ports
        .store
}

/// Visibility timeout 2 s and maxReceiveCount 3, as the AWS suite's queues.
async fn queues() -> (Arc<dyn JobQueue>, Arc<dyn JobQueue>) {
    let stack = Stack::new(Backend::Embedded, fast_queue()).await;
    (stack.ports.queue.clone(), stack.dlq().clone())
}

async fn blobs() -> Arc<dyn BlobStore> {
    Stack::new(Backend::Embedded, fast_queue())
        .await
        .ports
        .blobs
}

offpath_testkit::conformance_suite!(store: store(), queues: queues(), blobs: blobs());

#[tokio::test]
async fn a_full_store_refuses_new_jobs_as_unavailable() {
    conformance::a_full_store_refuses_new_jobs(Arc::new(MemoryStore::new(2))).await;
}

/// A fair or an oldest-first queue of 30 s visibility.
fn queue(fair: bool) -> Arc<dyn JobQueue> {
    Arc::new(MemoryQueue::new(QueueOptions {
        name: "fairness".into(),
        visibility_timeout: std::time::Duration::from_secs(30),
        capacity: 100,
        fair,
    }))
}

#[tokio::test]
async fn a_quiet_owner_overtakes_a_noisy_backlog() {
    conformance::a_quiet_group_overtakes_a_noisy_backlog(queue(true), true).await;
}

#[tokio::test]
async fn without_fairness_the_backlog_goes_first() {
    conformance::a_quiet_group_overtakes_a_noisy_backlog(queue(false), false).await;
}
