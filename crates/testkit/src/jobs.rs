//! New jobs, as the API would make them.

use offpath_core::idempotency::request_hash;
use offpath_core::{Clock, Job, JobId, JobStore, JsonText, NewJob, SystemClock, TaskName};
use serde_json::Value;

/// The owner of the jobs [`new_job`] makes (and the message group of their messages).
pub const OWNER: &str = "tester";

/// A new job of `task` with `input`, owned by [`OWNER`]: a random id, no idempotency
/// key, created now, kept an hour. Change fields with struct update syntax.
pub fn new_job(task: &str, input: Value) -> NewJob {
    let now = SystemClock.now_epoch_ms();
    let input = JsonText::of(&input).expect("JSON serialises");
    NewJob {
        id: JobId::random(),
        owner: OWNER.into(),
        task: task.parse::<TaskName>().expect("a valid task name"),
        request_hash: request_hash(task, &input, None, None),
        input,
        idempotency_key: None,
        created_at_epoch_ms: now,
        expires_at_epoch_s: now / 1000 + 3600,
        webhook: None,
    }
}

/// Creates a queued job directly in the store (as the API would, without a message).
pub async fn create(store: &dyn JobStore, task: &str, input: Value) -> JobId {
    store
        .create(&new_job(task, input))
        .await
        .expect("create")
        .id
}

/// Every job in the sweep's indexes at any time: unfinished jobs and jobs with events
/// in their outbox, page by page.
pub async fn unfinished(store: &dyn JobStore) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.due(u64::MAX, cursor.as_deref()).await.expect("due");
        jobs.extend(page.jobs);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return jobs,
        }
    }
}
