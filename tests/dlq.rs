//! A poisoned job reaches the dead-letter queue over real SQS (moto), is seen by
//! `offpath dlq list` and by the AWS CLI, and completes after `offpath dlq redrive`
//! once its cause is fixed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use offpath_api::{AppState, Auth, app};
use offpath_core::{DeadLetters, JobId, JobStatus, QueueSettings, Selection, Transition};
use offpath_testkit::{Backend, Stack, TestModel, drained, fast_queue};
use offpath_worker::Worker;
use offpath_worker::poller::process_batch;
use tower::ServiceExt;

async fn stack(settings: QueueSettings) -> Stack {
    Stack::moto(settings).await
}

/// `count` jobs that failed their last attempt, their messages in the dead-letter queue
/// (as the worker and SQS leave them).
async fn dead_lettered(stack: &Stack, count: usize) -> Vec<JobId> {
    let store = stack.ports.store.as_ref();
    let mut ids = Vec::new();
    for i in 0..count {
        let id = offpath_testkit::create(
            store,
            "embed",
            serde_json::json!({"texts": [format!("dead {i}")]}),
        )
        .await;
        let lease = offpath_core::Lease {
            token: "w".into(),
            until_epoch_ms: u64::MAX / 2,
        };
        store
            .apply(
                id,
                &Transition::Claim {
                    lease: lease.clone(),
                    now_epoch_ms: 1,
                },
            )
            .await
            .unwrap();
        let error = offpath_core::ErrorInfo::new(offpath_core::DEAD_LETTERED, "gave up");
        store
            .apply(id, &Transition::fail("w".into(), error, 2))
            .await
            .unwrap();
        let message = offpath_core::JobMessage::new(id);
        stack.dlq().send(&message, "local").await.unwrap();
        ids.push(id);
    }
    ids
}

/// The stack's dead-letter queue for redrives.
fn dead_letter_queue(stack: &Stack) -> DeadLetters {
    DeadLetters::new(Arc::clone(stack.dlq()), Arc::clone(&stack.ports.queue))
}

/// Job ids named by the messages a queue holds (read, then made visible again).
async fn messages_of(queue: &dyn offpath_core::JobQueue) -> Vec<JobId> {
    let messages = queue.receive(10, Duration::from_secs(1)).await.unwrap();
    for m in &messages {
        queue
            .change_visibility(&m.receipt_handle, Duration::ZERO)
            .await
            .unwrap();
    }
    messages
        .iter()
        .map(|m| offpath_core::JobMessage::from_body(&m.body).unwrap().job_id)
        .collect()
}

