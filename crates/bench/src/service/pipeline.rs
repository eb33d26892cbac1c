//! Pipeline throughput: jobs/second from a full queue to the last success, for 1, 2
//! and 4 pollers and batch sizes 1 and 10, with the worker time per job in each
//! stage (timed by hooks around the real ports).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use offpath_core::{JobId, JobStatus, JobStore, Step};
use offpath_testkit::{Call, Hooked, Hooks};
use serde::Serialize;
use serde_json::json;

use super::{Bench, PooledModel, create_jobs};
use crate::{dp1, dp2};

/// Every pipeline run.
#[derive(Debug, Serialize)]
pub(super) struct Pipeline {
    /// Threads inference ran on.
    pub(super) inference_threads: usize,
    /// One run per pollers x batch size.
    pub(super) runs: Vec<PipelineRun>,
}

/// One pipeline run.
#[derive(Debug, Serialize)]
pub(super) struct PipelineRun {
    pub(super) pollers: usize,
    pub(super) batch_size: u32,
    jobs: usize,
    #[serde(serialize_with = "dp2")]
    seconds: f64,
    #[serde(serialize_with = "dp1")]
    pub(super) jobs_per_second: f64,
    /// Worker milliseconds per job in each stage, summed over the pollers.
    pub(super) worker_ms_per_job: StageMs,
    #[serde(serialize_with = "dp1")]
    mean_queue_wait_ms: f64,
}

/// Milliseconds per job in each stage of the worker, in pipeline order.
#[derive(Debug, Serialize)]
pub(super) struct StageMs {
    #[serde(serialize_with = "dp2")]
    pub(super) receive: f64,
    #[serde(serialize_with = "dp2")]
    pub(super) claim: f64,
    #[serde(serialize_with = "dp2")]
    pub(super) inference: f64,
    #[serde(serialize_with = "dp2")]
    pub(super) finish: f64,
    #[serde(serialize_with = "dp2")]
    pub(super) delete: f64,
}

impl StageMs {
    /// The stages, in pipeline order.
    pub(super) const NAMES: [&'static str; 5] =
        ["receive", "claim", "inference", "finish", "delete"];

    /// Milliseconds per stage, in the order of [`StageMs::NAMES`].
    pub(super) fn values(&self) -> [f64; 5] {
        [
            self.receive,
            self.claim,
            self.inference,
            self.finish,
            self.delete,
        ]
    }
}

/// Time spent in each port stage, summed over every worker: hooks around the store
/// and the queue.
#[derive(Debug, Default)]
struct Stages {
    receive: AtomicU64,
    claim: AtomicU64,
    finish: AtomicU64,
    delete: AtomicU64,
    /// Jobs recorded `succeeded`.
    completed: AtomicUsize,
}

#[async_trait]
impl Hooks for Stages {
    async fn after(&self, call: Call, took: Duration, succeeded: bool) {
        let stage = match call {
            Call::Receive => &self.receive,
            Call::Apply(_, Step::Claim) => &self.claim,
            Call::Apply(_, Step::Finish(_)) => &self.finish,
            Call::Delete => &self.delete,
            _ => return,
        };
        stage.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        if succeeded && call.step() == Some(Step::Finish(JobStatus::Succeeded)) {
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs every pollers x batch size combination.
pub(super) async fn measure(bench: &Bench) -> anyhow::Result<Pipeline> {
    let corpus = crate::model::sentences();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runs = Vec::new();
    for pollers in [1usize, 2, 4] {
        for batch in [1u32, 10] {
            let stack = bench.stack(&format!("p{pollers}-b{batch}")).await;
            let ids = create_jobs(
                &stack.ports,
                bench.options.jobs,
                |i| json!({"texts": [corpus[i % corpus.len()]]}),
            )
            .await?;
            let stages: Arc<Stages> = Arc::default();
            let ports = stack
                .ports
                .with_store(Hooked::store(
                    Arc::clone(&stack.ports.store),
                    Arc::clone(&stages),
                ))
                .with_queue(Hooked::queue(
                    Arc::clone(&stack.ports.queue),
                    Arc::clone(&stages),
                ));
            let model = Arc::new(PooledModel::new(Arc::clone(&bench.model), cores)?);
            let start = Instant::now();
            let workers = bench.workers(&ports, model.clone(), pollers, batch).await?;
            let limit = Duration::from_secs(600);
            while stages.completed.load(Ordering::Relaxed) < ids.len() {
                anyhow::ensure!(
                    start.elapsed() < limit,
                    "pipeline p{pollers} b{batch}: not drained after {limit:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let elapsed = start.elapsed();
            workers.stop().await;
            let jobs = ids.len() as f64;
            let per_job = |nanos: &AtomicU64| {
                Duration::from_nanos(nanos.load(Ordering::Relaxed)).as_secs_f64() * 1000.0 / jobs
            };
            let stage_ms = StageMs {
                receive: per_job(&stages.receive),
                claim: per_job(&stages.claim),
                inference: model.busy().as_secs_f64() * 1000.0 / jobs,
                finish: per_job(&stages.finish),
                delete: per_job(&stages.delete),
            };
            let queue_wait = mean_queue_wait_ms(stack.ports.store.as_ref(), &ids).await?;
            let per_second = jobs / elapsed.as_secs_f64();
            let stage_text: Vec<String> = StageMs::NAMES
                .iter()
                .zip(stage_ms.values())
                .map(|(stage, ms)| format!("{stage} {ms:.2}"))
                .collect();
            println!(
                "pollers {pollers}, batch {batch:>2}: {per_second:>6.1} jobs/s; worker ms per job: {}; mean queue wait {queue_wait:.0} ms",
                stage_text.join(", ")
            );
            runs.push(PipelineRun {
                pollers,
                batch_size: batch,
                jobs: ids.len(),
                seconds: elapsed.as_secs_f64(),
                jobs_per_second: per_second,
                worker_ms_per_job: stage_ms,
                mean_queue_wait_ms: queue_wait,
            });
        }
    }
    Ok(Pipeline {
        inference_threads: cores,
        runs,
    })
}

/// Mean time from creation to first claim over `ids`.
async fn mean_queue_wait_ms(store: &dyn JobStore, ids: &[JobId]) -> anyhow::Result<f64> {
    let mut total = 0u64;
    for &id in ids {
        let job = store.get(id).await?.context("a benchmark job vanished")?;
        let started = job
            .started_at_epoch_ms
            .context("a finished job has no start")?;
        total += started.saturating_sub(job.created_at_epoch_ms);
    }
    Ok(total as f64 / ids.len().max(1) as f64)
}
