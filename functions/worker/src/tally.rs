//! What this worker did since its last flush, added to the store's minute totals (the
//! console's throughput and queue-wait charts) once per batch, and counted as metrics.

use std::sync::{Arc, Mutex};

use offpath_core::activity::minute_of;
use offpath_core::{Activity, DEAD_LETTERED, Job, JobStatus, JobStore, metrics};

/// Totals not yet written, shared by every clone of the worker.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally(Arc<Mutex<Activity>>);

impl Tally {
    fn add(&self, activity: Activity) {
        self.0.lock().expect("tally lock").add(&activity);
    }

    /// A job claimed after waiting `queue_wait_ms` in the queue.
    pub(crate) fn claimed(&self, queue_wait_ms: u64) {
        metrics::queue_wait(queue_wait_ms);
        self.add(Activity {
            claimed: 1,
            queue_wait_ms,
            ..Activity::default()
        });
    }

    /// A job that reached a terminal state (cancelled jobs are not counted).
    pub(crate) fn finished(&self, job: &Job) {
        let dead = job.error.as_ref().is_some_and(|e| e.code == DEAD_LETTERED);
        let (name, activity) = match job.status {
            JobStatus::Succeeded => (
                metrics::JOBS_SUCCEEDED,
                Activity {
                    succeeded: 1,
                    ..Activity::default()
                },
            ),
            JobStatus::Failed => (
                if dead {
                    metrics::JOBS_DEAD_LETTERED
                } else {
                    metrics::JOBS_FAILED
                },
                Activity {
                    failed: 1,
                    dead_lettered: u64::from(dead),
                    ..Activity::default()
                },
            ),
            JobStatus::Queued | JobStatus::Running | JobStatus::Cancelled => return,
        };
        metrics::count(name);
        self.add(activity);
    }

    /// Adds the totals so far to the minute of `now` in the store. A failed write keeps
    /// them for the next flush (they are statistics: a process that ends first loses
    /// them, and no job is affected).
    pub(crate) async fn flush(&self, store: &dyn JobStore, now_epoch_ms: u64) {
        let taken = std::mem::take(&mut *self.0.lock().expect("tally lock"));
        if taken.is_empty() {
            return;
        }
        if let Err(err) = store.add_activity(minute_of(now_epoch_ms), &taken).await {
            tracing::warn!(error = %err, "could not record the minute's activity; adding it to the next batch's");
            self.add(taken);
        }
    }
}
