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

pub use relay::{Relay, RelayHandle};

use sqlx::PgConnection;

use crate::output::Output;

/// Writes `record` to the outbox through `tx` (the caller's transaction).
///
/// # Errors
/// When the insert fails; the caller's transaction should then roll back.
pub async fn enqueue(tx: &mut PgConnection, record: &Output) -> sqlx::Result<()> {
    let (names, values): (Vec<&str>, Vec<&[u8]>) =
        record.headers.iter().map(|(name, value)| (name.as_str(), value.as_slice())).unzip();
    sqlx::query(
        "INSERT INTO exactly.outbox (topic, key, payload, header_names, header_values) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&record.topic)
    .bind(record.key.as_deref())
    .bind(record.payload.as_deref())
    .bind(&names)
    .bind(&values)
    .execute(tx)
    .await?;
    Ok(())
}

/// How many records wait in the outbox, counted through `database`: a pool, a connection
/// or a transaction.
///
/// # Errors
/// When the query fails.
pub async fn backlog<'c>(database: impl sqlx::PgExecutor<'c>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM exactly.outbox").fetch_one(database).await
}

/// What waits in the outbox.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct OutboxStatus {
    /// Rows waiting to be published.
    pub rows: i64,
    /// Age of the oldest waiting row, in seconds (none when empty).
    pub oldest_age_seconds: Option<f64>,
    /// Rows waiting per topic, by topic.
    pub per_topic: Vec<(String, i64)>,
}

/// The outbox's backlog: rows, the age of the oldest, and rows per topic.
///
/// # Errors
/// When the query fails.
pub async fn status(pool: &sqlx::PgPool) -> sqlx::Result<OutboxStatus> {
    let per_topic: Vec<(String, i64)> =
        sqlx::query_as("SELECT topic, count(*) FROM exactly.outbox GROUP BY topic ORDER BY topic")
            .fetch_all(pool)
            .await?;
    let oldest: Option<f64> =
        sqlx::query_scalar("SELECT extract(epoch FROM now() - min(created_at))::float8 FROM exactly.outbox")
            .fetch_one(pool)
            .await?;
    Ok(OutboxStatus { rows: per_topic.iter().map(|(_, n)| n).sum(), oldest_age_seconds: oldest, per_topic })
}
