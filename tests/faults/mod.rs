//! The fault suite's own machinery (everything shared lives in the test kit): its
//! scale, hooks that count finishing writes and crash a worker at chosen points,
//! workers with the suite's settings, waiting for jobs to end, and the report rows.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::future::pending;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use offpath_core::{Job, JobId, JobQueue, JobStatus, JobStore, Model, QueueSettings, Step};
use offpath_testkit::{Backend, Call, Hooked, Hooks, Stack, TestModel};
use offpath_worker::poller::{PollSettings, Pool};
use offpath_worker::{Backoff, Worker, WorkerConfig};
use serde_json::{Value, json};

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

/// A fresh table, queue and DLQ on `backend`, with this visibility timeout and
/// maxReceiveCount.
pub async fn stack(backend: Backend, visibility: Duration, max_receive_count: u32) -> Stack {
    let settings = QueueSettings {
        visibility_timeout: visibility,
        max_receive_count,
        ..QueueSettings::default()
    };
    Stack::new(backend, settings).await
}

/// How many of `jobs` succeeded.
pub fn succeeded(jobs: &HashMap<JobId, Job>) -> usize {
    jobs.values()
        .filter(|j| j.status == JobStatus::Succeeded)
        .count()
}

/// A job request whose text names the job, so the model can count per job.
pub fn embed(text: &str) -> Value {
    json!({"task": "embed", "input": {"texts": [text]}})
}

/// Creates a queued embed job of `text` directly in the store (as the API would),
/// without a message.
pub async fn create(store: &dyn JobStore, text: &str) -> JobId {
    offpath_testkit::create(store, "embed", embed(text)["input"].clone()).await
}

/// Where a worker can be made to die.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    BeforeClaim,
    AfterClaim,
    BeforeFinish,
    /// After the finishing write, before anything else (its webhook event, its ack).
    AfterFinish,
}

/// Crash injection for one worker process: at each point, with probability `rate`,
/// the worker stops forever (the process is "dead") and `dead` is set.
pub struct Crash {
    pub rate: f64,
    pub dead: AtomicBool,
    pub injected: Mutex<HashMap<CrashPoint, usize>>,
}

impl Crash {
    pub fn new(rate: f64) -> Arc<Crash> {
        Arc::new(Crash {
            rate,
            dead: AtomicBool::new(false),
            injected: Mutex::default(),
        })
    }
}

/// Successful finishing writes per job: a job finished twice is a duplicate.
pub type Finishes = Arc<Mutex<HashMap<JobId, usize>>>;

/// Hooks for one worker process's store: count its finishing writes, and crash it
/// at the crash points if it has a [`Crash`].
pub struct Observer {
    pub finishes: Finishes,
    pub crash: Option<Arc<Crash>>,
}

impl Observer {
    async fn maybe_crash(&self, point: CrashPoint) {
        let Some(crash) = &self.crash else { return };
        if crash.dead.load(Ordering::SeqCst) || rand::random::<f64>() < crash.rate {
            if !crash.dead.swap(true, Ordering::SeqCst) {
                *crash.injected.lock().unwrap().entry(point).or_default() += 1;
            }
            pending::<()>().await;
        }
    }
}

#[async_trait]
impl Hooks for Observer {
    async fn before(&self, call: Call) -> Result<(), String> {
        match call {
            Call::Apply(_, Step::Claim) => self.maybe_crash(CrashPoint::BeforeClaim).await,
            Call::Apply(_, Step::Finish(JobStatus::Succeeded | JobStatus::Failed)) => {
                self.maybe_crash(CrashPoint::BeforeFinish).await
            }
            _ => {}
        }
        Ok(())
    }

    async fn after(&self, call: Call, _took: Duration, succeeded: bool) {
        if !succeeded {
            return;
        }
        if let Call::Apply(_, Step::Claim) = call {
            self.maybe_crash(CrashPoint::AfterClaim).await;
        }
        if let (true, Some(id)) = (call.finishes(), call.job()) {
            *self.finishes.lock().unwrap().entry(id).or_default() += 1;
            self.maybe_crash(CrashPoint::AfterFinish).await;
        }
    }
}