/// Refuses the second revive, as a store outage in the middle of a redrive would.
#[derive(Default)]
struct SecondReviveFails(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl offpath_testkit::Hooks for SecondReviveFails {
    async fn before(&self, call: offpath_testkit::Call) -> Result<(), String> {
        if let offpath_testkit::Call::Apply(_, offpath_core::Step::Revive) = call
            && self.0.fetch_add(1, Ordering::SeqCst) == 1
        {
            return Err("the store is unavailable".into());
        }
        Ok(())
    }
}

/// A redrive stopped by a store outage strands nothing: every job it revived has its
/// message in the jobs queue, every other job is still dead-lettered with its message
/// in the DLQ. (Reviving every job first and moving messages after left the first job
/// revived with its message in the DLQ.) On both backends.
#[tokio::test]
async fn an_interrupted_redrive_strands_no_job() {
    for backend in Backend::ALL {
        let stack = Stack::new(backend, fast_queue()).await;
        let ids = dead_lettered(&stack, 3).await;
        let store = offpath_testkit::Hooked::store(
            stack.ports.store.clone(),
            Arc::new(SecondReviveFails::default()),
        );
        let stopped = dead_letter_queue(&stack)
            .redrive_jobs(store.as_ref(), Selection::All, 10)
            .await
            .unwrap_err();
        assert_eq!(stopped.moved, 1, "{}: {stopped}", backend.name());
        let queued = messages_of(stack.ports.queue.as_ref()).await;
        let dead = messages_of(stack.dlq().as_ref()).await;
        assert_eq!((queued.len(), dead.len()), (1, 2), "{}", backend.name());
        for id in ids {
            let job = stack.ports.store.get(id).await.unwrap().unwrap();
            let revived = job.status == JobStatus::Queued;
            assert_eq!(revived, queued.contains(&id), "job {id} is {}", job.status);
            assert_eq!(!revived, dead.contains(&id));
        }
    }
}

/// `--all` reads past one batch: five dead-lettered jobs, read two at a time, are all
/// revived and moved, and the DLQ ends empty. On both backends.
#[tokio::test]
async fn redrive_all_reads_until_the_dlq_is_empty() {
    for backend in Backend::ALL {
        let stack = Stack::new(backend, fast_queue()).await;
        let ids = dead_lettered(&stack, 5).await;
        let done = dead_letter_queue(&stack)
            .redrive_jobs(stack.ports.store.as_ref(), Selection::All, 2)
            .await
            .unwrap();
        assert_eq!(done.moved.len(), 5, "{}", backend.name());
        assert!(drained(stack.dlq().as_ref()).await);
        let moved = messages_of(stack.ports.queue.as_ref()).await;
        assert_eq!(moved.len(), 5, "{}: in the jobs queue", backend.name());
        for id in ids {
            let job = stack.ports.store.get(id).await.unwrap().unwrap();
            assert_eq!((job.status, job.attempts), (JobStatus::Queued, 1));
        }
    }
}

fn worker(stack: &Stack, model: Arc<TestModel>) -> Worker {
    stack.worker(model, Duration::from_millis(100))
}

async fn submit(stack: &Stack, text: &str) -> JobId {
    let state = AppState::new(&stack.ports, Stack::tasks(), Auth::SingleTenant);
    let body = format!(r#"{{"task":"embed","input":{{"texts":["{text}"]}}}}"#);
    let request = axum::http::Request::post("/jobs")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    let response = app(state).oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let job: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    job["id"].as_str().unwrap().parse().unwrap()
}

/// Polls like the event source mapping until `done` holds (or 60 s pass).
async fn drive(stack: &Stack, worker: &Worker, done: impl AsyncFn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "condition not reached in 60 s");
        let queue = stack.ports.queue.as_ref();
        let messages = queue.receive(10, Duration::from_secs(1)).await.unwrap();
        if !messages.is_empty() {
            process_batch(worker, queue, messages).await;
        }
    }
}

