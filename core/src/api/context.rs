//! What a handler sees besides the message: where its effects go.

use std::fmt;

use sqlx::{PgConnection, Postgres, Transaction};

use super::handler::HandlerError;
use super::mode::{Database, Kafka, Mode};
use super::output::Output;
use crate::kafka::trace_context::TraceContext;

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
            trace.stamp(&mut record.headers);
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
        crate::store::outbox::insert(transaction, &record.row()).await?;
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
