//! The worker handler, called directly with batches of messages (read from the real
//! Lambda SQS event in tests/fixtures, as the Lambda `main` reads it, or received from
//! the queue, as the local poller does), on DynamoDB and SQS (moto). Each test gets
//! its own table and queues.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use offpath_api::{AppState, Auth, app};
use offpath_core::{
    BatchReport, Clock, JobId, JobMessage, JobStatus, JsonText, Lease, MODEL_NAME, QueueMessage,
    Step, SystemClock, Transition,
};
use offpath_testkit::{Backend, CountTask, OWNER, Stack, TestModel, fast_queue, fixture_batch};
use offpath_worker::poller::{PollSettings, Pool};
use offpath_worker::{Worker, WorkerConfig, WorkerError};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn stack(settings: offpath_core::QueueSettings) -> Stack {
    Stack::moto(settings).await
}

fn worker(stack: &Stack, model: Arc<TestModel>) -> Worker {
    stack.worker(model, Duration::from_secs(6))
}

async fn create(stack: &Stack, task: &str, input: Value) -> JobId {
    offpath_testkit::create(stack.ports.store.as_ref(), task, input).await
}

/// An `embed` job of `text`, created and its message sent.
async fn queued(stack: &Stack, text: &str) -> JobId {
    let id = create(stack, "embed", embed_input(text)).await;
    let message = JobMessage::new(id);
    stack.ports.queue.send(&message, OWNER).await.unwrap();
    id
}

fn embed_input(text: &str) -> Value {
    json!({"texts": [text]})
}

/// What the jobs queue delivers within `wait`: the batch the local poller hands the
/// worker.
async fn received(stack: &Stack, wait: Duration) -> Vec<QueueMessage> {
    stack.ports.queue.receive(10, wait).await.unwrap()
}

fn body(id: JobId) -> String {
    JobMessage::new(id).to_body()
}

fn failures(report: &BatchReport) -> &[String] {
    &report.retry
}

async fn status(stack: &Stack, id: JobId) -> JobStatus {
    stack.ports.store.get(id).await.unwrap().unwrap().status
}

#[tokio::test]
async fn a_batch_runs_one_forward_pass_per_task_and_records_outputs() {
    let stack = stack(fast_queue()).await;
    let model = Arc::new(TestModel::default());
    let embeds = [
        create(&stack, "embed", embed_input("one")).await,
        create(&stack, "embed", embed_input("three")).await,
        create(&stack, "embed", embed_input("fives")).await,
    ];
    let rank = create(&stack, "rank", json!({"query": "q", "documents": ["d"]})).await;
    let records: Vec<_> = embeds
        .iter()
        .chain([&rank])
        .map(|id| (body(*id), 1))
        .collect();

    let response = worker(&stack, model.clone())
        .handle(&fixture_batch(&records))
        .await
        .unwrap();

    assert!(failures(&response).is_empty());
    assert_eq!(
        model.passes.load(Ordering::SeqCst),
        2,
        "one pass per task group"
    );
    let job = stack.ports.store.get(embeds[1]).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(
        job.output.as_ref().map(JsonText::to_value),
        Some(
            json!({"model": MODEL_NAME, "dimensions": 2, "encoding_format": "float",
                    "embeddings": [[5.0, 1.0]]})
        )
    );
    assert_eq!(job.attempts, 1);
    assert!(job.lease_owner.is_none());
    assert_eq!(status(&stack, rank).await, JobStatus::Succeeded);
}

