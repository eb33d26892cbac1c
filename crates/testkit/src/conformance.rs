//! The port conformance suite: properties of `JobStore` and `JobQueue` that the
//! worker and the API rely on, as functions over the port traits, so every adapter
//! (DynamoDB and SQS on moto, the embedded ones) runs the same checks. The
//! [`conformance_suite!`](crate::conformance_suite) macro turns them into tests.

/// Generates one test per property. `store` makes a fresh `Arc<dyn JobStore>`,
/// `queues` a fresh `(queue, dead-letter queue)` with visibility timeout 2 s and
/// maxReceiveCount 3, `blobs` a fresh `Arc<dyn BlobStore>`.
#[macro_export]
macro_rules! conformance_suite {
    (store: $store:expr, queues: $queues:expr, blobs: $blobs:expr) => {
        $crate::conformance_suite!(@blobs $blobs;
            blobs_round_trip_and_replace,
            ranges_read_slices_clamped_to_the_end,
            concat_appends_parts_in_order,
            delete_prefix_deletes_only_its_prefix,
        );
        $crate::conformance_suite!(@store $store;
            create_is_conditional_and_returns_the_existing_job,
            racing_creates_make_one_job,
            claim_takes_queued_jobs_and_expired_leases_only,
            racing_claims_have_one_winner,
            finishing_writes_need_the_lease,
            a_heartbeat_extends_only_its_own_lease,
            fail_records_the_error,
            release_returns_the_job_to_the_queue,
            a_resend_is_recorded_on_queued_jobs_only,
            a_release_forgets_an_earlier_resend,
            cancel_ends_queued_jobs_and_flags_running_ones,
            abandon_fails_only_unheld_jobs,
            delete_unstarted_removes_only_never_claimed_jobs,
            revive_requeues_only_dead_lettered_jobs,
            due_holds_unfinished_jobs_by_when_they_may_need_repair,
            listing_pages_newest_first_with_filters,
            unfinished_estimate_counts_an_owners_unfinished_jobs,
            fan_out_needs_the_lease_and_ends_it,
            a_part_is_claimed_by_one_and_settled_once,
            racing_part_claims_have_one_winner,
            cancel_lets_unheld_parts_be_skipped,
            parts_end_the_job_only_once_all_are_settled,
            dead_parts_fail_the_job_and_revive_unsettles_them,
            the_outbox_empties_as_events_are_sent,
            revive_puts_the_completion_event_back,
            an_outbox_empties_when_no_event_can_follow,
            progress_events_are_one_a_gap_apart,
            a_gone_webhook_stops_for_good,
            waiters_see_the_end_or_their_deadline,
            activity_adds_up_by_minute,
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

        #[tokio::test]
        async fn dead_letters_are_read_moved_back_and_purged() {
            let (queue, dlq) = $queues.await;
            $crate::conformance::dead_letters_are_read_moved_back_and_purged(queue, dlq).await;
        }
    };
    (@store $store:expr; $($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            $crate::conformance::$name($store.await).await;
        }
    )*};
    (@blobs $blobs:expr; $($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            $crate::conformance::$name($blobs.await).await;
        }
    )*};
}

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use offpath_core::activity::MINUTE_MS;
use offpath_core::store::{cancel, revive};
use offpath_core::{
    Activity, BlobError, BlobStore, Clock, DeadLetters, End, ErrorInfo, EventKind, EventType, Job,
    JobId, JobMessage, JobPage, JobQueue, JobStatus, JobStore, JsonText, Lease, ListQuery, NewJob,
    Settle, StoreError, SystemClock, TaskName, Transition, Webhook,
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

/// `value` as JSON text.
fn text(value: serde_json::Value) -> JsonText {
    JsonText::of(&value).expect("JSON serialises")
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
    let first = store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    assert_eq!(first.status, JobStatus::Running);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.lease_owner.as_deref(), Some("w1"));
    let started = first.started_at_epoch_ms.expect("started");
    // A live lease keeps others out.
    let current = conflict(
        store
            .apply(
                id,
                &Transition::Claim {
                    lease: lease("w2", 60_000),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    assert_eq!(current.lease_owner.as_deref(), Some("w1"));
    // An expired lease is taken over; the first start time stays.
    let later = now() + 120_000;
    let second = store
        .apply(
            id,
            &Transition::Claim {
                lease: Lease {
                    token: "w2".into(),
                    until_epoch_ms: later + 60_000,
                },
                now_epoch_ms: later,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (second.attempts, second.lease_owner.as_deref()),
        (2, Some("w2"))
    );
    assert_eq!(second.started_at_epoch_ms, Some(started));
    assert!(matches!(
        store
            .apply(
                JobId::random(),
                &Transition::Claim {
                    lease: lease("w", 1000),
                    now_epoch_ms: now()
                }
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

/// Property: racing claims have one winner.
pub async fn racing_claims_have_one_winner(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    let claims: Vec<Transition> = (0..20)
        .map(|i| Transition::Claim {
            lease: lease(&format!("w{i}"), 60_000),
            now_epoch_ms: now(),
        })
        .collect();
    let results = join_all(claims.iter().map(|claim| store.apply(id, claim))).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert_eq!(store.get(id).await.unwrap().unwrap().attempts, 1);
}

/// Property: finishing writes need the lease.
pub async fn finishing_writes_need_the_lease(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let output = text(json!({"ok": true}));
    conflict(
        store
            .apply(
                id,
                &Transition::complete("intruder".into(), output.clone(), now()),
            )
            .await,
    );
    conflict(
        store
            .apply(
                id,
                &Transition::fail("intruder".into(), ErrorInfo::new("x", "y"), now()),
            )
            .await,
    );
    conflict(
        store
            .apply(
                id,
                &Transition::Release {
                    token: "intruder".into(),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    let done = store
        .apply(
            id,
            &Transition::complete("w1".into(), output.clone(), now()),
        )
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.output, Some(output.clone()));
    assert!(done.lease_owner.is_none() && done.lease_until_epoch_ms.is_none());
    assert!(done.finished_at_epoch_ms.is_some());
    // Terminal states never change.
    conflict(
        store
            .apply(
                id,
                &Transition::complete("w1".into(), output.clone(), now()),
            )
            .await,
    );
    conflict(
        store
            .apply(
                id,
                &Transition::Claim {
                    lease: lease("w2", 60_000),
                    now_epoch_ms: now() + 600_000,
                },
            )
            .await,
    );
    conflict(cancel(store.as_ref(), id, now()).await);
    assert_eq!(store.get(id).await.unwrap(), Some(done));
}

/// Property: a heartbeat extends its own lease (of a job or a part), and the job's
/// place in the sweep's index with it; nobody else's.
pub async fn a_heartbeat_extends_only_its_own_lease(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 1_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    conflict(
        store
            .apply(
                id,
                &Transition::ExtendLease {
                    lease: lease("intruder", 60_000),
                },
            )
            .await,
    );
    let extended = store
        .apply(
            id,
            &Transition::ExtendLease {
                lease: lease("w1", 60_000),
            },
        )
        .await
        .unwrap();
    let until = extended.lease_until_epoch_ms.expect("leased");
    assert!(until > now() + 30_000, "{until}");
    assert_eq!(extended.attempts, 1);
    // Still held: nobody else claims it, and the sweep sees it due only after the end.
    conflict(
        store
            .apply(
                id,
                &Transition::Claim {
                    lease: lease("w2", 60_000),
                    now_epoch_ms: now() + 2_000,
                },
            )
            .await,
    );
    assert!(!due_ids(store.as_ref(), now() + 2_000).await.contains(&id));
    assert!(due_ids(store.as_ref(), until + 1).await.contains(&id));
    store
        .apply(
            id,
            &Transition::complete("w1".into(), text(json!({})), now()),
        )
        .await
        .unwrap();
    conflict(
        store
            .apply(
                id,
                &Transition::ExtendLease {
                    lease: lease("w1", 60_000),
                },
            )
            .await,
    );

    let id = fanned_out(store.as_ref(), 2).await;
    store
        .apply(
            id,
            &Transition::ClaimPart {
                part: 0,
                lease: lease("a", 1_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    conflict(
        store
            .apply(
                id,
                &Transition::ExtendPartLease {
                    part: 0,
                    lease: lease("b", 60_000),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    conflict(
        store
            .apply(
                id,
                &Transition::ExtendPartLease {
                    part: 1,
                    lease: lease("a", 60_000),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    let extended = store
        .apply(
            id,
            &Transition::ExtendPartLease {
                part: 0,
                lease: lease("a", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let parts = extended.parts.unwrap();
    assert_eq!(parts.leases[&0].token, "a");
    assert!(parts.leases[&0].until_epoch_ms > now() + 30_000);
    assert_eq!(parts.attempts[&0], 1);
    conflict(
        store
            .apply(
                id,
                &Transition::ClaimPart {
                    part: 0,
                    lease: lease("b", 60_000),
                    now_epoch_ms: now() + 2_000,
                },
            )
            .await,
    );
}

/// Property: fail records the error.
pub async fn fail_records_the_error(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let error = ErrorInfo::new("inference_failed", "broken");
    let failed = store
        .apply(id, &Transition::fail("w1".into(), error.clone(), now()))
        .await
        .unwrap();
    assert_eq!(
        (failed.status, failed.error),
        (JobStatus::Failed, Some(error))
    );
}

/// Property: release returns the job to the queue.
pub async fn release_returns_the_job_to_the_queue(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let released_at = now();
    let released = store
        .apply(
            id,
            &Transition::Release {
                token: "w1".into(),
                now_epoch_ms: released_at,
            },
        )
        .await
        .unwrap();
    assert_eq!(released.status, JobStatus::Queued);
    assert!(released.lease_owner.is_none());
    assert_eq!(released.attempts, 1);
    assert_eq!(released.requeued_at_epoch_ms, Some(released_at));
    // In the sweep's index from the end of its longest backoff, not before.
    let backoff = millis(offpath_core::index::MAX_RETRY_DELAY);
    assert!(
        !due_ids(store.as_ref(), released_at + backoff)
            .await
            .contains(&id)
    );
    assert!(
        due_ids(store.as_ref(), released_at + backoff + 1)
            .await
            .contains(&id)
    );
    let again = store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w2", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    assert_eq!(again.attempts, 2);
}

fn millis(duration: std::time::Duration) -> u64 {
    duration.as_millis() as u64
}

/// Property: a job given back after a claim is due within the retry delay even when a
/// repair re-sent its message in the same millisecond: the requeue is the later write.
/// (The state machine's property test found this: re-send, claim, release, one clock.)
pub async fn a_release_forgets_an_earlier_resend(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    let at = now();
    store
        .apply(id, &Transition::RecordResend { now_epoch_ms: at })
        .await
        .unwrap();
    let claim = Transition::Claim {
        lease: lease("w1", 60_000),
        now_epoch_ms: at,
    };
    store.apply(id, &claim).await.unwrap();
    let release = Transition::Release {
        token: "w1".into(),
        now_epoch_ms: at,
    };
    let released = store.apply(id, &release).await.unwrap();
    let retry = millis(offpath_core::index::MAX_RETRY_DELAY);
    assert_eq!(released.resent_at_epoch_ms, None);
    assert_eq!(released.due_at(), Some(at + retry));
    assert!(!due_ids(store.as_ref(), at + retry).await.contains(&id));
    assert!(due_ids(store.as_ref(), at + retry + 1).await.contains(&id));
}

/// Property: a re-send by a repair is recorded on a queued job only, and keeps the job
/// out of the sweep's index while that message can still be in the queue.
pub async fn a_resend_is_recorded_on_queued_jobs_only(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    let at = now();
    let resent = store
        .apply(id, &Transition::RecordResend { now_epoch_ms: at })
        .await
        .unwrap();
    assert_eq!(resent.resent_at_epoch_ms, Some(at));
    let retention = millis(offpath_core::index::RESEND_AFTER);
    assert!(!due_ids(store.as_ref(), at + retention).await.contains(&id));
    assert!(
        due_ids(store.as_ref(), at + retention + 1)
            .await
            .contains(&id)
    );
    store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    conflict(
        store
            .apply(
                id,
                &Transition::RecordResend {
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    assert!(matches!(
        store
            .apply(
                JobId::random(),
                &Transition::RecordResend {
                    now_epoch_ms: now()
                }
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

/// Property: cancel ends queued jobs and flags running ones.
pub async fn cancel_ends_queued_jobs_and_flags_running_ones(store: Arc<dyn JobStore>) {
    let queued = store.create(&new_job()).await.unwrap().id;
    let cancelled = cancel(store.as_ref(), queued, now()).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(
        conflict(cancel(store.as_ref(), queued, now()).await).status,
        JobStatus::Cancelled
    );

    let running = store.create(&new_job()).await.unwrap().id;
    store
        .apply(
            running,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let flagged = cancel(store.as_ref(), running, now()).await.unwrap();
    assert_eq!(
        (flagged.status, flagged.cancel_requested),
        (JobStatus::Running, true)
    );
    // The worker's success is refused; it ends the job cancelled instead.
    let current = conflict(
        store
            .apply(
                running,
                &Transition::complete("w1".into(), text(json!({})), now()),
            )
            .await,
    );
    assert!(current.cancel_requested);
    let ended = store
        .apply(running, &Transition::cancelled("w1".into(), now()))
        .await
        .unwrap();
    assert_eq!(ended.status, JobStatus::Cancelled);
    assert!(ended.output.is_none());
    assert!(matches!(
        cancel(store.as_ref(), JobId::random(), now()).await,
        Err(StoreError::NotFound)
    ));
}

/// Property: abandon fails only unheld jobs.
pub async fn abandon_fails_only_unheld_jobs(store: Arc<dyn JobStore>) {
    let error = ErrorInfo::new("dead_lettered", "gave up");
    let queued = store.create(&new_job()).await.unwrap().id;
    assert_eq!(
        store
            .apply(
                queued,
                &Transition::Abandon {
                    error: error.clone(),
                    now_epoch_ms: now()
                }
            )
            .await
            .unwrap()
            .status,
        JobStatus::Failed
    );

    let held = store.create(&new_job()).await.unwrap().id;
    store
        .apply(
            held,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    conflict(
        store
            .apply(
                held,
                &Transition::Abandon {
                    error: error.clone(),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    let failed = store
        .apply(
            held,
            &Transition::Abandon {
                error: error.clone(),
                now_epoch_ms: now() + 120_000,
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.error, Some(error));
}

/// Property: revive requeues only dead lettered jobs.
pub async fn revive_requeues_only_dead_lettered_jobs(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    conflict(revive(store.as_ref(), id, now()).await);
    store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let other = ErrorInfo::new("inference_failed", "bad input");
    store
        .apply(id, &Transition::fail("w1".into(), other.clone(), now()))
        .await
        .unwrap();
    conflict(revive(store.as_ref(), id, now()).await);

    let dead = store.create(&new_job()).await.unwrap().id;
    store
        .apply(
            dead,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let error = ErrorInfo::new("dead_lettered", "gave up");
    store
        .apply(dead, &Transition::fail("w1".into(), error.clone(), now()))
        .await
        .unwrap();
    let revived = revive(store.as_ref(), dead, now()).await.unwrap();
    assert_eq!((revived.status, revived.attempts), (JobStatus::Queued, 1));
    assert!(revived.error.is_none() && revived.finished_at_epoch_ms.is_none());
    let again = store
        .apply(
            dead,
            &Transition::Claim {
                lease: lease("w2", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    assert_eq!(again.attempts, 2);
}

/// Every job [`JobStore::due`] holds as due before `before`, page by page.
pub async fn due_ids(store: &dyn JobStore, before: u64) -> Vec<JobId> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.due(before, cursor.as_deref()).await.unwrap();
        ids.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return ids,
        }
    }
}

/// Property: the sweep's index holds unfinished jobs by when they may need repair (a
/// queued job from its creation, a running one from its lease's end) and no finished
/// job.
pub async fn due_holds_unfinished_jobs_by_when_they_may_need_repair(store: Arc<dyn JobStore>) {
    let queued = store.create(&new_job()).await.unwrap().id;
    let running = store.create(&new_job()).await.unwrap().id;
    store
        .apply(
            running,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let done = store.create(&new_job()).await.unwrap().id;
    cancel(store.as_ref(), done, now()).await.unwrap();
    let soon = due_ids(store.as_ref(), now() + 1_000).await;
    assert_eq!(soon, [queued], "the running job's lease has a minute left");
    let mut later = due_ids(store.as_ref(), now() + 120_000).await;
    later.sort();
    let mut want = vec![queued, running];
    want.sort();
    assert_eq!(later, want);
    assert!(
        due_ids(store.as_ref(), 1).await.is_empty(),
        "nothing due before 1970"
    );
    // A finished job leaves the index; a revived one comes back.
    store
        .apply(
            running,
            &Transition::complete("w1".into(), text(json!([])), now()),
        )
        .await
        .unwrap();
    assert_eq!(due_ids(store.as_ref(), now() + 120_000).await, [queued]);
    // A released job waits out its longest backoff: due from its release plus that.
    store
        .apply(
            queued,
            &Transition::Claim {
                lease: lease("w2", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let released = now();
    store
        .apply(
            queued,
            &Transition::Release {
                token: "w2".into(),
                now_epoch_ms: released,
            },
        )
        .await
        .unwrap();
    let backoff = millis(offpath_core::index::MAX_RETRY_DELAY);
    assert_eq!(
        due_ids(store.as_ref(), released + backoff + 1).await,
        [queued]
    );
    assert!(due_ids(store.as_ref(), released + backoff).await.is_empty());
}

/// Property: an owner's jobs list newest first, page by page, each once; filters by
/// status and task work; another owner's jobs never appear.
pub async fn listing_pages_newest_first_with_filters(store: Arc<dyn JobStore>) {
    let base = now();
    let mut made = Vec::new();
    for i in 0..7u64 {
        let job = NewJob {
            id: JobId::random(),
            owner: "lister".into(),
            task: if i % 3 == 0 { "rank" } else { "embed" }.parse().unwrap(),
            created_at_epoch_ms: base + i,
            ..new_job()
        };
        made.push(store.create(&job).await.unwrap().id);
    }
    let other = NewJob {
        id: JobId::random(),
        owner: "someone-else".into(),
        created_at_epoch_ms: base + 3,
        ..new_job()
    };
    store.create(&other).await.unwrap();
    store
        .apply(
            made[1],
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    store
        .apply(
            made[4],
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();

    let list = |status, task: Option<TaskName>, limit| {
        let store = Arc::clone(&store);
        async move {
            let mut pages = Vec::new();
            let mut after = None;
            loop {
                let query = ListQuery {
                    owner: "lister",
                    status,
                    task: task.as_ref(),
                    limit,
                    after,
                };
                let page = store.list(&query).await.unwrap();
                assert!(page.jobs.len() <= limit);
                pages.push(page.jobs.iter().map(|j| j.id).collect::<Vec<_>>());
                match page.next {
                    Some(next) => after = Some(next),
                    None => return pages,
                }
            }
        }
    };
    let newest_first: Vec<JobId> = made.iter().rev().copied().collect();
    let pages = list(None, None, 3).await;
    assert_eq!(
        pages.len(),
        3,
        "3 + 3 + 1, and no empty page after: {pages:?}"
    );
    assert_eq!(pages.concat(), newest_first);
    assert_eq!(
        list(None, None, 7).await,
        std::slice::from_ref(&newest_first)
    );
    let running = list(Some(JobStatus::Running), None, 100).await.concat();
    assert_eq!(running, [made[4], made[1]]);
    let ranks = list(None, Some("rank".parse().unwrap()), 2).await.concat();
    assert_eq!(ranks, [made[6], made[3], made[0]]);
    let none = ListQuery {
        owner: "nobody",
        status: None,
        task: None,
        limit: 10,
        after: None,
    };
    assert_eq!(store.list(&none).await.unwrap(), JobPage::default());
}

/// Property: admission counts an owner's unfinished jobs, and only theirs.
pub async fn unfinished_estimate_counts_an_owners_unfinished_jobs(store: Arc<dyn JobStore>) {
    let owned = || NewJob {
        id: JobId::random(),
        owner: "counted".into(),
        ..new_job()
    };
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(store.create(&owned()).await.unwrap().id);
    }
    cancel(store.as_ref(), ids[0], now()).await.unwrap();
    store
        .apply(
            ids[1],
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    store
        .apply(
            ids[1],
            &Transition::fail("w1".into(), ErrorInfo::new("x", "y"), now()),
        )
        .await
        .unwrap();
    let sample = JobId::random();
    let estimate = |owner: &'static str, at_most| {
        let store = Arc::clone(&store);
        async move {
            store
                .unfinished_estimate(owner, sample, at_most)
                .await
                .unwrap()
        }
    };
    assert_eq!(estimate("counted", 100).await, 3);
    assert!(estimate("counted", 2).await > 2, "past a bound of 2");
    assert_eq!(estimate("nobody", 100).await, 0);
}

/// Property: delete unstarted removes only never claimed jobs.
pub async fn delete_unstarted_removes_only_never_claimed_jobs(store: Arc<dyn JobStore>) {
    let fresh = store.create(&new_job()).await.unwrap().id;
    store.apply(fresh, &Transition::Withdraw).await.unwrap();
    assert_eq!(store.get(fresh).await.unwrap(), None);

    let claimed = store.create(&new_job()).await.unwrap().id;
    store
        .apply(
            claimed,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    store
        .apply(
            claimed,
            &Transition::Release {
                token: "w1".into(),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        store.apply(claimed, &Transition::Withdraw).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.get(claimed).await.unwrap().is_some());
    store.ping().await.unwrap();
}

/// Property: a queue (visibility timeout 2 s, maxReceiveCount 3) delivers, hides
/// what is in flight, and deletes.
pub async fn queue_delivers_hides_and_deletes(queue: Arc<dyn JobQueue>) {
    let message = JobMessage::new(JobId::random());
    queue.send(&message, "owner-1").await.unwrap();
    let received = queue.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(received.len(), 1);
    let m = &received[0];
    assert_eq!(m.group.as_deref(), Some("owner-1"), "its message group");
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

/// Property (SQS fair queues, which moto does not model): a quiet group's messages
/// are delivered ahead of a noisy group's backlog. `fair` says whether the queue
/// should: without fairness the backlog goes first.
pub async fn a_quiet_group_overtakes_a_noisy_backlog(queue: Arc<dyn JobQueue>, fair: bool) {
    for _ in 0..30 {
        let message = JobMessage::new(JobId::random());
        queue.send(&message, "noisy").await.unwrap();
    }
    for _ in 0..3 {
        let message = JobMessage::new(JobId::random());
        queue.send(&message, "quiet").await.unwrap();
    }
    let first = queue.receive(10, Duration::from_secs(2)).await.unwrap();
    let quiet = first
        .iter()
        .filter(|m| m.group.as_deref() == Some("quiet"))
        .count();
    if fair {
        assert_eq!(
            quiet, 3,
            "all of the quiet group's messages in the first batch"
        );
        assert_eq!(
            first[0].group.as_deref(),
            Some("noisy"),
            "oldest first among equals"
        );
        assert_eq!(first[1].group.as_deref(), Some("quiet"));
    } else {
        assert_eq!(quiet, 0, "oldest first: the backlog's");
    }
}

/// Property: visibility can be changed.
pub async fn visibility_can_be_changed(queue: Arc<dyn JobQueue>) {
    queue
        .send(&JobMessage::new(JobId::random()), "owner-1")
        .await
        .unwrap();
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
    // Several at once (the heartbeat's way): twelve messages, two SQS requests.
    for _ in 0..12 {
        let message = JobMessage::new(JobId::random());
        queue.send(&message, "owner-1").await.unwrap();
    }
    let mut held = Vec::new();
    while held.len() < 12 {
        held.extend(queue.receive(10, Duration::from_secs(2)).await.unwrap());
    }
    let handles: Vec<&str> = held.iter().map(|m| m.receipt_handle.as_str()).collect();
    queue
        .change_visibility_all(&handles, Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
    queue
        .change_visibility_all(&handles, Duration::ZERO)
        .await
        .unwrap();
    let mut back = 0;
    for _ in 0..10 {
        back += queue
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap()
            .len();
        if back == 12 {
            break;
        }
    }
    assert_eq!(back, 12, "all visible again at once");
}

/// Property: messages move to the dead letter queue after max receives.
pub async fn messages_move_to_the_dead_letter_queue_after_max_receives(
    queue: Arc<dyn JobQueue>,
    dlq: Arc<dyn JobQueue>,
) {
    let message = JobMessage::new(JobId::random());
    queue.send(&message, "owner-1").await.unwrap();
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
    assert_eq!(dead[0].group.as_deref(), Some("owner-1"), "kept in the DLQ");
    assert_eq!(JobMessage::from_body(&dead[0].body).unwrap(), message);
}

/// A job claimed under `w1` and split into `parts` parts of 10 chunks each.
async fn fanned_out(store: &dyn JobStore, parts: u32) -> JobId {
    let id = store.create(&new_job()).await.unwrap().id;
    store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    store
        .apply(
            id,
            &Transition::FanOut {
                token: "w1".into(),
                parts,
                chunks: u64::from(parts) * 10,
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    id
}

/// Property: fan-out needs the job's lease and ends it.
pub async fn fan_out_needs_the_lease_and_ends_it(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    conflict(
        store
            .apply(
                id,
                &Transition::FanOut {
                    token: "w1".into(),
                    parts: 3,
                    chunks: 30,
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    conflict(
        store
            .apply(
                id,
                &Transition::FanOut {
                    token: "intruder".into(),
                    parts: 3,
                    chunks: 30,
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    let split = store
        .apply(
            id,
            &Transition::FanOut {
                token: "w1".into(),
                parts: 3,
                chunks: 30,
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    assert_eq!(split.status, JobStatus::Running);
    assert!(split.lease_owner.is_none() && split.lease_until_epoch_ms.is_none());
    let parts = split.parts.clone().expect("parts");
    assert_eq!(
        (parts.total, parts.chunks_total, parts.chunks_done),
        (3, 30, 0)
    );
    assert!(parts.settled.is_empty() && parts.leases.is_empty());
    let view = split.view();
    assert_eq!(view.progress.map(|p| (p.done, p.total)), Some((0, 30)));
    // Split once; nobody claims the job itself any more, even past the lease.
    conflict(
        store
            .apply(
                id,
                &Transition::FanOut {
                    token: "w1".into(),
                    parts: 3,
                    chunks: 30,
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    conflict(
        store
            .apply(
                id,
                &Transition::Claim {
                    lease: lease("w2", 60_000),
                    now_epoch_ms: now() + 600_000,
                },
            )
            .await,
    );
    assert_eq!(store.get(id).await.unwrap(), Some(split));
}

/// Property: a part is claimed by one worker at a time and settled once.
pub async fn a_part_is_claimed_by_one_and_settled_once(store: Arc<dyn JobStore>) {
    let id = fanned_out(store.as_ref(), 2).await;
    let claimed = store
        .apply(
            id,
            &Transition::ClaimPart {
                part: 0,
                lease: lease("a", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let parts = claimed.parts.unwrap();
    assert_eq!(parts.attempts[&0], 1);
    assert_eq!(parts.leases[&0].token, "a");
    conflict(
        store
            .apply(
                id,
                &Transition::ClaimPart {
                    part: 0,
                    lease: lease("b", 60_000),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    conflict(
        store
            .apply(
                id,
                &Transition::ClaimPart {
                    part: 2,
                    lease: lease("b", 60_000),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    let done = |token: &str| Settle::Done {
        token: token.into(),
        chunks: 10,
    };
    conflict(
        store
            .apply(
                id,
                &Transition::SettlePart {
                    part: 0,
                    settle: done("b"),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    conflict(
        store
            .apply(
                id,
                &Transition::ReleasePart {
                    part: 0,
                    token: "b".into(),
                },
            )
            .await,
    );
    // A lease that ran out is taken over, and the part's attempts count on.
    let later = now() + 120_000;
    let again = store
        .apply(
            id,
            &Transition::ClaimPart {
                part: 0,
                lease: Lease {
                    token: "b".into(),
                    until_epoch_ms: later + 60_000,
                },
                now_epoch_ms: later,
            },
        )
        .await
        .unwrap();
    assert_eq!(again.parts.unwrap().attempts[&0], 2);
    conflict(
        store
            .apply(
                id,
                &Transition::SettlePart {
                    part: 0,
                    settle: done("a"),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    let settled = store
        .apply(
            id,
            &Transition::SettlePart {
                part: 0,
                settle: done("b"),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let parts = settled.parts.unwrap();
    assert!(parts.settled.contains(&0) && !parts.leases.contains_key(&0));
    assert_eq!(parts.chunks_done, 10);
    assert!(!parts.all_settled());
    conflict(
        store
            .apply(
                id,
                &Transition::SettlePart {
                    part: 0,
                    settle: done("b"),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    conflict(
        store
            .apply(
                id,
                &Transition::ClaimPart {
                    part: 0,
                    lease: lease("c", 60_000),
                    now_epoch_ms: later + 600_000,
                },
            )
            .await,
    );
    // Released, a part is claimable again at once.
    store
        .apply(
            id,
            &Transition::ClaimPart {
                part: 1,
                lease: lease("c", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let released = store
        .apply(
            id,
            &Transition::ReleasePart {
                part: 1,
                token: "c".into(),
            },
        )
        .await
        .unwrap();
    assert!(!released.parts.unwrap().leases.contains_key(&1));
    store
        .apply(
            id,
            &Transition::ClaimPart {
                part: 1,
                lease: lease("d", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
}

/// Property: racing claims of one part have one winner.
pub async fn racing_part_claims_have_one_winner(store: Arc<dyn JobStore>) {
    let id = fanned_out(store.as_ref(), 1).await;
    let claims: Vec<Transition> = (0..20)
        .map(|i| Transition::ClaimPart {
            part: 0,
            lease: lease(&format!("w{i}"), 60_000),
            now_epoch_ms: now(),
        })
        .collect();
    let results = join_all(claims.iter().map(|claim| store.apply(id, claim))).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    let job = store.get(id).await.unwrap().unwrap();
    assert_eq!(job.parts.unwrap().attempts[&0], 1);
}

/// Property: after a cancel, parts are not claimed, and parts nobody holds are skipped.
pub async fn cancel_lets_unheld_parts_be_skipped(store: Arc<dyn JobStore>) {
    let id = fanned_out(store.as_ref(), 3).await;
    store
        .apply(
            id,
            &Transition::ClaimPart {
                part: 0,
                lease: lease("a", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let flagged = cancel(store.as_ref(), id, now()).await.unwrap();
    assert!(flagged.cancel_requested && flagged.status == JobStatus::Running);
    conflict(
        store
            .apply(
                id,
                &Transition::ClaimPart {
                    part: 1,
                    lease: lease("b", 60_000),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    conflict(
        store
            .apply(
                id,
                &Transition::SettlePart {
                    part: 0,
                    settle: Settle::Skipped,
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    store
        .apply(
            id,
            &Transition::SettlePart {
                part: 1,
                settle: Settle::Skipped,
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    store
        .apply(
            id,
            &Transition::SettlePart {
                part: 2,
                settle: Settle::Skipped,
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let last = store
        .apply(
            id,
            &Transition::SettlePart {
                part: 0,
                settle: Settle::Done {
                    token: "a".into(),
                    chunks: 10,
                },
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    assert!(last.parts.as_ref().unwrap().all_settled());
    conflict(
        store
            .apply(
                id,
                &Transition::FinishParts {
                    end: End::Succeeded(text(json!({}))),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    let cancelled = store
        .apply(
            id,
            &Transition::FinishParts {
                end: End::Cancelled,
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
}

/// Property: a job that runs in parts ends only once every part is settled, and once.
pub async fn parts_end_the_job_only_once_all_are_settled(store: Arc<dyn JobStore>) {
    let id = fanned_out(store.as_ref(), 2).await;
    let output = text(json!({"chunks": 20}));
    for part in 0..2 {
        conflict(
            store
                .apply(
                    id,
                    &Transition::FinishParts {
                        end: End::Succeeded(output.clone()),
                        now_epoch_ms: now(),
                    },
                )
                .await,
        );
        let token = format!("w{part}");
        store
            .apply(
                id,
                &Transition::ClaimPart {
                    part,
                    lease: lease(&token, 60_000),
                    now_epoch_ms: now(),
                },
            )
            .await
            .unwrap();
        let settle = Settle::Done {
            token: token.clone(),
            chunks: 10,
        };
        store
            .apply(
                id,
                &Transition::SettlePart {
                    part,
                    settle,
                    now_epoch_ms: now(),
                },
            )
            .await
            .unwrap();
    }
    let done = store
        .apply(
            id,
            &Transition::FinishParts {
                end: End::Succeeded(output.clone()),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.output.clone()),
        (JobStatus::Succeeded, Some(output.clone()))
    );
    assert_eq!(
        done.view().progress.map(|p| (p.done, p.total)),
        Some((20, 20))
    );
    conflict(
        store
            .apply(
                id,
                &Transition::FinishParts {
                    end: End::Cancelled,
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
    conflict(revive(store.as_ref(), id, now()).await);
}

/// Property: a dead part fails the job once all are settled; a revive puts the job back
/// to running with only its dead parts unsettled, their attempts afresh.
pub async fn dead_parts_fail_the_job_and_revive_unsettles_them(store: Arc<dyn JobStore>) {
    let id = fanned_out(store.as_ref(), 3).await;
    store
        .apply(
            id,
            &Transition::ClaimPart {
                part: 0,
                lease: lease("a", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    store
        .apply(
            id,
            &Transition::SettlePart {
                part: 0,
                settle: Settle::Done {
                    token: "a".into(),
                    chunks: 10,
                },
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    store
        .apply(
            id,
            &Transition::ClaimPart {
                part: 1,
                lease: lease("b", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let dead = Settle::Dead {
        token: Some("b".into()),
        error: "part 1 of 3 gave up".into(),
    };
    store
        .apply(
            id,
            &Transition::SettlePart {
                part: 1,
                settle: dead,
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    // A part whose worker died on its last attempt is settled dead by nobody.
    store
        .apply(
            id,
            &Transition::ClaimPart {
                part: 2,
                lease: lease("c", -1),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let unheld = Settle::Dead {
        token: None,
        error: "part 2 of 3: its worker stopped".into(),
    };
    let all = store
        .apply(
            id,
            &Transition::SettlePart {
                part: 2,
                settle: unheld,
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let parts = all.parts.clone().unwrap();
    assert!(parts.all_settled());
    assert_eq!(parts.dead.len(), 2);
    let error = ErrorInfo::new(
        "dead_lettered",
        "part 1 of 3 gave up; part 2 of 3: its worker stopped",
    );
    let failed = store
        .apply(
            id,
            &Transition::FinishParts {
                end: End::Failed(error.clone()),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (failed.status, failed.error),
        (JobStatus::Failed, Some(error))
    );
    let revived = revive(store.as_ref(), id, now()).await.unwrap();
    assert_eq!(revived.status, JobStatus::Running);
    assert!(revived.error.is_none() && revived.finished_at_epoch_ms.is_none());
    let parts = revived.parts.unwrap();
    assert_eq!(parts.settled.iter().copied().collect::<Vec<_>>(), [0]);
    assert!(parts.dead.is_empty());
    assert_eq!(
        (parts.attempts.get(&1), parts.attempts.get(&0)),
        (None, Some(&1))
    );
    assert_eq!(parts.chunks_done, 10);
    let again = store
        .apply(
            id,
            &Transition::ClaimPart {
                part: 1,
                lease: lease("d", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    assert_eq!(again.parts.unwrap().attempts[&1], 1);
    conflict(
        store
            .apply(
                id,
                &Transition::ClaimPart {
                    part: 0,
                    lease: lease("e", 60_000),
                    now_epoch_ms: now(),
                },
            )
            .await,
    );
}

/// A key no other test uses.
/// A job whose webhook subscribes to `events`.
fn subscribed(events: &[EventKind]) -> NewJob {
    NewJob {
        webhook: Some(Webhook::new(
            "https://hooks.example.com/offpath",
            events.iter().copied().collect(),
        )),
        ..new_job()
    }
}

fn unsent(job: &Job) -> Vec<EventKind> {
    job.webhook
        .as_ref()
        .map_or_else(Vec::new, |w| w.unsent.iter().copied().collect())
}

/// Property: the outbox holds the subscribed state events until they are marked sent
/// (conditional on the finish time as read), and the sweep's listing finds terminal
/// jobs with events left.
pub async fn the_outbox_empties_as_events_are_sent(store: Arc<dyn JobStore>) {
    let all = [
        EventKind::Started,
        EventKind::Progress,
        EventKind::Completed,
    ];
    let created = store.create(&subscribed(&all)).await.unwrap();
    let id = created.id;
    assert_eq!(unsent(&created), [EventKind::Started, EventKind::Completed]);
    assert_eq!(created.webhook.as_ref().unwrap().events, all.into());
    let claimed = store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    assert_eq!(claimed.due_events()[0].kind, EventType::Started);
    let sent = store
        .apply(
            id,
            &Transition::events_sent(&claimed, [EventKind::Started].into()),
        )
        .await
        .unwrap();
    assert_eq!(unsent(&sent), [EventKind::Completed]);
    let done = store
        .apply(
            id,
            &Transition::complete("w1".into(), text(json!([])), now()),
        )
        .await
        .unwrap();
    assert_eq!(done.due_events()[0].kind, EventType::Succeeded);
    assert!(due_ids(store.as_ref(), now() + 1).await.contains(&id));
    // Marked against a finish time that is not the job's: refused.
    conflict(
        store
            .apply(
                id,
                &Transition::events_sent(&sent, [EventKind::Completed].into()),
            )
            .await,
    );
    let sent = store
        .apply(
            id,
            &Transition::events_sent(&done, [EventKind::Completed].into()),
        )
        .await
        .unwrap();
    assert!(unsent(&sent).is_empty() && !sent.has_unsent_events());
    assert!(
        store
            .get(id)
            .await
            .unwrap()
            .unwrap()
            .due_events()
            .is_empty()
    );
    assert!(!due_ids(store.as_ref(), now() + 1).await.contains(&id));
}

/// Property: a revived job will end again, so its completion event is due again.
pub async fn revive_puts_the_completion_event_back(store: Arc<dyn JobStore>) {
    let id = store
        .create(&subscribed(&[EventKind::Completed]))
        .await
        .unwrap()
        .id;
    store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let error = ErrorInfo::new("dead_lettered", "gave up");
    let failed = store
        .apply(id, &Transition::fail("w1".into(), error.clone(), now()))
        .await
        .unwrap();
    store
        .apply(
            id,
            &Transition::events_sent(&failed, [EventKind::Completed].into()),
        )
        .await
        .unwrap();
    let revived = revive(store.as_ref(), id, now()).await.unwrap();
    assert_eq!(unsent(&revived), [EventKind::Completed]);
    // A marking made before the revive, arriving after it, does not erase the event.
    conflict(
        store
            .apply(
                id,
                &Transition::events_sent(&failed, [EventKind::Completed].into()),
            )
            .await,
    );
}

/// Property: an outbox that no event can follow empties for good: a webhook without
/// the completion event leaves the sweep's indexes once its start is sent, and its
/// job, finished, is in none.
pub async fn an_outbox_empties_when_no_event_can_follow(store: Arc<dyn JobStore>) {
    let id = store
        .create(&subscribed(&[EventKind::Started, EventKind::Progress]))
        .await
        .unwrap()
        .id;
    let claimed = store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let sent = store
        .apply(
            id,
            &Transition::events_sent(&claimed, [EventKind::Started].into()),
        )
        .await
        .unwrap();
    assert!(!sent.has_unsent_events());
    store
        .apply(
            id,
            &Transition::complete("w1".into(), text(json!([])), now()),
        )
        .await
        .unwrap();
    assert!(
        !due_ids(store.as_ref(), u64::MAX).await.contains(&id),
        "a finished job with an empty outbox is in no index"
    );
}

/// Property: progress events of a running job are at least the gap apart, and only
/// where the webhook asked for them.
pub async fn progress_events_are_one_a_gap_apart(store: Arc<dyn JobStore>) {
    let id = store
        .create(&subscribed(&[EventKind::Progress]))
        .await
        .unwrap()
        .id;
    let t = now();
    conflict(
        store
            .apply(
                id,
                &Transition::ProgressEvent {
                    now_epoch_ms: t,
                    min_gap_ms: 1000,
                },
            )
            .await,
    ); // queued
    store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: t,
            },
        )
        .await
        .unwrap();
    let first = store
        .apply(
            id,
            &Transition::ProgressEvent {
                now_epoch_ms: t,
                min_gap_ms: 1000,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.webhook.unwrap().progress_at_epoch_ms, Some(t));
    conflict(
        store
            .apply(
                id,
                &Transition::ProgressEvent {
                    now_epoch_ms: t + 999,
                    min_gap_ms: 1000,
                },
            )
            .await,
    );
    store
        .apply(
            id,
            &Transition::ProgressEvent {
                now_epoch_ms: t + 1000,
                min_gap_ms: 1000,
            },
        )
        .await
        .unwrap();
    let quiet = store
        .create(&subscribed(&[EventKind::Completed]))
        .await
        .unwrap()
        .id;
    store
        .apply(
            quiet,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: t,
            },
        )
        .await
        .unwrap();
    conflict(
        store
            .apply(
                quiet,
                &Transition::ProgressEvent {
                    now_epoch_ms: t,
                    min_gap_ms: 1000,
                },
            )
            .await,
    );
}

/// Property: after a `410 Gone` the webhook sends nothing more, revived or not.
pub async fn a_gone_webhook_stops_for_good(store: Arc<dyn JobStore>) {
    let plain = store.create(&new_job()).await.unwrap().id;
    conflict(store.apply(plain, &Transition::WebhookGone).await);
    let id = store
        .create(&subscribed(&[EventKind::Started, EventKind::Completed]))
        .await
        .unwrap()
        .id;
    store
        .apply(
            id,
            &Transition::Claim {
                lease: lease("w1", 60_000),
                now_epoch_ms: now(),
            },
        )
        .await
        .unwrap();
    let gone = store.apply(id, &Transition::WebhookGone).await.unwrap();
    assert!(gone.webhook.as_ref().unwrap().gone && unsent(&gone).is_empty());
    assert!(gone.due_events().is_empty());
    let error = ErrorInfo::new("dead_lettered", "gave up");
    store
        .apply(id, &Transition::fail("w1".into(), error.clone(), now()))
        .await
        .unwrap();
    let revived = revive(store.as_ref(), id, now()).await.unwrap();
    assert!(unsent(&revived).is_empty());
}

/// Property: a waiter gets the job once it ends, or as it is at its deadline.
pub async fn waiters_see_the_end_or_their_deadline(store: Arc<dyn JobStore>) {
    let id = store.create(&new_job()).await.unwrap().id;
    let waited = store
        .wait_terminal(id, Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(waited.status, JobStatus::Queued);
    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.wait_terminal(id, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel(store.as_ref(), id, now()).await.unwrap();
    let ended = waiter.await.unwrap().unwrap().unwrap();
    assert_eq!(ended.status, JobStatus::Cancelled);
    assert!(
        store
            .wait_terminal(JobId::random(), Duration::from_secs(1))
            .await
            .unwrap()
            .is_none()
    );
}

fn blob_key(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4())
}

/// Property: blobs round-trip byte for byte (empty ones too), and a put replaces.
pub async fn blobs_round_trip_and_replace(blobs: Arc<dyn BlobStore>) {
    let key = blob_key("parts/conformance/");
    let bytes: Vec<u8> = (0..=255).cycle().take(70_000).collect();
    assert_eq!(blobs.size(&key).await.unwrap(), None);
    assert!(matches!(blobs.get(&key).await, Err(BlobError::NotFound(_))));
    blobs.put(&key, bytes.clone()).await.unwrap();
    assert_eq!(blobs.get(&key).await.unwrap(), bytes);
    assert_eq!(blobs.size(&key).await.unwrap(), Some(70_000));
    blobs.put(&key, b"shorter".to_vec()).await.unwrap();
    assert_eq!(blobs.get(&key).await.unwrap(), b"shorter");
    let empty = blob_key("parts/conformance/");
    blobs.put(&empty, Vec::new()).await.unwrap();
    assert_eq!(blobs.get(&empty).await.unwrap(), b"");
    assert_eq!(blobs.size(&empty).await.unwrap(), Some(0));
}

/// Property: a range reads its slice, clamped to the blob's end.
pub async fn ranges_read_slices_clamped_to_the_end(blobs: Arc<dyn BlobStore>) {
    let key = blob_key("uploads/conformance/");
    blobs.put(&key, b"0123456789".to_vec()).await.unwrap();
    assert_eq!(blobs.get_range(&key, 2..5).await.unwrap(), b"234");
    assert_eq!(blobs.get_range(&key, 8..100).await.unwrap(), b"89");
    assert_eq!(blobs.get_range(&key, 10..20).await.unwrap(), b"");
    assert_eq!(blobs.get_range(&key, 3..3).await.unwrap(), b"");
    assert!(matches!(
        blobs
            .get_range(&blob_key("uploads/conformance/"), 0..1)
            .await,
        Err(BlobError::NotFound(_))
    ));
}

/// Property: concat writes its parts one after another, and fails on a missing part.
pub async fn concat_appends_parts_in_order(blobs: Arc<dyn BlobStore>) {
    let parts: Vec<String> = (0..3).map(|_| blob_key("parts/conformance/")).collect();
    for (i, part) in parts.iter().enumerate() {
        blobs
            .put(part, format!("line {i}\n").repeat(i + 1).into_bytes())
            .await
            .unwrap();
    }
    let result = blob_key("results/conformance-");
    let written = blobs.concat(&result, &parts).await.unwrap();
    let want = "line 0\nline 1\nline 1\nline 2\nline 2\nline 2\n";
    assert_eq!(written, want.len() as u64);
    assert_eq!(blobs.get(&result).await.unwrap(), want.as_bytes());
    let missing = vec![parts[0].clone(), blob_key("parts/conformance/")];
    let other = blob_key("results/conformance-");
    assert!(matches!(
        blobs.concat(&other, &missing).await,
        Err(BlobError::NotFound(_))
    ));
    assert_eq!(blobs.size(&other).await.unwrap(), None);
}

/// Property: deleting a prefix deletes the blobs under it and only those.
pub async fn delete_prefix_deletes_only_its_prefix(blobs: Arc<dyn BlobStore>) {
    let prefix = blob_key("parts/");
    let keep = blob_key("parts/");
    for i in 0..3 {
        blobs
            .put(&format!("{prefix}/{i}.jsonl"), vec![1])
            .await
            .unwrap();
    }
    blobs
        .put(&format!("{keep}/0.jsonl"), vec![2])
        .await
        .unwrap();
    assert_eq!(blobs.delete_prefix(&format!("{prefix}/")).await.unwrap(), 3);
    assert_eq!(
        blobs.size(&format!("{prefix}/0.jsonl")).await.unwrap(),
        None
    );
    assert_eq!(
        blobs.get(&format!("{keep}/0.jsonl")).await.unwrap(),
        vec![2]
    );
    assert_eq!(blobs.delete_prefix(&format!("{prefix}/")).await.unwrap(), 0);
}

/// Property: batches' totals add up in their minute, and a read returns the minutes of
/// its window that had activity, oldest first.
pub async fn activity_adds_up_by_minute(store: Arc<dyn JobStore>) {
    let minute = offpath_core::activity::minute_of(now());
    let batch = |succeeded, failed, claimed, wait| Activity {
        succeeded,
        failed,
        dead_lettered: failed,
        claimed,
        queue_wait_ms: wait,
    };
    store
        .add_activity(minute, &batch(2, 0, 2, 30))
        .await
        .unwrap();
    store
        .add_activity(minute, &batch(1, 1, 2, 12))
        .await
        .unwrap();
    let earlier = minute - 2 * MINUTE_MS;
    store
        .add_activity(earlier, &batch(0, 1, 1, 5))
        .await
        .unwrap();
    let read = store.activity(minute, 3).await.unwrap();
    let minutes: Vec<u64> = read.iter().map(|m| m.minute_epoch_ms).collect();
    assert_eq!(
        minutes,
        [earlier, minute],
        "oldest first, quiet minutes left out"
    );
    assert_eq!(read[1].activity, batch(3, 1, 4, 42));
    assert_eq!(read[0].activity, batch(0, 1, 1, 5));
    assert_eq!(
        store.activity(minute, 2).await.unwrap().len(),
        1,
        "the window"
    );
    assert!(
        store
            .activity(minute - MINUTE_MS, 1)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Property (both queue adapters): dead letters are read with their job and group,
/// released, moved back one by one to the jobs queue (the group kept), and purged.
pub async fn dead_letters_are_read_moved_back_and_purged(
    queue: Arc<dyn JobQueue>,
    dlq: Arc<dyn JobQueue>,
) {
    let (first, second) = (JobId::random(), JobId::random());
    dlq.send(&JobMessage::new(first), "owner-1").await.unwrap();
    dlq.send(&JobMessage::new(second), "owner-2").await.unwrap();
    let letters = DeadLetters::new(dlq.clone(), queue.clone());
    let taken = letters.take(10).await.unwrap();
    let mut jobs: Vec<JobId> = taken.iter().filter_map(|l| l.job_id()).collect();
    jobs.sort();
    let mut want = vec![first, second];
    want.sort();
    assert_eq!(jobs, want);
    assert!(
        dlq.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "held while read"
    );
    letters.release(&taken).await.unwrap();
    let taken = letters.take(10).await.unwrap();
    assert_eq!(taken.len(), 2, "released at once");
    let letter = taken.iter().find(|l| l.job_id() == Some(first)).unwrap();
    assert!(letters.move_back(letter).await.unwrap());
    letters
        .release(
            &taken
                .iter()
                .filter(|l| l.job_id() != Some(first))
                .cloned()
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let moved = queue.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(JobMessage::from_body(&moved[0].body).unwrap().job_id, first);
    assert_eq!(
        moved[0].group.as_deref(),
        Some("owner-1"),
        "the group is kept"
    );
    letters.purge().await.unwrap();
    assert!(letters.take(10).await.unwrap().is_empty(), "purged");
}
