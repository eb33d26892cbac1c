//! One layer over the ports, in the spirit of tower's layers: [`Hooked`] wraps a
//! `JobStore` or `JobQueue` and runs [`Hooks`] before and after every call. Timing
//! (benchmarks), crash injection and counting (fault suite) and refused sends are
//! hooks, not hand-written delegates.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use offpath_core::{
    Activity, DuePage, ErrorInfo, EventKind, Job, JobId, JobMessage, JobPage, JobQueue, JobStore,
    Lease, ListQuery, MinuteActivity, NewJob, PartsEnd, QueueDepth, QueueError, QueueMessage,
    Settle, StoreError,
};
use serde_json::Value;

/// A port call, as hooks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// `JobStore::create` of this job.
    Create(JobId),
    /// `JobStore::get`.
    Get(JobId),
    /// `JobStore::claim`.
    Claim(JobId),
    /// `JobStore::extend_lease`.
    ExtendLease(JobId),
    /// `JobStore::complete`.
    Complete(JobId),
    /// `JobStore::fail`.
    Fail(JobId),
    /// `JobStore::release`.
    Release(JobId),
    /// `JobStore::record_resend`.
    RecordResend(JobId),
    /// `JobStore::finish_cancelled`.
    FinishCancelled(JobId),
    /// `JobStore::abandon`.
    Abandon(JobId),
    /// `JobStore::cancel_queued`.
    CancelQueued(JobId),
    /// `JobStore::request_cancel`.
    RequestCancel(JobId),
    /// `JobStore::delete_unstarted`.
    DeleteUnstarted(JobId),
    /// `JobStore::revive`.
    Revive(JobId),
    /// `JobStore::fan_out`.
    FanOut(JobId),
    /// `JobStore::claim_part` of this part.
    ClaimPart(JobId, u32),
    /// `JobStore::extend_part_lease`.
    ExtendPartLease(JobId, u32),
    /// `JobStore::release_part`.
    ReleasePart(JobId, u32),
    /// `JobStore::settle_part`.
    SettlePart(JobId, u32),
    /// `JobStore::finish_parts`.
    FinishParts(JobId),
    /// `JobStore::due`.
    Due,
    /// `JobStore::list`.
    List,
    /// `JobStore::unfinished_estimate`.
    UnfinishedEstimate,
    /// `JobStore::events_sent`.
    EventsSent(JobId),
    /// `JobStore::progress_event`.
    ProgressEvent(JobId),
    /// `JobStore::webhook_gone`.
    WebhookGone(JobId),
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
    /// True for the writes that end a job: complete, fail, finish_cancelled, abandon,
    /// finish_parts.
    pub fn finishes(self) -> bool {
        matches!(
            self,
            Call::Complete(_)
                | Call::Fail(_)
                | Call::FinishCancelled(_)
                | Call::Abandon(_)
                | Call::FinishParts(_)
        )
    }

    /// The job the call is about, if one.
    pub fn job(self) -> Option<JobId> {
        match self {
            Call::Create(id)
            | Call::Get(id)
            | Call::Claim(id)
            | Call::ExtendLease(id)
            | Call::Complete(id)
            | Call::Fail(id)
            | Call::Release(id)
            | Call::RecordResend(id)
            | Call::FinishCancelled(id)
            | Call::Abandon(id)
            | Call::CancelQueued(id)
            | Call::RequestCancel(id)
            | Call::DeleteUnstarted(id)
            | Call::Revive(id)
            | Call::FanOut(id)
            | Call::ClaimPart(id, _)
            | Call::ExtendPartLease(id, _)
            | Call::ReleasePart(id, _)
            | Call::SettlePart(id, _)
            | Call::FinishParts(id)
            | Call::EventsSent(id)
            | Call::ProgressEvent(id)
            | Call::WebhookGone(id)
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
    async fn claim(&self, id: JobId, lease: &Lease, now: u64) -> Result<Job, StoreError> {
        self.around(Call::Claim(id), self.inner.claim(id, lease, now))
            .await
    }
    async fn extend_lease(&self, id: JobId, lease: &Lease) -> Result<Job, StoreError> {
        self.around(Call::ExtendLease(id), self.inner.extend_lease(id, lease))
            .await
    }
    async fn complete(
        &self,
        id: JobId,
        token: &str,
        output: &Value,
        now: u64,
    ) -> Result<Job, StoreError> {
        let write = self.inner.complete(id, token, output, now);
        self.around(Call::Complete(id), write).await
    }
    async fn fail(
        &self,
        id: JobId,
        token: &str,
        error: &ErrorInfo,
        now: u64,
    ) -> Result<Job, StoreError> {
        let write = self.inner.fail(id, token, error, now);
        self.around(Call::Fail(id), write).await
    }
    async fn release(&self, id: JobId, token: &str, now: u64) -> Result<Job, StoreError> {
        self.around(Call::Release(id), self.inner.release(id, token, now))
            .await
    }
    async fn record_resend(&self, id: JobId, now: u64) -> Result<Job, StoreError> {
        self.around(Call::RecordResend(id), self.inner.record_resend(id, now))
            .await
    }
    async fn finish_cancelled(&self, id: JobId, token: &str, now: u64) -> Result<Job, StoreError> {
        let write = self.inner.finish_cancelled(id, token, now);
        self.around(Call::FinishCancelled(id), write).await
    }
    async fn abandon(&self, id: JobId, error: &ErrorInfo, now: u64) -> Result<Job, StoreError> {
        self.around(Call::Abandon(id), self.inner.abandon(id, error, now))
            .await
    }
    async fn cancel_queued(&self, id: JobId, now: u64) -> Result<Job, StoreError> {
        self.around(Call::CancelQueued(id), self.inner.cancel_queued(id, now))
            .await
    }
    async fn request_cancel(&self, id: JobId) -> Result<Job, StoreError> {
        self.around(Call::RequestCancel(id), self.inner.request_cancel(id))
            .await
    }
    async fn delete_unstarted(&self, id: JobId) -> Result<(), StoreError> {
        self.around(Call::DeleteUnstarted(id), self.inner.delete_unstarted(id))
            .await
    }
    async fn revive(&self, id: JobId) -> Result<Job, StoreError> {
        self.around(Call::Revive(id), self.inner.revive(id)).await
    }
    async fn fan_out(
        &self,
        id: JobId,
        token: &str,
        parts: u32,
        chunks: u64,
        now: u64,
    ) -> Result<Job, StoreError> {
        let write = self.inner.fan_out(id, token, parts, chunks, now);
        self.around(Call::FanOut(id), write).await
    }
    async fn claim_part(
        &self,
        id: JobId,
        part: u32,
        lease: &Lease,
        now: u64,
    ) -> Result<Job, StoreError> {
        let write = self.inner.claim_part(id, part, lease, now);
        self.around(Call::ClaimPart(id, part), write).await
    }
    async fn extend_part_lease(
        &self,
        id: JobId,
        part: u32,
        lease: &Lease,
        now: u64,
    ) -> Result<Job, StoreError> {
        let write = self.inner.extend_part_lease(id, part, lease, now);
        self.around(Call::ExtendPartLease(id, part), write).await
    }
    async fn release_part(&self, id: JobId, part: u32, token: &str) -> Result<Job, StoreError> {
        let write = self.inner.release_part(id, part, token);
        self.around(Call::ReleasePart(id, part), write).await
    }
    async fn settle_part(
        &self,
        id: JobId,
        part: u32,
        settle: Settle<'_>,
        now: u64,
    ) -> Result<Job, StoreError> {
        let write = self.inner.settle_part(id, part, settle, now);
        self.around(Call::SettlePart(id, part), write).await
    }
    async fn finish_parts(
        &self,
        id: JobId,
        end: PartsEnd<'_>,
        now: u64,
    ) -> Result<Job, StoreError> {
        let write = self.inner.finish_parts(id, end, now);
        self.around(Call::FinishParts(id), write).await
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
    async fn events_sent(
        &self,
        id: JobId,
        kinds: &BTreeSet<EventKind>,
        finished_at: Option<u64>,
    ) -> Result<Job, StoreError> {
        let write = self.inner.events_sent(id, kinds, finished_at);
        self.around(Call::EventsSent(id), write).await
    }
    async fn progress_event(&self, id: JobId, now: u64, gap: u64) -> Result<Job, StoreError> {
        let write = self.inner.progress_event(id, now, gap);
        self.around(Call::ProgressEvent(id), write).await
    }
    async fn webhook_gone(&self, id: JobId) -> Result<Job, StoreError> {
        self.around(Call::WebhookGone(id), self.inner.webhook_gone(id))
            .await
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
