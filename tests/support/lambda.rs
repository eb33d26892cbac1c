//! Runs the real Lambda bootstrap binaries (`offpath-api`, `offpath-worker`,
//! `offpath-sweep`) as Lambda runs them: the process polls the Lambda Runtime API
//! (`AWS_LAMBDA_RUNTIME_API`) for invocations and posts back the results. This module
//! serves that documented HTTP interface on loopback, one invocation at a time, and
//! keeps every line the function prints, as CloudWatch Logs would.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// The Runtime API's version prefix.
const PREFIX: &str = "/2018-06-01/runtime";

/// What a function answered to an invocation.
pub type Answer = Result<Value, Value>;

struct Pending {
    request_id: String,
    event: Value,
    answer: oneshot::Sender<Answer>,
}

#[derive(Clone)]
struct Shared {
    next: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Answer>>>>,
}

/// A Lambda function process served by a loopback Runtime API; killed when dropped.
pub struct Function {
    child: Child,
    invocations: mpsc::Sender<Pending>,
    /// Every line the process printed on stdout and stderr.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Function {
    /// Builds (if needed) and starts the workspace binary `bin` of `package` with the
    /// Lambda environment plus `env`.
    pub async fn start(package: &str, bin: &str, env: &[(&str, &str)]) -> Function {
        let (invocations, next) = mpsc::channel(1);
        let shared = Shared {
            next: Arc::new(tokio::sync::Mutex::new(next)),
            waiting: Arc::default(),
        };
        let app = Router::new()
            .route(&format!("{PREFIX}/invocation/next"), get(next_invocation))
            .route(
                &format!("{PREFIX}/invocation/{{id}}/response"),
                post(respond),
            )
            .route(&format!("{PREFIX}/invocation/{{id}}/error"), post(fail))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut build = escargot::CargoBuild::new()
            .package(package)
            .bin(bin)
            .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"));
        // Cargo describes this test to it in CARGO_* variables; passed on, they would
        // look like a changed environment to build scripts and rebuild the world.
        for (key, _) in std::env::vars() {
            let described = [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_BIN_",
                "CARGO_CRATE_",
            ]
            .iter()
            .any(|prefix| key.starts_with(prefix));
            if described || key == "CARGO_PRIMARY_PACKAGE" || key == "CARGO_TARGET_TMPDIR" {
                build = build.env_remove(key);
            }
        }
        let binary = build
            .run()
            .unwrap_or_else(|e| panic!("building {bin}: {e}"));
        let mut child = Command::new(binary.path())
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", bin)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{bin}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr = BufReader::new(child.stderr.take().unwrap());
        for reader in [
            Box::new(stdout) as Box<dyn BufRead + Send>,
            Box::new(stderr),
        ] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in reader.lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Function {
            child,
            invocations,
            lines,
        }
    }

    /// Invokes the function with `event` under `request_id` and waits (at most 60 s)
    /// for its answer.
    pub async fn invoke(&self, request_id: &str, event: Value) -> Answer {
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            request_id: request_id.to_owned(),
            event,
            answer,
        };
        self.invocations.send(pending).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), answered)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no answer in 60 s; output:\n{}",
                    self.lines.lock().unwrap().join("\n")
                )
            })
            .expect("the function process went away")
    }

    /// The JSON lines once `done` holds for them (at most 10 s): a function answers
    /// before the threads that collect its output have read its last lines.
    pub async fn json_lines_when(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.json_lines();
            if done(&lines) || tokio::time::Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The lines printed so far that parse as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
            .collect()
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn next_invocation(State(shared): State<Shared>) -> (HeaderMap, String) {
    let pending = shared
        .next
        .lock()
        .await
        .recv()
        .await
        .expect("the test ended");
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        + Duration::from_secs(60);
    let mut headers = HeaderMap::new();
    let id = pending.request_id.clone();
    headers.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline.as_millis().to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:test"
            .parse()
            .unwrap(),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0"
            .parse()
            .unwrap(),
    );
    shared.waiting.lock().unwrap().insert(id, pending.answer);
    (headers, pending.event.to_string())
}

async fn respond(State(shared): State<Shared>, Path(id): Path<String>, body: String) -> StatusCode {
    answer(
        &shared,
        &id,
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null)),
    )
}

async fn fail(State(shared): State<Shared>, Path(id): Path<String>, body: String) -> StatusCode {
    answer(
        &shared,
        &id,
        Err(serde_json::from_str(&body).unwrap_or(Value::Null)),
    )
}

fn answer(shared: &Shared, id: &str, answer: Answer) -> StatusCode {
    match shared.waiting.lock().unwrap().remove(id) {
        Some(waiting) => {
            let _ = waiting.send(answer);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}
