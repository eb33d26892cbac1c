//! The sweep repairs jobs that would otherwise stay non-terminal forever, and leaves
//! healthy ones alone. Run on the embedded adapters (the same port semantics as AWS,
//! per the conformance suite), with time moved forward explicitly.

use std::sync::Arc;
use std::time::Duration;

use offpath_core::{Clock, JobId, JobQueue, JobStatus, JobStore, Lease, NewJob, SystemClock};
use offpath_embedded::{MemoryQueue, MemoryStore, QueueOptions};
use offpath_testkit::new_job;
use offpath_worker::sweep::{SweepReport, SweepSettings, sweep};
use serde_json::json;

const MINUTE: u64 = 60_000;

/// A store, a jobs queue and a webhooks queue.
fn ports() -> (Arc<MemoryStore>, Arc<MemoryQueue>, Arc<MemoryQueue>) {
    let queue = |name: &str| {
        Arc::new(MemoryQueue::new(QueueOptions {
            name: name.into(),
            visibility_timeout: Duration::from_secs(360),
            capacity: 100,
        }))
    };
    (
        Arc::new(MemoryStore::new(100)),
        queue("jobs"),
        queue("webhooks"),
    )
}

fn settings() -> SweepSettings {
    SweepSettings {
        grace: Duration::from_secs(360),
        max_receive_count: Some(3),
        limit: 1000,
    }
}

async fn job(store: &MemoryStore, created_at: u64) -> JobId {
    let new = NewJob {
        created_at_epoch_ms: created_at,
        expires_at_epoch_s: created_at / 1000 + 3600,
        ..new_job("embed", json!({"texts": ["x"]}))
    };
    store.create(&new).await.unwrap().id
}

