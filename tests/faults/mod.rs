//! The fault suite's machinery: both backends behind the same ports, a model that
//! counts what it runs, a store that counts finishing writes and can crash the
//! worker at chosen points, pools of in-process workers, and the report rows.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::future::pending;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use offpath_aws::provision::QueueSettings;
use offpath_core::{
    ErrorInfo, Job, JobId, JobQueue, JobStatus, JobStore, Lease, Model, ModelError, NewJob,
    StoreError, Task, TaskInput,
};
use offpath_embedded::{MemoryQueue, MemoryStore, QueueOptions};
use offpath_worker::poller::{PollSettings, run};
use offpath_worker::{Backoff, Worker, WorkerConfig};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::support;

/// How big the suite runs: `ci` (the default) or `full` (OFFPATH_FAULT_SCALE=full),
/// the sizes issue #6 names.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub name: &'static str,
    pub racing_submits: usize,
    pub racing_clients: usize,
    pub duplicate_jobs: usize,
    pub crash_jobs: usize,
    pub jobs: usize,
    /// How long a scenario may take to drain before it fails.
    pub patience: Duration,
}

pub fn scale() -> Scale {
    match std::env::var("OFFPATH_FAULT_SCALE").as_deref() {
        Ok("full") => Scale {
            name: "full",
            racing_submits: 1000,
            racing_clients: 50,
            duplicate_jobs: 1000,
            crash_jobs: 500,
            jobs: 200,
            patience: Duration::from_secs(1200),
        },
        _ => Scale {
            name: "ci",
            racing_submits: 200,
            racing_clients: 50,
            duplicate_jobs: 100,
            crash_jobs: 60,
            jobs: 40,
            patience: Duration::from_secs(300),
        },
    }
}

/// Where the jobs live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// DynamoDB and SQS on moto server.
    Moto,
    /// The in-process adapters `offpath dev` uses by default.
    Embedded,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Moto => "moto",
            Backend::Embedded => "embedded",
        }
    }
}

/// The ports of one fresh deployment.
pub struct Ports {
    pub backend: Backend,
    pub store: Arc<dyn JobStore>,
    pub queue: Arc<dyn JobQueue>,
    pub dlq: Arc<dyn JobQueue>,
    pub settings: QueueSettings,
}

impl Ports {
    /// [`wait_terminal`] over this store and queue.
    pub async fn wait_terminal(
        &self,
        ids: &[JobId],
        limit: Duration,
    ) -> (HashMap<JobId, Job>, Duration) {
        wait_terminal(self.store.as_ref(), self.queue.as_ref(), ids, limit).await
    }
}

/// How many of `jobs` succeeded.
pub fn succeeded(jobs: &HashMap<JobId, Job>) -> usize {
    jobs.values()
        .filter(|j| j.status == JobStatus::Succeeded)
        .count()
}

/// A fresh table, queue and DLQ on `backend`, with this visibility timeout and
/// maxReceiveCount.
pub async fn ports(backend: Backend, visibility: Duration, max_receive_count: u32) -> Ports {
    let settings = QueueSettings {
        visibility_timeout: visibility,
        max_receive_count,
        ..QueueSettings::default()
    };
    match backend {
        Backend::Moto => {
            let stack = support::stack(settings).await;
            Ports {
                backend,
                store: stack.store,
                queue: stack.queue,
                dlq: stack.dlq,
                settings,
            }
        }
        Backend::Embedded => {
            let options = |name: &str| QueueOptions {
                name: name.into(),
                visibility_timeout: visibility,
                capacity: 100_000,
            };
            let dlq = Arc::new(MemoryQueue::new(options("dlq")));
            let queue = MemoryQueue::with_dead_letter_queue(
                options("jobs"),
                dlq.clone(),
                max_receive_count,
            );
            Ports {
                backend,
                store: Arc::new(MemoryStore::new(100_000)),
                queue: Arc::new(queue),
                dlq,
                settings,
            }
        }
    }
}

/// A job input whose text names the job, so the model can count per job.
pub fn embed(text: &str) -> Value {
    json!({"task": "embed", "input": {"texts": [text]}})
}

/// Creates a queued job directly in the store (as the API would), without a message.
pub async fn create(store: &dyn JobStore, text: &str) -> JobId {
    let now = offpath_core::Clock::now_epoch_ms(&offpath_core::SystemClock);
    let new = NewJob {
        id: JobId::random(),
        owner: "faults".into(),
        task: "embed".into(),
        input: embed(text)["input"].clone(),
        request_hash: text.into(),
        idempotency_key: None,
        created_at_epoch_ms: now,
        expires_at_epoch_s: now / 1000 + 3600,
    };
    store.create(&new).await.expect("create").id
}

