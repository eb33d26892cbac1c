//! `offpath bench service`: the thesis measured. Submit latency with idle and
//! saturated workers against a synchronous endpoint that runs the same inference on
//! the request path; submit overhead against a bare write + send; pipeline
//! throughput and where its time goes; cold starts of the Lambda bootstraps; cost.
//! Everything runs on loopback, against the embedded backend or the AWS endpoint the
//! standard configuration names (moto here).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{self, StatusCode};
use axum::routing::post;
use clap::Args;
use offpath_api::{AppState, Auth, app};
use offpath_aws::provision::{QueueSettings, ResourceNames, provision};
use offpath_aws::{DynamoStore, SqsQueue, load_sdk_config};
use offpath_core::{
    Clock, Job, JobId, JobMessage, JobQueue, JobStore, Model, NewJob, SystemClock, Task, TaskInput,
};
use offpath_inference::{MiniLm, weights};
use offpath_worker::poller::{self, PollSettings};
use offpath_worker::{Worker, WorkerConfig};
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt as _;

use super::timed::{PooledModel, Stages, TimedQueue, TimedStore};
use super::{Percentiles, cost, plot, round, round_to};
use crate::dev::Backend;

/// `offpath bench service` options.
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
    /// Where the JSON results and PNG plots go.
    #[arg(long, default_value = "docs/bench")]
    pub out: PathBuf,
}

/// One short text: the light job whose submit latency is measured.
const LIGHT_TEXT: &str = "How do message queues keep web requests fast?";
/// Texts in a heavy embed job.
const HEAVY_TEXTS: usize = 32;
/// Worker pollers in the responsiveness runs.
const POLLERS: usize = 2;
/// Most bare write + send pairs timed after each offpath responsiveness run, at its
/// rate (never longer than the run itself).
const FLOOR_SAMPLES: usize = 200;

/// Runs the service benchmark and writes `service-<backend>.json` and plots.
pub(super) async fn run(options: ServiceBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.bootstraps.is_none() || options.backend == Backend::Aws,
        "--bootstraps needs --backend aws: the functions connect to the table and queue at start-up"
    );
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    let files = tokio::task::spawn_blocking(|| weights::resolve(true)).await??;
    let model_files = files.clone();
    let model: Arc<dyn Model> =
        Arc::new(tokio::task::spawn_blocking(move || MiniLm::load(&model_files)).await??);
    let bench = Bench {
        options: options.clone(),
        model,
        client: reqwest::Client::new(),
    };
    let backend = backend_name(options.backend);

    println!("== responsiveness ({backend})");
    let responsiveness = bench.responsiveness().await?;
    println!("== submit overhead ({backend})");
    let overhead = bench.overhead().await?;
    println!("== pipeline throughput ({backend})");
    let pipeline = bench.pipeline().await?;
    let cold_start = match &options.bootstraps {
        Some(dir) => {
            println!("== cold start");
            Some(cold_start(dir, &files.dir).await?)
        }
        None => None,
    };
    let cost = cost::estimate(&pipeline, &overhead, bench.output_bytes().await?)?;
    println!("{}", serde_json::to_string_pretty(&cost)?);

    let result = json!({
        "benchmark": "service",
        "backend": backend,
        "command": format!("offpath bench service --backend {backend}"),
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "responsiveness": responsiveness,
        "submit_overhead": overhead,
        "pipeline": pipeline,
        "cold_start": cold_start,
        "cost": cost,
    });
    let json_path = options.out.join(format!("service-{backend}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&result)? + "\n")?;
    println!("wrote {}", json_path.display());
    for path in plot::service(&result, &options.out)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Embedded => "embedded",
        Backend::Aws => "aws",
    }
}

/// A store and queue, created empty for one measurement.
struct Ports {
    store: Arc<dyn JobStore>,
    queue: Arc<dyn JobQueue>,
    /// The SDK clients and names, for the bare-SDK floor (aws backend only).
    sdk: Option<(aws_config::SdkConfig, String, String)>,
}

/// A table and queues of this benchmark process, named for `tag`.
fn names(tag: &str) -> ResourceNames {
    let prefix = format!("offpath-bench-{}-{tag}", std::process::id());
    ResourceNames {
        table: prefix.clone(),
        queue: format!("{prefix}-jobs"),
        dlq: format!("{prefix}-dlq"),
    }
}

