//! The backoff between retries of work that failed for a reason outside the message (a
//! database or broker away for a while).

use std::future::Future;
use std::time::Duration;

use super::shared::Shared;
use crate::error::{ErrorClass, Result};

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

/// Runs `load` until it succeeds, reporting each failure and waiting out the backoff
/// between tries (the database may be away for a while): `None` when a failure is fatal,
/// or when `stopping` says to give up.
pub(crate) async fn until_loaded<T, Fut>(
    shared: &Shared,
    stopping: impl Fn() -> bool,
    mut load: impl FnMut() -> Fut,
) -> Option<T>
where
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Backoff::new();
    loop {
        match load().await {
            Ok(value) => return Some(value),
            Err(error) => {
                shared.report(&error);
                if error.class() == ErrorClass::Fatal || stopping() {
                    return None;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}
