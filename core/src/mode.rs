//! Where a handler's effects commit, chosen per handler with `#[exactly(mode = ...)]`.
//!
//! | mode | effects go to | position stored in | guarantee |
//! | --- | --- | --- | --- |
//! | [`Database`] (default) | PostgreSQL, through [`Context::db`](crate::Context::db) | PostgreSQL, same transaction | effects exactly once |
//! | [`Kafka`] | Kafka, through [`Context::emit`](crate::Context::emit) | Kafka, same transaction (KIP-447) | output records exactly once for `read_committed` readers |

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
    /// How the runtime runs a handler of this mode.
    #[doc(hidden)]
    fn runner<H: crate::Handler<Mode = Self>>(handler: H) -> crate::runtime::Runner;
}

impl Mode for Database {
    const KIND: ModeKind = ModeKind::Database;
    type Effects<'t> = (&'t mut sqlx::Transaction<'static, sqlx::Postgres>, &'t [String]);
    fn runner<H: crate::Handler<Mode = Self>>(handler: H) -> crate::runtime::Runner {
        crate::runtime::Runner::database(handler)
    }
}

impl Mode for Kafka {
    const KIND: ModeKind = ModeKind::Kafka;
    type Effects<'t> = &'t mut Vec<crate::Output>;
    fn runner<H: crate::Handler<Mode = Self>>(handler: H) -> crate::runtime::Runner {
        crate::runtime::Runner::kafka(handler)
    }
}

#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeKind {
    Database,
    Kafka,
}
