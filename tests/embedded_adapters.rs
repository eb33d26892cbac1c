//! The port properties (the test kit's conformance suite) against the embedded
//! adapters: the same checks the DynamoDB and SQS adapters pass in aws_adapters.rs.

use std::sync::Arc;

use offpath_core::{BlobStore, JobMessage, JobQueue, JobStore};
use offpath_embedded::{MemoryQueue, MemoryStore, QueueOptions};
use offpath_testkit::{Backend, OWNER, Stack, conformance, fast_queue};

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

/// Random sequences of transitions agree with the specification at every step (the
/// named properties above are examples of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_agree_with_the_specification() {
    let stack = Stack::new(Backend::Embedded, fast_queue()).await;
    offpath_testkit::property::transitions_agree_with_the_specification(stack).await;
}

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

/// Messages in `queue`, visible or not.
async fn held(queue: &dyn JobQueue) -> u64 {
    let depth = queue.depth().await.unwrap();
    depth.visible + depth.in_flight
}

/// A full dead-letter queue drops nothing: a message past its last receive stays in its
/// queue (hidden, never delivered again) until the DLQ has room, then moves.
#[tokio::test]
async fn a_full_dead_letter_queue_keeps_the_message_in_its_queue() {
    let options = |name: &str, capacity| QueueOptions {
        name: name.into(),
        visibility_timeout: std::time::Duration::from_millis(200),
        capacity,
        fair: false,
    };
    let dlq = Arc::new(MemoryQueue::new(options("dlq", 1)));
    let queue = MemoryQueue::with_dead_letter_queue(options("jobs", 10), Arc::clone(&dlq), 1);
    let wait = std::time::Duration::from_millis(100);
    for _ in 0..2 {
        let id = offpath_core::JobId::random();
        queue.send(&JobMessage::new(id), OWNER).await.unwrap();
    }
    assert_eq!(queue.receive(10, wait).await.unwrap().len(), 2);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Both used their last receive: one fits in the DLQ, the other stays.
    assert!(queue.receive(10, wait).await.unwrap().is_empty());
    assert_eq!((held(&queue).await, held(dlq.as_ref()).await), (1, 1));
    // An operator empties the DLQ; the kept message moves there once due again.
    let dead = dlq.receive(10, wait).await.unwrap();
    dlq.delete(&dead[0].receipt_handle).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(queue.receive(10, wait).await.unwrap().is_empty());
    assert_eq!((held(&queue).await, held(dlq.as_ref()).await), (0, 1));
}