/// What every measurement shares.
struct Bench {
    options: ServiceBench,
    model: Arc<dyn Model>,
    client: reqwest::Client,
}

impl Bench {
    /// A fresh store and queue (aws: a table and queues named for `tag`).
    async fn ports(&self, tag: &str) -> anyhow::Result<Ports> {
        let settings = QueueSettings::default();
        match self.options.backend {
            Backend::Embedded => {
                let (store, queue) = crate::dev::embedded(&settings);
                Ok(Ports {
                    store,
                    queue,
                    sdk: None,
                })
            }
            Backend::Aws => {
                let sdk = load_sdk_config().await?;
                let resources = provision(&sdk, &names(tag), &settings).await?;
                let queue = SqsQueue::from_sdk(&sdk, &resources.queue_url).await?;
                Ok(Ports {
                    store: Arc::new(DynamoStore::from_sdk(&sdk, &resources.table)),
                    queue: Arc::new(queue),
                    sdk: Some((sdk, resources.table, resources.queue_url)),
                })
            }
        }
    }

    /// Starts `pollers` pollers of a worker over `store`, `queue` and `model`.
    async fn workers(
        &self,
        store: Arc<dyn JobStore>,
        queue: Arc<dyn JobQueue>,
        model: Arc<dyn Model>,
        pollers: usize,
        batch_size: u32,
    ) -> anyhow::Result<Workers> {
        let config = WorkerConfig {
            max_receive_count: queue.max_receive_count().await?,
            ..WorkerConfig::default()
        };
        let worker = Arc::new(Worker::new(store, Arc::clone(&queue), model, config));
        let (stop, stopped) = watch::channel(false);
        let settings = PollSettings {
            batch_size,
            wait: Duration::from_secs(1),
        };
        let handles = (0..pollers)
            .map(|_| {
                tokio::spawn(poller::run(
                    Arc::clone(&worker),
                    Arc::clone(&queue),
                    settings,
                    stopped.clone(),
                ))
            })
            .collect();
        Ok(Workers { stop, handles })
    }

    /// Size of one light job's output as stored (JSON text).
    async fn output_bytes(&self) -> anyhow::Result<usize> {
        let model = Arc::clone(&self.model);
        let input = TaskInput::parse(Task::Embed, &json!({"texts": [LIGHT_TEXT]}))?;
        let output =
            tokio::task::spawn_blocking(move || model.run(Task::Embed, &[input])).await??;
        Ok(output.first().map_or(0, |o| o.to_string().len()))
    }

    // 1. Responsiveness ----------------------------------------------------------

