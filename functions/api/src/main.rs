//! The API Lambda: wires DynamoDB, SQS, the webhook key and the tasks to the router and
//! serves it through `lambda_http`, with a metrics flush after every request.

use std::sync::Arc;

use metrics_cloudwatch_embedded::lambda::service::run_http;
use offpath_api::{AppState, Auth, Operators, SubmitLimits, app};
use offpath_aws::lambda::{api_ports_from_env, metrics, run_function, webhook_key_from_env};
use offpath_webhooks::{UrlPolicy, WebhookKeys};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run_function("offpath-api", run()).await
}

async fn run() -> Result<(), lambda_http::Error> {
    let ports = api_ports_from_env().await?;
    ports.store.ping().await?;
    let tasks = Arc::new(offpath_tasks::registry());
    let key = webhook_key_from_env().await?;
    let keys = WebhookKeys::new(&key.current, key.previous.as_deref())?;
    // In AWS: https to public addresses only.
    let mut state = AppState::new(&ports, tasks, Auth::ApiGateway)
        .with_webhooks(keys, UrlPolicy::default())
        .with_operators(Operators::from_env()?);
    state.limits = SubmitLimits::from_env()?;
    run_http(metrics("offpath-api")?, app(state)).await
}