/// A model that embeds nothing but counts how often each text ran. It answers
/// "throttled" until `throttle_until`, and panics on texts containing "poison"
/// until `cured`.
#[derive(Default)]
pub struct CountingModel {
    pub runs: Mutex<HashMap<String, usize>>,
    pub throttle_until: Mutex<Option<Instant>>,
    pub throttled_answers: AtomicUsize,
    pub poison_panics: AtomicUsize,
    pub cured: AtomicBool,
}

impl CountingModel {
    /// How many times `text` ran to completion.
    pub fn runs_of(&self, text: &str) -> usize {
        self.runs.lock().unwrap().get(text).copied().unwrap_or(0)
    }
}

impl Model for CountingModel {
    fn name(&self) -> &str {
        "counting-model"
    }

    fn run(&self, _task: Task, inputs: &[TaskInput]) -> Result<Vec<Value>, ModelError> {
        if self
            .throttle_until
            .lock()
            .unwrap()
            .is_some_and(|until| Instant::now() < until)
        {
            self.throttled_answers.fetch_add(1, Ordering::SeqCst);
            return Err(ModelError::Throttled {
                retry_after: Some(Duration::from_millis(300)),
            });
        }
        let texts: Vec<String> = inputs
            .iter()
            .map(|input| match input {
                TaskInput::Embed(embed) => embed.texts.join(" "),
                other => other.task().as_str().to_owned(),
            })
            .collect();
        if !self.cured.load(Ordering::SeqCst) && texts.iter().any(|t| t.contains("poison")) {
            self.poison_panics.fetch_add(1, Ordering::SeqCst);
            // Unwinds without the panic hook, so the suite's output stays readable.
            std::panic::resume_unwind(Box::new("poisoned input"));
        }
        let mut runs = self.runs.lock().unwrap();
        for text in &texts {
            *runs.entry(text.clone()).or_default() += 1;
        }
        Ok(texts.iter().map(|t| json!({"text": t})).collect())
    }
}

/// Where a worker can be made to die.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    BeforeClaim,
    AfterClaim,
    BeforeFinish,
}

/// Crash injection for one worker process: at each point, with probability `rate`,
/// the worker stops forever (the process is "dead") and `dead` is set.
pub struct Crash {
    pub rate: f64,
    pub dead: AtomicBool,
    pub injected: Mutex<HashMap<CrashPoint, usize>>,
}

/// A store that counts successful finishing writes per job (a job finished twice is
/// a duplicate) and can crash the worker that uses it.
pub struct Observed {
    inner: Arc<dyn JobStore>,
    pub finishes: Arc<Mutex<HashMap<JobId, usize>>>,
    crash: Option<Arc<Crash>>,
}

impl Observed {
    pub fn new(inner: Arc<dyn JobStore>, finishes: Arc<Mutex<HashMap<JobId, usize>>>) -> Self {
        Observed {
            inner,
            finishes,
            crash: None,
        }
    }

    pub fn crashing(mut self, crash: Arc<Crash>) -> Self {
        self.crash = Some(crash);
        self
    }

    async fn maybe_crash(&self, point: CrashPoint) {
        let Some(crash) = &self.crash else { return };
        if crash.dead.load(Ordering::SeqCst) || rand::random::<f64>() < crash.rate {
            if !crash.dead.swap(true, Ordering::SeqCst) {
                *crash.injected.lock().unwrap().entry(point).or_default() += 1;
            }
            pending::<()>().await;
        }
    }

    fn finished(&self, written: Result<Job, StoreError>) -> Result<Job, StoreError> {
        if let Ok(job) = &written {
            *self.finishes.lock().unwrap().entry(job.id).or_default() += 1;
        }
        written
    }
}