    /// Light submits at a fixed rate, with idle and with saturated workers, against
    /// offpath and against a synchronous endpoint that runs the inference inline.
    /// Inference gets one core of its own in both (the workers stand in for Lambda
    /// instances on other machines); the API, the load and the endpoint get the rest.
    async fn responsiveness(&self) -> anyhow::Result<Value> {
        let confined: Arc<dyn Model> = Arc::new(PooledModel::new(
            Arc::clone(&self.model),
            1,
            Arc::default(),
        )?);
        let heavy = heavy_input();
        let probe = Arc::clone(&confined);
        let one_heavy = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            probe.run(Task::Embed, &[heavy]).map(|_| start.elapsed())
        })
        .await??;
        // Three times the work the load and the floor samples after it last, so the
        // workers stay busy throughout.
        let busy = 2.0 * self.options.seconds as f64;
        let backlog = (3.0 * busy / one_heavy.as_secs_f64()).ceil() as usize + 4;
        println!(
            "one heavy job ({HEAVY_TEXTS} long texts) takes {:.0} ms on the inference core; backlog {backlog}",
            one_heavy.as_secs_f64() * 1000.0
        );
        let mut runs = serde_json::Map::new();
        for (name, backlog) in [("offpath_idle", 0), ("offpath_saturated", backlog)] {
            let run = self.offpath_run(name, &confined, backlog).await?;
            runs.insert(name.into(), run);
        }
        for (name, heavy_clients) in [("sync_idle", 0), ("sync_saturated", POLLERS)] {
            let run = self.sync_run(&confined, heavy_clients).await?;
            print_run(name, &run);
            runs.insert(name.into(), run);
        }
        let p99 = |name: &str| runs[name]["latency"]["p99_ms"].as_f64().unwrap_or(f64::NAN);
        let offpath_ratio = p99("offpath_saturated") / p99("offpath_idle");
        let sync_ratio = p99("sync_saturated") / p99("sync_idle");
        println!(
            "saturated/idle p99: offpath {offpath_ratio:.2}x (target <= 1.2), synchronous {sync_ratio:.1}x (target >= 10)"
        );
        Ok(json!({
            "rate_per_second": self.options.rate,
            "seconds": self.options.seconds,
            "heavy_job": {"texts": HEAVY_TEXTS, "inference_ms": round(one_heavy.as_secs_f64() * 1000.0)},
            "backlog_jobs": backlog,
            "inference_threads": 1,
            "runs": runs,
            "p99_ratio": {"offpath": round_to(offpath_ratio, 2), "sync": round_to(sync_ratio, 2)},
        }))
    }

    async fn offpath_run(
        &self,
        name: &str,
        model: &Arc<dyn Model>,
        backlog: usize,
    ) -> anyhow::Result<Value> {
        let ports = self.ports(&name.replace('_', "-")).await?;
        let heavy = create_jobs(ports.store.as_ref(), ports.queue.as_ref(), backlog, |_| {
            heavy_input_json()
        })
        .await?;
        let workers = self
            .workers(
                Arc::clone(&ports.store),
                Arc::clone(&ports.queue),
                Arc::clone(model),
                POLLERS,
                1,
            )
            .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let router = app(AppState::new(
            Arc::clone(&ports.store),
            Arc::clone(&ports.queue),
            Auth::SingleTenant,
        ));
        let server = Server::start(router).await?;
        let body = json!({"task": "embed", "input": {"texts": [LIGHT_TEXT]}}).to_string();
        let load = self.open_loop(&server.url("/jobs"), body).await;
        server.stop().await;
        // The same endpoint without offpath, at the same rate, in the same state: does
        // it slow down too?
        let interval = Duration::from_secs(1) / self.options.rate;
        let samples = FLOOR_SAMPLES.min((self.options.rate as u64 * self.options.seconds) as usize);
        let floor = Floor::new(&ports).latency(samples, interval).await?;
        let busy_after = unfinished(ports.store.as_ref(), &heavy).await?;
        workers.stop().await;
        let mut run = load.json();
        run["floor_after_load"] = floor.json();
        run["heavy_jobs_unfinished_at_end"] = json!(busy_after);
        print_run(name, &run);
        anyhow::ensure!(
            backlog == 0 || busy_after > 0,
            "{name}: the backlog ran out before the load ended; raise it"
        );
        Ok(run)
    }

    async fn sync_run(
        &self,
        model: &Arc<dyn Model>,
        heavy_clients: usize,
    ) -> anyhow::Result<Value> {
        let router = Router::new()
            .route("/embed", post(sync_embed))
            .with_state(Arc::clone(model));
        let server = Server::start(router).await?;
        let url = server.url("/embed");
        let (stop, stopped) = watch::channel(false);
        let heavy_body = json!({"texts": heavy_texts()}).to_string();
        let clients: Vec<_> = (0..heavy_clients)
            .map(|_| {
                let (client, url, body) = (self.client.clone(), url.clone(), heavy_body.clone());
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    while !*stopped.borrow() {
                        let _ = post_json(&client, &url, body.clone()).await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let body = json!({"texts": [LIGHT_TEXT]}).to_string();
        let load = self.open_loop(&url, body).await;
        stop.send(true)?;
        for client in clients {
            client.await?;
        }
        server.stop().await;
        Ok(load.json())
    }

    /// Offers `rate` POSTs per second for `seconds`, each on its own schedule (open
    /// loop: a slow answer does not delay the next request); latency counts from the
    /// scheduled send.
    async fn open_loop(&self, url: &str, body: String) -> Load {
        let interval = Duration::from_secs(1) / self.options.rate;
        let total = self.options.rate as u64 * self.options.seconds;
        let start = tokio::time::Instant::now() + Duration::from_millis(100);
        let requests: Vec<_> = (0..total)
            .map(|i| {
                let at = start + interval * i as u32;
                let (client, url, body) = (self.client.clone(), url.to_owned(), body.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    let status = post_json(&client, &url, body).await;
                    (status, at.elapsed())
                })
            })
            .collect();
        let mut load = Load::default();
        for request in requests {
            match request.await {
                Ok((Ok(status), took)) if status.is_success() => load.latencies.push(took),
                Ok((Ok(status), _)) => load.errors.push(status.to_string()),
                Ok((Err(err), _)) => load.errors.push(err.to_string()),
                Err(err) => load.errors.push(err.to_string()),
            }
        }
        load
    }

    // 2. Submit overhead ---------------------------------------------------------

    /// offpath's submit (the router, as Lambda invokes it: no TCP) against the floor:
    /// one bare write and one bare send (the SDK's PutItem + SendMessage on aws; the
    /// embedded store's create + the queue's send on embedded). Interleaved, so drift
    /// hits both sides alike.
    async fn overhead(&self) -> anyhow::Result<Value> {
        let ports = self.ports("overhead").await?;
        let router = app(AppState::new(
            Arc::clone(&ports.store),
            Arc::clone(&ports.queue),
            Auth::SingleTenant,
        ));
        let body = json!({"task": "embed", "input": {"texts": [LIGHT_TEXT]}}).to_string();
        let floor_path = Floor::new(&ports);
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        let warm_up = 20;
        for i in 0..self.options.submits + warm_up {
            let start = Instant::now();
            let request = http::Request::post("/jobs")
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.clone()))?;
            let response = router.clone().oneshot(request).await?;
            anyhow::ensure!(
                response.status() == StatusCode::ACCEPTED,
                "submit answered {}",
                response.status()
            );
            let took_ours = start.elapsed();

            let start = Instant::now();
            floor_path.submit().await?;
            let took_floor = start.elapsed();
            if i >= warm_up {
                ours.push(took_ours);
                floor.push(took_floor);
            }
        }
        let ours = Percentiles::of(&ours).context("no submits")?;
        let floor = Percentiles::of(&floor).context("no submits")?;
        let ratio = ours.p50 / floor.p50;
        println!(
            "p50: offpath {:.3} ms, floor {:.3} ms -> {ratio:.2}x (target <= 1.1); p99 {:.3} vs {:.3} ms",
            ours.p50, floor.p50, ours.p99, floor.p99
        );
        Ok(json!({
            "submits": self.options.submits,
            "offpath": ours.json(),
            "floor": floor.json(),
            "floor_is": floor_path.describe(),
            "p50_ratio": round_to(ratio, 2),
        }))
    }

    // 3. Pipeline throughput -----------------------------------------------------

    /// Jobs/second from a full queue to the last success, for 1, 2 and 4 pollers and
    /// batch sizes 1 and 10, with the worker time per job in each stage.
    async fn pipeline(&self) -> anyhow::Result<Value> {
        let corpus = super::model::sentences();
        let mut rows = Vec::new();
        for pollers in [1usize, 2, 4] {
            for batch in [1u32, 10] {
                let ports = self.ports(&format!("p{pollers}-b{batch}")).await?;
                let ids = create_jobs(
                    ports.store.as_ref(),
                    ports.queue.as_ref(),
                    self.options.jobs,
                    |i| json!({"texts": [corpus[i % corpus.len()]]}),
                )
                .await?;
                let stages: Arc<Stages> = Arc::default();
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let store: Arc<dyn JobStore> = Arc::new(TimedStore {
                    inner: Arc::clone(&ports.store),
                    stages: Arc::clone(&stages),
                });
                let queue: Arc<dyn JobQueue> = Arc::new(TimedQueue {
                    inner: Arc::clone(&ports.queue),
                    stages: Arc::clone(&stages),
                });
                let model = PooledModel::new(Arc::clone(&self.model), cores, Arc::clone(&stages))?;
                let start = Instant::now();
                let workers = self
                    .workers(store, queue, Arc::new(model), pollers, batch)
                    .await?;
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
                let per_second = ids.len() as f64 / elapsed.as_secs_f64();
                let jobs = ids.len() as f64;
                let stage_ms: serde_json::Map<String, Value> = stages
                    .totals()
                    .iter()
                    .map(|(stage, total)| {
                        (
                            stage.to_string(),
                            round_to(total.as_secs_f64() * 1000.0 / jobs, 2),
                        )
                    })
                    .collect();
                let queue_wait = mean_queue_wait_ms(ports.store.as_ref(), &ids).await?;
                let stage_text: Vec<String> = stages
                    .totals()
                    .iter()
                    .map(|(stage, total)| {
                        format!("{stage} {:.2}", total.as_secs_f64() * 1000.0 / jobs)
                    })
                    .collect();
                println!(
                    "pollers {pollers}, batch {batch:>2}: {per_second:>6.1} jobs/s; worker ms per job: {}; mean queue wait {queue_wait:.0} ms",
                    stage_text.join(", ")
                );
                rows.push(json!({
                    "pollers": pollers,
                    "batch_size": batch,
                    "jobs": ids.len(),
                    "seconds": round_to(elapsed.as_secs_f64(), 2),
                    "jobs_per_second": round(per_second),
                    "worker_ms_per_job": stage_ms,
                    "mean_queue_wait_ms": round(queue_wait),
                }));
            }
        }
        Ok(
            json!({ "inference_threads": std::thread::available_parallelism().map_or(1, |n| n.get()), "runs": rows }),
        )
    }
}

