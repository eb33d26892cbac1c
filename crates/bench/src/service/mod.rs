//! `offpath-bench service`: the thesis measured. Submit latency with idle and
//! saturated workers against a synchronous endpoint that runs the same inference on
//! the request path; submit overhead against a bare write + send; pipeline
//! throughput and where its time goes; cold starts of the Lambda bootstraps; cost.
//! Everything runs on loopback, against the embedded backend or the AWS endpoint the
//! standard configuration names (moto here). One module per measurement, each with
//! its typed result; the plots and the cost estimate take those types.

mod cold_start;
mod cost;
mod overhead;
mod pipeline;
mod plot;
mod responsiveness;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use clap::Args;
use offpath_aws::provision::ResourceNames;
use offpath_core::queue::message_group;
use offpath_core::{
    Embedding, JobId, JobMessage, JobStore, JsonText, Model, ModelError, Piece, Ports,
    QueueSettings, Registry,
};
use offpath_inference::{MiniLm, weights};
use offpath_testkit::{Backend as StackBackend, Stack, new_job};
use offpath_worker::poller::{PollSettings, Pool};
use offpath_worker::{Worker, WorkerConfig};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use offpath::dev::{Backend, DurabilityArg};

/// `offpath-bench service` options.
#[derive(Debug, Clone, Args)]
pub struct ServiceBench {
    /// Where jobs and the queue live (`aws`: the endpoint AWS_ENDPOINT_URL names).
    #[arg(long, value_enum, default_value = "embedded")]
    pub backend: Backend,
    /// Light submits per second offered in each responsiveness run.
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// Seconds each responsiveness run offers load.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Submits timed in the overhead comparison (each side).
    #[arg(long, default_value_t = 1000)]
    pub submits: usize,
    /// Jobs per pipeline throughput run.
    #[arg(long, default_value_t = 300)]
    pub jobs: usize,
    /// Directory of the Lambda bootstraps (`cargo lambda build --release` writes
    /// target/lambda/<function>/bootstrap): times their cold starts. Needs `--backend aws`.
    #[arg(long)]
    pub bootstraps: Option<PathBuf>,
    /// What the embedded backend's commits survive (see `offpath dev --durability`).
    #[arg(long, value_enum, default_value = "process")]
    pub durability: DurabilityArg,
    /// Where the JSON results and PNG plots go.
    #[arg(long, default_value = "docs/bench")]
    pub out: PathBuf,
}

/// One short text: the light job whose submit latency is measured.
const LIGHT_TEXT: &str = "How do message queues keep web requests fast?";

/// Everything `offpath-bench service` measured, as written to `service-<backend>.json`.
#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    backend: &'static str,
    command: String,
    threads: usize,
    responsiveness: responsiveness::Responsiveness,
    submit_overhead: overhead::Overhead,
    pipeline: pipeline::Pipeline,
    cold_start: Option<Vec<cold_start::ColdStart>>,
    cost: cost::Cost,
}

/// Runs the service benchmark and writes `service-<backend>.json` and plots.
pub(super) async fn run(options: ServiceBench) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    let files = tokio::task::spawn_blocking(|| weights::resolve(true)).await??;
    let model_files = files.clone();
    let model: Arc<dyn Model> =
        Arc::new(tokio::task::spawn_blocking(move || MiniLm::load(&model_files)).await??);
    let bench = Bench {
        options: options.clone(),
        model,
        tasks: Arc::new(offpath_tasks::registry()),
        client: reqwest::Client::new(),
    };
    let backend = backend_name(&options);

    println!("== responsiveness ({backend})");
    let responsiveness = responsiveness::measure(&bench).await?;
    println!("== submit overhead ({backend})");
    let submit_overhead = overhead::measure(&bench).await?;
    println!("== pipeline throughput ({backend})");
    let pipeline = pipeline::measure(&bench).await?;
    let cold_start = match &options.bootstraps {
        Some(dir) => {
            println!("== cold start");
            Some(cold_start::measure(dir, &files.dir).await?)
        }
        None => None,
    };
    let cost = cost::estimate(&pipeline, &submit_overhead, bench.output_bytes().await?)?;
    println!("{}", serde_json::to_string_pretty(&cost)?);

    let report = Report {
        benchmark: "service",
        backend,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        responsiveness,
        submit_overhead,
        pipeline,
        cold_start,
        cost,
    };
    let json_path = options.out.join(format!("service-{backend}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", json_path.display());
    for path in plot::service(&report, &options.out)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The backend's name in reports: `embedded` (`embedded-power` with `--durability
/// power`) or `aws`.
fn backend_name(options: &ServiceBench) -> &'static str {
    match (options.backend, options.durability) {
        (Backend::Embedded, DurabilityArg::Process) => "embedded",
        (Backend::Embedded, DurabilityArg::Power) => "embedded-power",
        (Backend::Aws, _) => "aws",
    }
}

