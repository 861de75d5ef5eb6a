//! The outbox's rows in `exactly.outbox`: written in the caller's transaction, counted for
//! operators. The relay (`crate::outbox`) reads and deletes them.

use sqlx::PgConnection;

/// One record to write to the outbox.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row<'a> {
    pub(crate) topic: &'a str,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: Option<&'a [u8]>,
    pub(crate) headers: &'a [(String, Vec<u8>)],
}

/// Writes `row` to the outbox through `tx` (the caller's transaction).
pub(crate) async fn insert(tx: &mut PgConnection, row: &Row<'_>) -> sqlx::Result<()> {
    let (names, values): (Vec<&str>, Vec<&[u8]>) =
        row.headers.iter().map(|(name, value)| (name.as_str(), value.as_slice())).unzip();
    sqlx::query(
        "INSERT INTO exactly.outbox (topic, key, payload, header_names, header_values) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(row.topic)
    .bind(row.key)
    .bind(row.payload)
    .bind(&names)
    .bind(&values)
    .execute(tx)
    .await?;
    Ok(())
}

/// How many records wait in the outbox, counted through `database`.
pub(crate) async fn backlog<'c>(database: impl sqlx::PgExecutor<'c>) -> sqlx::Result<i64> {
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
pub(crate) async fn status(pool: &sqlx::PgPool) -> sqlx::Result<OutboxStatus> {
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
