//! The transactional outbox: Kafka output for Database-mode handlers.
//!
//! A Database-mode handler's [`Context::emit`](crate::Context::emit) writes the record to
//! `exactly.outbox` in the batch's transaction, so the record exists if and only if the
//! handler's effects and position committed. The [`Relay`] then publishes outbox records to
//! Kafka in Kafka transactions that also carry the relay's own position (as Kafka Connect's
//! exactly-once sources do, KIP-618), so each record reaches Kafka exactly once whatever
//! moment the relay crashes at, in per-key order. Published rows are deleted.
//!
//! How: each Kafka transaction of the relay carries a batch of outbox rows and the relay's
//! new position (the `(txid, id)` of the last row) as a record keyed by the relay's name in
//! a compacted positions topic; on start the relay reads it back with `read_committed`.
//! Rows are read in `(txid, id)` order and only from transactions older than every running
//! one, so a slow writer's row can never commit behind the position. Instances elect one
//! publisher with an advisory lock and share the relay's name as `transactional.id`, so a
//! stale publisher is fenced.

mod relay;

pub use crate::store::outbox::OutboxStatus;
pub use relay::{Relay, RelayHandle};

use sqlx::PgConnection;

use crate::api::output::Output;

/// Writes `record` to the outbox through `tx` (the caller's transaction).
///
/// # Errors
/// When the insert fails; the caller's transaction should then roll back.
pub async fn enqueue(tx: &mut PgConnection, record: &Output) -> sqlx::Result<()> {
    crate::store::outbox::insert(tx, &record.row()).await
}

/// How many records wait in the outbox, counted through `database`: a pool, a connection
/// or a transaction.
///
/// # Errors
/// When the query fails.
pub async fn backlog<'c>(database: impl sqlx::PgExecutor<'c>) -> sqlx::Result<i64> {
    crate::store::outbox::backlog(database).await
}

/// The outbox's backlog: rows, the age of the oldest, and rows per topic.
///
/// # Errors
/// When the query fails.
pub async fn status(pool: &sqlx::PgPool) -> sqlx::Result<OutboxStatus> {
    crate::store::outbox::status(pool).await
}
