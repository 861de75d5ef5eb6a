//! The `BatchHandler` trait: a handler that takes a partition's batch in one call, so it can
//! write the whole batch with one bulk statement.

use std::fmt;

use super::context::Context;
use super::handler::{Consumes, HandlerError};
use super::message::Message;

/// Processes a partition's messages a batch at a time, exactly once: what it writes
/// through the context commits together with the batch's position, or not at all.
///
/// The runtime gathers up to [`Batch::max_records`](crate::Batch::max_records) messages of
/// one partition (waiting at most [`Batch::max_wait`](crate::Batch::max_wait)) and calls
/// [`BatchHandler::handle_batch`] once with them, in offset order. In
/// [`Database`](crate::mode::Database) mode, everything written through [`Context::db`]
/// (one `INSERT ... SELECT FROM UNNEST(...)` or one `COPY`, see [`crate::bulk`]) commits in
/// the PostgreSQL transaction that moves the partition's stored position past the batch. In
/// [`Kafka`](crate::mode::Kafka) mode, the records given to [`Context::emit`] join the Kafka
/// transaction that commits the input offsets; there the handler is given, per partition,
/// what the consumer has fetched already (up to the same limit, without waiting for more).
///
/// Messages that cannot be decoded never reach it: they are dead-lettered on their own, and
/// a batch stops short of one. A batch may hold fewer messages than the limit (the wait ran
/// out, a failure is being isolated), never more.
///
/// When it fails, the batch's effects roll back and the runtime finds the message at fault:
/// either the handler names it ([`BatchError::at`]), and the messages before it commit
/// without it, or the runtime halves the batch until the failing message is alone (the
/// halves that pass commit once). The message alone is then retried as the
/// [retry policy](crate::RetryPolicy) says and dead-lettered when its tries are spent. A
/// transient database error (a serialization failure, a deadlock) retries the same batch
/// without counting. Key parking does not apply to batch handlers (the runtime refuses it
/// when built).
///
/// Register it with [`RuntimeBuilder::batch_handler`](crate::RuntimeBuilder::batch_handler);
/// the derive gives it its subscription as it does for [`Handler`](crate::Handler).
///
/// ```
/// use exactly::{BatchError, BatchHandler, Context, Message};
///
/// #[derive(serde::Deserialize)]
/// struct Reading { sensor: i64, value: f64 }
///
/// #[derive(exactly::Handler)]
/// #[exactly(topic = "readings", group = "reading-recorder", payload = Reading)]
/// struct RecordReadings;
///
/// #[exactly::async_trait]
/// impl BatchHandler for RecordReadings {
///     async fn handle_batch(&self, messages: &[&Message<Vec<u8>, Reading>], cx: &mut Context<'_>) -> Result<(), BatchError> {
///         let sensors: Vec<i64> = messages.iter().map(|m| m.payload.sensor).collect();
///         let values: Vec<f64> = messages.iter().map(|m| m.payload.value).collect();
///         sqlx::query("INSERT INTO readings (sensor, value) SELECT * FROM UNNEST($1::int8[], $2::float8[])")
///             .bind(&sensors)
///             .bind(&values)
///             .execute(cx.db())
///             .await?;
///         Ok(())
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a batch handler",
    label = "`batch_handler` takes an `exactly::BatchHandler`",
    note = "implement `exactly::BatchHandler` for it, or register a per-message `exactly::Handler` with `handler(...)`"
)]
#[async_trait::async_trait]
pub trait BatchHandler: Consumes + Send + Sync + 'static {
    /// Handles one batch of one partition's messages, in offset order (at least one).
    ///
    /// # Errors
    /// Any error rolls back what the batch wrote; [`BatchError::at`] says which message
    /// caused it, otherwise the runtime bisects the batch to find it.
    async fn handle_batch(
        &self,
        messages: &[&Message<Self::Key, Self::Payload>],
        cx: &mut Context<'_, Self::Mode>,
    ) -> Result<(), BatchError>;
}

/// An error returned by a batch handler: the batch's effects roll back. Anything that
/// converts into a boxed error converts into it, so `?` works on sqlx and serde errors.
pub struct BatchError {
    error: HandlerError,
    /// Which message of the batch caused it, when the handler knows.
    index: Option<usize>,
}

impl BatchError {
    /// The batch failed, and which message caused it is not known: the runtime halves the
    /// batch until the failing message is alone (`?` gives this).
    pub fn new(error: impl Into<HandlerError>) -> Self {
        Self { error: error.into(), index: None }
    }

    /// The message at `index` of the batch caused it: the messages before it commit
    /// without it, then it is tried alone. A [`HandlerError::permanent`] error sends it to
    /// the dead letters once it is alone. An `index` past the batch's end is treated as
    /// unknown.
    pub fn at(index: usize, error: impl Into<HandlerError>) -> Self {
        Self { error: error.into(), index: Some(index) }
    }

    /// The message it names, if it names one.
    pub fn index(&self) -> Option<usize> {
        self.index
    }

    /// The handler's error inside.
    pub fn into_inner(self) -> HandlerError {
        self.error
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for BatchError {
    fn from(error: E) -> Self {
        Self::new(HandlerError::new(error))
    }
}

impl From<HandlerError> for BatchError {
    fn from(error: HandlerError) -> Self {
        Self::new(error)
    }
}

impl fmt::Debug for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchError").field("error", &self.error).field("index", &self.index).finish()
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(index) => write!(f, "message {index} of the batch: {}", self.error),
            None => fmt::Display::fmt(&self.error, f),
        }
    }
}
