//! The sweep Lambda, on a schedule: fails jobs whose worker died on the last attempt
//! and re-enqueues jobs whose message was lost (see `offpath_worker::sweep`).

use lambda_runtime::{LambdaEvent, service_fn};
use metrics_cloudwatch_embedded::lambda::service::run as run_lambda;
use offpath_aws::lambda::{metrics, ports_from_env, run_function};
use offpath_core::{Clock, QueueSettings, SystemClock};
use offpath_worker::sweep::{SWEEP_BUDGET, SweepSettings, sweep};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    run_function("offpath-sweep", run()).await
}

async fn run() -> Result<(), lambda_runtime::Error> {
    let ports = ports_from_env().await?;
    let (store, queue, webhooks) = (
        ports.store.as_ref(),
        ports.queue.as_ref(),
        ports.webhooks.as_ref(),
    );
    let sweep_settings = SweepSettings {
        // The jobs queue's visibility timeout, as template.yaml sets it.
        grace: QueueSettings::default().visibility_timeout,
        max_receive_count: queue.max_receive_count().await?,
        budget: SWEEP_BUDGET,
    };
    let sweep_settings = &sweep_settings;
    let handler = service_fn(move |_: LambdaEvent<Value>| async move {
        let now = SystemClock.now_epoch_ms();
        let report = sweep(store, queue, webhooks, sweep_settings, now).await?;
        tracing::info!(
            examined = report.examined,
            requeued = report.requeued,
            dead_lettered = report.dead_lettered,
            events = report.events,
            read = report.read,
            complete = report.complete,
            "sweep finished"
        );
        Ok::<_, lambda_runtime::Error>(json!({
            "examined": report.examined,
            "requeued": report.requeued,
            "dead_lettered": report.dead_lettered,
            "events": report.events,
            "read": report.read,
            "complete": report.complete,
        }))
    });
    run_lambda(metrics("offpath-sweep")?, handler).await
}
