//! Webhooks, long-poll and `Prefer: wait`, on moto and the embedded backend: every
//! delivery verified by the PyPI `standardwebhooks` library in a loopback receiver; a
//! failed delivery comes back with the same `webhook-id`; a receiver that stays down
//! fills the webhooks dead-letter queue and is redriven with `offpath dlq`; a worker
//! killed between the finishing write and the event loses nothing; a document job's
//! events arrive in order; refused URLs are a 400 before any connection; redirects
//! are not followed; `410 Gone` stops a job's webhook; long-poll wakes on the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use offpath_api::{AppState, Auth, app};
use offpath_core::{JobId, JobStatus};
use offpath_testkit::{
    Backend, Call, Delivery, Hooked, Hooks, Receiver, Stack, TestModel, fast_queue,
};
use offpath_webhooks::{Sender, UrlPolicy, WebhookKeys};
use offpath_worker::poller::{PollSettings, Pool};
use offpath_worker::sweep::{SWEEP_BUDGET, SweepSettings};
use offpath_worker::{Backoff, Deliverer};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The owner `Auth::SingleTenant` gives every caller.
const OWNER: &str = "local";

/// Polls quickly.
const POLL: PollSettings = PollSettings {
    batch_size: 10,
    wait: Duration::from_millis(200),
};

/// A stack with an API, workers and deliverers on it.
struct Setup {
    stack: Stack,
    state: AppState,
    keys: WebhookKeys,
    model: Arc<TestModel>,
}

impl Setup {
    async fn new(backend: Backend) -> Setup {
        let stack = Stack::new(backend, fast_queue()).await;
        let keys = WebhookKeys::new(&WebhookKeys::generate(), None).unwrap();
        let state = AppState::new(&stack.ports, Stack::tasks(), Auth::SingleTenant)
            .with_webhooks(keys.clone(), loopback());
        Setup {
            stack,
            state,
            keys,
            model: Arc::default(),
        }
    }

    /// A receiver verifying with the owner's secret as the API hands it out.
    async fn receiver(&self) -> Receiver {
        let (status, secret) = self.call(Request::get("/webhooks/secret")).await;
        assert_eq!(status, StatusCode::OK);
        let secret = secret["secret"].as_str().unwrap().to_owned();
        assert_eq!(secret, self.keys.secret(OWNER));
        Receiver::start(&[secret])
    }

