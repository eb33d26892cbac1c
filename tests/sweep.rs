//! The sweep repairs jobs that would otherwise stay non-terminal forever, and leaves
//! healthy ones alone. Run on the embedded adapters (the same port semantics as AWS,
//! per the conformance suite), with time moved forward explicitly; the history tests
//! also on DynamoDB (moto): with 100,000 finished jobs the sweep reads only the few
//! that are due (`OFFPATH_SWEEP_HISTORY` sets how many to seed).

use std::sync::Arc;
use std::time::Duration;

use offpath_core::{
    Clock, JobId, JobQueue, JobStatus, JobStore, JsonText, Lease, NewJob, SystemClock, Transition,
};
use offpath_embedded::{Database, Durability, QueueOptions, SqliteQueue, SqliteStore};
use offpath_testkit::new_job;
use offpath_worker::sweep::{SWEEP_BUDGET, SweepReport, SweepSettings, sweep};
use serde_json::json;

const MINUTE: u64 = 60_000;

/// A store, a jobs queue and a webhooks queue, in a database of their own (deleted
/// with the directory returned last).
fn ports() -> (
    Arc<SqliteStore>,
    Arc<SqliteQueue>,
    Arc<SqliteQueue>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open(dir.path(), Durability::Process).unwrap();
    let queue = |name: &str| {
        Arc::new(SqliteQueue::new(
            database.clone(),
            QueueOptions {
                name: name.into(),
                visibility_timeout: Duration::from_secs(360),
                fair: true,
            },
        ))
    };
    (
        Arc::new(SqliteStore::new(database.clone())),
        queue("jobs"),
        queue("webhooks"),
        dir,
    )
}

fn settings() -> SweepSettings {
    SweepSettings {
        grace: Duration::from_secs(360),
        max_receive_count: Some(3),
        budget: SWEEP_BUDGET,
    }
}

async fn job(store: &SqliteStore, created_at: u64) -> JobId {
    let new = NewJob {
        created_at_epoch_ms: created_at,
        expires_at_epoch_s: created_at / 1000 + 3600,
        ..new_job("embed", json!({"texts": ["x"]}))
    };
    store.create(&new).await.unwrap().id
}

/// Claims `id` `attempts` times, the last lease ending at `lease_until`.
async fn run_dead(store: &SqliteStore, id: JobId, attempts: u32, lease_until: u64) {
    for attempt in 1..=attempts {
        let lease = Lease {
            token: format!("w{attempt}"),
            until_epoch_ms: lease_until,
        };
        store
            .apply(
                id,
                &Transition::Claim {
                    lease: lease.clone(),
                    now_epoch_ms: lease_until - MINUTE,
                },
            )
            .await
            .unwrap();
        if attempt < attempts {
            store
                .apply(
                    id,
                    &Transition::Release {
                        token: lease.token.clone(),
                        now_epoch_ms: lease_until - MINUTE,
                    },
                )
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_worker_that_died_on_the_last_attempt_is_dead_lettered() {
    let (store, queue, webhooks, _dir) = ports();
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
            read: 1,
            complete: true,
        }
    );
    let job = store.get(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.unwrap().code, "dead_lettered");
}

#[tokio::test]
async fn lost_messages_are_sent_again() {
    let (store, queue, webhooks, _dir) = ports();
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
            read: 2,
            complete: true,
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

/// One sweep at `now` with the test settings.
async fn sweep_at(
    store: &SqliteStore,
    queue: &SqliteQueue,
    webhooks: &SqliteQueue,
    now: u64,
) -> SweepReport {
    sweep(store, queue, webhooks, &settings(), now)
        .await
        .unwrap()
}

/// A job given back to the queue after a claim (attempts > 0) whose message is gone,
/// as when the store was down on its last receive (claim and dead-letter marking
/// failed, the message went to the DLQ): sent again once its longest backoff and a
/// grace have passed, not before.
#[tokio::test]
async fn a_released_job_without_a_message_is_sent_again_after_its_backoff() {
    let (store, queue, webhooks, _dir) = ports();
    let now = SystemClock.now_epoch_ms();
    let id = job(&store, now - 60 * MINUTE).await;
    let lease = Lease {
        token: "w1".into(),
        until_epoch_ms: now + MINUTE,
    };
    store
        .apply(
            id,
            &Transition::Claim {
                lease: lease.clone(),
                now_epoch_ms: now - 40 * MINUTE,
            },
        )
        .await
        .unwrap();
    store
        .apply(
            id,
            &Transition::Release {
                token: "w1".into(),
                now_epoch_ms: now - 30 * MINUTE,
            },
        )
        .await
        .unwrap();
    // 15 min of backoff and 6 of grace have passed since the release at now - 30 min.
    let early = sweep_at(&store, &queue, &webhooks, now - 10 * MINUTE).await;
    assert_eq!(early.requeued, 0, "its message may still be backing off");
    let report = sweep_at(&store, &queue, &webhooks, now).await;
    assert_eq!(report.requeued, 1);
    let sent = queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body, offpath_core::JobMessage::new(id).to_body());
    let job = store.get(id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Queued, 1));
}

