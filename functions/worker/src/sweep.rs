//! The sweep: finds jobs that would otherwise stay non-terminal forever, because their
//! worker died on the last attempt or their message was lost (never sent, or sent to
//! the DLQ while the store was down). A queued job's message is sent again once it
//! cannot be hidden any more ([`Job::queued_due_at`]: a grace after creation, after a
//! release's longest backoff) and then not again while that message can still be in
//! the queue (4 days), so a backlog costs at most one duplicate per job. A job that
//! runs in parts whose parts have all gone quiet (no live part lease, nothing touched
//! for the grace) gets its unsettled parts' messages again (or, every part settled, one
//! message that ends it); a part whose worker died on its last attempt is settled dead
//! when that message is claimed. Webhook events still in a job's outbox a grace after the write
//! that caused them (their writer died before handing them to the webhooks queue) are
//! sent.

use std::time::Duration;

use offpath_core::outbox::{PublishError, publish, publish_or_log};
use offpath_core::queue::message_group;
use offpath_core::{
    Activity, DEAD_LETTERED, ErrorInfo, Job, JobMessage, JobQueue, JobStatus, JobStore, QueueError,
    StoreError, Transition, metrics,
};

/// How the sweep judges jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepSettings {
    /// The queue's visibility timeout: a message always comes back within it, so a job
    /// whose lease ended longer ago than this (or, never claimed, that was created
    /// longer ago) has lost its message.
    pub grace: Duration,
    /// The queue's maxReceiveCount: a running job with this many attempts whose worker
    /// died has no receive left, so it is written `failed`/`dead_lettered`.
    pub max_receive_count: Option<u32>,
    /// Most time one run spends; the due jobs it did not reach wait for the next run
    /// (the report says so).
    pub budget: Duration,
}

/// Most time a scheduled sweep spends: the sweep function's timeout in
/// `template.yaml` (300 s) less a margin for the run's last page and its report.
pub const SWEEP_BUDGET: Duration = Duration::from_secs(240);

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Non-terminal jobs examined.
    pub examined: usize,
    /// Jobs whose message was sent again.
    pub requeued: usize,
    /// Jobs written `failed` with code `dead_lettered`.
    pub dead_lettered: usize,
    /// Webhook events sent from outboxes.
    pub events: usize,
    /// Items the store returned: index entries and job records.
    pub read: usize,
    /// True when every due job was examined within the budget.
    pub complete: bool,
}

/// The store or the queue failed; the next run continues.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Reading or writing jobs failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sending a message failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Sending webhook events failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// One sweep at time `now`, sending job messages to `queue` and webhook events to
/// `webhooks`: pages through the jobs the store's sparse indexes hold as due a grace
/// ago (never the whole table) until none is left or the budget is spent. Re-sending a
/// message that still exists only makes a duplicate, which the worker acknowledges; a
/// webhook event sent twice carries the same id.
pub async fn sweep(
    store: &dyn JobStore,
    queue: &dyn JobQueue,
    webhooks: &dyn JobQueue,
    settings: &SweepSettings,
    now_epoch_ms: u64,
) -> Result<SweepReport, SweepError> {
    let started = std::time::Instant::now();
    let before = now_epoch_ms.saturating_sub(settings.grace.as_millis() as u64);
    let mut report = SweepReport::default();
    let mut cursor = None;
    loop {
        let page = store.due(before, cursor.as_deref()).await?;
        report.read += page.read;
        for job in page.jobs {
            report.examined += 1;
            repair(
                store,
                queue,
                webhooks,
                settings,
                &job,
                now_epoch_ms,
                &mut report,
            )
            .await?;
        }
        match page.next {
            None => {
                report.complete = true;
                break;
            }
            Some(next) if started.elapsed() < settings.budget => cursor = Some(next),
            Some(_) => {
                tracing::warn!(examined = report.examined, budget = ?settings.budget,
                    "sweep budget spent with due jobs left; the next run goes on");
                break;
            }
        }
    }
    if report.dead_lettered > 0 {
        let dead = report.dead_lettered as u64;
        let activity = Activity {
            failed: dead,
            dead_lettered: dead,
            ..Activity::default()
        };
        let minute = offpath_core::activity::minute_of(now_epoch_ms);
        if let Err(err) = store.add_activity(minute, &activity).await {
            tracing::warn!(error = %err, "could not record the dead-lettered jobs in the minute's activity");
        }
    }
    Ok(report)
}

