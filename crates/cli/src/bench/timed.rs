//! Wrappers that time the worker's stages (receive, claim, inference, finish, delete)
//! around the real ports, and a model confined to its own thread pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use offpath_core::{
    ErrorInfo, Job, JobId, JobMessage, JobQueue, JobStore, Lease, Model, ModelError, NewJob,
    QueueDepth, QueueError, QueueMessage, StoreError, Task, TaskInput,
};
use serde_json::Value;

/// Time spent in each stage, summed over every worker.
#[derive(Debug, Default)]
pub(super) struct Stages {
    receive: AtomicU64,
    claim: AtomicU64,
    inference: AtomicU64,
    finish: AtomicU64,
    delete: AtomicU64,
    /// Jobs recorded `succeeded`.
    pub(super) completed: AtomicUsize,
}

impl Stages {
    /// `(stage, total)` pairs, in pipeline order.
    pub(super) fn totals(&self) -> [(&'static str, Duration); 5] {
        let get = |a: &AtomicU64| Duration::from_nanos(a.load(Ordering::Relaxed));
        [
            ("receive", get(&self.receive)),
            ("claim", get(&self.claim)),
            ("inference", get(&self.inference)),
            ("finish", get(&self.finish)),
            ("delete", get(&self.delete)),
        ]
    }
}

/// Adds the time `f` takes to `stage`.
async fn timed<T>(stage: &AtomicU64, f: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let out = f.await;
    stage.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    out
}

/// A store that times claims and finishing writes.
pub(super) struct TimedStore {
    pub(super) inner: Arc<dyn JobStore>,
    pub(super) stages: Arc<Stages>,
}

#[async_trait]
impl JobStore for TimedStore {
    async fn create(&self, job: &NewJob) -> Result<Job, StoreError> {
        self.inner.create(job).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.get(id).await
    }
    async fn claim(&self, id: JobId, lease: &Lease, now: u64) -> Result<Job, StoreError> {
        timed(&self.stages.claim, self.inner.claim(id, lease, now)).await
    }
    async fn complete(
        &self,
        id: JobId,
        token: &str,
        output: &Value,
        now: u64,
    ) -> Result<Job, StoreError> {
        let done = timed(
            &self.stages.finish,
            self.inner.complete(id, token, output, now),
        )
        .await;
        if done.is_ok() {
            self.stages.completed.fetch_add(1, Ordering::Relaxed);
        }
        done
    }
    async fn fail(
        &self,
        id: JobId,
        token: &str,
        error: &ErrorInfo,
        now: u64,
    ) -> Result<Job, StoreError> {
        timed(&self.stages.finish, self.inner.fail(id, token, error, now)).await
    }
    async fn release(&self, id: JobId, token: &str) -> Result<Job, StoreError> {
        self.inner.release(id, token).await
    }
    async fn finish_cancelled(&self, id: JobId, token: &str, now: u64) -> Result<Job, StoreError> {
        self.inner.finish_cancelled(id, token, now).await
    }
    async fn abandon(&self, id: JobId, error: &ErrorInfo, now: u64) -> Result<Job, StoreError> {
        self.inner.abandon(id, error, now).await
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

/// A queue that times receives and deletes.
pub(super) struct TimedQueue {
    pub(super) inner: Arc<dyn JobQueue>,
    pub(super) stages: Arc<Stages>,
}

#[async_trait]
impl JobQueue for TimedQueue {
    async fn send(&self, message: &JobMessage) -> Result<(), QueueError> {
        self.inner.send(message).await
    }
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        timed(&self.stages.receive, self.inner.receive(max, wait)).await
    }
    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        timed(&self.stages.delete, self.inner.delete(receipt_handle)).await
    }
    async fn change_visibility(&self, handle: &str, timeout: Duration) -> Result<(), QueueError> {
        self.inner.change_visibility(handle, timeout).await
    }
    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.inner.depth().await
    }
    async fn max_receive_count(&self) -> Result<Option<u32>, QueueError> {
        self.inner.max_receive_count().await
    }
    fn arn(&self) -> &str {
        self.inner.arn()
    }
}

/// A model that times its passes and runs them on its own thread pool, so a
/// benchmark can give inference a fixed share of the machine's cores.
pub(super) struct PooledModel {
    pub(super) inner: Arc<dyn Model>,
    pub(super) pool: Arc<rayon::ThreadPool>,
    pub(super) stages: Arc<Stages>,
}

impl PooledModel {
    /// `inner` on a pool of `threads` threads, timing into `stages`.
    pub(super) fn new(
        inner: Arc<dyn Model>,
        threads: usize,
        stages: Arc<Stages>,
    ) -> anyhow::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("inference-{i}"))
            .build()?;
        Ok(PooledModel {
            inner,
            pool: Arc::new(pool),
            stages,
        })
    }
}

impl Model for PooledModel {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn run(&self, task: Task, inputs: &[TaskInput]) -> Result<Vec<Value>, ModelError> {
        let start = Instant::now();
        let out = self.pool.install(|| self.inner.run(task, inputs));
        self.stages
            .inference
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}
