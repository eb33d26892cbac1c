//! What the Lambda functions share at start-up: JSON logs, CloudWatch Embedded Metric
//! Format metrics, the table and queue the environment names, and one sentence when
//! start-up fails.

use std::fmt::Display;
use std::process::ExitCode;
use std::sync::Arc;

use metrics_cloudwatch_embedded::Collector;
use offpath_core::Ports;

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
