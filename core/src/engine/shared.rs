//! What every group of one runtime shares: the database pool, the settings, the error
//! reporting, the shutdown signal, health and the lag registry.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{Semaphore, watch};

use crate::api::settings::{Batch, RetryPolicy, StartFrom};
use crate::error::{Error, ErrorHook};
use crate::pipeline::dead_letter::DeadLettered;

/// Called with every message moved to the dead letters.
pub(crate) type DeadLetterHook = Arc<dyn Fn(&DeadLettered) + Send + Sync>;
use crate::ops::health::HealthState;
use crate::ops::metrics::lag::LagRegistry;

/// Shared state of one runtime.
pub(crate) struct Shared {
    /// `None` when every handler runs in Kafka mode.
    pub(crate) pool: Option<PgPool>,
    pub(crate) batch: Batch,
    pub(crate) start_from: StartFrom,
    /// Bounds how many batches are inside a database transaction at once.
    pub(crate) batch_permits: Semaphore,
    pub(crate) on_error: Option<ErrorHook>,
    /// Called with every message moved to the dead letters.
    pub(crate) on_dead_letter: Option<DeadLetterHook>,
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

    /// Logs a message moved to the dead letters and hands it to the user's hook: an event,
    /// not an error (its partition goes on).
    pub(crate) fn dead_lettered(&self, event: &DeadLettered) {
        let at = &event.location;
        tracing::warn!(group = %at.group, topic = %at.topic, partition = at.partition, offset = at.offset,
            attempts = event.attempts, "{event}");
        if let Some(hook) = &self.on_dead_letter {
            hook(event);
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

    /// The database pool (`build` makes one whenever a Database-mode handler runs).
    pub(crate) fn pool(&self) -> crate::error::Result<&PgPool> {
        self.pool.as_ref().ok_or_else(|| Error::Internal("a Database-mode group runs without a database pool".into()))
    }

    /// Opens a transaction on the pool.
    pub(crate) async fn begin(&self) -> crate::error::Result<Transaction<'static, Postgres>> {
        Ok(self.pool()?.begin().await?)
    }

    pub(crate) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
