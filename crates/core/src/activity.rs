//! What the workers did, minute by minute: jobs finished and how long they waited in
//! the queue. Workers add to the minute's totals once per batch; the operator console
//! charts the last minutes ([`JobStore::activity`](crate::JobStore::activity)).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One minute in milliseconds.
pub const MINUTE_MS: u64 = 60_000;

/// How long a minute's totals are kept.
pub const ACTIVITY_RETENTION_MS: u64 = 24 * 60 * MINUTE_MS;

/// Totals over a span of time (one batch, or one minute of every worker's batches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Activity {
    /// Jobs that ended `succeeded`.
    pub succeeded: u64,
    /// Jobs that ended `failed` (dead-lettered ones included).
    pub failed: u64,
    /// Of the failed jobs, those whose message went to the dead-letter queue.
    pub dead_lettered: u64,
    /// Jobs claimed.
    pub claimed: u64,
    /// The claimed jobs' time in the queue, from their message's send to the claim,
    /// summed (divide by `claimed` for the mean).
    pub queue_wait_ms: u64,
}

impl Activity {
    /// True when nothing happened.
    pub fn is_empty(&self) -> bool {
        *self == Activity::default()
    }

    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &Activity) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.dead_lettered += other.dead_lettered;
        self.claimed += other.claimed;
        self.queue_wait_ms += other.queue_wait_ms;
    }
}

/// One minute's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MinuteActivity {
    /// The minute's start, epoch milliseconds (a multiple of 60,000).
    pub minute_epoch_ms: u64,
    /// What happened in it.
    #[serde(flatten)]
    pub activity: Activity,
}

/// The start of the minute `epoch_ms` falls in.
pub fn minute_of(epoch_ms: u64) -> u64 {
    epoch_ms - epoch_ms % MINUTE_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_and_sums() {
        assert_eq!(minute_of(125_000), 120_000);
        assert_eq!(minute_of(120_000), 120_000);
        let mut total = Activity::default();
        assert!(total.is_empty());
        total.add(&Activity {
            succeeded: 2,
            claimed: 3,
            queue_wait_ms: 40,
            ..Activity::default()
        });
        total.add(&Activity {
            failed: 1,
            dead_lettered: 1,
            claimed: 1,
            queue_wait_ms: 2,
            ..Activity::default()
        });
        assert_eq!(
            total,
            Activity {
                succeeded: 2,
                failed: 1,
                dead_lettered: 1,
                claimed: 4,
                queue_wait_ms: 42
            }
        );
    }
}
