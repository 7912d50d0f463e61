//! Retrying a failing store: the pause before the next attempt, shared by the in-process
//! writer and the JetStream consumer.

use std::time::Duration;

/// Back-off between retries of a failing store: 0.5 s doubling to 30 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(30))
}
