//! The port conformance suite: properties of `JobStore` and `JobQueue` that the
//! worker and the API rely on, as functions over the port traits, so every adapter
//! (DynamoDB and SQS on moto, the embedded ones) runs the same checks. The
//! [`conformance_suite!`](crate::conformance_suite) macro turns them into tests.

/// Generates one test per property. `store` makes a fresh `Arc<dyn JobStore>`,
/// `queues` a fresh `(queue, dead-letter queue)` with visibility timeout 2 s and
/// maxReceiveCount 3.
#[macro_export]
macro_rules! conformance_suite {
    (store: $store:expr, queues: $queues:expr) => {
        $crate::conformance_suite!(@store $store;
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
            unfinished_lists_queued_and_running_jobs_only,
        );

        #[tokio::test]
        async fn queue_delivers_hides_and_deletes() {
            $crate::conformance::queue_delivers_hides_and_deletes($queues.await.0).await;
        }

        #[tokio::test]
        async fn visibility_can_be_changed() {
            $crate::conformance::visibility_can_be_changed($queues.await.0).await;
        }

        #[tokio::test]
        async fn messages_move_to_the_dead_letter_queue_after_max_receives() {
            let (queue, dlq) = $queues.await;
            $crate::conformance::messages_move_to_the_dead_letter_queue_after_max_receives(queue, dlq).await;
        }
    };
    (@store $store:expr; $($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            $crate::conformance::$name($store.await).await;
        }
    )*};
}

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use offpath_core::{
    Clock, ErrorInfo, Job, JobId, JobMessage, JobQueue, JobStatus, JobStore, Lease, NewJob,
    StoreError, SystemClock,
};
use serde_json::json;

fn now() -> u64 {
    SystemClock.now_epoch_ms()
}

fn new_job() -> NewJob {
    NewJob {
        owner: "owner-1".into(),
        request_hash: "hash-1".into(),
        idempotency_key: Some("key-1".into()),
        ..crate::new_job("embed", json!({"texts": ["conformance"]}))
    }
}

fn lease(token: &str, ms_from_now: i64) -> Lease {
    Lease {
        token: token.into(),
        until_epoch_ms: (now() as i64 + ms_from_now) as u64,
    }
}

fn conflict(result: Result<Job, StoreError>) -> Job {
    match result {
        Err(StoreError::Conflict(current)) => *current,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Property: create is conditional and returns the existing job.
pub async fn create_is_conditional_and_returns_the_existing_job(store: Arc<dyn JobStore>) {
    let new = new_job();
    let created = store.create(&new).await.unwrap();
    assert_eq!(created.status, JobStatus::Queued);
    assert_eq!(store.get(new.id).await.unwrap(), Some(created.clone()));
    let mut other = new.clone();
    other.request_hash = "hash-2".into();
    assert_eq!(conflict(store.create(&other).await), created);
    assert_eq!(store.get(JobId::random()).await.unwrap(), None);
}

/// Property: racing creates make one job.
pub async fn racing_creates_make_one_job(store: Arc<dyn JobStore>) {
    let new = new_job();
    let results = join_all((0..20).map(|_| store.create(&new))).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict(_))))
        .count();
    assert_eq!((created, conflicts), (1, 19));
}

/// Property: claim takes queued jobs and expired leases only.
pub async fn claim_takes_queued_jobs_and_expired_leases_only(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    let first = store.claim(id, &lease("w1", 60_000), now()).await.unwrap();
    assert_eq!(first.status, JobStatus::Running);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.lease_owner.as_deref(), Some("w1"));
    let started = first.started_at_epoch_ms.expect("started");
    // A live lease keeps others out.
    let current = conflict(store.claim(id, &lease("w2", 60_000), now()).await);
    assert_eq!(current.lease_owner.as_deref(), Some("w1"));
    // An expired lease is taken over; the first start time stays.
    let later = now() + 120_000;
    let second = store
        .claim(
            id,
            &Lease {
                token: "w2".into(),
                until_epoch_ms: later + 60_000,
            },
            later,
        )
        .await
        .unwrap();
    assert_eq!(
        (second.attempts, second.lease_owner.as_deref()),
        (2, Some("w2"))
    );
    assert_eq!(second.started_at_epoch_ms, Some(started));
    assert!(matches!(
        store.claim(JobId::random(), &lease("w", 1000), now()).await,
        Err(StoreError::NotFound)
    ));
}

/// Property: racing claims have one winner.
pub async fn racing_claims_have_one_winner(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    let leases: Vec<Lease> = (0..20).map(|i| lease(&format!("w{i}"), 60_000)).collect();
    let results = join_all(leases.iter().map(|l| store.claim(id, l, now()))).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert_eq!(store.get(id).await.unwrap().unwrap().attempts, 1);
}

