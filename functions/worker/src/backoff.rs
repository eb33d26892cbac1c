//! Exponential backoff with jitter for messages that must come back later.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff: `base * 2^(receive_count - 1)`, capped, with "equal jitter"
/// (half fixed, half random) so retries of one outage spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first receive.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(2),
            max: offpath_core::index::MAX_RETRY_DELAY,
        }
    }
}

impl Backoff {
    /// The delay before the next receive of a message received `receive_count` times.
    pub fn delay(&self, receive_count: u32) -> Duration {
        let half = self.ceiling(receive_count) / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// The delay before jitter: `base * 2^(receive_count - 1)`, at most `max`.
    pub fn ceiling(&self, receive_count: u32) -> Duration {
        let exponent = receive_count.saturating_sub(1).min(20);
        self.base.saturating_mul(1 << exponent).min(self.max)
    }

    /// The ceiling with ±20% jitter: retries spread out while their sum stays close to
    /// the schedule's (the webhooks queue's 24 hours).
    pub fn delay_near(&self, receive_count: u32) -> Duration {
        self.ceiling(receive_count)
            .mul_f64(0.8 + 0.4 * rand::rng().random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let backoff = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
        };
        for _ in 0..100 {
            let first = backoff.delay(1);
            assert!(first >= Duration::from_secs(1) && first <= Duration::from_secs(2));
            let third = backoff.delay(3);
            assert!(third >= Duration::from_secs(4) && third <= Duration::from_secs(8));
            assert!(backoff.delay(40) <= Duration::from_secs(60));
            assert!(backoff.delay(40) >= Duration::from_secs(30));
            let near = backoff.delay_near(3);
            assert!(near >= Duration::from_millis(6400) && near <= Duration::from_millis(9600));
        }
    }
}
