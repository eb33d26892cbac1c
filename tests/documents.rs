//! Documents in parts, on moto (DynamoDB, SQS, S3) and on the embedded backend: the
//! chunking rule checked with the tokenizer on its own, chunk 0 against the reference
//! embedding, uploads and results through the API, duplicate deliveries, a worker
//! killed mid-part, a cancel mid-way, a poisoned part redriven, and bad documents.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use offpath_api::{AppState, Auth, app};
use offpath_core::{
    Job, JobId, JobMessage, JobStatus, Model, QueueSettings, blob::LIFETIMES, blob::upload_key,
};
use offpath_inference::{MiniLm, weights};
use offpath_testkit::{
    Backend, Call, Hooked, Hooks, OWNER, POISON_PIECE, Stack, TestModel, reference_embedding,
};
use offpath_worker::poller::{PollSettings, Pool, process_batch};
use offpath_worker::{Backoff, Worker, WorkerConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Queues for these tests: a short visibility timeout, three receives.
fn settings() -> QueueSettings {
    QueueSettings {
        visibility_timeout: Duration::from_secs(3),
        max_receive_count: 3,
        ..QueueSettings::default()
    }
}

/// Workers here: a 2 s heartbeat (a dead worker's part comes back within 3 s),
/// quick retries.
fn config(stack: &Stack) -> WorkerConfig {
    WorkerConfig {
        heartbeat: Duration::from_secs(2),
        job_timeout: Duration::from_secs(60),
        max_receive_count: Some(stack.settings.max_receive_count),
        backoff: Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(200),
        },
    }
}

fn worker(stack: &Stack, model: Arc<dyn Model>) -> Worker {
    Worker::new(&stack.ports, model, Stack::tasks(), config(stack))
}

fn state(stack: &Stack) -> AppState {
    AppState::new(&stack.ports, Stack::tasks(), Auth::SingleTenant)
}

