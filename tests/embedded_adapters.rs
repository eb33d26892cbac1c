//! The port properties (the test kit's conformance suite) against the embedded
//! adapters: the same checks the DynamoDB and SQS adapters pass in aws_adapters.rs.

use std::sync::Arc;

use offpath_core::{BlobStore, JobMessage, JobQueue, JobStore, StoreError};
use offpath_embedded::{Database, Durability, QueueOptions, SqliteQueue};
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

/// A queue in a database of its own, fair or oldest-first, of 30 s visibility.
fn queue(fair: bool) -> (Arc<dyn JobQueue>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open(dir.path(), Durability::Process).unwrap();
    let queue = SqliteQueue::new(
        database,
        QueueOptions {
            name: "fairness".into(),
            visibility_timeout: std::time::Duration::from_secs(30),
            fair,
        },
    );
    (Arc::new(queue), dir)
}

#[tokio::test]
async fn a_quiet_owner_overtakes_a_noisy_backlog() {
    let (queue, _dir) = queue(true);
    conformance::a_quiet_group_overtakes_a_noisy_backlog(queue, true).await;
}

#[tokio::test]
async fn without_fairness_the_backlog_goes_first() {
    let (queue, _dir) = queue(false);
    conformance::a_quiet_group_overtakes_a_noisy_backlog(queue, false).await;
}

/// The embedded backend in a data directory of its own (deleted with the directory
/// returned last).
fn embedded() -> (offpath_embedded::Embedded, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let embedded = offpath_embedded::open(
        dir.path(),
        "jobs",
        &fast_queue(),
        &fast_queue(),
        offpath_embedded::Options::default(),
    )
    .unwrap();
    (embedded, dir)
}

/// A full disk (here: the database held at its size) refuses writes as unavailable,
/// keeps everything it accepted readable, and takes writes again once there is room.
#[tokio::test]
async fn a_full_disk_refuses_writes_as_unavailable_and_loses_nothing() {
    let (embedded, _dir) = embedded();
    let (store, queue) = (&embedded.ports.store, &embedded.ports.queue);
    // No more pages than it has now: the free room of its last pages fills first.
    embedded.database.limit_pages(1).unwrap();
    let mut accepted = Vec::new();
    let refusal = loop {
        assert!(accepted.len() < 10_000, "the held database never filled");
        let new = offpath_testkit::new_job("embed", serde_json::json!({"texts": ["x"]}));
        match store.create(&new).await {
            Ok(job) => accepted.push(job),
            Err(err) => break err,
        }
    };
    assert!(matches!(refusal, StoreError::Unavailable(_)), "{refusal}");
    assert!(refusal.to_string().contains("full"), "{refusal}");
    let message = JobMessage::new(accepted[0].id);
    let mut sent = 0;
    let queue_refusal = loop {
        assert!(sent < 10_000, "the held database never filled");
        match queue.send(&message, OWNER).await {
            Ok(()) => sent += 1,
            Err(err) => break err,
        }
    };
    assert!(queue_refusal.is_transient(), "{queue_refusal}");
    for job in &accepted {
        assert_eq!(store.get(job.id).await.unwrap().as_ref(), Some(job));
    }
    // Room again: writes resume.
    embedded.database.limit_pages(1_000_000).unwrap();
    let new = offpath_testkit::new_job("embed", serde_json::json!({"texts": ["x"]}));
    store.create(&new).await.unwrap();
    queue.send(&message, OWNER).await.unwrap();
    let depth = queue.depth().await.unwrap();
    assert_eq!(depth.visible, sent + 1);
}

/// Jobs past their TTL are deleted and the database gives their pages back; live jobs
/// stay.
#[tokio::test]
async fn expired_jobs_are_purged_and_their_space_given_back() {
    let (embedded, _dir) = embedded();
    let store = &embedded.store;
    let empty = embedded.database.size().await.unwrap();
    let text = "x".repeat(2000);
    let now_s = 1_800_000_000;
    for i in 0..2000 {
        let new = offpath_core::NewJob {
            expires_at_epoch_s: if i == 0 { now_s + 60 } else { now_s - 1 },
            ..offpath_testkit::new_job("embed", serde_json::json!({"texts": [text]}))
        };
        store.create(&new).await.unwrap();
    }
    let full = embedded.database.size().await.unwrap();
    assert!(full > empty + 2000 * 2000, "{empty} -> {full} bytes");
    assert_eq!(store.purge_expired(now_s).await.unwrap(), 1999);
    let purged = embedded.database.size().await.unwrap();
    assert!(
        purged < empty + 200_000,
        "{empty} -> {full} -> {purged} bytes"
    );
    let page = store
        .list(&offpath_core::ListQuery {
            owner: OWNER,
            status: None,
            task: None,
            limit: 10,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 1, "the live job stays");
}
