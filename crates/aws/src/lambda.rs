//! What the Lambda functions share: JSON logs, CloudWatch Embedded Metric Format
//! metrics, the table and queue the environment names, one sentence when start-up
//! fails, and the edge between Lambda's SQS events and offpath's message batches.

use std::fmt::Display;
use std::process::ExitCode;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use lambda_runtime::{LambdaEvent, service_fn};
use metrics_cloudwatch_embedded::Collector;
use offpath_core::{BatchReport, Ports, QueueMessage};

use crate::config::within_api_deadline;
use crate::{DynamoStore, S3Blobs, Settings, SqsQueue, load_sdk_config};

/// Any start-up error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The ports of a deployment: the jobs table (`OFFPATH_TABLE`), queue
/// (`OFFPATH_QUEUE_URL`), webhooks queue (`OFFPATH_WEBHOOK_QUEUE_URL`) and bucket
/// (`OFFPATH_BUCKET`). Connects with the standard AWS
/// configuration; a missing or wrong setting is an error that names it.
pub async fn ports_from_env() -> Result<Ports, BoxError> {
    ports_with(&load_sdk_config().await?).await
}

/// The ports of [`ports_from_env`] for the API function, with the dead-letter queues
/// the operators' routes read (`OFFPATH_DLQ_URL`, `OFFPATH_WEBHOOK_DLQ_URL`, where
/// set): every DynamoDB and SQS call gives up in time for the function to answer
/// ([`within_api_deadline`]).
pub async fn api_ports_from_env() -> Result<Ports, BoxError> {
    let sdk = within_api_deadline(&load_sdk_config().await?);
    let mut ports = ports_with(&sdk).await?;
    let settings = Settings::from_env()?;
    for (name, url, port) in [
        ("OFFPATH_DLQ_URL", &settings.dlq_url, &mut ports.dlq),
        (
            "OFFPATH_WEBHOOK_DLQ_URL",
            &settings.webhook_dlq_url,
            &mut ports.webhooks_dlq,
        ),
    ] {
        if let Some(url) = url {
            let queue = SqsQueue::from_sdk(&sdk, url)
                .await
                .map_err(|e| format!("{name}={url:?} cannot be used: {e}"))?;
            *port = Some(Arc::new(queue));
        }
    }
    Ok(ports)
}

async fn ports_with(sdk: &aws_config::SdkConfig) -> Result<Ports, BoxError> {
    let settings = Settings::from_env()?;
    let url = settings.require_queue_url()?;
    let bucket = settings.require_bucket()?;
    let webhooks_url = settings.require_webhook_queue_url()?;
    let queue = SqsQueue::from_sdk(sdk, url)
        .await
        .map_err(|e| format!("OFFPATH_QUEUE_URL={url:?} cannot be used: {e}"))?;
    let webhooks = SqsQueue::from_sdk(sdk, webhooks_url)
        .await
        .map_err(|e| format!("OFFPATH_WEBHOOK_QUEUE_URL={webhooks_url:?} cannot be used: {e}"))?;
    Ok(Ports {
        store: Arc::new(DynamoStore::from_sdk(sdk, &settings.table)),
        queue: Arc::new(queue),
        blobs: Arc::new(S3Blobs::from_sdk(sdk, bucket)),
        dlq: None,
        webhooks: Arc::new(webhooks),
        webhooks_dlq: None,
    })
}

/// The webhook signing key: `OFFPATH_WEBHOOK_KEY` or the Secrets Manager secret
/// `OFFPATH_WEBHOOK_KEY_SECRET` (see [`crate::secrets`]).
pub async fn webhook_key_from_env() -> Result<crate::secrets::KeyText, BoxError> {
    let sdk = load_sdk_config().await?;
    Ok(crate::secrets::webhook_key(&sdk, |name| std::env::var(name).ok()).await?)
}

/// The CloudWatch namespace of offpath's metrics.
pub const METRICS_NAMESPACE: &str = "offpath";

