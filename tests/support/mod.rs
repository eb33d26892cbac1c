//! Shared test support: the AWS-protocol endpoint, unique resources, event fixtures
//! and test models. Tests talk to a real AWS-protocol server (moto started by
//! `tests/run`, or LocalStack when AWS_ENDPOINT_URL points at one).
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod dev;
pub mod lambda;
pub mod proxy;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use lambda_runtime::{Context, LambdaEvent};
use offpath_aws::provision::{QueueSettings, ResourceNames, Resources, provision};
use offpath_aws::{DynamoStore, SqsQueue};
use offpath_core::{Model, ModelError, Task, TaskInput};
use offpath_worker::{Backoff, Worker, WorkerConfig};
use serde_json::{Value, json};

/// The shared AWS configuration, pointed at the test endpoint.
pub async fn sdk() -> aws_config::SdkConfig {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: run the suite with tests/run, which starts moto"
    );
    offpath_aws::load_sdk_config()
        .await
        .expect("AWS configuration")
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A table, queue and dead-letter queue of this test's own, created by the same code
/// `offpath dev` uses.
pub async fn resources(settings: QueueSettings) -> Resources {
    let names = ResourceNames {
        table: unique("t"),
        queue: unique("q"),
        dlq: unique("dlq"),
    };
    provision(&sdk().await, &names, &settings)
        .await
        .expect("provision")
}

/// Queue settings for tests: a short visibility timeout, 3 receives.
pub fn fast_queue() -> QueueSettings {
    QueueSettings {
        visibility_timeout: Duration::from_secs(2),
        max_receive_count: 3,
        ..QueueSettings::default()
    }
}

/// Adapters on fresh resources.
pub struct Stack {
    pub resources: Resources,
    pub store: Arc<DynamoStore>,
    pub queue: Arc<SqsQueue>,
    pub dlq: Arc<SqsQueue>,
}

impl Stack {
    /// A worker on this stack with a test model: lease 30 s, maxReceiveCount 3 (as
    /// `fast_queue`), backoff from `backoff_base` up to twice that.
    pub fn worker(&self, model: Arc<TestModel>, backoff_base: Duration) -> Worker {
        Worker::new(
            self.store.clone(),
            self.queue.clone(),
            model,
            WorkerConfig {
                lease: Duration::from_secs(30),
                max_receive_count: Some(3),
                backoff: Backoff {
                    base: backoff_base,
                    max: backoff_base * 2,
                },
            },
        )
    }
}

pub async fn stack(settings: QueueSettings) -> Stack {
    let resources = resources(settings).await;
    let sdk = sdk().await;
    Stack {
        store: Arc::new(DynamoStore::from_sdk(&sdk, &resources.table)),
        queue: Arc::new(
            SqsQueue::from_sdk(&sdk, &resources.queue_url)
                .await
                .unwrap(),
        ),
        dlq: Arc::new(SqsQueue::from_sdk(&sdk, &resources.dlq_url).await.unwrap()),
        resources,
    }
}

/// True when nothing can be received from `queue` within a second.
pub async fn drained(queue: &dyn offpath_core::JobQueue) -> bool {
    queue
        .receive(10, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty()
}

/// Number of items in a table (a full scan).
pub async fn item_count(table: &str) -> usize {
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    let mut count = 0;
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        count += page.count() as usize;
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return count,
        }
    }
}

/// A Lambda SQS event built from the real AWS event in `tests/fixtures/sqs_event.json`,
/// one record per (body, receive count).
pub fn sqs_event(records: &[(String, u32)]) -> LambdaEvent<SqsEvent> {
    let fixture: SqsEvent =
        serde_json::from_str(include_str!("../fixtures/sqs_event.json")).unwrap();
    let template: SqsMessage = fixture.records[0].clone();
    let mut event = SqsEvent::default();
    event.records = records
        .iter()
        .enumerate()
        .map(|(i, (body, receive_count))| {
            let mut record = template.clone();
            record.message_id = Some(format!("msg-{i}"));
            record.receipt_handle = Some(format!("receipt-{i}"));
            record.body = Some(body.clone());
            record
                .attributes
                .insert("ApproximateReceiveCount".into(), receive_count.to_string());
            record
        })
        .collect();
    LambdaEvent::new(event, Context::default())
}

/// A test model: embeds each text as its length, counting forward passes. Inputs
/// containing "panic" make it panic until `cured`, "reject" a permanent error, and
/// while `throttled` is positive it answers throttled (counting down).
#[derive(Default)]
pub struct TestModel {
    pub passes: AtomicUsize,
    pub inputs_seen: AtomicUsize,
    pub throttled: AtomicUsize,
    pub cured: std::sync::atomic::AtomicBool,
}

impl Model for TestModel {
    fn name(&self) -> &str {
        "test-model"
    }

    fn run(&self, _task: Task, inputs: &[TaskInput]) -> Result<Vec<Value>, ModelError> {
        self.passes.fetch_add(1, Ordering::SeqCst);
        if self
            .throttled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ModelError::Throttled { retry_after: None });
        }
        inputs
            .iter()
            .map(|input| {
                let TaskInput::Embed(embed) = input else {
                    return Ok(json!({"task": input.task().as_str()}));
                };
                let joined = embed.texts.join(" ");
                if joined.contains("panic") && !self.cured.load(Ordering::SeqCst) {
                    panic!("poisoned input");
                }
                if joined.contains("reject") {
                    return Err(ModelError::Rejected("the model rejects this text".into()));
                }
                self.inputs_seen.fetch_add(1, Ordering::SeqCst);
                Ok(json!({"lengths": embed.texts.iter().map(|t| t.len()).collect::<Vec<_>>()}))
            })
            .collect()
    }
}

/// A typical embed input.
pub fn embed_input(text: &str) -> Value {
    json!({"texts": [text]})
}
