//! The API Lambda: wires DynamoDB and SQS to the router and hands it to `lambda_http`.

use std::sync::Arc;

use offpath_api::{AppState, Auth, app};
use offpath_aws::lambda::{Deployment, run_function};
use offpath_core::JobStore;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run_function("offpath-api", run()).await
}

async fn run() -> Result<(), lambda_http::Error> {
    let Deployment { store, queue } = Deployment::from_env().await?;
    store.ping().await?;
    let state = AppState::new(Arc::new(store), Arc::new(queue), Auth::ApiGateway);
    lambda_http::run(app(state)).await
}