/// Claims `id` `attempts` times, the last lease ending at `lease_until`.
async fn run_dead(store: &MemoryStore, id: JobId, attempts: u32, lease_until: u64) {
    for attempt in 1..=attempts {
        let lease = Lease {
            token: format!("w{attempt}"),
            until_epoch_ms: lease_until,
        };
        store.claim(id, &lease, lease_until - MINUTE).await.unwrap();
        if attempt < attempts {
            store.release(id, &lease.token).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_worker_that_died_on_the_last_attempt_is_dead_lettered() {
    let (store, queue, webhooks) = ports();
    let now = SystemClock.now_epoch_ms();
    let id = job(&store, now - 30 * MINUTE).await;
    run_dead(&store, id, 3, now - 10 * MINUTE).await;

    let report = sweep(
        store.as_ref(),
        queue.as_ref(),
        webhooks.as_ref(),
        &settings(),
        now,
    )
    .await
    .unwrap();

    assert_eq!(
        report,
        SweepReport {
            examined: 1,
            requeued: 0,
            dead_lettered: 1,
            events: 0,
        }
    );
    let job = store.get(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.unwrap().code, "dead_lettered");
}

#[tokio::test]
async fn lost_messages_are_sent_again() {
    let (store, queue, webhooks) = ports();
    let now = SystemClock.now_epoch_ms();
    let dead_worker = job(&store, now - 30 * MINUTE).await;
    run_dead(&store, dead_worker, 1, now - 10 * MINUTE).await;
    let never_claimed = job(&store, now - 30 * MINUTE).await;

    let report = sweep(
        store.as_ref(),
        queue.as_ref(),
        webhooks.as_ref(),
        &settings(),
        now,
    )
    .await
    .unwrap();

    assert_eq!(
        report,
        SweepReport {
            examined: 2,
            requeued: 2,
            dead_lettered: 0,
            events: 0,
        }
    );
    let mut sent: Vec<String> = queue
        .receive(10, Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    sent.sort();
    let mut want: Vec<String> = [dead_worker, never_claimed]
        .iter()
        .map(|id| offpath_core::JobMessage::new(*id).to_body())
        .collect();
    want.sort();
    assert_eq!(sent, want);
}

#[tokio::test]
async fn healthy_and_finished_jobs_are_left_alone() {
    let (store, queue, webhooks) = ports();
    let now = SystemClock.now_epoch_ms();
    job(&store, now - MINUTE).await; // young, in the queue
    let running = job(&store, now - 30 * MINUTE).await;
    run_dead(&store, running, 3, now + MINUTE).await; // lease still live
    let expired_recently = job(&store, now - 30 * MINUTE).await;
    run_dead(&store, expired_recently, 1, now - MINUTE).await; // message not due back yet
    let done = job(&store, now - 30 * MINUTE).await;
    store.cancel(done, now).await.unwrap();

    let report = sweep(
        store.as_ref(),
        queue.as_ref(),
        webhooks.as_ref(),
        &settings(),
        now,
    )
    .await
    .unwrap();

    assert_eq!(
        report,
        SweepReport {
            examined: 3,
            requeued: 0,
            dead_lettered: 0,
            events: 0,
        }
    );
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
async fn events_left_in_the_outbox_are_sent_once_their_writer_had_its_chance() {
    use offpath_core::{EventKind, EventType, JobMessage, Webhook};
    let (store, queue, webhooks) = ports();
    let now = SystemClock.now_epoch_ms();
    let subscribed = |created_at: u64| {
        let store = store.clone();
        async move {
            let new = NewJob {
                webhook: Some(Webhook::new(
                    "https://hooks.example.com/offpath",
                    [EventKind::Started, EventKind::Completed].into(),
                )),
                created_at_epoch_ms: created_at,
                ..new_job("embed", json!({"texts": ["x"]}))
            };
            let id = store.create(&new).await.unwrap().id;
            let lease = Lease {
                token: "w".into(),
                until_epoch_ms: created_at + MINUTE,
            };
            store.claim(id, &lease, created_at).await.unwrap();
            // The worker dies right after its finishing write: nothing was published.
            store
                .complete(id, "w", &json!([]), created_at + 1)
                .await
                .unwrap();
            id
        }
    };
    let old = subscribed(now - 30 * MINUTE).await;
    let fresh = subscribed(now - 1000).await;
    let cancelled_queued = {
        let new = NewJob {
            webhook: Some(Webhook::new(
                "https://hooks.example.com/offpath",
                [EventKind::Started].into(),
            )),
            ..new_job("embed", json!({"texts": ["y"]}))
        };
        let id = store.create(&new).await.unwrap().id;
        store.cancel(id, now - 30 * MINUTE).await.unwrap();
        id
    };

    let report = sweep(
        store.as_ref(),
        queue.as_ref(),
        webhooks.as_ref(),
        &settings(),
        now,
    )
    .await
    .unwrap();

    // The old job's two events go out; the fresh one's writer may still send its own;
    // a job cancelled before it started can never start, so its outbox just empties.
    assert_eq!(report.events, 2);
    assert_eq!(report.examined, 3);
    let sent: Vec<JobMessage> = webhooks
        .receive(10, Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .map(|m| JobMessage::from_body(&m.body).unwrap())
        .collect();
    let kinds: Vec<EventType> = sent.iter().map(|m| m.event.unwrap().kind).collect();
    assert_eq!(kinds, [EventType::Started, EventType::Succeeded]);
    assert!(sent.iter().all(|m| m.job_id == old));
    assert!(!store.get(old).await.unwrap().unwrap().has_unsent_events());
    assert!(store.get(fresh).await.unwrap().unwrap().has_unsent_events());
    assert!(
        !store
            .get(cancelled_queued)
            .await
            .unwrap()
            .unwrap()
            .has_unsent_events()
    );
    // Next run: only the fresh job is left to examine.
    let later = now + 10 * MINUTE;
    let report = sweep(
        store.as_ref(),
        queue.as_ref(),
        webhooks.as_ref(),
        &settings(),
        later,
    )
    .await
    .unwrap();
    assert_eq!((report.examined, report.events), (1, 2));
}
