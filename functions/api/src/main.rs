//! The API Lambda: wires DynamoDB and SQS to the router and hands it to `lambda_http`.

use std::sync::Arc;

use offpath_api::{AppState, Auth, app};
use offpath_aws::{DynamoStore, Settings, SqsQueue, load_sdk_config};
use offpath_core::JobStore;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    // A wrong setting stops the function at start-up with one sentence naming it.
    if let Err(err) = run().await {
        tracing::error!(error = %err, "offpath-api stopped");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

async fn run() -> Result<(), lambda_http::Error> {
    let sdk = load_sdk_config().await?;
    let settings = Settings::from_env()?;
    let store = DynamoStore::from_sdk(&sdk, &settings.table);
    store.ping().await?;
    let queue = SqsQueue::from_sdk(&sdk, settings.require_queue_url()?).await?;
    let state = AppState::new(Arc::new(store), Arc::new(queue), Auth::ApiGateway);
    lambda_http::run(app(state)).await
}