#[async_trait]
impl JobStore for Observed {
    async fn create(&self, job: &NewJob) -> Result<Job, StoreError> {
        self.inner.create(job).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.get(id).await
    }
    async fn claim(&self, id: JobId, lease: &Lease, now: u64) -> Result<Job, StoreError> {
        self.maybe_crash(CrashPoint::BeforeClaim).await;
        let claimed = self.inner.claim(id, lease, now).await;
        if claimed.is_ok() {
            self.maybe_crash(CrashPoint::AfterClaim).await;
        }
        claimed
    }
    async fn complete(
        &self,
        id: JobId,
        token: &str,
        output: &Value,
        now: u64,
    ) -> Result<Job, StoreError> {
        self.maybe_crash(CrashPoint::BeforeFinish).await;
        let written = self.inner.complete(id, token, output, now).await;
        self.finished(written)
    }
    async fn fail(
        &self,
        id: JobId,
        token: &str,
        error: &ErrorInfo,
        now: u64,
    ) -> Result<Job, StoreError> {
        self.maybe_crash(CrashPoint::BeforeFinish).await;
        let written = self.inner.fail(id, token, error, now).await;
        self.finished(written)
    }
    async fn release(&self, id: JobId, token: &str) -> Result<Job, StoreError> {
        self.inner.release(id, token).await
    }
    async fn finish_cancelled(&self, id: JobId, token: &str, now: u64) -> Result<Job, StoreError> {
        let written = self.inner.finish_cancelled(id, token, now).await;
        self.finished(written)
    }
    async fn abandon(&self, id: JobId, error: &ErrorInfo, now: u64) -> Result<Job, StoreError> {
        let written = self.inner.abandon(id, error, now).await;
        self.finished(written)
    }
    async fn cancel_queued(&self, id: JobId, now: u64) -> Result<Job, StoreError> {
        self.inner.cancel_queued(id, now).await
    }
    async fn request_cancel(&self, id: JobId) -> Result<Job, StoreError> {
        self.inner.request_cancel(id).await
    }
    async fn delete_unstarted(&self, id: JobId) -> Result<(), StoreError> {
        self.inner.delete_unstarted(id).await
    }
    async fn revive(&self, id: JobId) -> Result<Job, StoreError> {
        self.inner.revive(id).await
    }
    async fn unfinished(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        self.inner.unfinished(limit).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// Worker settings for the suite: short lease (under the visibility timeout), the
/// queue's maxReceiveCount, backoff from 0.5 s up to 2 s (production: see
/// `Backoff::default`).
pub fn worker_config(ports: &Ports) -> WorkerConfig {
    WorkerConfig {
        lease: ports.settings.visibility_timeout.mul_f64(0.75),
        max_receive_count: Some(ports.settings.max_receive_count),
        backoff: Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(2),
        },
    }
}

/// In-process worker processes polling the jobs queue.
pub struct Pool {
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pool {
    /// `count` pollers over `store`, each with its own worker.
    pub fn start(
        ports: &Ports,
        store: Arc<dyn JobStore>,
        model: Arc<dyn Model>,
        count: usize,
    ) -> Pool {
        let (shutdown, watch) = watch::channel(false);
        let tasks = (0..count)
            .map(|_| spawn_poller(ports, store.clone(), model.clone(), watch.clone()))
            .collect();
        Pool { shutdown, tasks }
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

pub fn spawn_poller(
    ports: &Ports,
    store: Arc<dyn JobStore>,
    model: Arc<dyn Model>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let worker = Arc::new(Worker::new(
        store,
        ports.queue.clone(),
        model,
        worker_config(ports),
    ));
    let settings = PollSettings {
        batch_size: 10,
        wait: Duration::from_secs(1),
    };
    tokio::spawn(run(worker, ports.queue.clone(), settings, shutdown))
}

/// True when the queue holds no message, visible or in flight.
pub async fn queue_empty(queue: &dyn JobQueue) -> bool {
    let depth = queue.depth().await.expect("depth");
    depth.visible + depth.in_flight == 0
}

/// Waits until none of the jobs is unfinished (or `limit` passes); returns the jobs as
/// then read and how long it took. The store is scanned only when the queue is empty
/// or every 5 s: a scan per pass of a large table would starve the workers on moto.
pub async fn wait_terminal(
    store: &dyn JobStore,
    queue: &dyn JobQueue,
    ids: &[JobId],
    limit: Duration,
) -> (HashMap<JobId, Job>, Duration) {
    let started = Instant::now();
    let wanted: HashSet<JobId> = ids.iter().copied().collect();
    let mut last_scan: Option<Instant> = None;
    loop {
        let due = last_scan.is_none_or(|at| at.elapsed() >= Duration::from_secs(5));
        if due || queue_empty(queue).await {
            last_scan = Some(Instant::now());
            let unfinished = store.unfinished(100_000).await.expect("unfinished");
            if !unfinished.iter().any(|j| wanted.contains(&j.id)) {
                break;
            }
        }
        if started.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    let mut jobs = HashMap::new();
    for id in ids {
        if let Some(job) = store.get(*id).await.expect("get") {
            jobs.insert(*id, job);
        }
    }
    (jobs, elapsed)
}

/// One line of the suite's report.
pub struct Row<'a> {
    pub scenario: &'a str,
    pub backend: Backend,
    pub load: String,
    pub faults: String,
    pub lost: usize,
    pub duplicated: usize,
    pub server_errors: usize,
    pub drain: Duration,
}

/// Prints the row as a Markdown table line (shown with `--nocapture`) and appends it
/// to OFFPATH_FAULT_REPORT when that names a file.
pub fn report(row: Row) {
    let line = format!(
        "| {} | {} | {} | {} | {} | {} | {} | {:.1} s |",
        row.scenario,
        row.backend.name(),
        row.load,
        row.faults,
        row.lost,
        row.duplicated,
        row.server_errors,
        row.drain.as_secs_f64()
    );
    println!("{line}");
    if let Ok(path) = std::env::var("OFFPATH_FAULT_REPORT") {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("report file");
        writeln!(file, "{line}").expect("report line");
    }
}
