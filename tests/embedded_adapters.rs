//! The port properties (tests/conformance) against the embedded adapters: the same
//! checks the DynamoDB and SQS adapters pass in tests/aws_adapters.rs.

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

macro_rules! store_properties {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            conformance::$name(store().await).await;
        }
    )*};
}

store_properties!(
    create_is_conditional_and_returns_the_existing_job,
    racing_creates_make_one_job,
    claim_takes_queued_jobs_and_expired_leases_only,
    racing_claims_have_one_winner,
    finishing_writes_need_the_lease,
    fail_records_the_error,
    release_returns_the_job_to_the_queue,
    cancel_ends_queued_jobs_and_flags_running_ones,
    abandon_fails_only_unheld_jobs,
    delete_unstarted_removes_only_never_claimed_jobs,
    revive_requeues_only_dead_lettered_jobs,
);

#[tokio::test]
async fn queue_delivers_hides_and_deletes() {
    conformance::queue_delivers_hides_and_deletes(queues().await.0).await;
}

#[tokio::test]
async fn visibility_can_be_changed() {
    conformance::visibility_can_be_changed(queues().await.0).await;
}

#[tokio::test]
async fn messages_move_to_the_dead_letter_queue_after_max_receives() {
    let (queue, dlq) = queues().await;
    conformance::messages_move_to_the_dead_letter_queue_after_max_receives(queue, dlq).await;
}

#[tokio::test]
async fn a_full_store_refuses_new_jobs_as_unavailable() {
    conformance::a_full_store_refuses_new_jobs(Arc::new(MemoryStore::new(2))).await;
}
