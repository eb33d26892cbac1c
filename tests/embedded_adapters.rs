//! The port properties (the test kit's conformance suite) against the embedded
//! adapters: the same checks the DynamoDB and SQS adapters pass in aws_adapters.rs.

use std::sync::Arc;

use offpath_core::{BlobStore, JobQueue, JobStore};
use offpath_embedded::MemoryStore;
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