#[tokio::test]
async fn bad_messages_fail_alone_and_head_for_the_dead_letter_queue() {
    let stack = stack(fast_queue()).await;
    let good = create(&stack, "embed", embed_input("fine")).await;
    let records = vec![
        ("not json".to_owned(), 1),
        (r#"{"v":1,"job_id":"nope"}"#.to_owned(), 1),
        (body(JobId::random()), 1),
        (body(good), 1),
    ];
    let response = worker(&stack, Arc::new(TestModel::default()))
        .handle(&fixture_batch(&records))
        .await
        .unwrap();
    assert_eq!(failures(&response), ["msg-0", "msg-1", "msg-2"]);
    assert_eq!(status(&stack, good).await, JobStatus::Succeeded);
}

#[tokio::test]
async fn a_batch_where_every_record_fails_is_an_invocation_error() {
    let stack = stack(fast_queue()).await;
    let result = worker(&stack, Arc::new(TestModel::default()))
        .handle(&fixture_batch(&[("garbage".into(), 1)]))
        .await;
    assert!(matches!(result, Err(WorkerError::AllFailed(1))));
}

#[tokio::test]
async fn duplicate_deliveries_of_a_finished_job_change_nothing() {
    let stack = stack(fast_queue()).await;
    let model = Arc::new(TestModel::default());
    let id = create(&stack, "embed", embed_input("once")).await;
    let worker = worker(&stack, model.clone());
    worker
        .handle(&fixture_batch(&[(body(id), 1)]))
        .await
        .unwrap();
    let finished = stack.ports.store.get(id).await.unwrap().unwrap();

    let again = vec![(body(id), 1), (body(id), 2), (body(id), 3)];
    let response = worker.handle(&fixture_batch(&again)).await.unwrap();

    assert!(
        failures(&response).is_empty(),
        "duplicates are acknowledged"
    );
    assert_eq!(stack.ports.store.get(id).await.unwrap().unwrap(), finished);
    assert_eq!(model.runs_of("once"), 1, "inference ran once");
}

#[tokio::test]
async fn permanent_errors_fail_the_job_and_acknowledge() {
    let stack = stack(fast_queue()).await;
    let rejected = create(&stack, "embed", embed_input("please reject")).await;
    let fine = create(&stack, "embed", embed_input("fine")).await;
    let response = worker(&stack, Arc::new(TestModel::default()))
        .handle(&fixture_batch(&[(body(rejected), 1), (body(fine), 1)]))
        .await
        .unwrap();
    assert!(failures(&response).is_empty());
    let job = stack.ports.store.get(rejected).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.unwrap().code, "inference_failed");
    assert_eq!(status(&stack, fine).await, JobStatus::Succeeded);
}

#[tokio::test]
async fn a_panicking_input_is_isolated_from_its_batch() {
    let stack = stack(fast_queue()).await;
    let poison = create(&stack, "embed", embed_input("poison now")).await;
    let fine = create(&stack, "embed", embed_input("fine")).await;
    let response = worker(&stack, Arc::new(TestModel::default()))
        .handle(&fixture_batch(&[(body(poison), 1), (body(fine), 1)]))
        .await
        .unwrap();
    assert_eq!(failures(&response), ["msg-0"]);
    assert_eq!(status(&stack, fine).await, JobStatus::Succeeded);
    let job = stack.ports.store.get(poison).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Queued, "released for another try");
    assert!(job.lease_owner.is_none());
}

#[tokio::test]
async fn the_last_receive_of_a_failing_job_marks_it_dead_lettered() {
    let stack = stack(fast_queue()).await;
    let poison = create(&stack, "embed", embed_input("poison again")).await;
    let response = worker(&stack, Arc::new(TestModel::default()))
        .handle(&fixture_batch(&[
            (body(poison), 3),
            (body(create(&stack, "embed", embed_input("ok")).await), 1),
        ]))
        .await
        .unwrap();
    assert_eq!(failures(&response), ["msg-0"], "SQS moves it to the DLQ");
    let job = stack.ports.store.get(poison).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert_eq!(error.code, "dead_lettered");
    // The client reads what kind of failure it was; the panic's text is only logged.
    assert_eq!(
        error.message,
        "gave up after 3 attempts; last error: inference crashed"
    );
}

/// A worker (3 receives) whose store runs `hooks` around every call.
fn hooked_worker(stack: &Stack, hooks: Arc<impl offpath_testkit::Hooks>) -> Worker {
    let store = offpath_testkit::Hooked::store(stack.ports.store.clone(), hooks);
    let config = WorkerConfig {
        max_receive_count: Some(3),
        ..WorkerConfig::default()
    };
    let model = Arc::new(TestModel::default());
    Worker::new(
        &stack.ports.with_store(store),
        model,
        Stack::tasks(),
        config,
    )
}

/// Refuses every claim as a DynamoDB outage would, with the SDK's kind of text.
struct ClaimsUnavailable;

/// What an SDK error can carry: an endpoint and an ARN.
const SDK_TEXT: &str = "dispatch failure: https://dynamodb.us-east-1.amazonaws.com \
     arn:aws:dynamodb:us-east-1:123456789012:table/offpath-jobs";

#[async_trait::async_trait]
impl offpath_testkit::Hooks for ClaimsUnavailable {
    async fn before(&self, call: offpath_testkit::Call) -> Result<(), String> {
        match call {
            offpath_testkit::Call::Apply(_, Step::Claim) => Err(SDK_TEXT.into()),
            _ => Ok(()),
        }
    }
}