/// The floor of a submit: one bare write and one bare send, the SDK's PutItem +
/// SendMessage on aws, the embedded store's create + the queue's send on embedded.
struct Floor {
    store: Arc<dyn JobStore>,
    queue: Arc<dyn JobQueue>,
    sdk: Option<(
        aws_sdk_dynamodb::Client,
        aws_sdk_sqs::Client,
        String,
        String,
    )>,
}

impl Floor {
    fn new(ports: &Ports) -> Self {
        Floor {
            store: Arc::clone(&ports.store),
            queue: Arc::clone(&ports.queue),
            sdk: ports.sdk.as_ref().map(|(sdk, table, url)| {
                (
                    aws_sdk_dynamodb::Client::new(sdk),
                    aws_sdk_sqs::Client::new(sdk),
                    table.clone(),
                    url.clone(),
                )
            }),
        }
    }

    fn describe(&self) -> &'static str {
        match self.sdk {
            Some(_) => "PutItem + SendMessage with the AWS SDK",
            None => "embedded store create + queue send",
        }
    }

    /// One bare write and send of a light job.
    async fn submit(&self) -> anyhow::Result<()> {
        let new = new_job(json!({"texts": [LIGHT_TEXT]}));
        match &self.sdk {
            Some((dynamodb, sqs, table, url)) => {
                dynamodb
                    .put_item()
                    .table_name(table)
                    .set_item(Some(offpath_aws::job_item(&Job::from_new(new.clone()))))
                    .send()
                    .await?;
                sqs.send_message()
                    .queue_url(url)
                    .message_body(JobMessage::new(new.id).to_body())
                    .send()
                    .await?;
            }
            None => {
                self.store.create(&new).await?;
                self.queue.send(&JobMessage::new(new.id)).await?;
            }
        }
        Ok(())
    }

    /// Percentiles of `count` floor submits, one every `interval`.
    async fn latency(&self, count: usize, interval: Duration) -> anyhow::Result<Percentiles> {
        let mut took = Vec::with_capacity(count);
        let mut tick = tokio::time::interval(interval);
        for _ in 0..count {
            tick.tick().await;
            let start = Instant::now();
            self.submit().await?;
            took.push(start.elapsed());
        }
        Percentiles::of(&took).context("no floor submits")
    }
}