/// Repairs one due job if it needs it.
async fn repair(
    store: &dyn JobStore,
    queue: &dyn JobQueue,
    webhooks: &dyn JobQueue,
    settings: &SweepSettings,
    job: &Job,
    now_epoch_ms: u64,
    report: &mut SweepReport,
) -> Result<(), SweepError> {
    let grace = settings.grace.as_millis() as u64;
    let group = message_group(&job.owner);
    if job.has_unsent_events() {
        let due = job.due_events();
        // Left behind: its writer had the grace to send it. A terminal job with
        // nothing due only clears what can no longer happen.
        let left = due.iter().any(|event| event.at + grace < now_epoch_ms);
        if left || (due.is_empty() && job.status.is_terminal()) {
            let sent = publish(store, webhooks, job).await?;
            if sent > 0 {
                tracing::warn!(job_id = %job.id, sent, "sweep sent webhook events left in the outbox");
            }
            report.events += sent;
        }
    }
    if job.status.is_terminal() {
        return Ok(());
    }
    if let Some(parts) = &job.parts {
        let quiet =
            !parts.any_live_lease(now_epoch_ms) && parts.touched_at_epoch_ms + grace < now_epoch_ms;
        if job.status == JobStatus::Running && quiet {
            let unsettled: Vec<u32> = (0..parts.total)
                .filter(|n| !parts.settled.contains(n))
                .collect();
            // Every part settled but the job not ended: any part's message ends it.
            let parts_to_send = if unsettled.is_empty() {
                vec![0]
            } else {
                unsettled
            };
            for part in parts_to_send {
                queue.send(&JobMessage::part(job.id, part), &group).await?;
            }
            report.requeued += 1;
            tracing::warn!(job_id = %job.id, "sweep sent the quiet parts of a job again");
        }
        return Ok(());
    }
    let lost = match job.status {
        JobStatus::Running => job
            .lease_until_epoch_ms
            .is_none_or(|until| until + grace < now_epoch_ms),
        // Its message can still be in the queue until `queued_due_at`: a new job's
        // from its creation, a released one's until its backoff ends, one a repair
        // sent again until that message expires (so a backlog is not re-sent each run).
        JobStatus::Queued => job.queued_due_at() + grace < now_epoch_ms,
        _ => false,
    };
    if !lost {
        return Ok(());
    }
    let exhausted = settings
        .max_receive_count
        .is_some_and(|max| job.attempts >= max);
    if job.status == JobStatus::Running && exhausted {
        let error = ErrorInfo::new(
            DEAD_LETTERED,
            format!(
                "the worker stopped during attempt {}, the last one",
                job.attempts
            ),
        );
        match store
            .apply(
                job.id,
                &Transition::Abandon {
                    error,
                    now_epoch_ms,
                },
            )
            .await
        {
            Ok(abandoned) => {
                report.dead_lettered += 1;
                metrics::count(metrics::JOBS_DEAD_LETTERED);
                publish_or_log(store, webhooks, &abandoned).await;
            }
            Err(StoreError::Conflict(_)) => {} // it moved on meanwhile
            Err(err) => return Err(err.into()),
        }
    } else {
        queue.send(&JobMessage::new(job.id), &group).await?;
        report.requeued += 1;
        if job.status == JobStatus::Queued {
            // Sent first, recorded after: a lost record costs a duplicate, never a job.
            match store
                .apply(job.id, &Transition::RecordResend { now_epoch_ms })
                .await
            {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
    tracing::warn!(job_id = %job.id, status = %job.status, attempts = job.attempts, "sweep repaired a stuck job");
    Ok(())
}