/// Property: finishing writes need the lease.
pub async fn finishing_writes_need_the_lease(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    store.claim(id, &lease("w1", 60_000), now()).await.unwrap();
    let output = json!({"ok": true});
    conflict(store.complete(id, "intruder", &output, now()).await);
    conflict(
        store
            .fail(id, "intruder", &ErrorInfo::new("x", "y"), now())
            .await,
    );
    conflict(store.release(id, "intruder").await);
    let done = store.complete(id, "w1", &output, now()).await.unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.output, Some(output.clone()));
    assert!(done.lease_owner.is_none() && done.lease_until_epoch_ms.is_none());
    assert!(done.finished_at_epoch_ms.is_some());
    // Terminal states never change.
    conflict(store.complete(id, "w1", &output, now()).await);
    conflict(store.claim(id, &lease("w2", 60_000), now() + 600_000).await);
    conflict(store.cancel(id, now()).await);
    assert_eq!(store.get(id).await.unwrap(), Some(done));
}

/// Property: fail records the error.
pub async fn fail_records_the_error(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    store.claim(id, &lease("w1", 60_000), now()).await.unwrap();
    let error = ErrorInfo::new("inference_failed", "broken");
    let failed = store.fail(id, "w1", &error, now()).await.unwrap();
    assert_eq!(
        (failed.status, failed.error),
        (JobStatus::Failed, Some(error))
    );
}

/// Property: release returns the job to the queue.
pub async fn release_returns_the_job_to_the_queue(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    store.claim(id, &lease("w1", 60_000), now()).await.unwrap();
    let released = store.release(id, "w1").await.unwrap();
    assert_eq!(released.status, JobStatus::Queued);
    assert!(released.lease_owner.is_none());
    assert_eq!(released.attempts, 1);
    let again = store.claim(id, &lease("w2", 60_000), now()).await.unwrap();
    assert_eq!(again.attempts, 2);
}

/// Property: cancel ends queued jobs and flags running ones.
pub async fn cancel_ends_queued_jobs_and_flags_running_ones(store: Arc<dyn JobStore>) {
    let queued = store.create(&new_job()).await.unwrap().id;
    let cancelled = store.cancel(queued, now()).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(
        conflict(store.cancel(queued, now()).await).status,
        JobStatus::Cancelled
    );

    let running = store.create(&new_job()).await.unwrap().id;
    store
        .claim(running, &lease("w1", 60_000), now())
        .await
        .unwrap();
    let flagged = store.cancel(running, now()).await.unwrap();
    assert_eq!(
        (flagged.status, flagged.cancel_requested),
        (JobStatus::Running, true)
    );
    // The worker's success is refused; it ends the job cancelled instead.
    let current = conflict(store.complete(running, "w1", &json!({}), now()).await);
    assert!(current.cancel_requested);
    let ended = store.finish_cancelled(running, "w1", now()).await.unwrap();
    assert_eq!(ended.status, JobStatus::Cancelled);
    assert!(ended.output.is_none());
    assert!(matches!(
        store.cancel(JobId::random(), now()).await,
        Err(StoreError::NotFound)
    ));
}

/// Property: abandon fails only unheld jobs.
pub async fn abandon_fails_only_unheld_jobs(store: Arc<dyn JobStore>) {
    let error = ErrorInfo::new("dead_lettered", "gave up");
    let queued = store.create(&new_job()).await.unwrap().id;
    assert_eq!(
        store.abandon(queued, &error, now()).await.unwrap().status,
        JobStatus::Failed
    );

    let held = store.create(&new_job()).await.unwrap().id;
    store
        .claim(held, &lease("w1", 60_000), now())
        .await
        .unwrap();
    conflict(store.abandon(held, &error, now()).await);
    let failed = store.abandon(held, &error, now() + 120_000).await.unwrap();
    assert_eq!(failed.error, Some(error));
}

/// Property: revive requeues only dead lettered jobs.
pub async fn revive_requeues_only_dead_lettered_jobs(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    conflict(store.revive(id).await);
    store.claim(id, &lease("w1", 60_000), now()).await.unwrap();
    let other = ErrorInfo::new("inference_failed", "bad input");
    store.fail(id, "w1", &other, now()).await.unwrap();
    conflict(store.revive(id).await);

    let dead = store.create(&new_job()).await.unwrap().id;
    store
        .claim(dead, &lease("w1", 60_000), now())
        .await
        .unwrap();
    let error = ErrorInfo::new("dead_lettered", "gave up");
    store.fail(dead, "w1", &error, now()).await.unwrap();
    let revived = store.revive(dead).await.unwrap();
    assert_eq!((revived.status, revived.attempts), (JobStatus::Queued, 1));
    assert!(revived.error.is_none() && revived.finished_at_epoch_ms.is_none());
    let again = store
        .claim(dead, &lease("w2", 60_000), now())
        .await
        .unwrap();
    assert_eq!(again.attempts, 2);
}

