//! `offpath sweep`: one sweep of a deployment's jobs (AWS, LocalStack, moto), for a
//! schedule or by hand. `offpath dev` sweeps by itself every minute.

use std::time::Duration;

use clap::Args;
use offpath_aws::config::{DEFAULT_QUEUE, DEFAULT_WEBHOOK_QUEUE};
use offpath_aws::{DynamoStore, Settings, SqsQueue, load_sdk_config};
use offpath_core::{Clock, JobQueue, SystemClock};
use offpath_worker::sweep::{SWEEP_BUDGET, SweepSettings, sweep};

use crate::dlq::queue_url;

/// `offpath sweep` options.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// The jobs queue's visibility timeout: older leases and never-claimed jobs older
    /// than this have lost their message.
    #[arg(long, default_value_t = 360)]
    pub grace_seconds: u64,
    /// Most seconds to spend; due jobs left over wait for the next sweep.
    #[arg(long, default_value_t = SWEEP_BUDGET.as_secs())]
    pub budget_seconds: u64,
}

/// Runs one sweep and prints what it did.
pub async fn run(args: SweepArgs) -> anyhow::Result<()> {
    let sdk = load_sdk_config().await?;
    let settings = Settings::from_env()?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = queue_url(&sqs, settings.queue_url.as_deref(), DEFAULT_QUEUE).await?;
    let webhooks_url = queue_url(
        &sqs,
        settings.webhook_queue_url.as_deref(),
        DEFAULT_WEBHOOK_QUEUE,
    )
    .await?;
    let queue = SqsQueue::connect(sqs.clone(), url).await?;
    let webhooks = SqsQueue::connect(sqs, webhooks_url).await?;
    let store = DynamoStore::from_sdk(&sdk, &settings.table);
    let sweep_settings = SweepSettings {
        grace: Duration::from_secs(args.grace_seconds),
        max_receive_count: queue.max_receive_count().await?,
        budget: Duration::from_secs(args.budget_seconds),
    };
    let now = SystemClock.now_epoch_ms();
    let report = sweep(&store, &queue, &webhooks, &sweep_settings, now).await?;
    println!(
        "examined {} due job(s), {} item(s) read: {} re-enqueued, {} dead-lettered, {} webhook event(s) sent{}",
        report.examined,
        report.read,
        report.requeued,
        report.dead_lettered,
        report.events,
        if report.complete {
            ""
        } else {
            "; budget spent, more due jobs wait for the next sweep"
        }
    );
    Ok(())
}
