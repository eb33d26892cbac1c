//! `offpath-bench fairness`: one tenant's burst against another's few jobs on the
//! embedded backend, with real inference. Tenant A queues a backlog, then tenant B a
//! handful; B's queue wait (claim time less submit time) and how many of A's jobs
//! started before B's last one, with the queue delivering fairly across owners (as
//! SQS fair queues do) and oldest first.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use offpath_core::queue::message_group;
use offpath_core::{Clock, JobId, JobMessage, Model, NewJob, Ports, QueueSettings, SystemClock};
use offpath_embedded::Options;
use offpath_inference::{MiniLm, weights};
use offpath_testkit::{Stack, new_job};
use offpath_worker::poller::{PollSettings, Pool};
use offpath_worker::{Worker, WorkerConfig};
use serde::Serialize;
use serde_json::json;

use super::{Percentiles, dp2};

/// `offpath-bench fairness` options.
#[derive(Debug, Clone, Args)]
pub struct FairnessBench {
    /// Jobs tenant A queues first.
    #[arg(long, default_value_t = 1000)]
    pub backlog: usize,
    /// Jobs tenant B queues right after.
    #[arg(long, default_value_t = 10)]
    pub quiet: usize,
    /// Pollers (each receives batches of 10).
    #[arg(long, default_value_t = 1)]
    pub pollers: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One run, fair or oldest first.
#[derive(Debug, Serialize)]
struct Run {
    fair: bool,
    /// Tenant B's queue waits.
    quiet_wait: Percentiles,
    /// A's jobs that started before B's last one did.
    backlog_started_before_quiet_done: usize,
    /// The same, in receive batches of 10.
    batches_before_quiet_done: usize,
    /// From the poller's start until every job ended.
    #[serde(serialize_with = "dp2")]
    all_done_seconds: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    command: String,
    backlog: usize,
    quiet: usize,
    pollers: usize,
    runs: Vec<Run>,
}

/// Runs the fairness benchmark: oldest first, then fair.
pub(super) async fn run(options: FairnessBench) -> anyhow::Result<()> {
    let files = tokio::task::spawn_blocking(|| weights::resolve(true)).await??;
    let model: Arc<dyn Model> =
        Arc::new(tokio::task::spawn_blocking(move || MiniLm::load(&files)).await??);
    let mut runs = Vec::new();
    for fair in [false, true] {
        let run = once(&model, &options, fair).await?;
        println!(
            "{}: tenant B's {} jobs waited p50 {:.0} ms, max {:.0} ms; {} of A's jobs ({} batches) started before B's last; all done in {:.1} s",
            if fair { "fair" } else { "oldest first" },
            options.quiet,
            run.quiet_wait.p50,
            run.quiet_wait.max,
            run.backlog_started_before_quiet_done,
            run.batches_before_quiet_done,
            run.all_done_seconds
        );
        runs.push(run);
    }
    let report = Report {
        benchmark: "fairness",
        command: format!(
            "offpath-bench fairness --backlog {} --quiet {} --pollers {}",
            options.backlog, options.quiet, options.pollers
        ),
        backlog: options.backlog,
        quiet: options.quiet,
        pollers: options.pollers,
        runs,
    };
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Queues A's backlog and B's jobs, runs the workers until every job ended, and reads
/// when each was claimed.
async fn once(model: &Arc<dyn Model>, options: &FairnessBench, fair: bool) -> anyhow::Result<Run> {
    let settings = QueueSettings::default();
    let dir = std::env::temp_dir().join(format!(
        "offpath-bench-fairness-{}-{fair}",
        std::process::id()
    ));
    let backend = Options {
        fair,
        ..Options::default()
    };
    let ports = offpath_embedded::open(
        &dir,
        "fairness",
        &settings,
        &QueueSettings::webhooks(),
        backend,
    )?
    .ports;
    let tenant_a = queue_jobs(&ports, "tenant-a", options.backlog).await?;
    let tenant_b = queue_jobs(&ports, "tenant-b", options.quiet).await?;
    let config = WorkerConfig {
        max_receive_count: Some(settings.max_receive_count),
        ..WorkerConfig::default()
    };
    let worker = Arc::new(Worker::new(
        &ports,
        Arc::clone(model),
        Stack::tasks(),
        config,
    ));
    let started = Instant::now();
    let poll = PollSettings {
        batch_size: 10,
        wait: Duration::from_millis(100),
    };
    let pool = Pool::start(worker, Arc::clone(&ports.queue), poll, options.pollers);
    let all: Vec<JobId> = tenant_a.iter().chain(&tenant_b).copied().collect();
    while super::service::unfinished(ports.store.as_ref(), &all).await? > 0 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "jobs still unfinished after an hour"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = started.elapsed().as_secs_f64();
    pool.stop().await;
    let starts = |ids: &[JobId]| {
        let store = Arc::clone(&ports.store);
        let ids = ids.to_vec();
        async move {
            let mut jobs = Vec::new();
            for id in ids {
                jobs.push(
                    store
                        .get(id)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("job {id} vanished"))?,
                );
            }
            anyhow::Ok(jobs)
        }
    };
    let quiet = starts(&tenant_b).await?;
    let backlog = starts(&tenant_a).await?;
    let waits: Vec<Duration> = quiet
        .iter()
        .map(|job| {
            let started = job.started_at_epoch_ms.unwrap_or(job.created_at_epoch_ms);
            Duration::from_millis(started.saturating_sub(job.created_at_epoch_ms))
        })
        .collect();
    let quiet_done = quiet
        .iter()
        .filter_map(|job| job.started_at_epoch_ms)
        .max()
        .unwrap_or(0);
    let before = backlog
        .iter()
        .filter(|job| job.started_at_epoch_ms.is_some_and(|at| at < quiet_done))
        .count();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Run {
        fair,
        quiet_wait: Percentiles::of(&waits).ok_or_else(|| anyhow::anyhow!("no quiet jobs"))?,
        backlog_started_before_quiet_done: before,
        batches_before_quiet_done: before.div_ceil(10),
        all_done_seconds: drained,
    })
}

/// Creates and enqueues `count` one-sentence embed jobs of `owner`.
async fn queue_jobs(ports: &Ports, owner: &str, count: usize) -> anyhow::Result<Vec<JobId>> {
    let group = message_group(owner);
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let input =
            json!({"texts": [format!("{owner} asks question number {i} about the weather")]});
        let new = NewJob {
            owner: owner.to_owned(),
            created_at_epoch_ms: SystemClock.now_epoch_ms(),
            ..new_job("embed", input)
        };
        let job = ports.store.create(&new).await?;
        ports.queue.send(&JobMessage::new(job.id), &group).await?;
        ids.push(job.id);
    }
    Ok(ids)
}
