//! Where a handler's effects commit, chosen per handler with `#[exactly(mode = ...)]`.
//!
//! | mode | effects go to | position stored in | guarantee |
//! | --- | --- | --- | --- |
//! | [`Database`] (default) | PostgreSQL, through [`Context::db`](crate::Context::db) | PostgreSQL, same transaction | effects exactly once |
//! | [`Kafka`] | Kafka, through [`Context::emit`](crate::Context::emit) | Kafka, same transaction (KIP-447) | output records exactly once for `read_committed` readers |

use super::batch::BatchHandler;
use super::handler::Handler;

/// Effects are written to PostgreSQL in the transaction that stores the position.
#[derive(Debug)]
pub enum Database {}

/// Effects are records emitted to Kafka in the Kafka transaction that commits the input
/// offsets (consume-transform-produce).
#[derive(Debug)]
pub enum Kafka {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Database {}
    impl Sealed for super::Kafka {}
}

/// A mode: [`Database`] or [`Kafka`].
pub trait Mode: sealed::Sealed + Send + Sync + 'static {
    #[doc(hidden)]
    const KIND: ModeKind;
    /// Where a handler's effects go while it handles one message.
    #[doc(hidden)]
    type Effects<'t>: Send;
    /// Hands `handler` to the method of `visitor` for this mode: how the runtime, which
    /// sees only `H: Handler`, reaches the code of the handler's mode without this module
    /// knowing that code.
    #[doc(hidden)]
    fn visit<H: Handler<Mode = Self>, V: ModeVisitor>(handler: H, visitor: V) -> V::Output;
    /// [`Mode::visit`] for a batch handler.
    #[doc(hidden)]
    fn visit_batch<B: BatchHandler<Mode = Self>, V: ModeVisitor>(handler: B, visitor: V) -> V::Output;
}

/// What is done with a handler, per mode (see [`Mode::visit`]).
#[doc(hidden)]
pub trait ModeVisitor {
    /// What the visit gives.
    type Output;
    /// Visits a Database-mode handler.
    fn database<H: Handler<Mode = Database>>(self, handler: H) -> Self::Output;
    /// Visits a Kafka-mode handler.
    fn kafka<H: Handler<Mode = Kafka>>(self, handler: H) -> Self::Output;
    /// Visits a Database-mode batch handler.
    fn database_batch<B: BatchHandler<Mode = Database>>(self, handler: B) -> Self::Output;
    /// Visits a Kafka-mode batch handler.
    fn kafka_batch<B: BatchHandler<Mode = Kafka>>(self, handler: B) -> Self::Output;
}

impl Mode for Database {
    const KIND: ModeKind = ModeKind::Database;
    type Effects<'t> = (&'t mut sqlx::Transaction<'static, sqlx::Postgres>, &'t [String]);
    fn visit<H: Handler<Mode = Self>, V: ModeVisitor>(handler: H, visitor: V) -> V::Output {
        visitor.database(handler)
    }
    fn visit_batch<B: BatchHandler<Mode = Self>, V: ModeVisitor>(handler: B, visitor: V) -> V::Output {
        visitor.database_batch(handler)
    }
}

impl Mode for Kafka {
    const KIND: ModeKind = ModeKind::Kafka;
    type Effects<'t> = &'t mut Vec<super::output::Output>;
    fn visit<H: Handler<Mode = Self>, V: ModeVisitor>(handler: H, visitor: V) -> V::Output {
        visitor.kafka(handler)
    }
    fn visit_batch<B: BatchHandler<Mode = Self>, V: ModeVisitor>(handler: B, visitor: V) -> V::Output {
        visitor.kafka_batch(handler)
    }
}

/// Which mode, as a value.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeKind {
    Database,
    Kafka,
}
