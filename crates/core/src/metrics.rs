//! The metrics offpath records, through the `metrics` facade. Nothing is recorded
//! until a process installs a recorder; the Lambda functions install one that prints
//! CloudWatch Embedded Metric Format lines (`offpath_aws::lambda`).

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

/// Jobs created by a submit (replays of an existing job are not counted).
pub const JOBS_SUBMITTED: &str = "JobsSubmitted";
/// Jobs that ended `succeeded`.
pub const JOBS_SUCCEEDED: &str = "JobsSucceeded";
/// Jobs that ended `failed` for a reason other than dead-lettering.
pub const JOBS_FAILED: &str = "JobsFailed";
/// Jobs that ended `failed` with `dead_lettered`: their message went to the DLQ.
pub const JOBS_DEAD_LETTERED: &str = "JobsDeadLettered";
/// Milliseconds from a message's send to its job's claim.
pub const QUEUE_WAIT_TIME: &str = "QueueWaitTime";
/// Milliseconds of one forward pass over a task group, labelled with the task.
pub const INFERENCE_DURATION: &str = "InferenceDuration";

/// Registers the units of every metric with the installed recorder.
pub fn describe() {
    for name in [
        JOBS_SUBMITTED,
        JOBS_SUCCEEDED,
        JOBS_FAILED,
        JOBS_DEAD_LETTERED,
    ] {
        describe_counter!(name, Unit::Count, name);
    }
    for name in [QUEUE_WAIT_TIME, INFERENCE_DURATION] {
        describe_histogram!(name, Unit::Milliseconds, name);
    }
}

/// Counts one job under `name`.
pub fn count(name: &'static str) {
    counter!(name).increment(1);
}

/// Records a queue wait, in milliseconds.
pub fn queue_wait(millis: u64) {
    histogram!(QUEUE_WAIT_TIME).record(millis as f64);
}

/// Records one forward pass of `task`, in milliseconds.
pub fn inference(task: &str, millis: f64) {
    histogram!(INFERENCE_DURATION, "task" => task.to_owned()).record(millis);
}
