//! What every group consumer and partition worker of one runtime shares.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};

use crate::error::Error;
use crate::health::HealthState;
use crate::metrics::lag::LagRegistry;
use crate::settings::{Batch, RetryPolicy, StartFrom};

pub(crate) use crate::error::ErrorHook;

/// Shared state of one runtime.
pub(crate) struct Shared {
    /// `None` when every handler runs in Kafka mode.
    pub(crate) pool: Option<PgPool>,
    pub(crate) batch: Batch,
    pub(crate) start_from: StartFrom,
    /// Bounds how many batches are inside a database transaction at once.
    pub(crate) batch_permits: Semaphore,
    pub(crate) on_error: Option<ErrorHook>,
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) revoke_grace: Duration,
    /// The deadline of one database transaction of a partition (and of a claim).
    pub(crate) transaction_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    /// What the health probes read.
    pub(crate) health: Arc<HealthState>,
    /// The partitions owned now, for the lag gauges.
    pub(crate) lag: LagRegistry,
    /// Whether `traceparent` headers are read and carried to emitted records.
    pub(crate) trace_context: bool,
    /// Stops the runtime (what [`crate::ShutdownHandle`] sends).
    pub(crate) stop: Arc<watch::Sender<bool>>,
    /// The error the runtime stopped on, for `run` to return.
    pub(crate) fatal: std::sync::Mutex<Option<Error>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("batch", &self.batch)
            .field("start_from", &self.start_from)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Logs `error` with its context and hands it to the user's hook. When Kafka refused
    /// the client access (credentials, TLS, a missing ACL), which nothing here can work
    /// around, also stops the runtime on it.
    pub(crate) fn report(&self, error: &Error) {
        self.log(error);
        if let Some(refusal) = error.refused_access() {
            self.keep_fatal(refusal);
        }
    }

    fn log(&self, error: &Error) {
        match error.location() {
            Some(location) => tracing::error!(
                group = %location.group, topic = %location.topic, partition = location.partition,
                offset = location.offset, class = ?error.class(), "{error}"
            ),
            None => tracing::error!(class = ?error.class(), "{error}"),
        }
        if let Some(hook) = &self.on_error {
            hook(error);
        }
    }

    /// Reports `error`, keeps it (the first one) for `run` to return, and stops the runtime.
    pub(crate) fn fail(&self, error: Error) {
        self.log(&error);
        self.keep_fatal(error);
    }

    /// Keeps `error` (the first one) for `run` to return, and stops the runtime.
    fn keep_fatal(&self, error: Error) {
        let mut fatal = self.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if fatal.is_none() {
            *fatal = Some(error);
        }
        drop(fatal);
        self.stop.send_replace(true);
    }

    /// The error the runtime stopped on, if it stopped on one.
    pub(crate) fn take_fatal(&self) -> Option<Error> {
        self.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// The database pool (there is one whenever a Database-mode handler runs).
    pub(crate) fn pool(&self) -> crate::error::Result<&PgPool> {
        self.pool.as_ref().ok_or_else(|| Error::Config("no database configured".into()))
    }

    pub(crate) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

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
