//! The API Lambda: wires DynamoDB and SQS to the router and serves it through
//! `lambda_http`, with a metrics flush after every request.

use std::sync::Arc;

use metrics_cloudwatch_embedded::lambda::service::run_http;
use offpath_api::{AppState, Auth, app};
use offpath_aws::lambda::{Deployment, metrics, run_function};
use offpath_core::JobStore;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run_function("offpath-api", run()).await
}

async fn run() -> Result<(), lambda_http::Error> {
    let Deployment { store, queue } = Deployment::from_env().await?;
    store.ping().await?;
    let state = AppState::new(Arc::new(store), Arc::new(queue), Auth::ApiGateway);
    run_http(metrics("offpath-api")?, app(state)).await
}
