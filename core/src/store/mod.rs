//! exactly's tables in PostgreSQL, and the statements on them: the positions (claimed with
//! an epoch, advanced by compare-and-set), the completed offsets above them (key-level
//! concurrency), their migrations, parked messages, dead letters and outbox rows. Every
//! statement that must commit with a handler's effects runs on the caller's connection,
//! inside the caller's transaction, and every transaction the runtime opens is bounded by
//! the server too ([`transaction`]).

pub(crate) mod completed;
pub(crate) mod dead_letters;
pub(crate) mod migrate;
pub(crate) mod offsets;
pub(crate) mod outbox;
pub(crate) mod parking;
pub(crate) mod record;
pub(crate) mod session;
pub(crate) mod transaction;
