//! One layer over the ports, in the spirit of tower's layers: [`Hooked`] wraps a
//! `JobStore` or `JobQueue` and runs [`Hooks`] before and after every call. Timing
//! (benchmarks), crash injection and counting (fault suite) and refused sends are
//! hooks, not hand-written delegates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use offpath_core::{
    Activity, DuePage, Job, JobId, JobMessage, JobPage, JobQueue, JobStore, ListQuery,
    MinuteActivity, NewJob, QueueDepth, QueueError, QueueMessage, Step, StoreError, Transition,
};

/// A port call, as hooks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// `JobStore::create` of this job.
    Create(JobId),
    /// `JobStore::get`.
    Get(JobId),
    /// `JobStore::apply` of a transition to this job.
    Apply(JobId, Step),
    /// `JobStore::due`.
    Due,
    /// `JobStore::list`.
    List,
    /// `JobStore::unfinished_estimate`.
    UnfinishedEstimate,
    /// `JobStore::wait_terminal`.
    WaitTerminal(JobId),
    /// `JobStore::ping`.
    Ping,
    /// `JobStore::add_activity`.
    AddActivity,
    /// `JobStore::activity`.
    Activity,
    /// `JobQueue::send` of this job's message.
    Send(JobId),
    /// `JobQueue::receive`.
    Receive,
    /// `JobQueue::delete`.
    Delete,
    /// `JobQueue::change_visibility`.
    ChangeVisibility,
    /// `JobQueue::depth`.
    Depth,
    /// `JobQueue::max_receive_count`.
    MaxReceiveCount,
    /// `JobQueue::purge`.
    Purge,
}

impl Call {
    /// True for the writes that end a job.
    pub fn finishes(self) -> bool {
        matches!(self, Call::Apply(_, step) if step.finishes())
    }

    /// The transition, if the call applies one.
    pub fn step(self) -> Option<Step> {
        match self {
            Call::Apply(_, step) => Some(step),
            _ => None,
        }
    }

    /// The job the call is about, if one.
    pub fn job(self) -> Option<JobId> {
        match self {
            Call::Create(id)
            | Call::Get(id)
            | Call::Apply(id, _)
            | Call::WaitTerminal(id)
            | Call::Send(id) => Some(id),
            Call::Due
            | Call::List
            | Call::UnfinishedEstimate
            | Call::Ping
            | Call::AddActivity
            | Call::Activity
            | Call::Purge
            | Call::Receive
            | Call::Delete
            | Call::ChangeVisibility
            | Call::Depth
            | Call::MaxReceiveCount => None,
        }
    }
}

/// What runs around each call. Both methods may wait, forever if they like (a
/// crashed process never returns).
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Before the call reaches the port; `Err(reason)` refuses it as unavailable.
    async fn before(&self, call: Call) -> Result<(), String> {
        let _ = call;
        Ok(())
    }

    /// After the port answered: how long it took and whether it succeeded.
    async fn after(&self, call: Call, took: Duration, succeeded: bool) {
        let _ = (call, took, succeeded);
    }
}

/// A port wrapped in [`Hooks`].
pub struct Hooked<P: ?Sized, H> {
    inner: Arc<P>,
    hooks: Arc<H>,
}

impl<H: Hooks> Hooked<dyn JobStore, H> {
    /// `store` with `hooks` around every call.
    pub fn store(store: Arc<dyn JobStore>, hooks: Arc<H>) -> Arc<dyn JobStore> {
        Arc::new(Hooked {
            inner: store,
            hooks,
        })
    }
}

impl<H: Hooks> Hooked<dyn JobQueue, H> {
    /// `queue` with `hooks` around every call.
    pub fn queue(queue: Arc<dyn JobQueue>, hooks: Arc<H>) -> Arc<dyn JobQueue> {
        Arc::new(Hooked {
            inner: queue,
            hooks,
        })
    }
}

impl<P: ?Sized, H: Hooks> Hooked<P, H> {
    async fn around<T, E: From<Refused>>(
        &self,
        call: Call,
        port: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.hooks.before(call).await.map_err(Refused)?;
        let started = Instant::now();
        let result = port.await;
        self.hooks
            .after(call, started.elapsed(), result.is_ok())
            .await;
        result
    }
}

/// A call a hook refused.
struct Refused(String);

impl From<Refused> for StoreError {
    fn from(refused: Refused) -> Self {
        StoreError::Unavailable(refused.0)
    }
}

impl From<Refused> for QueueError {
    fn from(refused: Refused) -> Self {
        QueueError::Unavailable(refused.0)
    }
}

#[async_trait]
impl<H: Hooks> JobStore for Hooked<dyn JobStore, H> {
    async fn create(&self, job: &NewJob) -> Result<Job, StoreError> {
        self.around(Call::Create(job.id), self.inner.create(job))
            .await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.around(Call::Get(id), self.inner.get(id)).await
    }
    async fn apply(&self, id: JobId, transition: &Transition) -> Result<Job, StoreError> {
        let write = self.inner.apply(id, transition);
        self.around(Call::Apply(id, transition.step()), write).await
    }
    async fn due(&self, before: u64, cursor: Option<&str>) -> Result<DuePage, StoreError> {
        self.around(Call::Due, self.inner.due(before, cursor)).await
    }
    async fn list(&self, query: &ListQuery<'_>) -> Result<JobPage, StoreError> {
        self.around(Call::List, self.inner.list(query)).await
    }
    async fn unfinished_estimate(
        &self,
        owner: &str,
        sample: JobId,
        at_most: u64,
    ) -> Result<u64, StoreError> {
        let count = self.inner.unfinished_estimate(owner, sample, at_most);
        self.around(Call::UnfinishedEstimate, count).await
    }
    async fn wait_terminal(&self, id: JobId, wait: Duration) -> Result<Option<Job>, StoreError> {
        let read = self.inner.wait_terminal(id, wait);
        self.around(Call::WaitTerminal(id), read).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.around(Call::Ping, self.inner.ping()).await
    }
    async fn add_activity(&self, minute: u64, activity: &Activity) -> Result<(), StoreError> {
        self.around(Call::AddActivity, self.inner.add_activity(minute, activity))
            .await
    }
    async fn activity(&self, last: u64, minutes: u32) -> Result<Vec<MinuteActivity>, StoreError> {
        self.around(Call::Activity, self.inner.activity(last, minutes))
            .await
    }
}

#[async_trait]
impl<H: Hooks> JobQueue for Hooked<dyn JobQueue, H> {
    async fn send(&self, message: &JobMessage, group: &str) -> Result<(), QueueError> {
        self.around(Call::Send(message.job_id), self.inner.send(message, group))
            .await
    }
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        self.around(Call::Receive, self.inner.receive(max, wait))
            .await
    }
    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.around(Call::Delete, self.inner.delete(receipt_handle))
            .await
    }
    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let change = self.inner.change_visibility(receipt_handle, timeout);
        self.around(Call::ChangeVisibility, change).await
    }
    async fn change_visibility_all(
        &self,
        receipt_handles: &[&str],
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let change = self.inner.change_visibility_all(receipt_handles, timeout);
        self.around(Call::ChangeVisibility, change).await
    }
    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.around(Call::Depth, self.inner.depth()).await
    }
    async fn purge(&self) -> Result<(), QueueError> {
        self.around(Call::Purge, self.inner.purge()).await
    }
    async fn max_receive_count(&self) -> Result<Option<u32>, QueueError> {
        self.around(Call::MaxReceiveCount, self.inner.max_receive_count())
            .await
    }
    fn arn(&self) -> &str {
        self.inner.arn()
    }
}
