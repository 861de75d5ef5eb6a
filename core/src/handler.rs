//! The `Handler` trait: what you implement to process messages.

use std::fmt;

use sqlx::{PgConnection, Postgres, Transaction};

use crate::codec::{Codec, Key};
use crate::message::Message;
use crate::mode::{Database, Kafka, Mode};
use crate::output::Output;
use crate::subscription::Subscription;
use crate::trace_context::TraceContext;

/// What a handler consumes: usually derived with `#[derive(exactly::Handler)]`.
///
/// ```
/// # #[derive(serde::Deserialize)] struct Order { id: u64 }
/// #[derive(exactly::Handler)]
/// #[exactly(topic = "orders", group = "order-recorder", payload = Order, key = String)]
/// struct RecordOrders;
/// ```
pub trait Consumes {
    /// The decoded key type.
    type Key: Key;
    /// The decoded payload type.
    type Payload: Send + Sync + 'static;
    /// How payloads are decoded.
    type Codec: Codec<Self::Payload>;
    /// Where effects commit: [`mode::Database`](crate::mode::Database) (the derive's
    /// default) or [`mode::Kafka`](crate::mode::Kafka).
    type Mode: Mode;

    /// Topics, group and delivery mode.
    fn subscription(&self) -> Subscription;
}

/// Processes messages exactly once, writing through the transaction its offsets commit in.
///
/// The runtime calls [`Handler::handle`] for each message, in offset order within a
/// partition. In [`Database`] mode that happens inside a PostgreSQL transaction that also
/// advances the group's stored position: everything written through [`Context::db`] commits
/// together with that position, or not at all. In [`Kafka`] mode, the records given to
/// [`Context::emit`] are written in a Kafka transaction that also commits the input
/// offsets. What the handler does elsewhere (an HTTP call, a file, another database) is not
/// covered: it may happen again when a batch is retried or redone after a crash.
///
/// Return an error to roll the batch back; the partition does not advance past a message
/// whose handler fails.
///
/// In Database mode a batch's transaction, handler calls included, has a deadline
/// ([`RuntimeBuilder::database_transaction_timeout`](crate::RuntimeBuilder::database_transaction_timeout),
/// 60 s by default): past it the batch is abandoned, rolled back and tried again, so a
/// database that stops answering cannot hold a partition for good. A handler that needs
/// longer needs a longer deadline.
#[async_trait::async_trait]
pub trait Handler: Consumes + Send + Sync + 'static {
    /// Handles one message.
    ///
    /// # Errors
    /// Any error rolls back the whole batch (the message's and its neighbours' effects and
    /// the position), and the batch is tried again.
    async fn handle(
        &self,
        message: &Message<Self::Key, Self::Payload>,
        cx: &mut Context<'_, Self::Mode>,
    ) -> Result<(), HandlerError>;
}

/// What a handler sees besides the message: where its effects go.
///
/// In [`Database`] mode (the default), the PostgreSQL transaction its effects and the
/// position commit in ([`Context::db`]). In [`Kafka`] mode, the Kafka transaction its
/// output records and the input offsets commit in ([`Context::emit`]).
pub struct Context<'t, M: Mode = Database> {
    effects: M::Effects<'t>,
    /// The trace of the message being handled, when trace context is on and it has one.
    trace: Option<TraceContext>,
}

impl<M: Mode> Context<'_, M> {
    /// The trace context of the message about to be handled (`None`: none, or off).
    pub(crate) fn set_trace(&mut self, trace: Option<TraceContext>) {
        self.trace = trace;
    }

    /// Gives `record` the `traceparent` of the message being handled, if any.
    fn stamp(&self, record: &mut Output) {
        if let Some(trace) = &self.trace {
            trace.stamp(record);
        }
    }
}

impl<M: Mode> fmt::Debug for Context<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl<'t> Context<'t, Database> {
    pub(crate) fn new(transaction: &'t mut Transaction<'static, Postgres>, outputs: &'t [String]) -> Self {
        Self { effects: (transaction, outputs), trace: None }
    }

    /// The connection of the batch's transaction, to run queries on:
    /// `sqlx::query(...).execute(cx.db())`.
    ///
    /// Do not `COMMIT` or `ROLLBACK` through it: the runtime commits the batch with its position.
    pub fn db(&mut self) -> &mut PgConnection {
        self.effects.0
    }

    /// The batch's transaction itself, e.g. for savepoints with `begin()`.
    pub fn transaction(&mut self) -> &mut Transaction<'static, Postgres> {
        self.effects.0
    }

    /// Emits a record to Kafka through the transactional outbox: it is written to
    /// `exactly.outbox` in this batch's transaction, and the [outbox relay](crate::outbox::Relay)
    /// publishes it exactly once, in order per key. With
    /// [`trace_context`](crate::RuntimeBuilder::trace_context) on, a record without a
    /// `traceparent` header gets the one of the message being handled's trace.
    ///
    /// # Errors
    /// When the topic is not among the handler's declared `outputs` (if it declared any), or
    /// the outbox insert fails; the batch then rolls back.
    pub async fn emit(&mut self, mut record: Output) -> Result<(), HandlerError> {
        self.stamp(&mut record);
        let (transaction, outputs) = &mut self.effects;
        if !outputs.is_empty() && !outputs.contains(&record.topic) {
            return Err(format!(
                "emitted to topic `{}`, which is not among its declared outputs {outputs:?}",
                record.topic
            )
            .into());
        }
        crate::outbox::enqueue(transaction, &record).await?;
        Ok(())
    }
}

impl<'t> Context<'t, Kafka> {
    pub(crate) fn for_kafka(outputs: &'t mut Vec<Output>) -> Self {
        Self { effects: outputs, trace: None }
    }

    /// Emits a record: it is written in the Kafka transaction that also commits this
    /// message's offset, so `read_committed` readers see it exactly once. With
    /// [`trace_context`](crate::RuntimeBuilder::trace_context) on, a record without a
    /// `traceparent` header gets the one of the message being handled's trace.
    pub fn emit(&mut self, mut record: Output) {
        self.stamp(&mut record);
        self.effects.push(record);
    }
}

/// An error returned by a handler; anything that converts into a boxed error converts into
/// it, so `?` works on sqlx, serde and your own errors.
pub struct HandlerError {
    source: Box<dyn std::error::Error + Send + Sync>,
    permanent: bool,
}

impl HandlerError {
    /// Wraps any error: the message is tried again, as the retry policy says.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self { source: error.into(), permanent: false }
    }

    /// An error that trying again cannot fix (invalid content, a rule the message breaks):
    /// the message goes to the dead letters at once.
    pub fn permanent(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self { source: error.into(), permanent: true }
    }

    /// Whether the handler marked it as permanent.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// Whether it is a transient database error (serialization failure, deadlock, lost
    /// connection): retried without counting against the message's attempts.
    pub(crate) fn is_transient(&self) -> bool {
        self.source
            .downcast_ref::<sqlx::Error>()
            .is_some_and(|e| crate::error::database_class(e) == crate::ErrorClass::Retriable)
    }

    /// The error inside.
    pub fn into_inner(self) -> Box<dyn std::error::Error + Send + Sync> {
        self.source
    }
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self::new(error)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}