/// Worker processes over the stack's store that die at the crash points (probability
/// 5% each) and are replaced by new ones, each counting its finishing writes.
pub struct Processes {
    slots: Vec<(Arc<Crash>, Option<Pool>)>,
    /// Crashes so far, by point.
    pub crashes: HashMap<CrashPoint, usize>,
    /// Processes started in place of dead ones.
    pub restarts: usize,
}

impl Processes {
    /// `count` processes of one poller each running `model`.
    pub fn start(stack: &Stack, model: &Arc<TestModel>, finishes: &Finishes, count: usize) -> Self {
        let mut processes = Processes {
            slots: Vec::new(),
            crashes: HashMap::new(),
            restarts: 0,
        };
        for _ in 0..count {
            let crash = Crash::new(0.05);
            let pool = Self::spawn(stack, model, finishes, &crash);
            processes.slots.push((crash, Some(pool)));
        }
        processes
    }

    fn spawn(
        stack: &Stack,
        model: &Arc<TestModel>,
        finishes: &Finishes,
        crash: &Arc<Crash>,
    ) -> Pool {
        let observer = Observer {
            finishes: Arc::clone(finishes),
            crash: Some(Arc::clone(crash)),
        };
        let store = Hooked::store(stack.ports.store.clone(), Arc::new(observer));
        workers(stack, store, model.clone(), 1)
    }

    /// Replaces the dead processes: whatever one held comes back after the visibility
    /// timeout.
    pub fn replace_dead(&mut self, stack: &Stack, model: &Arc<TestModel>, finishes: &Finishes) {
        for (crash, pool) in &mut self.slots {
            if crash.dead.load(Ordering::SeqCst) {
                if let Some(dead) = pool.take() {
                    dead.kill();
                }
                for (point, n) in crash.injected.lock().unwrap().iter() {
                    *self.crashes.entry(*point).or_default() += n;
                }
                self.restarts += 1;
                *crash = Crash::new(0.05);
                *pool = Some(Self::spawn(stack, model, finishes, crash));
            }
        }
    }

    /// Every crash so far.
    pub fn total(&self) -> usize {
        self.crashes.values().sum()
    }

    /// Stops every process at once.
    pub fn kill(self) {
        for pool in self.slots.into_iter().filter_map(|(_, pool)| pool) {
            pool.kill();
        }
    }
}

/// Jobs finished more than once.
pub fn finishes_over_one(finishes: &Finishes) -> usize {
    finishes
        .lock()
        .unwrap()
        .values()
        .filter(|&&n| n > 1)
        .count()
}

/// Worker settings for the suite: a short heartbeat (three quarters of the visibility
/// timeout), the queue's maxReceiveCount, backoff from 0.5 s up to 2 s (production:
/// see `Backoff::default`).
pub fn worker_config(stack: &Stack) -> WorkerConfig {
    WorkerConfig {
        heartbeat: stack.settings.visibility_timeout.mul_f64(0.75),
        job_timeout: Duration::from_secs(60),
        max_receive_count: Some(stack.settings.max_receive_count),
        backoff: Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(2),
        },
    }
}

/// `count` pollers of one worker over `store` and the stack's queue, running the
/// built-in tasks on `model`.
pub fn workers(
    stack: &Stack,
    store: Arc<dyn JobStore>,
    model: Arc<dyn Model>,
    count: usize,
) -> Pool {
    let ports = stack.ports.with_store(store);
    let worker = Worker::new(&ports, model, Stack::tasks(), worker_config(stack));
    let settings = PollSettings {
        batch_size: 10,
        wait: Duration::from_secs(1),
    };
    Pool::start(Arc::new(worker), Arc::clone(&ports.queue), settings, count)
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
    stack: &Stack,
    ids: &[JobId],
    limit: Duration,
) -> (HashMap<JobId, Job>, Duration) {
    let (store, queue) = (stack.ports.store.as_ref(), stack.ports.queue.as_ref());
    let started = Instant::now();
    let wanted: HashSet<JobId> = ids.iter().copied().collect();
    let mut last_scan: Option<Instant> = None;
    loop {
        let due = last_scan.is_none_or(|at| at.elapsed() >= Duration::from_secs(5));
        if due || queue_empty(queue).await {
            last_scan = Some(Instant::now());
            let unfinished = offpath_testkit::unfinished(store).await;
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