/// Installs the metrics recorder: each invocation ends with Embedded Metric Format
/// lines on stdout, in namespace [`METRICS_NAMESPACE`] with dimension `Function` (the
/// Lambda function's name) and the invocation's `RequestId` as a property. Hand it to
/// `metrics_cloudwatch_embedded::lambda::service::run` (or `run_http`), which flushes
/// after every invocation and logs within a span that carries the request id.
pub fn metrics(function: &str) -> Result<&'static Collector, BoxError> {
    let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| function.to_owned());
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(METRICS_NAMESPACE)
        .with_dimension("Function", name)
        .with_lambda_request_id("RequestId")
        .init()?;
    offpath_core::metrics::describe();
    Ok(collector)
}

/// A function's `main`: sets up JSON logs (level from `RUST_LOG`, `info` when unset),
/// then runs `run`. If it fails, the error is logged as one sentence and the process
/// exits non-zero.
pub async fn run_function<E: Display>(
    name: &str,
    run: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing::level_filters::LevelFilter::INFO.into())
                .from_env_lossy(),
        )
        .init();
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "{name} stopped");
            ExitCode::FAILURE
        }
    }
}

/// An SQS record without a `messageId` or `receiptHandle` (SQS always sends both): the
/// batch cannot report item failures, so the whole invocation fails and SQS retries it.
#[derive(Debug, thiserror::Error)]
#[error("an SQS record has no messageId or receiptHandle; the batch cannot report item failures")]
pub struct UnnamedRecord;

/// The messages of a Lambda SQS event, as offpath's batch handlers take them.
pub fn queue_messages(event: &SqsEvent) -> Result<Vec<QueueMessage>, UnnamedRecord> {
    event.records.iter().map(queue_message).collect()
}

fn queue_message(record: &SqsMessage) -> Result<QueueMessage, UnnamedRecord> {
    let present = |field: &Option<String>| {
        field
            .as_deref()
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    };
    let attribute = |name: &str| record.attributes.get(name).and_then(|v| v.parse().ok());
    Ok(QueueMessage {
        message_id: present(&record.message_id).ok_or(UnnamedRecord)?,
        receipt_handle: present(&record.receipt_handle).ok_or(UnnamedRecord)?,
        body: record.body.clone().unwrap_or_default(),
        receive_count: attribute("ApproximateReceiveCount").unwrap_or(1) as u32,
        sent_at_epoch_ms: attribute("SentTimestamp").unwrap_or(0),
        group: record.attributes.get("MessageGroupId").cloned(),
    })
}

/// The response that tells the event source mapping which messages to retry.
pub fn batch_response(report: BatchReport) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = report
        .retry
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

/// Runs a batch handler as the Lambda function `function` with an SQS event source:
/// each `SqsEvent` becomes offpath's messages here, at the edge, and `handle`'s report
/// the response's item failures.
pub async fn serve_batches<H, E>(function: &str, handle: H) -> Result<(), lambda_runtime::Error>
where
    H: AsyncFn(Vec<QueueMessage>) -> Result<BatchReport, E>,
    E: Into<lambda_runtime::Error>,
{
    let handle = &handle;
    let handler = service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let batch = queue_messages(&event.payload)?;
        let report = handle(batch).await.map_err(Into::into)?;
        Ok::<_, lambda_runtime::Error>(batch_response(report))
    });
    metrics_cloudwatch_embedded::lambda::service::run(metrics(function)?, handler).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real event in tests/fixtures reads as the message the queue adapters make.
    #[test]
    fn lambda_records_read_as_queue_messages() {
        let fixture: SqsEvent =
            serde_json::from_str(include_str!("../../../tests/fixtures/sqs_event.json")).unwrap();
        let messages = queue_messages(&fixture).unwrap();
        assert_eq!(
            messages,
            [QueueMessage {
                message_id: "059f36b4-87a3-44ab-83d2-661975830a7d".into(),
                receipt_handle: "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...".into(),
                body: r#"{"v":1,"job_id":"00000000-0000-0000-0000-000000000000"}"#.into(),
                receive_count: 1,
                sent_at_epoch_ms: 1_545_082_649_183,
                group: None,
            }]
        );
        let mut unnamed = fixture.clone();
        unnamed.records[0].message_id = None;
        assert!(queue_messages(&unnamed).is_err());
        let response = batch_response(BatchReport {
            retry: vec!["059f36b4-87a3-44ab-83d2-661975830a7d".into()],
        });
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "059f36b4-87a3-44ab-83d2-661975830a7d"}]})
        );
    }
}
