//! The API Lambda: wires DynamoDB, SQS and the tasks to the router and serves it
//! through `lambda_http`, with a metrics flush after every request.

use std::sync::Arc;

use metrics_cloudwatch_embedded::lambda::service::run_http;
use offpath_api::{AppState, Auth, app};
use offpath_aws::lambda::{metrics, ports_from_env, run_function};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run_function("offpath-api", run()).await
}

async fn run() -> Result<(), lambda_http::Error> {
    let ports = ports_from_env().await?;
    ports.store.ping().await?;
    let tasks = Arc::new(offpath_tasks::registry());
    let state = AppState::new(&ports, tasks, Auth::ApiGateway);
    run_http(metrics("offpath-api")?, app(state)).await
}
