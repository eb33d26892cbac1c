//! Cold starts: process start to the first `GET /runtime/invocation/next` (the
//! function is ready for its first event), for the api and worker bootstraps, median
//! of five, with their sizes. The functions connect to a fresh table and queue at the
//! configured endpoint.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use offpath_aws::load_sdk_config;
use offpath_aws::provision::{ResourceNames, provision};
use offpath_core::QueueSettings;
use offpath_testkit::Function;
use serde::Serialize;

use crate::{Percentiles, dp1};

/// Longest a function may take to become ready.
const LIMIT: Duration = Duration::from_secs(30);

/// One function's cold start.
#[derive(Debug, Serialize)]
pub(super) struct ColdStart {
    function: &'static str,
    #[serde(serialize_with = "dp1")]
    ready_ms: f64,
    #[serde(serialize_with = "dp1")]
    bootstrap_mb: f64,
}

/// Times the api and worker bootstraps in `dir`, loading the model from `model_dir`.
pub(super) async fn measure(dir: &Path, model_dir: &Path) -> anyhow::Result<Vec<ColdStart>> {
    let sdk = load_sdk_config().await?;
    let prefix = format!("offpath-bench-{}-cold", std::process::id());
    let names = ResourceNames {
        table: prefix.clone(),
        queue: format!("{prefix}-jobs"),
        dlq: format!("{prefix}-dlq"),
        webhooks: format!("{prefix}-webhooks"),
        webhooks_dlq: format!("{prefix}-webhooks-dlq"),
        bucket: prefix.clone(),
    };
    let resources = provision(
        &sdk,
        &names,
        &QueueSettings::default(),
        &QueueSettings::webhooks(),
    )
    .await?;
    let model_dir = model_dir.to_string_lossy();
    let env = [
        ("OFFPATH_TABLE", resources.table.as_str()),
        ("OFFPATH_QUEUE_URL", resources.queue_url.as_str()),
        ("OFFPATH_WEBHOOK_QUEUE_URL", resources.webhooks_url.as_str()),
        (
            "OFFPATH_WEBHOOK_KEY",
            "offpath-bench-webhook-key-of-32-bytes",
        ),
        ("OFFPATH_BUCKET", resources.bucket.as_str()),
        ("OFFPATH_MODEL_DIR", model_dir.as_ref()),
    ];
    let mut rows = Vec::new();
    for function in ["offpath-api", "offpath-worker"] {
        let bootstrap = dir.join(function).join("bootstrap");
        let bytes = std::fs::metadata(&bootstrap)
            .with_context(|| {
                format!(
                    "no {}; run `cargo lambda build --release -p offpath-api -p offpath-worker` first",
                    bootstrap.display()
                )
            })?
            .len();
        let mut runs = Vec::new();
        for _ in 0..5 {
            let mut process = Function::start(&bootstrap, function, &env).await?;
            runs.push(process.ready(LIMIT).await.map_err(anyhow::Error::msg)?);
        }
        let ms = Percentiles::of(&runs).context("no runs")?.p50;
        println!(
            "{function}: ready {ms:.0} ms after process start (median of 5); bootstrap {:.1} MB",
            bytes as f64 / 1e6
        );
        rows.push(ColdStart {
            function,
            ready_ms: ms,
            bootstrap_mb: bytes as f64 / 1e6,
        });
    }
    Ok(rows)
}