/// Pollers running until stopped.
struct Workers {
    stop: watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// Stops the pollers after the batches in hand.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for handle in self.handles {
            let _ = handle.await;
        }
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

/// Latencies of the answered requests and what went wrong with the others.
#[derive(Debug, Default)]
struct Load {
    latencies: Vec<Duration>,
    errors: Vec<String>,
}

impl Load {
    fn json(&self) -> Value {
        let mut errors = self.errors.clone();
        errors.sort();
        errors.dedup();
        json!({
            "answered": self.latencies.len(),
            "errors": self.errors.len(),
            "error_kinds": errors,
            "latency": Percentiles::of(&self.latencies).map(|p| p.json()),
        })
    }
}

fn print_run(name: &str, run: &Value) {
    let latency = &run["latency"];
    println!(
        "{name:>18}: p50 {} ms, p95 {} ms, p99 {} ms ({} answered, {} errors)",
        latency["p50_ms"], latency["p95_ms"], latency["p99_ms"], run["answered"], run["errors"]
    );
    let floor = &run["floor_after_load"];
    if floor.is_object() {
        println!(
            "{:>18}  bare write + send meanwhile: p50 {} ms, p99 {} ms",
            "", floor["p50_ms"], floor["p99_ms"]
        );
    }
}

/// POSTs a JSON body, reads the whole answer and returns its status.
async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: String,
) -> Result<StatusCode, reqwest::Error> {
    let response = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    let status = response.status();
    response.bytes().await?;
    Ok(status)
}

