//! Settings a user gives the runtime or a handler: batching, retries, and where a
//! partition with no stored position starts.

use std::time::Duration;

/// Where a partition with no stored position starts. Resolved once, on the first claim of
/// the partition, and stored, so later rebalances never re-apply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The oldest record still in the log: nothing already in Kafka is skipped.
    #[default]
    Earliest,
    /// The end of the log at the moment of the first claim: older records are skipped.
    Latest,
}

/// How many messages go into one database transaction.
///
/// A batch closes when it holds `max_records` messages or `max_wait` has passed since its
/// first message arrived, whichever comes first. Larger batches mean fewer commits (faster);
/// a failing message rolls back its whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub(crate) max_records: usize,
    pub(crate) max_wait: Duration,
}

impl Default for Batch {
    /// Up to 500 messages or 50 ms.
    fn default() -> Self {
        Self { max_records: 500, max_wait: Duration::from_millis(50) }
    }
}

impl Batch {
    /// One message per transaction.
    pub fn single() -> Self {
        Self { max_records: 1, max_wait: Duration::ZERO }
    }

    /// At most `max_records` messages per transaction (at least 1).
    pub fn max_records(mut self, max_records: usize) -> Self {
        self.max_records = max_records.max(1);
        self
    }

    /// Wait at most `max_wait` after a batch's first message for more.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }
}

/// How often, and how far apart, a failing message is tried before it goes to the dead
/// letters. Transient database errors (serialization failures, deadlocks, lost connections)
/// are retried without counting; a [`HandlerError::permanent`](crate::HandlerError::permanent)
/// error is not retried at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, backoff from 100 ms doubling up to 30 s, with jitter.
    fn default() -> Self {
        Self { max_attempts: 5, initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(30) }
    }
}

impl RetryPolicy {
    /// Attempts before a message is dead-lettered (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The wait after the first failure; it doubles after each further one.
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// The longest wait between attempts.
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// The wait after `failures` failures: exponential, capped, with full jitter in its upper half.
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let exponential = self.initial_backoff.saturating_mul(2_u32.saturating_pow(failures.saturating_sub(1)));
        let capped = exponential.min(self.max_backoff);
        capped.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}
