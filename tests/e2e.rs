//! End to end through the real `offpath dev --backend aws` binary on an AWS-protocol
//! endpoint (moto): HTTP in, SQS and DynamoDB in between, the worker out; and the
//! default embedded backend (`offpath dev`) across a restart.

use std::time::{Duration, Instant};

use futures::future::join_all;
use offpath_core::QueueSettings;
use offpath_core::{JobId, JobMessage};
use offpath_testkit::{
    Dev, Receiver, Stack, binary, drained, fast_queue, item_count, reference_embedding,
};
use serde_json::{Value, json};

async fn stack(settings: QueueSettings) -> Stack {
    Stack::moto(settings).await
}

/// `offpath dev` on this stack's own resources, retrying quickly.
fn dev(stack: &Stack) -> Dev {
    let env = stack.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Dev::start(
        &env,
        &["--backoff-base-ms", "200", "--heartbeat-seconds", "10"],
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn submit(dev: &Dev, body: &Value, key: Option<&str>) -> reqwest::Response {
    let mut request = client().post(format!("{}/jobs", dev.url)).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

async fn get_json(url: String) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls a job until it is terminal; returns the statuses seen, in order.
async fn wait_terminal(dev: &Dev, id: &str) -> (Vec<String>, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let job = get_json(format!("{}/jobs/{id}", dev.url)).await;
        let status = job["status"].as_str().unwrap().to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if ["succeeded", "failed", "cancelled"].contains(&status.as_str()) {
            return (seen, job);
        }
        assert!(
            Instant::now() < deadline,
            "job {id} not terminal in 60 s: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn embed(text: &str) -> Value {
    json!({"task": "embed", "input": {"texts": [text]}})
}

#[tokio::test]
async fn an_embed_job_runs_the_real_model_end_to_end() {
    let stack = stack(fast_queue()).await;
    let dev = dev(&stack);
    let text = "A man is eating food.";
    let response = submit(&dev, &embed(text), None).await;
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["status"], "queued");
    let (seen, job) = wait_terminal(&dev, job["id"].as_str().unwrap()).await;
    // Every status observed after "queued" follows the state machine.
    for pair in seen.windows(2) {
        assert!(
            matches!(
                (pair[0].as_str(), pair[1].as_str()),
                ("queued" | "running", _)
            ),
            "{seen:?}"
        );
    }
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1);
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());
    let output = &job["output"];
    assert_eq!(
        (output["model"].as_str(), output["dimensions"].as_u64()),
        (Some("all-MiniLM-L6-v2"), Some(384))
    );
    let vector: Vec<f64> = output["embeddings"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(vector.len(), 384);
    let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "unit vector, norm {norm}");
    let cosine: f64 = vector
        .iter()
        .zip(reference_embedding(text))
        .map(|(a, b)| a * b as f64)
        .sum();
    assert!(cosine >= 0.999, "matches the reference: cosine {cosine}");
}

#[tokio::test]
async fn rank_and_classify_jobs_give_the_obvious_answers() {
    let stack = stack(fast_queue()).await;
    let dev = dev(&stack);
    let rank = json!({"task": "rank", "input": {
        "query": "how do I reset my password",
        "documents": ["Quarterly revenue grew 4%.", "To reset your password, open Settings and choose Reset password.", "The cat sat on the mat."]
    }});
    let classify = json!({"task": "classify", "input": {
        "text": "The striker scored twice and the team won the league.",
        "labels": ["cooking", "sports", "finance"]
    }});
    let rank: Value = submit(&dev, &rank, None).await.json().await.unwrap();
    let classify: Value = submit(&dev, &classify, None).await.json().await.unwrap();
    let (_, rank) = wait_terminal(&dev, rank["id"].as_str().unwrap()).await;
    let (_, classify) = wait_terminal(&dev, classify["id"].as_str().unwrap()).await;
    assert_eq!(rank["output"]["order"][0], 1, "{rank}");
    assert_eq!(classify["output"]["label"], "sports", "{classify}");
}

#[tokio::test]
async fn fifty_racing_posts_with_one_key_make_one_job() {
    let stack = stack(fast_queue()).await;
    let dev = dev(&stack);
    let body = embed("race");
    let responses = join_all((0..50).map(|_| submit(&dev, &body, Some("race-key")))).await;
    let mut ids = Vec::new();
    for response in responses {
        assert_eq!(response.status(), 202);
        let job: Value = response.json().await.unwrap();
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer names the same job");
    assert_eq!(item_count(&stack.resources().table).await, 1);

    let other = submit(&dev, &embed("not the same"), Some("race-key")).await;
    assert_eq!(other.status(), 422);
    let error: Value = other.json().await.unwrap();
    assert_eq!(error["error"]["code"], "idempotency_key_reused");
    assert_eq!(item_count(&stack.resources().table).await, 1);
}

#[tokio::test]
async fn poison_messages_reach_the_dead_letter_queue_and_the_pipeline_keeps_serving() {
    let stack = stack(fast_queue()).await;
    let dev = dev(&stack);
    let ghost = JobId::random();
    let sqs = aws_sdk_sqs::Client::new(&offpath_testkit::sdk().await);
    for body in [
        "this is not a job".to_owned(),
        JobMessage::new(ghost).to_body(),
    ] {
        sqs.send_message()
            .queue_url(&stack.resources().queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while stack.dlq().depth().await.unwrap().visible < 2 {
        assert!(
            Instant::now() < deadline,
            "poison not dead-lettered in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The operators' listing (the local single tenant is the operator) names both.
    let listing = get_json(format!("{}/admin/dead-letters", dev.url)).await;
    let mut dead: Vec<(String, String)> = listing["letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let job = l["job_id"].as_str().unwrap_or("-").to_owned();
            (job, l["error"]["code"].as_str().unwrap().to_owned())
        })
        .collect();
    dead.sort();
    let mut want = [
        (ghost.to_string(), "job_not_found".to_owned()),
        ("-".to_owned(), "not_a_job_message".to_owned()),
    ];
    want.sort();
    assert_eq!(dead, want, "{listing}");

    let job: Value = submit(&dev, &embed("still serving"), None)
        .await
        .json()
        .await
        .unwrap();
    let (_, job) = wait_terminal(&dev, job["id"].as_str().unwrap()).await;
    assert_eq!(job["attempts"], 1);
}

#[tokio::test]
async fn duplicate_deliveries_of_a_finished_job_change_nothing() {
    let stack = stack(fast_queue()).await;
    let dev = dev(&stack);
    let job: Value = submit(&dev, &embed("once"), None)
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    wait_terminal(&dev, &id).await;
    let before = stack
        .ports
        .store
        .get(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    for _ in 0..5 {
        stack
            .ports
            .queue
            .send(&JobMessage::new(before.id), &before.owner)
            .await
            .unwrap();
    }
    // Wait until the duplicates are consumed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let depth = stack.ports.queue.depth().await.unwrap();
        if depth.visible == 0 && depth.in_flight == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "duplicates not consumed: {depth:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = stack.ports.store.get(before.id).await.unwrap().unwrap();
    assert_eq!(after, before, "the record, version included, is unchanged");
    assert!(
        stack
            .dlq()
            .receive(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn bad_inputs_get_their_4xx_over_http_and_leave_nothing() {
    let stack = stack(fast_queue()).await;
    let dev = dev(&stack);
    let url = format!("{}/jobs", dev.url);
    let json_post = |body: String| {
        client()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases = [
        (json_post("{not json".into()), 400),
        (json_post(r#"{"task":"translate","input":{}}"#.into()), 400),
        (
            json_post(r#"{"task":"embed","input":{"texts":[]}}"#.into()),
            400,
        ),
        (
            json_post(r#"{"task":"classify","input":{"text":"t","labels":["only"]}}"#.into()),
            400,
        ),
        (
            json_post(format!(
                r#"{{"task":"embed","input":{{"texts":["{}"]}}}}"#,
                "x".repeat(100_000)
            )),
            413,
        ),
        (
            client()
                .post(&url)
                .header("content-type", "text/plain")
                .body("{}"),
            415,
        ),
        (
            json_post(embed("x").to_string()).header("idempotency-key", "tab\there"),
            400,
        ),
    ];
    for (request, want) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), want);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string());
    }
    assert_eq!(item_count(&stack.resources().table).await, 0);
    assert!(drained(stack.ports.queue.as_ref()).await);
}

#[tokio::test]
async fn dev_creates_missing_resources_idempotently_and_stops_on_ctrl_c() {
    let table = offpath_testkit::unique("dev-created");
    for _ in 0..2 {
        let dev = Dev::start(&[("OFFPATH_TABLE", &table)], &[]);
        let health = get_json(format!("{}/health", dev.url)).await;
        assert_eq!(health["status"], "ok");
        assert!(dev.interrupt().success(), "clean exit on Ctrl-C");
    }
    assert_eq!(item_count(&table).await, 0);
}

#[tokio::test]
async fn the_default_embedded_stack_serves_the_printed_curl_example() {
    // No AWS endpoint: `offpath` with no command is `offpath dev --backend embedded`.
    let dev = Dev::spawn(
        &[("AWS_ENDPOINT_URL", ""), ("OFFPATH_ADDR", "127.0.0.1:0")],
        &[],
    );
    let example = dev.banner[1..].join("\n");
    assert!(example.contains(&dev.url), "{example}");
    let output = std::process::Command::new("bash")
        .args(["-c", &example])
        .output()
        .unwrap();
    let job: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    let job = match job["status"].as_str() {
        Some("succeeded") => job,
        _ => wait_terminal(&dev, job["id"].as_str().unwrap()).await.1,
    };
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["output"]["embeddings"][0].as_array().unwrap().len(),
        384
    );
    // The front page is the console; the operator (the single tenant) sees the queues.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let front = no_redirects.get(&dev.url).send().await.unwrap();
    assert_eq!(front.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(front.headers()["location"], "/console");
    let queues = get_json(format!("{}/admin/queues", dev.url)).await;
    assert_eq!(queues["queues"].as_array().unwrap().len(), 4, "{queues}");
    assert!(dev.interrupt().success(), "clean exit on Ctrl-C");
}

/// The embedded backend keeps its promises across a SIGKILL: started again on the same
/// data directory, `offpath` runs the jobs it had accepted (queued and in flight: a
/// claimed job within the heartbeat, a message received but not yet claimed within the
/// visibility timeout, here 6 s), still answers the jobs that had finished, and answers
/// a keyed replay with the same job.
#[tokio::test]
async fn the_embedded_backend_resumes_after_sigkill_on_the_same_data_directory() {
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("AWS_ENDPOINT_URL", ""),
        ("OFFPATH_DATA_DIR", data.path().to_str().unwrap()),
    ];
    let args = [
        "dev",
        "--addr",
        "127.0.0.1:0",
        "--heartbeat-seconds",
        "3",
        "--visibility-timeout-seconds",
        "6",
        "--pollers",
        "1",
        "--batch-size",
        "2",
    ];
    let dev = Dev::spawn(&env, &args);
    let response = submit(&dev, &embed("finished before the kill"), Some("done")).await;
    assert_eq!(response.status(), 202);
    let done_id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, done) = wait_terminal(&dev, &done_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let mut accepted = Vec::new();
    for i in 0..60 {
        let response = submit(&dev, &embed(&format!("text {i}")), Some(&format!("k{i}"))).await;
        assert_eq!(response.status(), 202);
        let job = response.json::<Value>().await.unwrap();
        accepted.push(job["id"].as_str().unwrap().to_owned());
    }
    dev.kill();

    let dev = Dev::spawn(&env, &args);
    let replay = submit(&dev, &embed("text 7"), Some("k7")).await;
    assert!(replay.status().is_success(), "{}", replay.status());
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], accepted[7]);
    let before = get_json(format!("{}/jobs/{done_id}", dev.url)).await;
    assert_eq!(before, done, "a finished job answers as before the kill");
    for id in &accepted {
        let (_, job) = wait_terminal(&dev, id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    assert!(dev.interrupt().success(), "clean exit on Ctrl-C");
}

#[tokio::test]
async fn submit_status_and_wait_commands_drive_the_api() {
    let data = std::env::temp_dir().join(format!("offpath-e2e-data-{}", uuid::Uuid::new_v4()));
    let dev = Dev::spawn(
        &[
            ("OFFPATH_ADDR", "127.0.0.1:0"),
            ("OFFPATH_DATA_DIR", data.to_str().unwrap()),
        ],
        &[],
    );
    let offpath = |args: &[&str], stdin: Option<&str>| {
        let mut child = std::process::Command::new(binary("offpath"))
            .args(args)
            .env("OFFPATH_URL", &dev.url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let output = child.wait_with_output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (ok, out, err) = offpath(
        &[
            "submit", "embed", "--text", "hello", "--text", "world", "--wait",
        ],
        None,
    );
    assert!(ok, "{err}");
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["output"]["embeddings"].as_array().unwrap().len(), 2);

    let input = r#"{"text":"I love this phone, the battery lasts for days","labels":["positive review","negative review"]}"#;
    let (ok, out, err) = offpath(
        &[
            "submit",
            "classify",
            "--input-file",
            "-",
            "--idempotency-key",
            "cli-1",
        ],
        Some(input),
    );
    assert!(ok, "{err}");
    let queued: Value = serde_json::from_str(&out).unwrap();
    let id = queued["id"].as_str().unwrap();
    let (ok, out, err) = offpath(&["wait", id], None);
    assert!(ok, "{err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done["output"]["label"], "positive review", "{done}");
    let (ok, out, _) = offpath(&["status", id], None);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), done);

    // The listing: a table, newest first, filtered, a page at a time.
    let (ok, out, err) = offpath(&["jobs"], None);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID "), "{out}");
    assert_eq!(lines.len(), 3, "a header and both jobs: {out}");
    assert!(
        lines[1].starts_with(id) && lines[1].contains("classify  "),
        "{out}"
    );
    assert!(
        lines[2].contains("embed") && lines[2].contains("succeeded"),
        "{out}"
    );
    // Age and run time come from the view's times (a finished job ran in milliseconds).
    assert!(
        lines[2].trim_end().ends_with("ms") && !lines[2].contains(" - "),
        "{out}"
    );
    let (ok, out, _) = offpath(&["jobs", "--task", "embed"], None);
    assert!(ok && out.lines().count() == 2 && !out.contains(id), "{out}");
    let (ok, out, _) = offpath(&["jobs", "--limit", "1"], None);
    let next = out.lines().last().unwrap();
    assert!(
        ok && next.starts_with("next page: offpath jobs --cursor "),
        "{out}"
    );
    let cursor = next.rsplit(' ').next().unwrap();
    let (ok, out, _) = offpath(&["jobs", "--limit", "1", "--cursor", cursor], None);
    assert!(ok && out.lines().nth(1).unwrap().contains("embed"), "{out}");
    let (ok, _, err) = offpath(&["jobs", "--cursor", "forged.cursor"], None);
    assert!(!ok && err.contains("invalid_cursor"), "{err}");

    // Errors name the problem and exit non-zero.
    let (ok, _, err) = offpath(&["submit", "embed", "--input", r#"{"texts":[]}"#], None);
    assert!(!ok);
    assert!(err.contains("input.texts: must hold 1 to 32"), "{err}");
    let (ok, _, err) = offpath(&["status", "0190b2a4-8f6e-7cc0-9b1e-3f4c5d6e7f80"], None);
    assert!(!ok && err.contains("404"), "{err}");
    // The task comes from the registry: unknown names are refused with the known
    // ones listed, and --text only where the task takes texts.
    let (ok, _, err) = offpath(&["submit", "summarise", "--text", "x"], None);
    assert!(
        !ok && err.contains("[possible values: classify, embed, embed_document, rank]"),
        "{err}"
    );
    let (ok, _, err) = offpath(&["submit", "rank", "--text", "x"], None);
    assert!(!ok && err.contains("rank takes no --text"), "{err}");

    // A document: uploaded to the embedded backend's own URL, split into parts, its
    // progress shown, its result written where --out says.
    let dir = std::env::temp_dir().join(format!("offpath-e2e-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let document: String = (0..2_000)
        .map(|i| format!("Sentence {i} of a document that goes through the command line. "))
        .collect();
    let (file, out) = (dir.join("notes.txt"), dir.join("notes.jsonl"));
    std::fs::write(&file, &document).unwrap();
    let (ok, stdout, err) = offpath(
        &[
            "submit",
            "embed_document",
            "--file",
            file.to_str().unwrap(),
            "--input",
            r#"{"chunk_tokens":64,"overlap_tokens":8}"#,
            "--wait",
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{err}");
    let job: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    let chunks = job["output"]["chunks"].as_u64().unwrap();
    assert!(chunks > 32, "{chunks} chunks make several parts");
    assert_eq!(job["progress"], json!({"done": chunks, "total": chunks}));
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, chunks);
    assert_eq!(lines[0]["start"], 0);
    assert_eq!(lines.last().unwrap()["end"], document.trim_end().len());
    assert!(
        err.contains(&format!("bytes to {}", out.display())),
        "{err}"
    );
    let (ok, _, err) = offpath(&["submit", "embed", "--file", file.to_str().unwrap()], None);
    assert!(!ok && err.contains("embed takes no --file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
}

#[tokio::test]
async fn dev_delivers_signed_webhooks_to_a_loopback_receiver_and_honours_prefer_wait() {
    let stack = stack(fast_queue()).await;
    let mut env = stack.env();
    env.push(("OFFPATH_WEBHOOK_ALLOW_LOOPBACK", "1".into()));
    env.push((
        "OFFPATH_WEBHOOK_KEY",
        "an e2e webhook key, 32 bytes or more".into(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dev = Dev::start(
        &env,
        &["--backoff-base-ms", "200", "--heartbeat-seconds", "10"],
    );
    let secret = get_json(format!("{}/webhooks/secret", dev.url)).await;
    let receiver = Receiver::start(&[secret["secret"].as_str().unwrap().to_owned()]);
    let mut body = embed("A man is eating food.");
    body["webhook"] = receiver.url("/ok/e2e").into();
    body["webhook_events"] = json!(["started", "completed"]);
    let response = client()
        .post(format!("{}/jobs", dev.url))
        .header("prefer", "wait=15")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["preference-applied"], "wait=15");
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["webhook"]["events"], json!(["started", "completed"]));
    let id = job["id"].as_str().unwrap().to_owned();
    let deliveries = receiver
        .wait_for(Duration::from_secs(30), |d| d.len() >= 2)
        .await;
    let kinds: Vec<&str> = deliveries
        .iter()
        .map(|d| d.kind.as_deref().unwrap())
        .collect();
    assert_eq!(kinds, ["job.started", "job.succeeded"]);
    for delivery in &deliveries {
        assert!(delivery.verified, "{delivery:#?}");
        assert_eq!(delivery.job_id.as_deref(), Some(id.as_str()));
    }
    // Without the flag's loopback exception a private target is refused at submit.
    body["webhook"] = "http://10.0.0.7/hook".into();
    let refused = submit(&dev, &body, None).await;
    assert_eq!(refused.status(), 400);
    assert!(dev.interrupt().success(), "clean exit on Ctrl-C");
}

/// `offpath dev` refuses to start when its API would be open to other machines, or when
/// OFFPATH_API_KEYS is set but blank; it stops before listening (nothing is bound, no
/// traffic leaves loopback).
#[test]
fn dev_refuses_an_open_api_beyond_loopback_and_blank_keys() {
    let refused = |env: &[(&str, &str)], args: &[&str]| {
        let mut command = std::process::Command::new(binary("offpath"));
        command
            .arg("dev")
            .args(args)
            .env_remove("OFFPATH_API_KEYS")
            .env_remove("OFFPATH_ALLOW_UNAUTHENTICATED")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(20) {
                child.kill().unwrap();
                panic!("offpath dev {args:?} with {env:?} did not refuse to start");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{stderr}");
        stderr
    };
    let open = refused(&[], &["--addr", "0.0.0.0:0"]);
    assert!(
        open.contains("without API keys") && open.contains("--allow-unauthenticated"),
        "{open}"
    );
    let blank = refused(&[("OFFPATH_API_KEYS", " ")], &["--addr", "127.0.0.1:0"]);
    assert!(blank.contains("OFFPATH_API_KEYS is invalid"), "{blank}");
}