/// The anti-pattern: `POST /embed {"texts": [...]}` runs the model on the request path.
async fn sync_embed(
    State(model): State<Arc<dyn Model>>,
    axum::Json(body): axum::Json<Value>,
) -> Result<axum::Json<Value>, (StatusCode, String)> {
    let input = TaskInput::parse(Task::Embed, &body)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let output = tokio::task::spawn_blocking(move || model.run(Task::Embed, &[input]))
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(axum::Json(output.into_iter().next().unwrap_or(Value::Null)))
}

/// Long texts (about 150 tokens each) for the heavy jobs.
fn heavy_texts() -> Vec<String> {
    let corpus = super::model::sentences();
    (0..HEAVY_TEXTS)
        .map(|i| {
            (0..6)
                .map(|j| corpus[(i * 7 + j * 13) % corpus.len()].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn heavy_input_json() -> Value {
    json!({ "texts": heavy_texts() })
}

fn heavy_input() -> TaskInput {
    TaskInput::parse(Task::Embed, &heavy_input_json()).expect("the heavy input is valid")
}

/// A job record as the API would create it, for `input` of an embed job.
fn new_job(input: Value) -> NewJob {
    let now = SystemClock.now_epoch_ms();
    NewJob {
        id: JobId::random(),
        owner: "bench".into(),
        task: Task::Embed.as_str().into(),
        request_hash: "bench".into(),
        input,
        idempotency_key: None,
        created_at_epoch_ms: now,
        expires_at_epoch_s: now / 1000 + 3600,
    }
}

/// Creates and enqueues `count` embed jobs with inputs from `input`.
async fn create_jobs(
    store: &dyn JobStore,
    queue: &dyn JobQueue,
    count: usize,
    input: impl Fn(usize) -> Value,
) -> anyhow::Result<Vec<JobId>> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let job = store.create(&new_job(input(i))).await?;
        queue.send(&JobMessage::new(job.id)).await?;
        ids.push(job.id);
    }
    Ok(ids)
}

/// How many of `ids` are not terminal.
async fn unfinished(store: &dyn JobStore, ids: &[JobId]) -> anyhow::Result<usize> {
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

// 4. Cold start --------------------------------------------------------------------

/// Process start to the first `GET /runtime/invocation/next` (the function is ready
/// for its first event), for the api and worker bootstraps, median of five, with
/// their sizes. The functions connect to a fresh table and queue at the configured
/// endpoint.
async fn cold_start(dir: &Path, model_dir: &Path) -> anyhow::Result<Value> {
    let sdk = load_sdk_config().await?;
    let resources = provision(&sdk, &names("cold"), &QueueSettings::default()).await?;
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
            let ready = super::runtime::time_to_ready(
                &bootstrap,
                function,
                &[
                    ("OFFPATH_TABLE", resources.table.as_str()),
                    ("OFFPATH_QUEUE_URL", resources.queue_url.as_str()),
                    ("OFFPATH_MODEL_DIR", &model_dir.to_string_lossy()),
                ],
            )
            .await?;
            runs.push(ready);
        }
        let ms = Percentiles::of(&runs).context("no runs")?.p50;
        println!(
            "{function}: ready {ms:.0} ms after process start (median of 5); bootstrap {:.1} MB",
            bytes as f64 / 1e6
        );
        rows.push(json!({"function": function, "ready_ms": round(ms), "bootstrap_mb": round(bytes as f64 / 1e6)}));
    }
    Ok(Value::Array(rows))
}