/// What every measurement shares.
struct Bench {
    options: ServiceBench,
    model: Arc<dyn Model>,
    tasks: Arc<Registry>,
    client: reqwest::Client,
}

impl Bench {
    /// A fresh store and queues (aws: a table and queues of this process named for
    /// `tag`).
    async fn stack(&self, tag: &str) -> Stack {
        let prefix = format!("offpath-bench-{}-{tag}", std::process::id());
        let names = ResourceNames {
            table: prefix.clone(),
            queue: format!("{prefix}-jobs"),
            dlq: format!("{prefix}-dlq"),
            webhooks: format!("{prefix}-webhooks"),
            webhooks_dlq: format!("{prefix}-webhooks-dlq"),
            bucket: prefix.clone(),
        };
        match self.options.backend {
            Backend::Embedded => {
                let options = offpath_embedded::Options {
                    durability: self.options.durability.into(),
                    ..offpath_embedded::Options::default()
                };
                Stack::embedded(&names, QueueSettings::default(), options)
            }
            Backend::Aws => {
                Stack::named(StackBackend::Moto, &names, QueueSettings::default()).await
            }
        }
    }

    /// Starts `pollers` pollers of a worker over `ports` running the tasks on `model`.
    async fn workers(
        &self,
        ports: &Ports,
        model: Arc<dyn Model>,
        pollers: usize,
        batch_size: u32,
    ) -> anyhow::Result<Pool> {
        let config = WorkerConfig {
            max_receive_count: ports.queue.max_receive_count().await?,
            ..WorkerConfig::default()
        };
        let worker = Worker::new(ports, model, Arc::clone(&self.tasks), config);
        let settings = PollSettings {
            batch_size,
            wait: Duration::from_secs(1),
        };
        Ok(Pool::start(
            Arc::new(worker),
            Arc::clone(&ports.queue),
            settings,
            pollers,
        ))
    }

    /// Size of one light job's output as stored (JSON text).
    async fn output_bytes(&self) -> anyhow::Result<usize> {
        let output = self
            .run_embed(&self.model, json!({"texts": [LIGHT_TEXT]}))
            .await?;
        Ok(output.get().len())
    }

    /// Runs one embed job with `input` on `model`, as a worker would.
    async fn run_embed(&self, model: &Arc<dyn Model>, input: Value) -> anyhow::Result<JsonText> {
        let embed = self.tasks.get("embed")?.clone();
        let prepared = embed.prepare(&JsonText::of(&input)?)?;
        let model = Arc::clone(model);
        let mut outputs =
            tokio::task::spawn_blocking(move || embed.run(model.as_ref(), &[prepared])).await??;
        Ok(outputs.remove(0))
    }
}

/// A model that runs its passes on a thread pool of its own, so a benchmark can give
/// inference a fixed share of the machine's cores, and times them.
struct PooledModel {
    inner: Arc<dyn Model>,
    pool: rayon::ThreadPool,
    nanos: AtomicU64,
}

impl PooledModel {
    /// `inner` on a pool of `threads` threads.
    fn new(inner: Arc<dyn Model>, threads: usize) -> anyhow::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("inference-{i}"))
            .build()?;
        Ok(PooledModel {
            inner,
            pool,
            nanos: AtomicU64::new(0),
        })
    }

    /// Time spent in passes so far.
    fn busy(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

impl PooledModel {
    /// Runs `pass` on the pool and times it.
    fn timed<T>(&self, pass: impl FnOnce() -> T + Send) -> T
    where
        T: Send,
    {
        let start = Instant::now();
        let out = self.pool.install(pass);
        self.nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}

impl Model for PooledModel {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>, ModelError> {
        self.timed(|| self.inner.embed(texts))
    }

    fn tokenize(&self, text: &str) -> Result<Vec<Piece>, ModelError> {
        self.inner.tokenize(text)
    }

    fn embed_pieces(&self, sequences: &[&[u32]]) -> Result<Vec<Embedding>, ModelError> {
        self.timed(|| self.inner.embed_pieces(sequences))
    }
}

/// An axum app on a free loopback port.
struct Server {
    addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(router: Router) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.changed().await;
                })
                .await
        });
        Ok(Server { addr, stop, task })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Creates and enqueues `count` embed jobs with inputs from `input`.
async fn create_jobs(
    ports: &Ports,
    count: usize,
    input: impl Fn(usize) -> Value,
) -> anyhow::Result<Vec<JobId>> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let job = ports.store.create(&new_job("embed", input(i))).await?;
        let group = message_group(&job.owner);
        ports.queue.send(&JobMessage::new(job.id), &group).await?;
        ids.push(job.id);
    }
    Ok(ids)
}

/// How many of `ids` are not terminal.
pub(super) async fn unfinished(store: &dyn JobStore, ids: &[JobId]) -> anyhow::Result<usize> {
    let mut count = 0;
    for &id in ids {
        if store
            .get(id)
            .await?
            .is_some_and(|job| !job.status.is_terminal())
        {
            count += 1;
        }
    }
    Ok(count)
}
