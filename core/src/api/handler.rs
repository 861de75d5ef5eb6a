//! The `Handler` trait: what you implement to process messages.

use std::fmt;

use super::codec::{Codec, Key};
use super::context::Context;
use super::message::Message;
use super::mode::Mode;
use super::subscription::Subscription;

/// What a handler consumes: usually derived with `#[derive(exactly::Handler)]`.
///
/// ```
/// # #[derive(serde::Deserialize)] struct Order { id: u64 }
/// #[derive(exactly::Handler)]
/// #[exactly(topic = "orders", group = "order-recorder", payload = Order, key = String)]
/// struct RecordOrders;
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no subscription: it does not say what it consumes",
    label = "no topics, group or payload type",
    note = "add `#[derive(exactly::Handler)]` and `#[exactly(topic = \"...\", group = \"...\", payload = ...)]` to `{Self}`, or implement `exactly::Consumes` for it"
)]
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
/// partition. In [`Database`](crate::mode::Database) mode that happens inside a PostgreSQL transaction that also
/// advances the group's stored position: everything written through [`Context::db`] commits
/// together with that position, or not at all. In [`Kafka`](crate::mode::Kafka) mode, the records given to
/// [`Context::emit`] are written in a Kafka transaction that also commits the input
/// offsets. What the handler does elsewhere (an HTTP call, a file, another database) is not
/// covered: it may happen again when a batch is retried or redone after a crash.
///
/// Return an error when the message cannot be handled now: its effects are rolled back and
/// it is tried again as the [retry policy](crate::RetryPolicy) says; when its tries are
/// spent (or at once, for [`HandlerError::permanent`]) it goes to the dead letters and its
/// partition goes on past it. With [key parking](crate::Subscription::with_key_parking),
/// only its key waits meanwhile.
///
/// In Database mode a batch's transaction, handler calls included, has a deadline
/// ([`RuntimeBuilder::database_transaction_timeout`](crate::RuntimeBuilder::database_transaction_timeout),
/// 60 s by default): past it the batch is abandoned, rolled back and tried again, so a
/// database that stops answering cannot hold a partition for good. A handler that needs
/// longer needs a longer deadline. In Kafka mode each call has a deadline of the
/// producer's `transaction.timeout.ms` (60 s unless set), after which Kafka would abort the
/// transaction anyway: a call past it is abandoned and counts as a failed try
/// ([`Error::HandlerTimedOut`](crate::Error::HandlerTimedOut)).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a per-message handler",
    label = "`handler` takes an `exactly::Handler`",
    note = "implement `exactly::Handler` for it, or register an `exactly::BatchHandler` with `batch_handler(...)`"
)]
#[async_trait::async_trait]
pub trait Handler: Consumes + Send + Sync + 'static {
    /// Handles one message.
    ///
    /// # Errors
    /// Any error rolls back what the message wrote (in Database mode, with its batch: the
    /// messages before it are then committed without it, and it is tried again on its own).
    async fn handle(
        &self,
        message: &Message<Self::Key, Self::Payload>,
        cx: &mut Context<'_, Self::Mode>,
    ) -> Result<(), HandlerError>;
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
    /// connection, a full disk or another want of resources): retried without counting
    /// against the message's attempts.
    pub(crate) fn is_transient(&self) -> bool {
        self.source
            .downcast_ref::<sqlx::Error>()
            .is_some_and(|e| crate::error::database_class(e) == crate::error::ErrorClass::Retriable)
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
