//! The worker Lambda: wires DynamoDB, SQS and the model to the batch handler.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use offpath_aws::{DynamoStore, Settings, SqsQueue, load_sdk_config};
use offpath_core::JobQueue;
use offpath_inference::{MiniLm, weights};
use offpath_worker::{Worker, WorkerConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    // A wrong setting or a missing model stops the function at start-up with one
    // sentence naming it.
    if let Err(err) = run().await {
        tracing::error!(error = %err, "offpath-worker stopped");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

async fn run() -> Result<(), lambda_runtime::Error> {
    let sdk = load_sdk_config().await?;
    let settings = Settings::from_env()?;
    let store = DynamoStore::from_sdk(&sdk, &settings.table);
    let queue = SqsQueue::from_sdk(&sdk, settings.require_queue_url()?).await?;
    let config = WorkerConfig {
        max_receive_count: queue.max_receive_count().await?,
        ..WorkerConfig::default()
    };
    // Loaded once per execution environment: OFFPATH_MODEL_DIR (the model layer) or a
    // download into the cache on first start.
    let model = MiniLm::load(&weights::resolve(false)?)?;
    let worker = Worker::new(Arc::new(store), Arc::new(queue), Arc::new(model), config);
    let worker = &worker;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        worker
            .handle(event)
            .await
            .map_err(lambda_runtime::Error::from)
    }))
    .await
}