fn aws_cli_sees(stack: &Stack, job: JobId) -> bool {
    let aws = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/aws");
    let output = std::process::Command::new(aws)
        .args([
            "sqs",
            "receive-message",
            "--queue-url",
            &stack.resources().dlq_url,
        ])
        .args([
            "--visibility-timeout",
            "0",
            "--wait-time-seconds",
            "1",
            "--max-number-of-messages",
            "10",
        ])
        .args([
            "--endpoint-url",
            &std::env::var("AWS_ENDPOINT_URL").unwrap(),
        ])
        .args(["--region", &std::env::var("AWS_REGION").unwrap()])
        .output()
        .expect("aws CLI from .venv (infra/venv.sh installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).contains(&job.to_string())
}

#[tokio::test]
async fn a_poisoned_job_is_dead_lettered_listed_redriven_and_completed() {
    let stack = stack(fast_queue()).await;
    let model = Arc::new(TestModel::default());
    let worker = worker(&stack, model.clone());
    let poisoned = submit(&stack, "poison in the model").await;
    let healthy = submit(&stack, "fine").await;

    let store = stack.ports.store.clone();
    drive(&stack, &worker, async || {
        let job = store.get(poisoned).await.unwrap().unwrap();
        job.status == JobStatus::Failed
    })
    .await;
    let job = stack.ports.store.get(poisoned).await.unwrap().unwrap();
    assert_eq!(job.error.as_ref().unwrap().code, "dead_lettered");
    assert_eq!(job.attempts, 3);
    assert_eq!(
        stack
            .ports
            .store
            .get(healthy)
            .await
            .unwrap()
            .unwrap()
            .status,
        JobStatus::Succeeded
    );

    // SQS moves the message on the receive after the third; then both tools see it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.dlq().depth().await.unwrap().visible == 0 {
        assert!(Instant::now() < deadline, "message not in the DLQ");
        assert!(drained(stack.ports.queue.as_ref()).await);
    }
    let listing = stack.offpath(&["dlq", "list"]);
    assert!(listing.contains(&poisoned.to_string()), "{listing}");
    assert!(listing.contains("dead_lettered"), "{listing}");
    assert!(listing.contains("1 message(s)"), "{listing}");
    assert!(
        aws_cli_sees(&stack, poisoned),
        "aws sqs receive-message sees the message"
    );

    // Fix the cause, redrive the job by its id, and it completes.
    model.cured.store(true, Ordering::SeqCst);
    let redrive = stack.offpath(&["dlq", "redrive", &poisoned.to_string()]);
    assert!(redrive.contains("1 message(s) moved"), "{redrive}");
    assert_eq!(
        stack
            .ports
            .store
            .get(poisoned)
            .await
            .unwrap()
            .unwrap()
            .status,
        JobStatus::Queued
    );
    drive(&stack, &worker, async || {
        store.get(poisoned).await.unwrap().unwrap().status == JobStatus::Succeeded
    })
    .await;
    let job = stack.ports.store.get(poisoned).await.unwrap().unwrap();
    assert_eq!(job.attempts, 4);
    assert!(job.error.is_none());
    assert_eq!(stack.dlq().depth().await.unwrap().visible, 0);
}

#[tokio::test]
async fn redrive_all_moves_each_job_and_purge_empties_the_queue() {
    let stack = stack(fast_queue()).await;
    let model = Arc::new(TestModel::default());
    let worker = worker(&stack, model.clone());
    let poisoned = submit(&stack, "poison again").await;
    let store = stack.ports.store.clone();
    drive(&stack, &worker, async || {
        store.get(poisoned).await.unwrap().unwrap().status == JobStatus::Failed
    })
    .await;
    while stack.dlq().depth().await.unwrap().visible < 1 {
        stack
            .ports
            .queue
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap();
    }

    model.cured.store(true, Ordering::SeqCst);
    let redrive = stack.offpath(&["dlq", "redrive", "--all"]);
    assert!(redrive.contains("1 message(s) moved"), "{redrive}");
    drive(&stack, &worker, async || {
        store.get(poisoned).await.unwrap().unwrap().status == JobStatus::Succeeded
    })
    .await;

    // Messages that are not job messages stay for inspection, then purge removes them.
    let sqs = aws_sdk_sqs::Client::new(&offpath_testkit::sdk().await);
    for body in ["garbage one", "garbage two"] {
        sqs.send_message()
            .queue_url(&stack.resources().dlq_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let redrive = stack.offpath(&["dlq", "redrive", "--all"]);
    assert_eq!(redrive.matches("not a job message").count(), 2, "{redrive}");
    assert!(redrive.contains("0 message(s) moved"), "{redrive}");
    assert_eq!(stack.dlq().depth().await.unwrap().visible, 2);
    stack.offpath(&["dlq", "purge", "--yes"]);
    assert!(drained(stack.dlq().as_ref()).await);

    // Nothing is stuck: without a grace every unfinished job would be due, and there is
    // none.
    let swept = stack.offpath(&["sweep", "--grace-seconds", "0"]);
    assert!(swept.contains("examined 0 due job(s)"), "{swept}");
}
