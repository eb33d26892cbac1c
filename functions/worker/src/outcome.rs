//! What becomes of one record of a batch.

use std::time::Duration;

/// The fate of one message: acknowledged, or reported as an item failure that comes
/// back later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Acknowledge: the message is deleted.
    Done,
    /// Report an item failure; the message comes back after this.
    Retry(Visibility),
}

/// When a retried message becomes visible again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visibility {
    /// At once: a message that can never succeed heads for the dead-letter queue
    /// through its remaining receives, and one whose job nobody holds is claimed again.
    Now,
    /// After this delay (a backoff, or the rest of another worker's lease).
    After(Duration),
    /// When the message's visibility ends (one heartbeat after the batch's last beat):
    /// the message is left alone.
    QueueTimeout,
}

impl Outcome {
    /// Acknowledge the message.
    pub(crate) fn done() -> Self {
        Outcome::Done
    }

    /// A message that is not a job message, or names no job: back at once, so it
    /// spends its receives quickly and reaches the dead-letter queue for inspection.
    pub(crate) fn toward_dead_letter_queue() -> Self {
        Outcome::Retry(Visibility::Now)
    }

    /// A job nobody holds any more (its lease expired): claim it again at once.
    pub(crate) fn retry_now() -> Self {
        Outcome::Retry(Visibility::Now)
    }

    /// Back after `delay`.
    pub(crate) fn retry_after(delay: Duration) -> Self {
        Outcome::Retry(Visibility::After(delay))
    }

    /// Back when the message's visibility ends (on the last receive: to the
    /// dead-letter queue).
    pub(crate) fn retry_at_visibility_timeout() -> Self {
        Outcome::Retry(Visibility::QueueTimeout)
    }

    /// The visibility to set before reporting the failure, if any.
    pub(crate) fn visibility(self) -> Option<Duration> {
        match self {
            Outcome::Done | Outcome::Retry(Visibility::QueueTimeout) => None,
            Outcome::Retry(Visibility::Now) => Some(Duration::ZERO),
            Outcome::Retry(Visibility::After(delay)) => Some(delay),
        }
    }
}
