//! The API router, called with `tower::ServiceExt::oneshot`, on DynamoDB and SQS
//! (moto): status codes, idempotency, owners, outages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http::Response;
use offpath_api::{AppState, Auth, SubmitLimits, app};
use offpath_aws::{DynamoStore, SqsQueue};
use offpath_core::{JobStatus, QueueSettings, Transition};
use offpath_testkit::{Backend, CountTask, Proxy, Stack, drained, fast_queue, item_count};
use serde_json::Value;
use tower::ServiceExt;

const EMBED: &str = r#"{"task":"embed","input":{"texts":["hello"]}}"#;

async fn stack(settings: QueueSettings) -> Stack {
    Stack::moto(settings).await
}

fn state(stack: &Stack) -> AppState {
    AppState::new(&stack.ports, Stack::tasks(), Auth::SingleTenant)
}

async fn call(
    state: &AppState,
    request: Request<Body>,
) -> (StatusCode, HashMap<String, String>, Value) {
    let response: Response<Body> = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

fn post() -> http::request::Builder {
    Request::post("/jobs").header("content-type", "application/json")
}

fn submit(body: &str, key: Option<&str>) -> Request<Body> {
    let mut builder = post();
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_submit_answers_202_with_the_job_and_enqueues_it() {
    let stack = stack(fast_queue()).await;
    let (status, headers, body) = call(&state(&stack), submit(EMBED, None)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = body["id"].as_str().unwrap();
    assert_eq!(headers["location"], format!("/jobs/{id}"));
    assert_eq!(body["status"], "queued");
    assert_eq!(body["attempts"], 0);
    assert!(!headers.contains_key("idempotent-replayed"));
    let messages = stack
        .ports
        .queue
        .receive(10, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body, format!(r#"{{"v":1,"job_id":"{id}"}}"#));

    let (status, _, view) = call(&state(&stack), get(&format!("/jobs/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view, body);
}

#[tokio::test]
async fn the_same_key_replays_and_another_body_is_refused() {
    let stack = stack(fast_queue()).await;
    let state = state(&stack);
    let (first, _, created) = call(&state, submit(EMBED, Some("key-1"))).await;
    // Key order and whitespace do not make another body.
    let same = r#"{ "input": {"texts": ["hello"]}, "task": "embed" }"#;
    let (second, headers, replayed) = call(&state, submit(same, Some("key-1"))).await;
    assert_eq!(
        (first, second),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replayed["id"], created["id"]);

    let other = r#"{"task":"embed","input":{"texts":["bye"]}}"#;
    let (status, _, body) = call(&state, submit(other, Some("key-1"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(item_count(&stack.resources().table).await, 1);
    // A young job is not re-sent by replays: one message for one job.
    let messages = stack
        .ports
        .queue
        .receive(10, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
}

#[tokio::test]
async fn bad_requests_get_their_4xx_and_leave_nothing_behind() {
    let stack = stack(fast_queue()).await;
    let state = state(&stack);
    let big = format!(
        r#"{{"task":"embed","input":{{"texts":["{}"]}}}}"#,
        "a".repeat(70_000)
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (submit("{", None), StatusCode::BAD_REQUEST, "malformed_json"),
        (
            submit("\u{feff}{}", None),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            submit(&deep, None),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            submit("[1,2]", None),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            submit(r#"{"task":"dance","input":{}}"#, None),
            StatusCode::BAD_REQUEST,
            "unknown_task",
        ),
        (
            submit(r#"{"task":"embed","input":{"texts":[7]}}"#, None),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            submit(
                r#"{"task":"embed","input":{"texts":["a"]},"ttl_seconds":1}"#,
                None,
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            submit(&big, None),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            submit(EMBED, Some("")),
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
        ),
        (
            submit(EMBED, Some(&"k".repeat(256))),
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
        ),
        (
            Request::post("/jobs")
                .header("content-type", "text/plain")
                .body(Body::from(EMBED))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Request::post("/jobs").body(Body::from(EMBED)).unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            get("/jobs/not-a-uuid"),
            StatusCode::NOT_FOUND,
            "job_not_found",
        ),
        (
            get("/jobs/0190b2a4-8f6e-7cc0-9b1e-3f4c5d6e7f80"),
            StatusCode::NOT_FOUND,
            "job_not_found",
        ),
        (
            get("/jobs/%2e%2e%2fetc%2fpasswd"),
            StatusCode::NOT_FOUND,
            "job_not_found",
        ),
        (get("/jobs/%FF"), StatusCode::NOT_FOUND, "job_not_found"),
        (
            Request::delete("/jobs/%C3%28").body(Body::empty()).unwrap(),
            StatusCode::NOT_FOUND,
            "job_not_found",
        ),
        (get("/nope"), StatusCode::NOT_FOUND, "route_not_found"),
        (
            Request::put("/jobs").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (request, want_status, want_code) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let (status, _, body) = call(&state, request).await;
        assert_eq!(status, want_status, "{what}: {body}");
        assert_eq!(body["error"]["code"], want_code, "{what}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (_, _, body) = call(
        &state,
        submit(r#"{"task":"rank","input":{"query":"q"}}"#, None),
    )
    .await;
    assert_eq!(body["error"]["message"], "input: missing field `documents`");

    assert_eq!(
        item_count(&stack.resources().table).await,
        0,
        "no item left behind"
    );
    assert!(drained(stack.ports.queue.as_ref()).await);
}

#[tokio::test]
async fn jobs_belong_to_their_owner() {
    let stack = stack(fast_queue()).await;
    let mut state = state(&stack);
    state.auth = Arc::new(Auth::from_api_keys(Some("alice-key=alice,bob-key=bob")).unwrap());
    let as_user = |key: &str, request: http::request::Builder| request.header("x-api-key", key);

    let (status, _, body) = call(&state, submit(EMBED, None)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let bad = as_user("wrong", post()).body(Body::from(EMBED)).unwrap();
    assert_eq!(call(&state, bad).await.0, StatusCode::UNAUTHORIZED);

    let mine = as_user("alice-key", post())
        .body(Body::from(EMBED))
        .unwrap();
    let (status, _, job) = call(&state, mine).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let path = format!("/jobs/{}", job["id"].as_str().unwrap());
    let alice = Request::get(&path)
        .header("authorization", "Bearer alice-key")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&state, alice).await.0, StatusCode::OK);
    let bob = Request::get(&path)
        .header("x-api-key", "bob-key")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&state, bob).await.0, StatusCode::NOT_FOUND);
    let bob_cancel = Request::delete(&path)
        .header("x-api-key", "bob-key")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&state, bob_cancel).await.0, StatusCode::NOT_FOUND);
    // The same key from two owners makes two jobs.
    let keyed = |key: &str| {
        as_user(key, post())
            .header("idempotency-key", "shared")
            .body(Body::from(EMBED))
            .unwrap()
    };
    let (_, _, a) = call(&state, keyed("alice-key")).await;
    let (_, _, b) = call(&state, keyed("bob-key")).await;
    assert_ne!(a["id"], b["id"]);
}

#[tokio::test]
async fn delete_cancels_queued_jobs_and_409s_finished_ones() {
    let stack = stack(fast_queue()).await;
    let state = state(&stack);
    let (_, _, job) = call(&state, submit(EMBED, None)).await;
    let path = format!("/jobs/{}", job["id"].as_str().unwrap());
    let delete = || Request::delete(&path).body(Body::empty()).unwrap();
    let (status, _, body) = call(&state, delete()).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    assert!(body["finished_at"].is_string());
    let (status, _, body) = call(&state, delete()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("job_finished"))
    );
}

#[tokio::test]
async fn health_and_openapi_answer() {
    let stack = stack(fast_queue()).await;
    let state = state(&stack);
    let (status, _, body) = call(&state, get("/health")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    assert_eq!(body["queue"]["visible"], 0);

    let (status, _, doc) = call(&state, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    // Every documented operation is routed.
    for (path, operations) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "0190b2a4-8f6e-7cc0-9b1e-3f4c5d6e7f80");
        for method in operations.as_object().unwrap().keys() {
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .header("content-type", "application/json")
                .body(Body::from(EMBED))
                .unwrap();
            let (status, _, body) = call(&state, request).await;
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED
                    && body["error"]["code"] != "route_not_found",
                "{method} {path} is documented but not routed"
            );
        }
    }
}

/// A body over the limit is read before the `413`, so a client still sending it gets
/// the answer rather than a connection reset (the bad-input corpus once failed so).
#[tokio::test]
async fn an_oversized_body_is_answered_413_after_it_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::new(Backend::Embedded, fast_queue()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app(state(&stack))).into_future());
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = "POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 262144\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    // Time enough to answer and close early, were the body not read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream
        .write_all(&vec![b'x'; 262_144])
        .await
        .expect("the body is read");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    read.await.expect("answered within 5 s").expect("no reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

/// Counts the store's pings.
#[derive(Default)]
struct Pings(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl offpath_testkit::Hooks for Pings {
    async fn before(&self, call: offpath_testkit::Call) -> Result<(), String> {
        if call == offpath_testkit::Call::Ping {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }
}

/// `/health` is cheap and tells strangers nothing: 40 concurrent checks and 10 more
/// cost one store ping (one check per 5 s), and only a caller with a valid key sees the
/// queue's depth.
#[tokio::test]
async fn health_is_checked_once_per_interval_and_hides_the_queue_from_strangers() {
    let stack = stack(fast_queue()).await;
    let pings = Arc::new(Pings::default());
    let mut state = AppState::new(
        &stack.ports,
        Stack::tasks(),
        Auth::from_api_keys(Some("k1=alice")).unwrap(),
    );
    state.store = offpath_testkit::Hooked::store(stack.ports.store.clone(), pings.clone());
    let answers = futures::future::join_all((0..40).map(|_| call(&state, get("/health")))).await;
    for _ in 0..10 {
        let (status, _, body) = call(&state, get("/health")).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("ok"))
        );
        assert!(
            body.get("queue").is_none(),
            "no depth without a key: {body}"
        );
    }
    assert!(
        answers
            .iter()
            .all(|(status, _, body)| *status == StatusCode::OK && body.get("queue").is_none())
    );
    assert_eq!(pings.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    let with_key = Request::get("/health")
        .header("x-api-key", "k1")
        .body(Body::empty())
        .unwrap();
    let (_, _, body) = call(&state, with_key).await;
    assert_eq!(body["queue"]["visible"], 0, "{body}");
    let wrong_key = Request::get("/health")
        .header("x-api-key", "k2")
        .body(Body::empty())
        .unwrap();
    assert!(call(&state, wrong_key).await.2.get("queue").is_none());
}

/// A hung SQS endpoint (connections accepted, never answered): with the API function's
/// call timeouts a submit still answers well inside the function's 28 s, 503 with
/// Retry-After, and the unkeyed job it wrote is deleted again.
#[tokio::test]
async fn a_hung_queue_gets_a_503_in_time_and_leaves_nothing() {
    let stack = stack(fast_queue()).await;
    let proxy = Proxy::start(&std::env::var("AWS_ENDPOINT_URL").unwrap()).await;
    let mut state = state(&stack);
    let sdk = offpath_aws::within_api_deadline(&proxy.sdk().await);
    let url = stack.resources().queue_url.clone();
    state.queue = Arc::new(SqsQueue::from_sdk(&sdk, url).await.unwrap());
    proxy.hang();
    let started = std::time::Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(25), call(&state, submit(EMBED, None)));
    let (status, headers, body) = answered.await.expect("an answer within 25 s");
    let took = started.elapsed();
    assert!(took < offpath_aws::API_CALL_TIMEOUT * 2, "{took:?}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(
        item_count(&stack.resources().table).await,
        0,
        "nothing left behind"
    );
    assert!(drained(stack.ports.queue.as_ref()).await);
}

#[tokio::test]
async fn a_store_outage_is_a_503_with_retry_after() {
    let stack = stack(fast_queue()).await;
    let proxy = Proxy::start(&std::env::var("AWS_ENDPOINT_URL").unwrap()).await;
    let mut state = state(&stack);
    state.store = Arc::new(DynamoStore::from_sdk(
        &proxy.sdk().await,
        &stack.resources().table,
    ));
    proxy.go_down();
    for request in [
        submit(EMBED, None),
        get("/jobs/0190b2a4-8f6e-7cc0-9b1e-3f4c5d6e7f80"),
        get("/health"),
    ] {
        let (status, headers, body) = call(&state, request).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["retry-after"], "2");
        assert_eq!(body["error"]["code"], "service_unavailable");
    }
    proxy.come_back();
    assert_eq!(
        call(&state, submit(EMBED, None)).await.0,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn a_failed_enqueue_leaves_nothing_half_done() {
    let stack = stack(fast_queue()).await;
    let proxy = Proxy::start(&std::env::var("AWS_ENDPOINT_URL").unwrap()).await;
    let mut state = state(&stack);
    state.queue = Arc::new(
        SqsQueue::from_sdk(&proxy.sdk().await, &stack.resources().queue_url)
            .await
            .unwrap(),
    );
    state.limits = SubmitLimits {
        requeue_after: Duration::ZERO,
        ..SubmitLimits::default()
    };
    proxy.go_down();

    // Without a key the job is removed again: the client cannot repair it.
    let (status, headers, _) = call(&state, submit(EMBED, None)).await;
    assert_eq!(
        (status, headers["retry-after"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "2")
    );
    assert_eq!(item_count(&stack.resources().table).await, 0);

    // With a key it stays queued, and the client's retry re-sends its message.
    let (status, _, _) = call(&state, submit(EMBED, Some("retry-me"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(item_count(&stack.resources().table).await, 1);
    proxy.come_back();
    let (status, headers, job) = call(&state, submit(EMBED, Some("retry-me"))).await;
    assert_eq!(
        (status, headers["idempotent-replayed"].as_str()),
        (StatusCode::ACCEPTED, "true")
    );
    let messages = stack
        .ports
        .queue
        .receive(10, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].body.contains(job["id"].as_str().unwrap()));
    let id = job["id"].as_str().unwrap().parse().unwrap();
    let queued = stack.ports.store.get(id).await.unwrap().unwrap();
    assert_eq!(queued.status, JobStatus::Queued);
    assert!(
        queued.resent_at_epoch_ms.is_some(),
        "the re-send is recorded"
    );
    // A client that keeps retrying does not add copies: one re-send per message life.
    for _ in 0..5 {
        let (status, _, _) = call(&state, submit(EMBED, Some("retry-me"))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let depth = stack.ports.queue.depth().await.unwrap();
    assert_eq!(depth.visible + depth.in_flight, 1, "{depth:?}");
}

#[tokio::test]
async fn the_document_and_the_checks_follow_the_registry() {
    let stack = stack(fast_queue()).await;
    let mut state = state(&stack);
    state.tasks = Arc::new(offpath_tasks::registry().with(CountTask));
    let (status, _, doc) = call(&state, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["CountInput"].is_object() && schemas["CountOutput"].is_object());
    let variants: Vec<&str> = schemas["SubmitRequest"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["properties"]["task"]["enum"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        variants,
        ["classify", "count", "embed", "embed_document", "rank"]
    );
    assert_eq!(
        schemas["TaskName"]["enum"],
        serde_json::json!(["classify", "count", "embed", "embed_document", "rank"])
    );
    let (status, _, body) = call(&state, submit(r#"{"task":"count","input":{}}"#, None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["message"], "input: missing field `text`");
    let (status, _, body) = call(
        &state,
        submit(r#"{"task":"count","input":{"text":"a b"}}"#, None),
    )
    .await;
    assert_eq!(
        (status, body["task"].as_str()),
        (StatusCode::ACCEPTED, Some("count"))
    );
    // Without the task registered, it is unknown.
    let (status, _, body) = call(
        &self::state(&stack),
        submit(r#"{"task":"count","input":{"text":"a"}}"#, None),
    )
    .await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some(
                "unknown task \"count\"; known tasks are classify, embed, embed_document and rank"
            )
        )
    );
}

const RANK: &str = r#"{"task":"rank","input":{"query":"q","documents":["a","b"]}}"#;

/// Every page of `path` (a listing) as `key`'s owner: the jobs' ids, per page.
async fn pages(state: &AppState, key: &str, path: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{separator}cursor={c}"),
            None => path.to_owned(),
        };
        let request = Request::get(&url)
            .header("x-api-key", key)
            .body(Body::empty());
        let (status, _, body) = call(state, request.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        let jobs = body["jobs"].as_array().unwrap();
        pages.push(jobs.clone());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return pages,
        }
    }
}

#[tokio::test]
async fn listing_pages_through_the_callers_jobs_newest_first() {
    for backend in Backend::ALL {
        listing_on(backend).await;
    }
}

async fn listing_on(backend: Backend) {
    let stack = Stack::new(backend, fast_queue()).await;
    let mut state = state(&stack);
    state.auth = Arc::new(Auth::from_api_keys(Some("alice-key=alice,bob-key=bob")).unwrap());
    let send = |key: &'static str, body: &'static str| {
        Request::post("/jobs")
            .header("content-type", "application/json")
            .header("x-api-key", key)
            .body(Body::from(body))
            .unwrap()
    };
    let mut made = Vec::new();
    for body in [EMBED, RANK, EMBED, EMBED, RANK, EMBED, EMBED] {
        let (status, _, job) = call(&state, send("alice-key", body)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        made.push(job["id"].clone());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    call(&state, send("bob-key", EMBED)).await;
    let newest_first: Vec<Value> = made.iter().rev().cloned().collect();

    let all = pages(&state, "alice-key", "/jobs?limit=3").await;
    assert_eq!(all.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    let ids: Vec<Value> = all.concat().iter().map(|j| j["id"].clone()).collect();
    assert_eq!(ids, newest_first, "every job once, newest first");
    let default = pages(&state, "alice-key", "/jobs").await;
    assert_eq!(default.len(), 1, "20 by default");
    let ranks = pages(&state, "alice-key", "/jobs?task=rank&limit=1")
        .await
        .concat();
    assert_eq!(ranks.len(), 2);
    assert!(ranks.iter().all(|j| j["task"] == "rank"));
    let queued = pages(&state, "alice-key", "/jobs?status=queued")
        .await
        .concat();
    assert_eq!(queued.len(), 7);
    assert!(pages(&state, "alice-key", "/jobs?status=succeeded").await == [Vec::<Value>::new()]);
    let bob = pages(&state, "bob-key", "/jobs").await.concat();
    assert_eq!(bob.len(), 1, "only bob's own job");

    // Alice's cursor is no good to bob, nor one edited by hand.
    let first = Request::get("/jobs?limit=1").header("x-api-key", "alice-key");
    let (_, _, page) = call(&state, first.body(Body::empty()).unwrap()).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let stolen = Request::get(format!("/jobs?cursor={cursor}")).header("x-api-key", "bob-key");
    let (status, _, error) = call(&state, stolen.body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["code"], "invalid_cursor");
    let edited = format!("A{}", &cursor[1..]);
    let forged = Request::get(format!("/jobs?cursor={edited}")).header("x-api-key", "alice-key");
    let (status, _, _) = call(&state, forged.body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_owner_at_the_bound_gets_429_and_nothing_is_created() {
    for backend in Backend::ALL {
        admission_on(backend).await;
    }
}

async fn admission_on(backend: Backend) {
    let stack = Stack::new(backend, fast_queue()).await;
    let mut state = state(&stack);
    state.limits.max_unfinished_per_owner = Some(3);
    for _ in 0..3 {
        assert_eq!(
            call(&state, submit(EMBED, None)).await.0,
            StatusCode::ACCEPTED
        );
    }
    let (status, _, keyed) = call(&state, submit(EMBED, Some("kept"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, headers, body) = call(&state, submit(EMBED, None)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "too_many_jobs");
    assert_eq!(headers["retry-after"], "10");
    assert!(
        keyed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 or more")
    );
    let unfinished = offpath_testkit::unfinished(stack.ports.store.as_ref()).await;
    assert_eq!(unfinished.len(), 3, "nothing created");
    // As jobs finish, room comes back.
    let first = pages(&state, "", "/jobs?limit=1").await[0][0]["id"].clone();
    let path = format!("/jobs/{}", first.as_str().unwrap());
    let cancel = Request::delete(&path).body(Body::empty()).unwrap();
    assert_eq!(call(&state, cancel).await.0, StatusCode::OK);
    assert_eq!(
        call(&state, submit(EMBED, None)).await.0,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn duplicate_json_keys_and_two_idempotency_keys_are_refused() {
    let stack = stack(fast_queue()).await;
    let state = state(&stack);
    let duplicated = r#"{"task":"embed","input":{"texts":["a"]},"input":{"texts":["b"]}}"#;
    let (status, _, body) = call(&state, submit(duplicated, None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "malformed_json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(r#"duplicate key "input""#),
        "{body}"
    );
    let nested = r#"{"task":"embed","input":{"texts":["a"],"texts":["b"]}}"#;
    assert_eq!(
        call(&state, submit(nested, None)).await.0,
        StatusCode::BAD_REQUEST
    );
    let two_keys = post()
        .header("idempotency-key", "one")
        .header("idempotency-key", "two")
        .body(Body::from(EMBED))
        .unwrap();
    let (status, _, body) = call(&state, two_keys).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_idempotency_key");
    assert_eq!(
        item_count(&stack.resources().table).await,
        0,
        "nothing created"
    );
    assert!(
        drained(stack.ports.queue.as_ref()).await,
        "nothing enqueued"
    );
}

fn as_caller(mut request: Request<Body>, key: &str) -> Request<Body> {
    let value = format!("Bearer {key}").parse().unwrap();
    request.headers_mut().insert("authorization", value);
    request
}

fn admin_post(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

/// Operators alone use the admin routes: an owner who is not one gets 403 from each
/// and changes nothing; an operator sees the queues and the minutes' activity, lists
/// a dead-lettered job with its error, redrives it (job queued, message in the jobs
/// queue) and purges. On both backends.
#[tokio::test]
async fn operators_alone_see_queues_and_act_on_dead_letters() {
    for backend in Backend::ALL {
        let stack = Stack::new(backend, fast_queue()).await;
        let auth = Auth::from_api_keys(Some("op-key=ops,user-key=alice")).unwrap();
        let operators = offpath_api::Operators::parse(Some("ops"), None).unwrap();
        let state = AppState::new(&stack.ports, Stack::tasks(), auth).with_operators(operators);
        let store = stack.ports.store.as_ref();
        let dead =
            offpath_testkit::create(store, "embed", serde_json::json!({"texts": ["x"]})).await;
        let lease = offpath_core::Lease {
            token: "w".into(),
            until_epoch_ms: u64::MAX / 2,
        };
        store
            .apply(
                dead,
                &Transition::Claim {
                    lease: lease.clone(),
                    now_epoch_ms: 1,
                },
            )
            .await
            .unwrap();
        let error = offpath_core::ErrorInfo::new(offpath_core::DEAD_LETTERED, "gave up");
        store
            .apply(dead, &Transition::fail("w".into(), error, 2))
            .await
            .unwrap();
        let message = offpath_core::JobMessage::new(dead);
        stack.dlq().send(&message, "ops").await.unwrap();
        let now = offpath_core::Clock::now_epoch_ms(&offpath_core::SystemClock);
        let minute = offpath_core::activity::minute_of(now);
        let done = offpath_core::Activity {
            succeeded: 2,
            claimed: 2,
            queue_wait_ms: 40,
            ..Default::default()
        };
        store.add_activity(minute, &done).await.unwrap();

        let (status, _, me) = call(&state, as_caller(get("/me"), "user-key")).await;
        assert_eq!(
            (status, me["owner"].as_str(), me["operator"].as_bool()),
            (StatusCode::OK, Some("alice"), Some(false))
        );
        let refused = [
            get("/admin/queues"),
            get("/admin/dead-letters"),
            admin_post("/admin/dead-letters/redrive", r#"{"all":true}"#),
            admin_post("/admin/dead-letters/purge", r#"{"confirm":"purge"}"#),
        ];
        for request in refused {
            let path = request.uri().to_string();
            let (status, _, body) = call(&state, as_caller(request, "user-key")).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
        }
        let (status, _, _) = call(&state, get("/admin/queues")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "no key at all");
        assert_eq!(
            stack.dlq().depth().await.unwrap().visible,
            1,
            "nothing changed"
        );

        let (_, _, me) = call(&state, as_caller(get("/me"), "op-key")).await;
        assert_eq!(me["operator"], true);
        let (status, _, queues) =
            call(&state, as_caller(get("/admin/queues?minutes=5"), "op-key")).await;
        assert_eq!(status, StatusCode::OK, "{queues}");
        let names: Vec<&str> = queues["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["jobs", "jobs_dlq", "webhooks", "webhooks_dlq"]);
        assert_eq!(queues["queues"][1]["visible"], 1);
        assert_eq!(queues["activity"][0]["succeeded"], 2);
        assert_eq!(queues["activity"][0]["queue_wait_ms"], 40);

        let (status, _, list) = call(&state, as_caller(get("/admin/dead-letters"), "op-key")).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let letter = &list["letters"][0];
        assert_eq!(letter["job_id"], dead.to_string());
        assert_eq!(letter["error"]["code"], "dead_lettered");
        assert_eq!(letter["status"], "failed");
        let redrive = format!(r#"{{"ids":["{dead}"]}}"#);
        let (status, _, done) = call(
            &state,
            as_caller(
                admin_post("/admin/dead-letters/redrive", &redrive),
                "op-key",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{done}");
        assert_eq!(done["moved"].as_array().unwrap().len(), 1);
        assert_eq!(
            store.get(dead).await.unwrap().unwrap().status,
            JobStatus::Queued
        );
        let moved = stack
            .ports
            .queue
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(moved.len(), 1);

        stack.dlq().send(&message, "ops").await.unwrap();
        let purge = admin_post("/admin/dead-letters/purge", r#"{"confirm":"purge"}"#);
        let (status, _, _) = call(&state, as_caller(purge, "op-key")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(drained(stack.dlq().as_ref()).await, "{}", backend.name());
    }
}

/// The console is served by the API itself: the page, its stylesheet and script,
/// with a policy that keeps it to this origin; `/console/` sends to `/console`.
#[tokio::test]
async fn the_console_is_served_from_the_binary() {
    let stack = Stack::new(Backend::Embedded, fast_queue()).await;
    let state = state(&stack);
    for (path, kind, needle) in [
        ("/console", "text/html", "offpath console"),
        ("/console/console.css", "text/css", ":root"),
        ("/console/console.js", "text/javascript", "\"use strict\""),
    ] {
        let response = app(state.clone()).oneshot(get(path)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(
            policy.contains("script-src 'self'") && policy.contains("connect-src 'self'"),
            "{policy}"
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains(needle), "{path}");
    }
    let response = app(state.clone()).oneshot(get("/console/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(response.headers()["location"], "/console");
    let (status, _, _) = call(&state, get("/console/missing.js")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
