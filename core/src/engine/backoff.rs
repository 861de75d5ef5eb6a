//! The backoff between retries of work that failed for a reason outside the message (a
//! database or broker away for a while).

use std::time::Duration;

/// Exponential backoff between retries: 100 ms doubling up to 10 s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self { next: Duration::from_millis(100) }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(10));
        delay
    }
}
