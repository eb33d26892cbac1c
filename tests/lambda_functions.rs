//! The Lambda bootstrap binaries that `cargo lambda build --release` made (as for a
//! deployment; `tests/run` builds them once), run as Lambda runs them (the test kit's
//! loopback Runtime API) against moto: an API Gateway event submits a job, the SQS
//! event of its message runs it through the real model, and every line the functions
//! print is JSON (the webhook function, with its key from Secrets Manager, refuses a
//! private target without connecting): logs carry the request id (and the job id where there is a job), and
//! each invocation ends with CloudWatch Embedded Metric Format lines.

use offpath_core::{JobId, JobStatus, Transition, metrics};
use offpath_testkit::{Function, OWNER, Stack, bootstrap, fast_queue};
use serde_json::{Value, json};

async fn stack() -> Stack {
    Stack::moto(fast_queue()).await
}

async fn start(function: &str, stack: &Stack) -> Function {
    let mut env = stack.env();
    env.push(("RUST_LOG", "info".into()));
    env.push((
        "OFFPATH_WEBHOOK_KEY",
        "a webhook key of at least 32 bytes".into(),
    ));
    start_with(function, env).await
}

async fn start_with(function: &str, env: Vec<(&'static str, String)>) -> Function {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Function::start(&bootstrap(function), function, &env)
        .await
        .unwrap_or_else(|e| panic!("starting {function}: {e}"))
}

/// Every JSON line `function` has printed once one of them is the log message
/// `message`, and that line's index (panics with the lines if none comes within
/// `json_lines_when`'s bound).
async fn logged(function: &Function, message: &str) -> (Vec<Value>, usize) {
    let is_it = |l: &Value| l["fields"]["message"] == message;
    let lines = function
        .json_lines_when(|lines| lines.iter().any(is_it))
        .await;
    let index = lines
        .iter()
        .position(is_it)
        .unwrap_or_else(|| panic!("no {message:?} in {lines:#?}"));
    (lines, index)
}

/// The log lines (not metric documents) printed from line `from` on.
fn logs(lines: &[Value], from: usize) -> Vec<&Value> {
    lines[from..]
        .iter()
        .filter(|l| l.get("_aws").is_none())
        .collect()
}

/// The request id and job id a log line carries, in its fields or its spans.
fn ids(line: &Value) -> (Option<&str>, Option<&str>) {
    let mut scopes: Vec<&Value> = line["spans"].as_array().into_iter().flatten().collect();
    scopes.push(&line["fields"]);
    let find = |key: &str| scopes.iter().find_map(|s| s[key].as_str());
    (find("requestId"), find("job_id"))
}

/// The metric documents from line `from` on, each as (metric names, document).
/// Counters are numbers, histograms arrays of the values recorded.
fn metric_documents(lines: &[Value], from: usize) -> Vec<(Vec<String>, &Value)> {
    lines[from..]
        .iter()
        .filter_map(|l| {
            let directive = &l["_aws"]["CloudWatchMetrics"][0];
            let names = directive["Metrics"]
                .as_array()?
                .iter()
                .map(|m| m["Name"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(directive["Namespace"], "offpath", "{l}");
            Some((names, l))
        })
        .collect()
}

/// The unit a metric document declares for `name`.
fn unit<'a>(document: &'a Value, name: &str) -> &'a str {
    document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Name"] == name)
        .and_then(|m| m["Unit"].as_str())
        .unwrap_or_default()
}

#[tokio::test]
async fn api_and_worker_functions_log_json_with_request_and_job_ids_and_emit_metrics() {
    let stack = stack().await;

    // The API function answers an API Gateway HTTP API event with a JWT principal.
    let api = start("offpath-api", &stack).await;
    let mut event: Value =
        serde_json::from_str(include_str!("fixtures/apigw_http_event.json")).unwrap();
    event["body"] = json!({"task": "embed", "input": {"texts": ["A man is eating food."]}})
        .to_string()
        .into();
    let response = api.invoke("api-request-1", event).await.expect("answered");
    assert_eq!(response["statusCode"], 202, "{response}");
    let job: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    let id: JobId = job["id"].as_str().unwrap().to_owned().try_into().unwrap();

    // The worker function runs the SQS event Lambda would build from its message.
    let messages = stack
        .ports
        .queue
        .receive(10, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
    let sqs_event = offpath_testkit::sqs_event(stack.ports.queue.arn(), &messages);
    let worker = start("offpath-worker", &stack).await;
    // Init ends with loading the model, logged (outside any invocation) with the
    // precision its products run in on this CPU.
    let (init, loaded) = logged(&worker, "model loaded").await;
    let loaded = &init[loaded];
    assert!(
        ["bfloat16", "float32"].contains(&loaded["fields"]["precision"].as_str().unwrap_or("")),
        "{loaded}"
    );
    let before_invoke = init.len();
    let answer = worker
        .invoke(
            "worker-request-1",
            serde_json::to_value(&sqs_event).unwrap(),
        )
        .await
        .expect("answered");
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let finished = stack
        .ports
        .store
        .get(id)
        .await
        .unwrap()
        .expect("the job exists");
    assert_eq!(finished.status, JobStatus::Succeeded);
    assert_eq!(finished.output.unwrap().to_value()["dimensions"], 384);

    // Logs: JSON (json_lines panics otherwise), each with the request id; the
    // worker's with the job id too.
    let api_lines = api
        .json_lines_when(|lines| {
            lines
                .iter()
                .any(|l| l.get(metrics::JOBS_SUBMITTED).is_some())
        })
        .await;
    let api_logs = logs(&api_lines, 0);
    assert!(
        api_logs
            .iter()
            .any(|l| l["fields"]["message"] == "job submitted"),
        "{api_lines:#?}"
    );
    for line in &api_logs {
        assert_eq!(ids(line).0, Some("api-request-1"), "{line}");
    }
    let worker_lines = worker
        .json_lines_when(|lines| {
            [
                metrics::JOBS_SUCCEEDED,
                metrics::QUEUE_WAIT_TIME,
                metrics::INFERENCE_DURATION,
            ]
            .iter()
            .all(|m| {
                lines
                    .iter()
                    .skip(before_invoke)
                    .any(|l| l.get(*m).is_some())
            })
        })
        .await;
    let worker_logs = logs(&worker_lines, before_invoke);
    assert!(
        worker_logs
            .iter()
            .any(|l| l["fields"]["message"] == "job finished"),
        "{worker_lines:#?}"
    );
    for line in &worker_logs {
        assert_eq!(
            ids(line),
            (Some("worker-request-1"), Some(id.to_string().as_str())),
            "{line}"
        );
    }

    // Metrics: one EMF document per metric, with the request id as a property.
    let api_metrics = metric_documents(&api_lines, 0);
    let submitted = api_metrics
        .iter()
        .find(|(names, _)| names == &[metrics::JOBS_SUBMITTED])
        .unwrap_or_else(|| panic!("{api_lines:#?}"))
        .1;
    assert_eq!(submitted[metrics::JOBS_SUBMITTED], 1);
    assert_eq!(unit(submitted, metrics::JOBS_SUBMITTED), "Count");
    assert_eq!(submitted["RequestId"], "api-request-1");
    assert_eq!(submitted["Function"], "offpath-api");
    let worker_metrics = metric_documents(&worker_lines, before_invoke);
    let find = |name: &str| {
        worker_metrics
            .iter()
            .find(|(names, _)| names.iter().any(|n| n == name))
            .unwrap_or_else(|| panic!("no {name} in {worker_lines:#?}"))
            .1
    };
    assert_eq!(find(metrics::JOBS_SUCCEEDED)[metrics::JOBS_SUCCEEDED], 1);
    let wait = find(metrics::QUEUE_WAIT_TIME);
    assert!(
        wait[metrics::QUEUE_WAIT_TIME][0].as_f64().unwrap() >= 0.0,
        "{wait}"
    );
    assert_eq!(unit(wait, metrics::QUEUE_WAIT_TIME), "Milliseconds");
    let inference = find(metrics::INFERENCE_DURATION);
    assert_eq!(inference["task"], "embed");
    assert!(
        inference[metrics::INFERENCE_DURATION][0].as_f64().unwrap() > 0.0,
        "{inference}"
    );
    assert_eq!(inference["RequestId"], "worker-request-1");
}

#[tokio::test]
async fn the_sweep_function_answers_its_scheduled_event() {
    let stack = stack().await;
    let sweep = start("offpath-sweep", &stack).await;
    let event: Value = json!({"source": "aws.scheduler", "detail-type": "Scheduled Event"});
    let answer = sweep
        .invoke("sweep-request-1", event)
        .await
        .expect("answered");
    assert_eq!(
        answer,
        json!({"examined": 0, "requeued": 0, "dead_lettered": 0, "events": 0, "read": 0, "complete": true})
    );
    let (lines, finished) = logged(&sweep, "sweep finished").await;
    assert_eq!(ids(&lines[finished]).0, Some("sweep-request-1"));
}

#[tokio::test]
async fn the_webhook_function_reads_its_key_from_secrets_manager_and_refuses_private_targets() {
    use offpath_core::{EventKind, JobMessage, Webhook};
    let stack = stack().await;
    let sdk = offpath_testkit::sdk().await;
    let secret = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(offpath_testkit::unique("webhook-key"))
        .secret_string("k".repeat(64))
        .send()
        .await
        .unwrap();
    // A job whose webhook (written past the API's check) points into a private
    // network: the function refuses it at delivery, before any connection.
    let new = offpath_core::NewJob {
        webhook: Some(Webhook::new(
            "https://10.0.0.1/hook",
            [EventKind::Started].into(),
        )),
        ..offpath_testkit::new_job("embed", json!({"texts": ["x"]}))
    };
    let id = stack.ports.store.create(&new).await.unwrap().id;
    let lease = offpath_core::Lease {
        token: "w".into(),
        until_epoch_ms: u64::MAX / 2,
    };
    let claimed = stack
        .ports
        .store
        .apply(
            id,
            &Transition::Claim {
                lease: lease.clone(),
                now_epoch_ms: 1,
            },
        )
        .await
        .unwrap();
    let event = claimed.due_events()[0];
    stack
        .ports
        .webhooks
        .send(&JobMessage::event(id, event), OWNER)
        .await
        .unwrap();
    let messages = stack
        .ports
        .webhooks
        .receive(10, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let sqs_event = offpath_testkit::sqs_event(stack.ports.webhooks.arn(), &messages);

    let mut env = stack.env();
    env.push(("RUST_LOG", "info".into()));
    env.push((
        "OFFPATH_WEBHOOK_KEY_SECRET",
        secret.arn().unwrap().to_owned(),
    ));
    let webhooks = start_with("offpath-webhooks", env).await;
    let answer = webhooks
        .invoke(
            "webhook-request-1",
            serde_json::to_value(&sqs_event).unwrap(),
        )
        .await
        .expect("answered");
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let (lines, refused) = logged(
        &webhooks,
        "webhook URL refused at delivery: the event is dropped",
    )
    .await;
    let why = lines[refused]["fields"]["why"].as_str().unwrap();
    assert!(why.contains("a private address"), "{why}");
    assert_eq!(ids(&lines[refused]).0, Some("webhook-request-1"));
}