/// A job waiting in a long backlog is sent again once, not by every run: after one
/// re-send its message can be in the queue for the queue's retention.
#[tokio::test]
async fn a_backlog_is_sent_again_once_not_every_run() {
    let (store, queue, webhooks, _dir) = ports();
    let now = SystemClock.now_epoch_ms();
    let id = job(&store, now - 30 * MINUTE).await;
    for run in 0..6 {
        let report = sweep_at(&store, &queue, &webhooks, now + run * 5 * MINUTE).await;
        assert_eq!(report.requeued, usize::from(run == 0), "run {run}");
    }
    let job = store.get(id).await.unwrap().unwrap();
    assert_eq!(job.resent_at_epoch_ms, Some(now));
    // Once that message has surely expired, it is sent again.
    let later = now + offpath_core::index::RESEND_AFTER.as_millis() as u64 + 10 * MINUTE;
    assert_eq!(sweep_at(&store, &queue, &webhooks, later).await.requeued, 1);
}

#[tokio::test]
async fn healthy_and_finished_jobs_are_left_alone() {
    let (store, queue, webhooks, _dir) = ports();
    let now = SystemClock.now_epoch_ms();
    job(&store, now - MINUTE).await; // young, in the queue
    let running = job(&store, now - 30 * MINUTE).await;
    run_dead(&store, running, 3, now + MINUTE).await; // lease still live
    let expired_recently = job(&store, now - 30 * MINUTE).await;
    run_dead(&store, expired_recently, 1, now - MINUTE).await; // message not due back yet
    let done = job(&store, now - 30 * MINUTE).await;
    offpath_core::store::cancel(store.as_ref(), done, now)
        .await
        .unwrap();

    let report = sweep(
        store.as_ref(),
        queue.as_ref(),
        webhooks.as_ref(),
        &settings(),
        now,
    )
    .await
    .unwrap();

    // None of them is due: the sweep does not even read them.
    assert_eq!(
        report,
        SweepReport {
            examined: 0,
            requeued: 0,
            dead_lettered: 0,
            events: 0,
            read: 0,
            complete: true,
        }
    );
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
async fn events_left_in_the_outbox_are_sent_once_their_writer_had_its_chance() {
    use offpath_core::{EventKind, EventType, JobMessage, Webhook};
    let (store, queue, webhooks, _dir) = ports();
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
            store
                .apply(
                    id,
                    &Transition::Claim {
                        lease: lease.clone(),
                        now_epoch_ms: created_at,
                    },
                )
                .await
                .unwrap();
            // The worker dies right after its finishing write: nothing was published.
            store
                .apply(
                    id,
                    &Transition::complete(
                        "w".into(),
                        JsonText::of(&json!([])).unwrap(),
                        created_at + 1,
                    ),
                )
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
        offpath_core::store::cancel(store.as_ref(), id, now - 30 * MINUTE)
            .await
            .unwrap();
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
    // The fresh job's outbox is not due yet: it is not read.
    assert_eq!(report.events, 2);
    assert_eq!(report.examined, 2);
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

/// Finished jobs the history tests seed: `OFFPATH_SWEEP_HISTORY`, by default the
/// issue's 100,000.
fn history() -> usize {
    std::env::var("OFFPATH_SWEEP_HISTORY")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

/// Five stuck jobs at `now`: three never claimed whose message was lost, two whose
/// worker died (leases ended long ago). The sweep must repair each.
async fn stuck(store: &dyn JobStore, now: u64) -> Vec<JobId> {
    let mut ids = Vec::new();
    for i in 0..5 {
        let created = now - 30 * MINUTE;
        let new = NewJob {
            id: JobId::random(),
            created_at_epoch_ms: created,
            expires_at_epoch_s: now / 1000 + 3600,
            ..new_job("embed", json!({"texts": [format!("stuck {i}")]}))
        };
        let id = store.create(&new).await.unwrap().id;
        if i >= 3 {
            let lease = Lease {
                token: format!("dead-{i}"),
                until_epoch_ms: now - 20 * MINUTE,
            };
            store
                .apply(
                    id,
                    &Transition::Claim {
                        lease: lease.clone(),
                        now_epoch_ms: created,
                    },
                )
                .await
                .unwrap();
        }
        ids.push(id);
    }
    ids
}

/// Sweeps `store` with `history()` finished jobs and five stuck ones: the five are
/// repaired and the sweep reads a few items, not the history.
async fn sweep_reads_the_work_not_the_history(store: Arc<dyn JobStore>, label: &str) {
    let (_, queue, webhooks, _dir) = ports();
    let now = SystemClock.now_epoch_ms();
    let stuck = stuck(store.as_ref(), now).await;
    let started = std::time::Instant::now();
    let report = sweep(
        store.as_ref(),
        queue.as_ref(),
        webhooks.as_ref(),
        &settings(),
        now,
    )
    .await
    .unwrap();
    eprintln!(
        "{label}: {} finished jobs + 5 stuck: swept in {:?}: {report:?}",
        history(),
        started.elapsed()
    );
    assert_eq!((report.examined, report.requeued), (5, 5), "{report:?}");
    assert!(report.complete);
    assert!(
        report.read <= 30,
        "read {} items for 5 due jobs",
        report.read
    );
    let sent: Vec<JobId> = queue
        .receive(10, Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .map(|m| offpath_core::JobMessage::from_body(&m.body).unwrap().job_id)
        .collect();
    let (mut sent, mut want) = (sent, stuck);
    sent.sort();
    want.sort();
    assert_eq!(sent, want, "every stuck job's message sent again");
}

#[tokio::test]
async fn the_sweep_reads_the_work_not_the_history_embedded() {
    let (store, _, _, _dir) = ports();
    let now = SystemClock.now_epoch_ms();
    for i in 0..history() {
        let new = NewJob {
            id: JobId::random(),
            created_at_epoch_ms: now - 60 * MINUTE,
            ..new_job("embed", json!({"texts": [format!("done {i}")]}))
        };
        let id = store.create(&new).await.unwrap().id;
        let lease = Lease {
            token: "w".into(),
            until_epoch_ms: now - 50 * MINUTE,
        };
        store
            .apply(
                id,
                &Transition::Claim {
                    lease: lease.clone(),
                    now_epoch_ms: now - 59 * MINUTE,
                },
            )
            .await
            .unwrap();
        store
            .apply(
                id,
                &Transition::complete(
                    "w".into(),
                    JsonText::of(&json!([])).unwrap(),
                    now - 58 * MINUTE,
                ),
            )
            .await
            .unwrap();
    }
    sweep_reads_the_work_not_the_history(store, "embedded").await;
}

#[tokio::test]
async fn the_sweep_reads_the_work_not_the_history_on_dynamodb() {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    use futures::StreamExt;
    let stack = offpath_testkit::Stack::moto(offpath_testkit::fast_queue()).await;
    let client = aws_sdk_dynamodb::Client::new(&offpath_testkit::sdk().await);
    let table = stack.resources().table.clone();
    let now = SystemClock.now_epoch_ms();
    // Finished jobs as the store writes them (no index keys), 25 per batch write.
    let item = |i: usize| {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let n = |v: u64| AttributeValue::N(v.to_string());
        let item = [
            ("pk", s(&JobId::random().to_string())),
            ("owner", s(offpath_testkit::OWNER)),
            ("task", s("embed")),
            ("input", s(&format!(r#"{{"texts":["done {i}"]}}"#))),
            ("status", s("succeeded")),
            ("output", s("[]")),
            ("attempts", n(1)),
            ("created_at_epoch_ms", n(now - 60 * MINUTE)),
            ("started_at_epoch_ms", n(now - 59 * MINUTE)),
            ("finished_at_epoch_ms", n(now - 58 * MINUTE)),
            ("cancel_requested", AttributeValue::Bool(false)),
            ("request_hash", s("h")),
            ("expires_at_epoch_s", n(now / 1000 + 3600)),
            ("version", n(3)),
        ];
        let put = PutRequest::builder()
            .set_item(Some(
                item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
            .build()
            .unwrap();
        WriteRequest::builder().put_request(put).build()
    };
    let seeding = std::time::Instant::now();
    let batches: Vec<Vec<WriteRequest>> = (0..history())
        .collect::<Vec<_>>()
        .chunks(25)
        .map(|chunk| chunk.iter().map(|&i| item(i)).collect())
        .collect();
    futures::stream::iter(batches)
        .for_each_concurrent(8, |batch| {
            let (client, table) = (client.clone(), table.clone());
            async move {
                let mut pending = Some(batch);
                while let Some(batch) = pending.take() {
                    let output = client
                        .batch_write_item()
                        .request_items(&table, batch)
                        .send()
                        .await
                        .expect("batch write");
                    pending = output
                        .unprocessed_items()
                        .and_then(|u| u.get(&table))
                        .filter(|b| !b.is_empty())
                        .cloned();
                }
            }
        })
        .await;
    eprintln!("seeded {} jobs in {:?}", history(), seeding.elapsed());
    sweep_reads_the_work_not_the_history(stack.ports.store.clone(), "moto").await;
}