/// Calls the router; returns the status, the Location header and the JSON body.
async fn call(state: &AppState, request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        location,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn post_json(path: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("host", "offpath.test")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Uploads `bytes` as the API says (a presigned S3 PUT, or the API's own route);
/// returns the upload id.
async fn upload(state: &AppState, bytes: Vec<u8>) -> String {
    let (status, _, upload) = call(state, post_json("/uploads", json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{upload}");
    assert_eq!(upload["method"], "PUT");
    assert_eq!(upload["max_bytes"], 10 * 1024 * 1024);
    let url = upload["url"].as_str().unwrap();
    match url.strip_prefix("http://offpath.test") {
        Some(path) => {
            let request = Request::put(path).body(Body::from(bytes)).unwrap();
            let (status, _, stored) = call(state, request).await;
            assert_eq!(status, StatusCode::OK, "{stored}");
        }
        None => {
            let response = reqwest::Client::new()
                .put(url)
                .body(bytes)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
        }
    }
    upload["id"].as_str().unwrap().to_owned()
}

/// Submits an `embed_document` job; returns its id.
async fn submit(state: &AppState, input: Value) -> JobId {
    let body = json!({"task": "embed_document", "input": input});
    let (status, _, job) = call(state, post_json("/jobs", body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    job["id"].as_str().unwrap().parse().unwrap()
}

async fn job(stack: &Stack, id: JobId) -> Job {
    stack.ports.store.get(id).await.unwrap().unwrap()
}

/// Polls the jobs queue as the event source mapping does, batches of `batch`, until
/// `done` holds for the job (at most 120 s).
async fn drive(stack: &Stack, worker: &Worker, id: JobId, batch: u32, done: impl Fn(&Job) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let current = job(stack, id).await;
        if done(&current) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not reached in 120 s: {current:?}"
        );
        let queue = stack.ports.queue.as_ref();
        let messages = queue.receive(batch, Duration::from_secs(1)).await.unwrap();
        if !messages.is_empty() {
            process_batch(worker, queue, messages).await;
        }
    }
}

fn terminal(job: &Job) -> bool {
    job.status.is_terminal()
}

/// Handles whatever the jobs queue still holds, until it holds nothing.
async fn drain(stack: &Stack, worker: &Worker) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let queue = stack.ports.queue.as_ref();
    while queue
        .depth()
        .await
        .map(|d| d.visible + d.in_flight)
        .unwrap()
        > 0
    {
        assert!(Instant::now() < deadline, "the queue does not drain");
        let messages = queue.receive(10, Duration::from_secs(1)).await.unwrap();
        if !messages.is_empty() {
            process_batch(worker, queue, messages).await;
        }
    }
}

/// The result's lines, as the API serves them (following the redirect to S3).
async fn result_lines(state: &AppState, id: JobId) -> Vec<Value> {
    let request = Request::get(format!("/jobs/{id}/result"))
        .body(Body::empty())
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let bytes = match response.status() {
        StatusCode::OK => axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
        StatusCode::TEMPORARY_REDIRECT => {
            let url = response.headers()["location"].to_str().unwrap().to_owned();
            reqwest::get(url)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec()
        }
        other => panic!("GET /jobs/{id}/result answered {other}"),
    };
    bytes
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect()
}

/// A document of `words` words for the test model (one piece per word).
fn words(count: usize) -> String {
    (0..count).map(|i| format!("w{i} ")).collect()
}

/// A test-model document of `parts` parts (32 chunks each) at chunk_tokens 16 and no
/// overlap: 14 pieces per chunk.
fn parted(parts: usize) -> (String, Value) {
    let text = words(parts * 32 * 14);
    let input = json!({"text": text, "chunk_tokens": 16, "overlap_tokens": 0});
    (text, input)
}

fn minilm() -> Arc<MiniLm> {
    static MODEL: OnceLock<Arc<MiniLm>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let files = weights::resolve(false).expect("model files (tests/run fetches them)");
            Arc::new(MiniLm::load(&files).expect("model loads"))
        })
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_document_runs_in_parts_by_the_rule_and_matches_the_reference() {
    // "word " * 400 first, so chunk 0 is the reference's truncation; then varied
    // text, about 96 KB: more than the 64 KiB body, three parts at the default window.
    let mut document = "word ".repeat(400);
    let sentences = [
        "Queues decouple producers from consumers, so a slow model never blocks a request.",
        "Ünïcödé façade — naïve café, 日本語のテキスト, and an emoji 🚀 keep offsets honest.",
        "Each window holds 254 word pieces and starts 222 pieces after the one before.",
    ];
    while document.len() < 96 * 1024 {
        document.push_str(sentences[document.len() % 3]);
        document.push(' ');
    }
    // The rule, counted with the tokenizer on its own.
    let files = weights::resolve(false).unwrap();
    let mut tokenizer = tokenizers::Tokenizer::from_file(files.tokenizer()).unwrap();
    tokenizer.with_truncation(None).unwrap();
    let encoding = tokenizer.encode(document.as_str(), false).unwrap();
    let pieces = encoding.get_offsets().len();
    let expected = if pieces <= 254 {
        1
    } else {
        (pieces - 254).div_ceil(222) + 1
    };
    assert!(expected > 64, "{expected} chunks make more than two parts");

    for backend in Backend::ALL {
        let stack = Stack::new(backend, settings()).await;
        let state = state(&stack);
        let id = upload(&state, document.clone().into_bytes()).await;
        let job_id = submit(&state, json!({"upload": id})).await;
        let worker = worker(&stack, minilm());
        drive(&stack, &worker, job_id, 10, terminal).await;
        let done = job(&stack, job_id).await;
        assert_eq!(done.status, JobStatus::Succeeded, "{backend:?}: {done:?}");
        let output = done.output.as_ref().unwrap().to_value();
        assert_eq!(output["chunks"], expected);
        assert_eq!(output["dimensions"], 384);
        assert_eq!(output["result"]["format"], "jsonl");
        assert_eq!(output["result"]["url"], format!("/jobs/{job_id}/result"));
        assert_eq!(
            done.view().progress.map(|p| (p.done, p.total)),
            Some((expected as u64, expected as u64))
        );

        let lines = result_lines(&state, job_id).await;
        assert_eq!(lines.len(), expected, "{backend:?}");
        let (mut last_start, mut covered_to) = (None, 0);
        for (index, line) in lines.iter().enumerate() {
            assert_eq!(line["index"], index);
            let (start, end) = (
                line["start"].as_u64().unwrap() as usize,
                line["end"].as_u64().unwrap() as usize,
            );
            assert!(last_start.is_none_or(|s| s < start) && start < end && end <= document.len());
            assert!(document.is_char_boundary(start) && document.is_char_boundary(end));
            // In order, and no gap but whitespace between a chunk and the next.
            assert!(
                document[covered_to.min(start)..start].trim().is_empty(),
                "gap before chunk {index}"
            );
            covered_to = covered_to.max(end);
            last_start = Some(start);
            assert_eq!(line["embedding"].as_array().unwrap().len(), 384);
        }
        assert_eq!(lines[0]["start"], 0);
        assert_eq!(covered_to, document.trim_end().len());
        let chunk0: Vec<f32> = lines[0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let cosine: f32 = chunk0
            .iter()
            .zip(reference_embedding(&"word ".repeat(400)))
            .map(|(a, b)| a * b)
            .sum();
        assert!(cosine >= 0.999, "{backend:?}: chunk 0 cosine {cosine}");
        // The parts' blobs are gone; the result stays until its lifetime ends.
        let parts = format!("parts/{job_id}/");
        assert_eq!(stack.ports.blobs.delete_prefix(&parts).await.unwrap(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_deliveries_of_every_part_run_each_part_once() {
    for backend in Backend::ALL {
        let stack = Stack::new(backend, settings()).await;
        let state = state(&stack);
        let (_, input) = parted(4);
        let id = submit(&state, input).await;
        let model = Arc::new(TestModel::default());
        let worker = worker(&stack, model.clone());
        // The split: the job's message, whose handling sends one message per part.
        drive(&stack, &worker, id, 1, |job| job.parts.is_some()).await;
        let split = job(&stack, id).await;
        assert_eq!(
            split.view().progress.map(|p| (p.done, p.total)),
            Some((0, 128))
        );
        for _ in 0..9 {
            for part in 0..4 {
                stack
                    .ports
                    .queue
                    .send(&JobMessage::part(id, part), OWNER)
                    .await
                    .unwrap();
            }
        }
        drive(&stack, &worker, id, 10, terminal).await;
        // The extra deliveries find their parts settled or leased.
        drain(&stack, &worker).await;
        let done = job(&stack, id).await;
        assert_eq!(done.status, JobStatus::Succeeded, "{backend:?}");
        assert_eq!(
            model.sequences_embedded.load(Ordering::SeqCst),
            128,
            "{backend:?}: each part ran once"
        );
        let parts = done.parts.unwrap();
        assert!(parts.attempts.values().all(|&a| a == 1), "{parts:?}");
        assert_eq!(result_lines(&state, id).await.len(), 128);
    }
}

/// Hooks that stop a worker for good after its first claim of a part: a process
/// killed mid-part.
#[derive(Default)]
struct DieAfterFirstPartClaim {
    died: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Hooks for DieAfterFirstPartClaim {
    async fn after(&self, call: Call, _took: Duration, succeeded: bool) {
        if succeeded
            && matches!(call.step(), Some(offpath_core::Step::ClaimPart(_)))
            && !self.died.swap(true, Ordering::SeqCst)
        {
            std::future::pending::<()>().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_part_loses_nothing() {
    for backend in Backend::ALL {
        let stack = Stack::new(backend, settings()).await;
        let state = state(&stack);
        let (_, input) = parted(3);
        let id = submit(&state, input).await;
        let model = Arc::new(TestModel::default());
        let poll = PollSettings {
            batch_size: 1,
            wait: Duration::from_secs(1),
        };
        // The doomed worker splits the job, claims a part and dies holding it.
        let hooks = Arc::new(DieAfterFirstPartClaim::default());
        let doomed_ports = stack
            .ports
            .with_store(Hooked::store(stack.ports.store.clone(), hooks.clone()));
        let doomed = Worker::new(&doomed_ports, model.clone(), Stack::tasks(), config(&stack));
        let pool = Pool::start(Arc::new(doomed), stack.ports.queue.clone(), poll, 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !hooks.died.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the worker never claimed a part");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pool.kill();
        // A new worker finishes: the dead part comes back when its lease and message do.
        let started = Instant::now();
        let survivor = worker(&stack, model.clone());
        drive(&stack, &survivor, id, 10, terminal).await;
        let done = job(&stack, id).await;
        assert_eq!(done.status, JobStatus::Succeeded, "{backend:?}");
        assert_eq!(model.sequences_embedded.load(Ordering::SeqCst), 96);
        assert!(
            done.parts.unwrap().attempts.values().any(|&a| a == 2),
            "the killed part ran again"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_mid_way_stops_the_parts_not_yet_started() {
    for backend in Backend::ALL {
        let stack = Stack::new(backend, settings()).await;
        let state = state(&stack);
        let (_, input) = parted(4);
        let id = submit(&state, input).await;
        let model = Arc::new(TestModel::default());
        let worker = worker(&stack, model.clone());
        // Split, then one part runs.
        drive(&stack, &worker, id, 1, |job| {
            job.parts.as_ref().is_some_and(|p| p.chunks_done > 0)
        })
        .await;
        let request = Request::delete(format!("/jobs/{id}"))
            .body(Body::empty())
            .unwrap();
        let (status, _, view) = call(&state, request).await;
        assert_eq!(
            (status, view["cancel_requested"].as_bool()),
            (StatusCode::OK, Some(true))
        );
        drive(&stack, &worker, id, 10, terminal).await;
        let done = job(&stack, id).await;
        assert_eq!(done.status, JobStatus::Cancelled, "{backend:?}");
        assert!(done.output.is_none());
        let parts = done.parts.unwrap();
        assert!(parts.all_settled());
        assert_eq!(
            model.sequences_embedded.load(Ordering::SeqCst) as u64,
            parts.chunks_done
        );
        assert!(parts.chunks_done < 128, "parts not started did not run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_part_dead_letters_the_job_and_a_redrive_reruns_only_it() {
    for backend in Backend::ALL {
        let stack = Stack::new(backend, settings()).await;
        let state = state(&stack);
        // Four parts; the second's text holds a word the test model panics on.
        let mut text = words(32 * 14);
        text.push_str(&"p".repeat(POISON_PIECE as usize));
        text.push(' ');
        text.push_str(&words(3 * 32 * 14 - 1));
        let id = submit(
            &state,
            json!({"text": text, "chunk_tokens": 16, "overlap_tokens": 0}),
        )
        .await;
        let model = Arc::new(TestModel::default());
        let worker = worker(&stack, model.clone());
        drive(&stack, &worker, id, 10, terminal).await;
        let failed = job(&stack, id).await;
        assert_eq!(failed.status, JobStatus::Failed, "{backend:?}");
        let error = failed.error.clone().unwrap();
        assert_eq!(error.code, "dead_lettered");
        assert!(
            error
                .message
                .starts_with("part 1 of 4 gave up after 3 attempts"),
            "{}",
            error.message
        );
        let ran_before = model.sequences_embedded.load(Ordering::SeqCst);
        assert_eq!(ran_before, 96, "the three healthy parts ran");
        // SQS moves the message after its last receive.
        let dlq = stack.dlq();
        let deadline = Instant::now() + Duration::from_secs(30);
        let letters = loop {
            let _ = stack.ports.queue.receive(10, Duration::ZERO).await.unwrap();
            let letters = dlq.receive(10, Duration::from_secs(1)).await.unwrap();
            if !letters.is_empty() {
                break letters;
            }
            assert!(Instant::now() < deadline, "no dead letter");
        };
        assert_eq!(letters.len(), 1);
        assert_eq!(
            JobMessage::from_body(&letters[0].body).unwrap(),
            JobMessage::part(id, 1)
        );
        // Fix the cause, redrive as `offpath dlq redrive` does: revive, move the message.
        model.cured.store(true, Ordering::SeqCst);
        let now = offpath_core::Clock::now_epoch_ms(&offpath_core::SystemClock);
        let revived = offpath_core::store::revive(stack.ports.store.as_ref(), id, now)
            .await
            .unwrap();
        assert_eq!(revived.status, JobStatus::Running);
        stack
            .ports
            .queue
            .send(&JobMessage::from_body(&letters[0].body).unwrap(), OWNER)
            .await
            .unwrap();
        dlq.delete(&letters[0].receipt_handle).await.unwrap();
        drive(&stack, &worker, id, 10, terminal).await;
        let done = job(&stack, id).await;
        assert_eq!(done.status, JobStatus::Succeeded, "{backend:?}: {done:?}");
        assert_eq!(
            model.sequences_embedded.load(Ordering::SeqCst) - ran_before,
            32,
            "only the dead part ran again"
        );
        assert_eq!(result_lines(&state, id).await.len(), 128);
    }
}

#[tokio::test]
async fn bad_documents_get_their_4xx_or_fail_invalid_input_and_leave_nothing_unexpiring() {
    for backend in Backend::ALL {
        let stack = Stack::new(backend, settings()).await;
        let mut state = state(&stack);
        let (status, _, body) = call(&state, post_json("/jobs", json!({"task": "embed_document", "input": {"upload": uuid::Uuid::new_v4().to_string()}}))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("upload_not_found"))
        );
        // Another owner's upload is no upload of this one.
        state.auth = Arc::new(Auth::from_api_keys(Some("ka=alice,kb=bob")).unwrap());
        let as_owner = |key: &str, mut request: Request<Body>| {
            request
                .headers_mut()
                .insert("x-api-key", key.parse().unwrap());
            request
        };
        let (_, _, given) = call(&state, as_owner("ka", post_json("/uploads", json!({})))).await;
        let alice_upload = given["id"].as_str().unwrap().to_owned();
        stack
            .ports
            .blobs
            .put(
                &upload_key("alice", &alice_upload),
                b"alice's text".to_vec(),
            )
            .await
            .unwrap();
        let bob = json!({"task": "embed_document", "input": {"upload": alice_upload}});
        let (status, _, _) = call(&state, as_owner("kb", post_json("/jobs", bob))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        state.auth = Arc::new(Auth::SingleTenant);
        for (input, code) in [
            (json!({"text": "   "}), "invalid_input"),
            (
                json!({"text": "x", "upload": alice_upload}),
                "invalid_input",
            ),
            (json!({"text": "x", "chunk_tokens": 300}), "invalid_input"),
        ] {
            let (status, _, body) = call(
                &state,
                post_json("/jobs", json!({"task": "embed_document", "input": input})),
            )
            .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some(code))
            );
        }
        // Too large: refused at the local PUT, or at submit after an S3 PUT.
        let big = vec![b'a'; 10 * 1024 * 1024 + 1];
        let (_, _, given) = call(&state, post_json("/uploads", json!({}))).await;
        let big_id = given["id"].as_str().unwrap().to_owned();
        match given["url"]
            .as_str()
            .unwrap()
            .strip_prefix("http://offpath.test")
        {
            Some(path) => {
                let request = Request::put(path).body(Body::from(big)).unwrap();
                let (status, _, body) = call(&state, request).await;
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (StatusCode::PAYLOAD_TOO_LARGE, Some("upload_too_large"))
                );
                // A forged signature is refused before anything is stored.
                let forged = path.replace("signature=", "signature=00");
                let request = Request::put(forged).body(Body::from("x")).unwrap();
                assert_eq!(call(&state, request).await.0, StatusCode::FORBIDDEN);
            }
            None => {
                stack
                    .ports
                    .blobs
                    .put(&upload_key("local", &big_id), big)
                    .await
                    .unwrap();
                let (status, _, body) = call(
                    &state,
                    post_json(
                        "/jobs",
                        json!({"task": "embed_document", "input": {"upload": big_id}}),
                    ),
                )
                .await;
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (StatusCode::PAYLOAD_TOO_LARGE, Some("upload_too_large"))
                );
            }
        }
        assert!(
            offpath_testkit::unfinished(stack.ports.store.as_ref())
                .await
                .is_empty(),
            "no job left behind"
        );
        assert!(
            offpath_testkit::drained(stack.ports.queue.as_ref()).await,
            "no message left behind"
        );
        // Not UTF-8, or blank: known only once read, the job fails invalid_input.
        let model = Arc::new(TestModel::default());
        let worker = worker(&stack, model);
        for (bytes, problem) in [
            (
                b"fine \xff\xfe text".to_vec(),
                "the upload is not UTF-8 text (invalid bytes at offset 5)",
            ),
            (
                b" \n\t ".to_vec(),
                "input: the document holds no text (it is empty or blank)",
            ),
        ] {
            let id = upload(&state, bytes).await;
            let job_id = submit(&state, json!({"upload": id})).await;
            drive(&stack, &worker, job_id, 1, terminal).await;
            let failed = job(&stack, job_id).await;
            let error = failed.error.unwrap();
            assert_eq!(
                (failed.status, error.code.as_str()),
                (JobStatus::Failed, "invalid_input")
            );
            assert_eq!(error.message, problem);
        }
        assert!(offpath_testkit::drained(stack.ports.queue.as_ref()).await);
        // What stays behind (uploads) expires: S3 lifecycle rules, local expiry.
        match &stack.resources {
            Some(resources) => {
                let s3 = offpath_aws::s3::client(&offpath_testkit::sdk().await);
                let rules = s3
                    .get_bucket_lifecycle_configuration()
                    .bucket(&resources.bucket)
                    .send()
                    .await
                    .unwrap();
                for (prefix, _) in LIFETIMES {
                    assert!(
                        rules
                            .rules()
                            .iter()
                            .any(|r| r.filter().and_then(|f| f.prefix()) == Some(prefix)
                                && r.expiration().is_some()),
                        "no expiry for {prefix}"
                    );
                }
            }
            None => {
                let dir = std::env::temp_dir()
                    .join("offpath-expiry-check")
                    .join(uuid::Uuid::new_v4().to_string());
                let blobs = offpath_embedded::LocalBlobs::new(&dir).unwrap();
                let key = upload_key("local", &uuid::Uuid::new_v4().to_string());
                offpath_core::BlobStore::put(&blobs, &key, b"old".to_vec())
                    .await
                    .unwrap();
                let now = std::time::SystemTime::now();
                assert_eq!(blobs.expire(now).await.unwrap(), 0);
                assert_eq!(
                    blobs
                        .expire(now + Duration::from_secs(2 * 24 * 3600))
                        .await
                        .unwrap(),
                    1
                );
            }
        }
    }
}
