//! A Lambda function process served by a loopback Lambda Runtime API: the process
//! polls `AWS_LAMBDA_RUNTIME_API` for invocations and posts back the results, as
//! Lambda runs a bootstrap. This module serves that documented HTTP interface, one
//! invocation at a time, notes when the process first asks for an event (when Lambda
//! counts it ready) and keeps every line it prints, as CloudWatch Logs would.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

/// The Runtime API's version prefix.
const PREFIX: &str = "/2018-06-01/runtime";

/// What a function answered to an invocation: its response, or its error.
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
    polled: Arc<watch::Sender<Option<Instant>>>,
}

/// A Lambda function process; killed when dropped.
pub struct Function {
    child: Child,
    started: Instant,
    invocations: mpsc::Sender<Pending>,
    polled: watch::Receiver<Option<Instant>>,
    /// Every line the process printed on stdout and stderr.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Function {
    /// Starts `bootstrap` as the function `name`, with the Lambda environment plus
    /// `env`.
    pub async fn start(
        bootstrap: &Path,
        name: &str,
        env: &[(&str, &str)],
    ) -> std::io::Result<Function> {
        let (invocations, next) = mpsc::channel(1);
        let (polled_tx, polled) = watch::channel(None);
        let shared = Shared {
            next: Arc::new(tokio::sync::Mutex::new(next)),
            waiting: Arc::default(),
            polled: Arc::new(polled_tx),
        };
        let app = Router::new()
            .route(&format!("{PREFIX}/invocation/next"), get(next_invocation))
            .route(
                &format!("{PREFIX}/invocation/{{id}}/response"),
                post(respond),
            )
            .route(&format!("{PREFIX}/invocation/{{id}}/error"), post(fail))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });

        let started = Instant::now();
        let mut child = Command::new(bootstrap)
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(BufReader::new(s)) as Box<dyn BufRead + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(BufReader::new(s)) as Box<dyn BufRead + Send>);
        for reader in stdout.into_iter().chain(stderr) {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in reader.lines().map_while(Result::ok) {
                    lines.lock().expect("lines lock").push(line);
                }
            });
        }
        Ok(Function {
            child,
            started,
            invocations,
            polled,
            lines,
        })
    }

    /// How long after its start the process first asked for an event (Lambda counts
    /// it ready then); an error with its output if it exits or takes longer than
    /// `limit`.
    pub async fn ready(&mut self, limit: Duration) -> Result<Duration, String> {
        let deadline = self.started + limit;
        loop {
            if let Some(at) = *self.polled.borrow() {
                return Ok(at - self.started);
            }
            let exited = self.child.try_wait().map_err(|e| e.to_string())?;
            if exited.is_some() || Instant::now() > deadline {
                let why = exited.map_or(format!("not ready after {limit:?}"), |status| {
                    format!("exited ({status}) before it was ready")
                });
                return Err(format!("{why}; it said:\n{}", self.output()));
            }
            let _ = tokio::time::timeout(Duration::from_millis(1), self.polled.changed()).await;
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
        self.invocations
            .send(pending)
            .await
            .expect("the runtime API runs");
        tokio::time::timeout(Duration::from_secs(60), answered)
            .await
            .unwrap_or_else(|_| panic!("no answer in 60 s; output:\n{}", self.output()))
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

    /// The lines printed so far, each parsed as JSON.
    ///
    /// # Panics
    /// On a line that is not JSON: every line a function prints must be.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lines lock")
            .iter()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
            .collect()
    }

    fn output(&self) -> String {
        self.lines.lock().expect("lines lock").join("\n")
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn next_invocation(State(shared): State<Shared>) -> (HeaderMap, String) {
    shared.polled.send_if_modified(|at| {
        let first = at.is_none();
        at.get_or_insert_with(Instant::now);
        first
    });
    let pending = shared
        .next
        .lock()
        .await
        .recv()
        .await
        .expect("the test ended");
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        + Duration::from_secs(60);
    let mut headers = HeaderMap::new();
    let id = pending.request_id.clone();
    let header = |value: &str| value.parse().expect("a header value");
    headers.insert("lambda-runtime-aws-request-id", header(&id));
    headers.insert(
        "lambda-runtime-deadline-ms",
        header(&deadline.as_millis().to_string()),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        header("arn:aws:lambda:us-east-1:123456789012:function:test"),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        header("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0"),
    );
    shared
        .waiting
        .lock()
        .expect("waiting lock")
        .insert(id, pending.answer);
    (headers, pending.event.to_string())
}

async fn respond(
    State(shared): State<Shared>,
    UrlPath(id): UrlPath<String>,
    body: String,
) -> StatusCode {
    answer(
        &shared,
        &id,
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null)),
    )
}

async fn fail(
    State(shared): State<Shared>,
    UrlPath(id): UrlPath<String>,
    body: String,
) -> StatusCode {
    answer(
        &shared,
        &id,
        Err(serde_json::from_str(&body).unwrap_or(Value::Null)),
    )
}

fn answer(shared: &Shared, id: &str, answer: Answer) -> StatusCode {
    match shared.waiting.lock().expect("waiting lock").remove(id) {
        Some(waiting) => {
            let _ = waiting.send(answer);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}