    async fn call(&self, request: http::request::Builder) -> (StatusCode, Value) {
        let request = request
            .header("content-type", "application/json")
            .body(Body::empty())
            .unwrap();
        self.send(request).await
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// POSTs a job; returns the status and body.
    async fn post(&self, body: Value) -> (StatusCode, Value) {
        let request = Request::post("/jobs")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(request).await
    }

    /// Submits an embed job of `text` with a webhook to `url` for `events` (the
    /// default, completed, when empty); returns its id.
    async fn submit(&self, text: &str, url: &str, events: &[&str]) -> JobId {
        let mut body = json!({"task": "embed", "input": {"texts": [text]}, "webhook": url});
        if !events.is_empty() {
            body["webhook_events"] = json!(events);
        }
        self.submit_body(body).await
    }

    /// Submits `body`; returns the job's id.
    async fn submit_body(&self, body: Value) -> JobId {
        let (status, job) = self.post(body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        job["id"].as_str().unwrap().parse().unwrap()
    }

    /// Pollers of the jobs queue.
    fn workers(&self, count: usize) -> Pool {
        let worker = self
            .stack
            .worker(self.model.clone(), Duration::from_millis(100));
        Pool::start(
            Arc::new(worker),
            self.stack.ports.queue.clone(),
            POLL,
            count,
        )
    }

    /// Pollers of the webhooks queue: 5 s attempts, backoff 200 ms doubling to 400 ms.
    fn deliverers(&self) -> Pool {
        let sender = Sender::new(loopback(), self.keys.clone(), Duration::from_secs(5));
        let backoff = Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_millis(400),
        };
        let deliverer = Deliverer::new(&self.stack.ports, sender, backoff);
        Pool::start(
            Arc::new(deliverer),
            self.stack.ports.webhooks.clone(),
            POLL,
            1,
        )
    }

    async fn status(&self, id: JobId) -> JobStatus {
        self.stack
            .ports
            .store
            .get(id)
            .await
            .unwrap()
            .unwrap()
            .status
    }
}

fn loopback() -> UrlPolicy {
    UrlPolicy {
        allow_loopback: true,
    }
}

/// The deliveries of one job.
fn of(deliveries: &[Delivery], id: JobId) -> Vec<Delivery> {
    let id = id.to_string();
    deliveries
        .iter()
        .filter(|d| d.job_id.as_deref() == Some(id.as_str()))
        .cloned()
        .collect()
}

fn all_verified(deliveries: &[Delivery]) {
    for delivery in deliveries {
        assert!(delivery.verified, "not verified: {delivery:#?}");
        assert_eq!(delivery.signatures, 1);
    }
}

#[tokio::test]
async fn deliveries_verify_and_a_failed_one_comes_back_with_its_id() {
    for backend in Backend::ALL {
        let setup = Setup::new(backend).await;
        let receiver = setup.receiver().await;
        let workers = setup.workers(1);
        let deliverers = setup.deliverers();
        let both = ["started", "completed"];
        let steady = setup.submit("steady", &receiver.url("/ok/a"), &both).await;
        let flaky = setup
            .submit("flaky", &receiver.url("/flaky/b"), &["completed"])
            .await;
        let failing = setup.submit("reject me", &receiver.url("/ok/c"), &[]).await;
        let deliveries = receiver
            .wait_for(Duration::from_secs(60), |d| {
                of(d, steady).len() == 2 && of(d, flaky).len() == 2 && of(d, failing).len() == 1
            })
            .await;
        workers.stop().await;
        deliverers.stop().await;
        all_verified(&deliveries);

        let steady_events = of(&deliveries, steady);
        let kinds: Vec<_> = steady_events
            .iter()
            .map(|d| d.kind.clone().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["job.started", "job.succeeded"],
            "{}",
            backend.name()
        );
        assert_ne!(steady_events[0].id, steady_events[1].id);
        assert_eq!(steady_events[1].job_status.as_deref(), Some("succeeded"));

        // 500 first, then the same event again, with the same id.
        let flaky_events = of(&deliveries, flaky);
        assert_eq!(
            flaky_events.iter().map(|d| d.status).collect::<Vec<_>>(),
            [500, 200]
        );
        assert_eq!(flaky_events[0].id, flaky_events[1].id);
        assert_eq!(flaky_events[1].kind.as_deref(), Some("job.succeeded"));

        // No `webhook_events`: completed only, here a failure.
        assert_eq!(
            of(&deliveries, failing)[0].kind.as_deref(),
            Some("job.failed")
        );
        let job = setup.stack.ports.store.get(steady).await.unwrap().unwrap();
        assert!(!job.has_unsent_events(), "{}", backend.name());
    }
}

#[tokio::test]
async fn a_receiver_that_stays_down_fills_the_webhooks_dlq_and_is_redriven() {
    let setup = Setup::new(Backend::Moto).await;
    let receiver = setup.receiver().await;
    let workers = setup.workers(1);
    let deliverers = setup.deliverers();
    let id = setup.submit("patient", &receiver.url("/down/x"), &[]).await;
    // Three receives (the test queue's maxReceiveCount), then the dead-letter queue.
    let dlq = setup.stack.webhooks_dlq().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while dlq.depth().await.unwrap().visible == 0 {
        assert!(Instant::now() < deadline, "the event never reached the DLQ");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed = of(&receiver.deliveries(), id);
    assert_eq!(failed.len(), 3, "{failed:#?}");
    assert!(
        failed
            .iter()
            .all(|d| d.status == 503 && d.id == failed[0].id)
    );

    let listing = setup.stack.offpath(&["dlq", "list", "--queue", "webhooks"]);
    assert!(listing.contains(&id.to_string()), "{listing}");
    assert!(listing.contains("job.succeeded"), "{listing}");
    assert!(listing.contains(&receiver.url("/down/x")), "{listing}");

    receiver.bring_up();
    let redrive = setup
        .stack
        .offpath(&["dlq", "redrive", "--all", "--queue", "webhooks"]);
    assert!(redrive.contains("1 message(s) moved back"), "{redrive}");
    let deliveries = receiver
        .wait_for(Duration::from_secs(30), |d| {
            of(d, id).iter().any(|d| d.status == 200)
        })
        .await;
    workers.stop().await;
    deliverers.stop().await;
    let events = of(&deliveries, id);
    all_verified(&events);
    assert_eq!(
        events.last().unwrap().id,
        failed[0].id,
        "same event, same id"
    );
    assert_eq!(setup.status(id).await, JobStatus::Succeeded);
    assert_eq!(dlq.depth().await.unwrap().visible, 0);
}

/// The process "dies" right after a job's finishing write: the call never returns.
struct DieAfterFinishing;

#[async_trait]
impl Hooks for DieAfterFinishing {
    async fn after(&self, call: Call, _took: Duration, succeeded: bool) {
        if call.finishes() && succeeded {
            std::future::pending::<()>().await;
        }
    }
}

#[tokio::test]
async fn a_worker_killed_between_the_finishing_write_and_the_event_loses_nothing() {
    for backend in Backend::ALL {
        let setup = Setup::new(backend).await;
        let receiver = setup.receiver().await;
        let dying = Hooked::store(setup.stack.ports.store.clone(), Arc::new(DieAfterFinishing));
        let worker = offpath_worker::Worker::new(
            &setup.stack.ports.with_store(dying),
            setup.model.clone(),
            Stack::tasks(),
            offpath_worker::WorkerConfig::default(),
        );
        let workers = Pool::start(Arc::new(worker), setup.stack.ports.queue.clone(), POLL, 1);
        let deliverers = setup.deliverers();
        let id = setup
            .submit("last words", &receiver.url("/ok/k"), &["completed"])
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while setup.status(id).await != JobStatus::Succeeded {
            assert!(Instant::now() < deadline, "the job never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        workers.kill();
        // Nothing left the process: the event is only in the job's outbox.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(of(&receiver.deliveries(), id).is_empty());
        let job = setup.stack.ports.store.get(id).await.unwrap().unwrap();
        assert!(job.has_unsent_events());

        // The sweep, once the writer's grace is over, sends it.
        let grace = Duration::from_millis(300);
        tokio::time::sleep(grace).await;
        let settings = SweepSettings {
            grace,
            max_receive_count: Some(3),
            budget: SWEEP_BUDGET,
        };
        let report = setup.stack.sweep(&settings).await;
        assert_eq!(report.events, 1, "{}", backend.name());
        let deliveries = receiver
            .wait_for(Duration::from_secs(30), |d| !of(d, id).is_empty())
            .await;
        deliverers.stop().await;
        all_verified(&deliveries);
        assert_eq!(
            of(&deliveries, id)[0].kind.as_deref(),
            Some("job.succeeded")
        );
    }
}

#[tokio::test]
async fn a_document_job_sends_started_progress_and_completed_in_order() {
    let setup = Setup::new(Backend::Embedded).await;
    let receiver = setup.receiver().await;
    // One part per batch, so parts settle one after another.
    let worker = setup
        .stack
        .worker(setup.model.clone(), Duration::from_millis(100));
    let one_by_one = PollSettings {
        batch_size: 1,
        ..POLL
    };
    let workers = Pool::start(
        Arc::new(worker),
        setup.stack.ports.queue.clone(),
        one_by_one,
        1,
    );
    let deliverers = setup.deliverers();
    // 14-piece windows, no overlap: 140 chunks, 5 parts of 32.
    let text = (0..1960)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let body = json!({
        "task": "embed_document",
        "input": {"text": text, "chunk_tokens": 16, "overlap_tokens": 0},
        "webhook": receiver.url("/ok/doc"),
        "webhook_events": ["started", "progress", "completed"],
    });
    let (status, job) = setup.post(body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id: JobId = job["id"].as_str().unwrap().parse().unwrap();
    let deliveries = receiver
        .wait_for(Duration::from_secs(60), |d| {
            of(d, id)
                .iter()
                .any(|d| d.kind.as_deref() == Some("job.succeeded"))
        })
        .await;
    workers.stop().await;
    deliverers.stop().await;
    let events = of(&deliveries, id);
    all_verified(&events);
    let kinds: Vec<&str> = events.iter().map(|d| d.kind.as_deref().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"job.started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"job.succeeded"), "{kinds:?}");
    assert!(kinds.contains(&"job.progress"), "{kinds:?}");
    let times: Vec<&str> = events
        .iter()
        .map(|d| d.event_time.as_deref().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "events arrive in the order of their times");
    let progress = events
        .iter()
        .find(|d| d.kind.as_deref() == Some("job.progress"));
    assert_eq!(progress.unwrap().progress.as_ref().unwrap()["total"], 140);
}

#[tokio::test]
async fn refused_urls_are_a_400_naming_the_reason_and_create_nothing() {
    let setup = Setup::new(Backend::Embedded).await;
    let strict = AppState {
        webhook_policy: UrlPolicy::default(),
        ..setup.state.clone()
    };
    // IP literals and a dotless name: refused before any lookup or connection.
    let cases = [
        (&strict, "https://10.0.0.1/hook", "a private address"),
        (
            &strict,
            "https://169.254.169.254/latest/meta-data/",
            "link-local",
        ),
        (&strict, "https://[fd00::1]/hook", "unique-local"),
        (&strict, "https://[::ffff:127.0.0.1]/hook", "IPv4-mapped"),
        (&strict, "http://93.184.215.14/hook", "only https"),
        (&strict, "http://127.0.0.1:9/hook", "only https"),
        (&strict, "https://127.0.0.1:9/hook", "a loopback address"),
        (
            &strict,
            "https://metadata/computeMetadata",
            "not a public host name",
        ),
        (&setup.state, "http://10.0.0.1/hook", "only https"),
        (
            &setup.state,
            "https://192.168.1.1/hook",
            "a private address",
        ),
    ];
    for (state, url, reason) in cases {
        let body = json!({"task": "embed", "input": {"texts": ["x"]}, "webhook": url});
        let request = Request::post("/jobs")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let error: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {error}");
        assert_eq!(error["error"]["code"], "invalid_webhook", "{url}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{url}: {message}");
    }
    assert!(
        offpath_testkit::unfinished(setup.stack.ports.store.as_ref())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn redirects_are_not_followed_and_gone_stops_the_webhook() {
    let setup = Setup::new(Backend::Embedded).await;
    let receiver = setup.receiver().await;
    let workers = setup.workers(1);
    let deliverers = setup.deliverers();
    let redirected = setup
        .submit("redirected", &receiver.url("/redirect/r"), &[])
        .await;
    let gone = setup
        .submit("gone", &receiver.url("/gone/g"), &["started", "completed"])
        .await;
    // The redirect is a failed attempt, tried again until the dead-letter queue.
    let dlq = setup.stack.webhooks_dlq().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while dlq.depth().await.unwrap().visible == 0 {
        assert!(
            Instant::now() < deadline,
            "the redirected event never gave up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workers.stop().await;
    deliverers.stop().await;
    let deliveries = receiver.deliveries();
    all_verified(&deliveries);
    assert_eq!(of(&deliveries, redirected).len(), 3);
    assert!(
        !deliveries.iter().any(|d| d.path.starts_with("/ok")),
        "the redirect was followed: {deliveries:#?}"
    );
    // 410 on job.started: nothing more for that job, its completion included.
    let gone_events = of(&deliveries, gone);
    assert_eq!(gone_events.len(), 1, "{gone_events:#?}");
    assert_eq!(gone_events[0].kind.as_deref(), Some("job.started"));
    let job = setup.stack.ports.store.get(gone).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert!(job.webhook.unwrap().gone);
}

#[tokio::test]
async fn long_poll_answers_as_the_job_ends_and_prefer_wait_holds_the_submit() {
    let setup = Setup::new(Backend::Embedded).await;
    // No worker yet: a 1 s Prefer: wait ends in a 202 with the job queued.
    let request = Request::post("/jobs")
        .header("content-type", "application/json")
        .header("prefer", "wait=1")
        .body(Body::from(
            json!({"task": "embed", "input": {"texts": ["slow"]}}).to_string(),
        ))
        .unwrap();
    let started = Instant::now();
    let response = app(setup.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["preference-applied"], "wait=1");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let slow: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(slow["status"], "queued");
    let slow: JobId = slow["id"].as_str().unwrap().parse().unwrap();

    // Long-poll: the answer comes as the job ends. Three rounds, each ended by a
    // write made while the request waits; the median lag stays under 100 ms.
    let (status, bad) = setup
        .call(Request::get(format!("/jobs/{slow}?wait=21")))
        .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let mut lags = Vec::new();
    for round in 0..3 {
        let body = json!({"task": "embed", "input": {"texts": [format!("round {round}")]}});
        let id = setup.submit_body(body).await;
        let poll = {
            let state = setup.state.clone();
            tokio::spawn(async move {
                let request = Request::get(format!("/jobs/{id}?wait=10"))
                    .body(Body::empty())
                    .unwrap();
                let response = app(state).oneshot(request).await.unwrap();
                let answered = Instant::now();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                (answered, serde_json::from_slice::<Value>(&bytes).unwrap())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = offpath_core::Clock::now_epoch_ms(&offpath_core::SystemClock);
        offpath_core::store::cancel(setup.stack.ports.store.as_ref(), id, now)
            .await
            .unwrap();
        let ended = Instant::now();
        let (answered, job) = poll.await.unwrap();
        assert_eq!(job["status"], "cancelled");
        lags.push(answered.saturating_duration_since(ended));
    }
    lags.sort();
    eprintln!("long-poll answers after the job's end: {lags:?}");
    assert!(lags[1] < Duration::from_millis(100), "{lags:?}");

    // With a worker, Prefer: wait answers 200 with the finished job.
    let workers = setup.workers(1);
    let request = Request::post("/jobs")
        .header("content-type", "application/json")
        .header("prefer", "respond-async, wait=10")
        .body(Body::from(
            json!({"task": "embed", "input": {"texts": ["fast"]}}).to_string(),
        ))
        .unwrap();
    let response = app(setup.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["preference-applied"], "wait=10");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let fast: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(fast["status"], "succeeded", "{fast}");
    assert!(fast["output"].is_object(), "{fast}");
    workers.stop().await;
}

#[tokio::test]
async fn a_rotated_key_in_secrets_manager_signs_with_both_until_receivers_move() {
    let sdk = offpath_testkit::sdk().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let name = offpath_testkit::unique("webhook-key");
    let old = "o".repeat(40);
    let arn = client
        .create_secret()
        .name(&name)
        .secret_string(&old)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    let lookup = |var: &str| (var == "OFFPATH_WEBHOOK_KEY_SECRET").then(|| arn.clone());
    let before = offpath_aws::secrets::webhook_key(&sdk, lookup)
        .await
        .unwrap();
    assert_eq!(
        (before.current.as_str(), before.previous.as_deref()),
        (old.as_str(), None)
    );
    let new = "n".repeat(40);
    client
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(&new)
        .send()
        .await
        .unwrap();
    let after = offpath_aws::secrets::webhook_key(&sdk, lookup)
        .await
        .unwrap();
    assert_eq!(after.current, new);
    assert_eq!(after.previous.as_deref(), Some(old.as_str()));

    // A receiver still holding the old secret verifies; one with the new does too.
    let keys = WebhookKeys::new(&after.current, after.previous.as_deref()).unwrap();
    let old_secret = WebhookKeys::new(&old, None).unwrap().secret(OWNER);
    let receiver = Receiver::start(&[old_secret]);
    let sender = Sender::new(loopback(), keys.clone(), Duration::from_secs(5));
    let sent = sender
        .send(
            &receiver.url("/ok/rotated"),
            OWNER,
            "msg_rotation",
            "{\"type\":\"job.started\"}".into(),
        )
        .await;
    assert_eq!(sent, offpath_webhooks::Attempt::Delivered);
    let fresh = Receiver::start(&[keys.secret(OWNER)]);
    let sent = sender
        .send(
            &fresh.url("/ok/rotated"),
            OWNER,
            "msg_rotation",
            "{\"type\":\"job.started\"}".into(),
        )
        .await;
    assert_eq!(sent, offpath_webhooks::Attempt::Delivered);
    for delivery in receiver.deliveries().into_iter().chain(fresh.deliveries()) {
        assert!(delivery.verified, "{delivery:#?}");
        assert_eq!(delivery.signatures, 2);
    }
}

/// A store whose waits fail.
struct WaitsFail;

#[async_trait]
impl Hooks for WaitsFail {
    async fn before(&self, call: Call) -> Result<(), String> {
        match call {
            Call::WaitTerminal(_) => Err("injected outage".into()),
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn a_failed_wait_still_answers_202_for_the_job_it_created() {
    let setup = Setup::new(Backend::Embedded).await;
    let failing = Hooked::store(setup.stack.ports.store.clone(), Arc::new(WaitsFail));
    let state = AppState {
        store: failing,
        ..setup.state.clone()
    };
    let request = Request::post("/jobs")
        .header("content-type", "application/json")
        .header("prefer", "wait=5")
        .body(Body::from(
            json!({"task": "embed", "input": {"texts": ["x"]}}).to_string(),
        ))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let job: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(job["status"], "queued");
    // A long-poll that cannot wait is a 503, as any read the store refuses.
    let id = job["id"].as_str().unwrap();
    let request = Request::get(format!("/jobs/{id}?wait=5"))
        .body(Body::empty())
        .unwrap();
    let response = app(state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}
