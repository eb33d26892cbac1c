//! The webhook Lambda, triggered by the webhooks queue: delivers each event, signed,
//! with backoff between attempts (see `offpath_worker::Deliverer`).

use offpath_aws::lambda::{ports_from_env, run_function, serve_batches, webhook_key_from_env};
use offpath_core::queue::WEBHOOK_ATTEMPT_TIMEOUT;
use offpath_webhooks::{Sender, UrlPolicy, WebhookKeys};
use offpath_worker::{Deliverer, WEBHOOK_BACKOFF};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run_function("offpath-webhooks", run()).await
}

async fn run() -> Result<(), lambda_runtime::Error> {
    let ports = ports_from_env().await?;
    let key = webhook_key_from_env().await?;
    let keys = WebhookKeys::new(&key.current, key.previous.as_deref())?;
    let sender = Sender::new(UrlPolicy::default(), keys, WEBHOOK_ATTEMPT_TIMEOUT);
    let deliverer = Deliverer::new(&ports, sender, WEBHOOK_BACKOFF);
    serve_batches("offpath-webhooks", async |batch| {
        deliverer.handle(&batch).await
    })
    .await
}