/// Property: unfinished lists queued and running jobs only.
pub async fn unfinished_lists_queued_and_running_jobs_only(store: Arc<dyn JobStore>) {
    let queued = store.create(&new_job()).await.unwrap().id;
    let running = store.create(&new_job()).await.unwrap().id;
    store
        .claim(running, &lease("w1", 60_000), now())
        .await
        .unwrap();
    let done = store.create(&new_job()).await.unwrap().id;
    store.cancel(done, now()).await.unwrap();
    let mut ids: Vec<JobId> = store
        .unfinished(100)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    ids.sort();
    let mut want = vec![queued, running];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(store.unfinished(1).await.unwrap().len(), 1);
}

/// Property: delete unstarted removes only never claimed jobs.
pub async fn delete_unstarted_removes_only_never_claimed_jobs(store: Arc<dyn JobStore>) {
    let fresh = store.create(&new_job()).await.unwrap().id;
    store.delete_unstarted(fresh).await.unwrap();
    assert_eq!(store.get(fresh).await.unwrap(), None);

    let claimed = store.create(&new_job()).await.unwrap().id;
    store
        .claim(claimed, &lease("w1", 60_000), now())
        .await
        .unwrap();
    store.release(claimed, "w1").await.unwrap();
    assert!(matches!(
        store.delete_unstarted(claimed).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.get(claimed).await.unwrap().is_some());
    store.ping().await.unwrap();
}

/// Property: a queue (visibility timeout 2 s, maxReceiveCount 3) delivers, hides
/// what is in flight, and deletes.
pub async fn queue_delivers_hides_and_deletes(queue: Arc<dyn JobQueue>) {
    let message = JobMessage::new(JobId::random());
    queue.send(&message).await.unwrap();
    let received = queue.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(received.len(), 1);
    let m = &received[0];
    assert_eq!(JobMessage::from_body(&m.body).unwrap(), message);
    assert_eq!(m.receive_count, 1);
    assert!(m.sent_at_epoch_ms > 0);
    assert!(!m.message_id.is_empty() && !m.receipt_handle.is_empty());
    // In flight: hidden from other receivers.
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
    let depth = queue.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 1));
    queue.delete(&m.receipt_handle).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(
        queue.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "deleted"
    );
    assert_eq!(queue.max_receive_count().await.unwrap(), Some(3));
}

/// Property: visibility can be changed.
pub async fn visibility_can_be_changed(queue: Arc<dyn JobQueue>) {
    queue.send(&JobMessage::new(JobId::random())).await.unwrap();
    let first = queue.receive(1, Duration::from_secs(2)).await.unwrap();
    queue
        .change_visibility(&first[0].receipt_handle, Duration::ZERO)
        .await
        .unwrap();
    let again = queue.receive(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(again.len(), 1, "visible again at once");
    assert_eq!(again[0].receive_count, 2);
    queue
        .change_visibility(&again[0].receipt_handle, Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(
        queue.receive(1, Duration::ZERO).await.unwrap().is_empty(),
        "hidden past the queue's own visibility timeout"
    );
}

/// Property: messages move to the dead letter queue after max receives.
pub async fn messages_move_to_the_dead_letter_queue_after_max_receives(
    queue: Arc<dyn JobQueue>,
    dlq: Arc<dyn JobQueue>,
) {
    let message = JobMessage::new(JobId::random());
    queue.send(&message).await.unwrap();
    for receive in 1..=3 {
        let got = queue.receive(1, Duration::from_secs(2)).await.unwrap();
        assert_eq!(got.len(), 1, "receive {receive}");
        assert_eq!(got[0].receive_count, receive);
        queue
            .change_visibility(&got[0].receipt_handle, Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(
        queue
            .receive(1, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
    let dead = dlq.receive(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(JobMessage::from_body(&dead[0].body).unwrap(), message);
}

/// Property: a store that holds `capacity` 2 refuses the third live job as
/// unavailable (503 at the API), never drops it silently.
pub async fn a_full_store_refuses_new_jobs(store: Arc<dyn JobStore>) {
    store.create(&new_job()).await.unwrap();
    store.create(&new_job()).await.unwrap();
    assert!(matches!(
        store.create(&new_job()).await,
        Err(StoreError::Unavailable(_))
    ));
}