/// A claim that fails on the last receive marks the job dead-lettered with a safe
/// message: no endpoint or ARN from the store's error reaches the client.
#[tokio::test]
async fn store_error_text_stays_out_of_the_jobs_error() {
    let stack = stack(fast_queue()).await;
    let id = create(&stack, "embed", embed_input("unlucky")).await;
    let worker = hooked_worker(&stack, Arc::new(ClaimsUnavailable));
    worker
        .handle(&fixture_batch(&[(body(id), 3)]))
        .await
        .unwrap_err();
    let job = stack.ports.store.get(id).await.unwrap().unwrap();
    let error = job.error.expect("dead-lettered");
    assert_eq!(error.code, "dead_lettered");
    assert!(
        !error.message.contains("arn:") && !error.message.contains("https://"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("the job store was unavailable"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn throttling_releases_the_job_and_backs_the_message_off() {
    let stack = stack(fast_queue()).await;
    let model = Arc::new(TestModel::default());
    model.throttled.store(1, Ordering::SeqCst);
    let id = queued(&stack, "slow down").await;
    let messages = received(&stack, Duration::from_secs(2)).await;
    assert_eq!(messages.len(), 1);

    let result = worker(&stack, model.clone()).handle(&messages).await;

    assert!(matches!(result, Err(WorkerError::AllFailed(1))));
    let job = stack.ports.store.get(id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Queued, 1));
    // The queue's visibility timeout is 2 s; the backoff set 3-6 s (base 6 s, equal
    // jitter), so the message is still hidden after the queue's own timeout.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let hidden = stack.ports.queue.receive(10, Duration::ZERO).await.unwrap();
    assert!(
        hidden.is_empty(),
        "backed off beyond the visibility timeout"
    );
    let back = received(&stack, Duration::from_secs(10)).await;
    assert_eq!(back.len(), 1, "the message comes back after the backoff");
    assert_eq!(back[0].receive_count, 2);
    worker(&stack, model).handle(&back).await.unwrap();
    let job = stack.ports.store.get(id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Succeeded, 2));
}

#[tokio::test]
async fn a_job_under_another_live_lease_is_retried_later() {
    let stack = stack(fast_queue()).await;
    let id = create(&stack, "embed", embed_input("busy")).await;
    let now = SystemClock.now_epoch_ms();
    let other = Lease {
        token: "someone-else".into(),
        until_epoch_ms: now + 60_000,
    };
    stack
        .ports
        .store
        .apply(
            id,
            &Transition::Claim {
                lease: other,
                now_epoch_ms: now,
            },
        )
        .await
        .unwrap();
    let fine = create(&stack, "embed", embed_input("fine")).await;
    let w = worker(&stack, Arc::new(TestModel::default()));
    let response = w
        .handle(&fixture_batch(&[(body(id), 1), (body(fine), 1)]))
        .await
        .unwrap();
    assert_eq!(failures(&response), ["msg-0"]);
    // On the last receive the duplicate is acknowledged: the holder has its own message.
    let response = w
        .handle(&fixture_batch(&[(body(id), 3), (body(fine), 1)]))
        .await
        .unwrap();
    assert!(failures(&response).is_empty());
    let job = stack.ports.store.get(id).await.unwrap().unwrap();
    assert_eq!(job.lease_owner.as_deref(), Some("someone-else"));
}

/// A worker slower than its heartbeat keeps its job: with a 2 s heartbeat (the test
/// queue's visibility) and a 5 s pass, a second poller never gets the job's message
/// while the first runs it, on either backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_live_worker_keeps_its_job() {
    for backend in Backend::ALL {
        let stack = Stack::new(backend, fast_queue()).await;
        let model = Arc::new(TestModel::default());
        model.pass_ms.store(5_000, Ordering::SeqCst);
        let id = queued(&stack, "slow and alive").await;
        let worker = Arc::new(worker(&stack, model.clone()));
        let settings = PollSettings {
            batch_size: 10,
            wait: Duration::from_millis(200),
        };
        let pool = Pool::start(worker, Arc::clone(&stack.ports.queue), settings, 2);
        let waited = stack
            .ports
            .store
            .wait_terminal(id, Duration::from_secs(30))
            .await;
        pool.stop().await;
        let job = waited.unwrap().expect("the job");
        assert_eq!(job.status, JobStatus::Succeeded, "{}", backend.name());
        assert_eq!(job.attempts, 1, "claimed once ({})", backend.name());
        assert_eq!(model.runs_of("slow and alive"), 1, "{}", backend.name());
    }
}

/// Hooks for a worker that dies the moment its first claim is written, on a queue
/// whose visibility changes take a second to answer (SQS under load).
#[derive(Default)]
struct DiesAfterClaimOnASlowQueue {
    died: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl offpath_testkit::Hooks for DiesAfterClaimOnASlowQueue {
    async fn before(&self, call: offpath_testkit::Call) -> Result<(), String> {
        if call == offpath_testkit::Call::ChangeVisibility {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    }

    async fn after(&self, call: offpath_testkit::Call, _took: Duration, succeeded: bool) {
        if succeeded && call.step() == Some(Step::Claim) {
            self.died.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
    }
}

/// A worker killed right after its claim, while its queue is slow, leaves the job's
/// message hidden for one heartbeat (2 s, and a second's margin), not for the queue's
/// visibility timeout (60 s): the messages are made short-lived before anything is
/// claimed. On both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_its_claim_hides_the_message_one_heartbeat() {
    let settings = offpath_core::QueueSettings {
        visibility_timeout: Duration::from_secs(60),
        ..fast_queue()
    };
    for backend in Backend::ALL {
        let stack = Stack::new(backend, settings).await;
        queued(&stack, "claimed, then the lights went out").await;
        let hooks = Arc::new(DiesAfterClaimOnASlowQueue::default());
        let ports = stack
            .ports
            .with_store(offpath_testkit::Hooked::store(
                stack.ports.store.clone(),
                hooks.clone(),
            ))
            .with_queue(offpath_testkit::Hooked::queue(
                stack.ports.queue.clone(),
                hooks.clone(),
            ));
        let config = WorkerConfig {
            heartbeat: Duration::from_secs(2),
            ..WorkerConfig::default()
        };
        let model = Arc::new(TestModel::default());
        let doomed = Worker::new(&ports, model, Stack::tasks(), config);
        let settings = PollSettings {
            batch_size: 10,
            wait: Duration::from_millis(200),
        };
        let pool = Pool::start(Arc::new(doomed), Arc::clone(&ports.queue), settings, 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !hooks.died.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "no claim within 30 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let killed = std::time::Instant::now();
        pool.kill();
        let mut back = Vec::new();
        while back.is_empty() && killed.elapsed() < Duration::from_secs(20) {
            back = stack
                .ports
                .queue
                .receive(10, Duration::from_secs(1))
                .await
                .unwrap();
        }
        assert_eq!(back.len(), 1, "the message came back ({})", backend.name());
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "back after {:?}, not one heartbeat ({})",
            killed.elapsed(),
            backend.name()
        );
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let stack = stack(fast_queue()).await;
    let id = create(&stack, "embed", embed_input("abandoned")).await;
    let now = SystemClock.now_epoch_ms();
    let dead = Lease {
        token: "dead-worker".into(),
        until_epoch_ms: now - 1,
    };
    stack
        .ports
        .store
        .apply(
            id,
            &Transition::Claim {
                lease: dead,
                now_epoch_ms: now - 60_000,
            },
        )
        .await
        .unwrap();
    worker(&stack, Arc::new(TestModel::default()))
        .handle(&fixture_batch(&[(body(id), 2)]))
        .await
        .unwrap();
    let job = stack.ports.store.get(id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Succeeded, 2));
    // The dead worker's finishing write loses: its lease is gone.
    let late = stack
        .ports
        .store
        .apply(
            id,
            &Transition::complete(
                "dead-worker".into(),
                JsonText::of(&json!({"stale": true})).unwrap(),
                now,
            ),
        )
        .await;
    assert!(matches!(late, Err(offpath_core::StoreError::Conflict(_))));
}

#[tokio::test]
async fn a_cancel_requested_before_the_claim_ends_the_job_cancelled() {
    let stack = stack(fast_queue()).await;
    let model = Arc::new(TestModel::default());
    let id = create(&stack, "embed", embed_input("stop me")).await;
    let now = SystemClock.now_epoch_ms();
    let dead = Lease {
        token: "dead-worker".into(),
        until_epoch_ms: now - 1,
    };
    stack
        .ports
        .store
        .apply(
            id,
            &Transition::Claim {
                lease: dead,
                now_epoch_ms: now - 60_000,
            },
        )
        .await
        .unwrap();
    stack
        .ports
        .store
        .apply(id, &Transition::RequestCancel)
        .await
        .unwrap();
    worker(&stack, model.clone())
        .handle(&fixture_batch(&[(body(id), 2)]))
        .await
        .unwrap();
    let job = stack.ports.store.get(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(job.output.is_none());
    assert_eq!(model.passes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn stored_input_that_breaks_the_schema_fails_the_job() {
    let stack = stack(fast_queue()).await;
    let id = create(&stack, "embed", json!({"texts": "not a list"})).await;
    let response = worker(&stack, Arc::new(TestModel::default()))
        .handle(&fixture_batch(&[
            (body(id), 1),
            (body(create(&stack, "embed", embed_input("ok")).await), 1),
        ]))
        .await
        .unwrap();
    assert!(failures(&response).is_empty());
    let job = stack.ports.store.get(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.unwrap().code, "invalid_input");
}

#[tokio::test]
async fn a_task_registered_outside_the_tasks_crate_runs_like_the_built_in_ones() {
    let stack = stack(fast_queue()).await;
    let tasks = Arc::new(offpath_tasks::registry().with(CountTask));
    let state = AppState::new(&stack.ports, Arc::clone(&tasks), Auth::SingleTenant);
    let request = axum::http::Request::post("/jobs")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            r#"{"task":"count","input":{"text":"three short words"}}"#,
        ))
        .unwrap();
    let response = app(state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 202);
    let messages = received(&stack, Duration::from_secs(2)).await;
    assert_eq!(messages.len(), 1);
    let config = WorkerConfig {
        max_receive_count: Some(3),
        ..WorkerConfig::default()
    };
    let counting = Worker::new(&stack.ports, Arc::new(TestModel::default()), tasks, config);
    counting.handle(&messages).await.unwrap();
    let id: JobId = serde_json::from_str::<Value>(&messages[0].body).unwrap()["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let job = stack.ports.store.get(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(
        job.output.as_ref().map(JsonText::to_value),
        Some(json!({"chars": 17, "words": 3, "dimensions": 2}))
    );
    // A worker that does not know the task fails the job, naming it.
    let other = create(&stack, "count", json!({"text": "x"})).await;
    worker(&stack, Arc::new(TestModel::default()))
        .handle(&fixture_batch(&[
            (body(other), 1),
            (body(create(&stack, "embed", embed_input("ok")).await), 1),
        ]))
        .await
        .unwrap();
    let job = stack.ports.store.get(other).await.unwrap().unwrap();
    let error = job.error.unwrap();
    assert_eq!(
        (job.status, error.code.as_str()),
        (JobStatus::Failed, "invalid_input")
    );
    assert!(
        error.message.starts_with("unknown task \"count\""),
        "{}",
        error.message
    );
}

/// A clock that always reads the same time.
struct Frozen(u64);

impl Clock for Frozen {
    fn now_epoch_ms(&self) -> u64 {
        self.0
    }
}

#[tokio::test]
async fn the_worker_reads_time_from_its_clock() {
    let stack = stack(fast_queue()).await;
    let id = create(&stack, "embed", embed_input("on time")).await;
    let at = SystemClock.now_epoch_ms() - 3_600_000;
    worker(&stack, Arc::new(TestModel::default()))
        .with_clock(Arc::new(Frozen(at)))
        .handle(&fixture_batch(&[(body(id), 1)]))
        .await
        .unwrap();
    let job = stack.ports.store.get(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(
        (job.started_at_epoch_ms, job.finished_at_epoch_ms),
        (Some(at), Some(at))
    );
}

/// Asks to cancel a job just before its worker writes its failure.
struct CancelBeforeFail(Arc<dyn offpath_core::JobStore>);

#[async_trait::async_trait]
impl offpath_testkit::Hooks for CancelBeforeFail {
    async fn before(&self, call: offpath_testkit::Call) -> Result<(), String> {
        if let offpath_testkit::Call::Apply(id, Step::Finish(JobStatus::Failed)) = call {
            self.0
                .apply(id, &Transition::RequestCancel)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_cancel_requested_during_the_last_attempt_ends_the_job_cancelled() {
    let stack = stack(fast_queue()).await;
    let id = create(&stack, "embed", embed_input("poison at the end")).await;
    let hooks = Arc::new(CancelBeforeFail(stack.ports.store.clone()));
    let response = hooked_worker(&stack, hooks)
        .handle(&fixture_batch(&[(body(id), 3)]))
        .await
        .unwrap();
    let job = stack.ports.store.get(id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Cancelled, "{:?}", job.error);
    assert!(
        failures(&response).is_empty(),
        "acknowledged: nothing for the DLQ"
    );
}
