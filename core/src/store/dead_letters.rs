//! Dead letters in `exactly.dead_letters`: written in the transaction that moves past the
//! message, listed, replayed through the outbox, and re-driven (see `crate::admin`).

use sqlx::{PgConnection, PgPool, Row};

use super::record::RawRecord;
use crate::error::{Location, Result};

/// A message on its way to the dead letters.
pub(crate) struct Letter<'a> {
    pub(crate) at: &'a Location,
    pub(crate) raw: &'a RawRecord,
    pub(crate) error: &'a str,
    pub(crate) attempts: u32,
}

/// Writes `letter` to `exactly.dead_letters` through the caller's transaction. Writing it
/// twice keeps one.
pub(crate) async fn insert(tx: &mut PgConnection, letter: &Letter<'_>) -> Result<()> {
    let (names, values) = letter.raw.header_columns();
    sqlx::query(
        "INSERT INTO exactly.dead_letters
             (group_id, topic, partition, message_offset, key, payload, header_names, header_values, error, attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (group_id, topic, partition, message_offset) DO NOTHING",
    )
    .bind(&letter.at.group)
    .bind(&letter.at.topic)
    .bind(letter.at.partition)
    .bind(letter.at.offset)
    .bind(letter.raw.key.as_deref())
    .bind(letter.raw.payload.as_deref())
    .bind(&names)
    .bind(&values)
    .bind(letter.error)
    .bind(i32::try_from(letter.attempts).unwrap_or(i32::MAX))
    .execute(tx)
    .await?;
    Ok(())
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in `exactly.dead_letters`.
    pub id: i64,
    /// The consumer group that failed it.
    pub group: String,
    /// Where it came from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its original key bytes.
    pub key: Option<Vec<u8>>,
    /// Its original payload bytes.
    pub payload: Option<Vec<u8>>,
    /// The last error.
    pub error: String,
    /// How many times it was tried.
    pub attempts: i32,
    /// Its original headers (a header without a value has `None`).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// When it became a dead letter, as PostgreSQL prints a `timestamptz`.
    pub created_at: String,
}

/// What [`replay`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Replayed {
    /// Dead letters moved to the outbox (and deleted), in id order.
    pub moved: Vec<i64>,
    /// Ids asked for that were not dead letters of the group (replayed meanwhile, or
    /// never there).
    pub missing: Vec<i64>,
}

const COLUMNS: &str = "id, group_id, topic, partition, message_offset, key, payload, error, attempts, \
                       header_names, header_values, created_at::text AS created_at";

/// The dead letters of `group`, oldest first.
///
/// # Errors
/// When the query fails.
pub async fn list(pool: &PgPool, group: &str) -> Result<Vec<DeadLetter>> {
    // Ids start at 1 (BIGSERIAL): everything is one page after id 0.
    page(pool, group, 0, i64::MAX).await
}

/// Up to `limit` dead letters of `group` with ids above `after`, oldest first: a page of
/// [`list`] for tools that show a few at a time.
///
/// # Errors
/// When the query fails.
pub async fn page(pool: &PgPool, group: &str, after: i64, limit: i64) -> Result<Vec<DeadLetter>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM exactly.dead_letters WHERE group_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    )))
    .bind(group)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|row| Ok(dead_letter(row)?)).collect()
}

/// The dead letter `id`, if it exists.
///
/// # Errors
/// When the query fails.
pub async fn get(pool: &PgPool, id: i64) -> Result<Option<DeadLetter>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM exactly.dead_letters WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(dead_letter).transpose()?)
}

/// Moves the dead letters `ids` of `group` back into processing without running any
/// handler: in one transaction, each is deleted and its original record (key, payload,
/// headers, plus `exactly.replayed-from: topic/partition/offset`) is written to the
/// outbox, addressed to its original topic or to `to`. The outbox relay then publishes it
/// once, and the group consumes it again as a new message. Two replays of the same dead
/// letter at once move it once.
///
/// Unlike [`redrive`](crate::dead_letters::redrive) this needs no handler code (it is what `exactly dead-letters replay`
/// runs), but it needs an outbox relay running on this database to publish.
///
/// # Errors
/// When the database fails; then nothing moved.
pub async fn replay(pool: &PgPool, group: &str, ids: &[i64], to: Option<&str>) -> Result<Replayed> {
    let moved: Vec<i64> = sqlx::query_scalar(
        "WITH moved AS (
             DELETE FROM exactly.dead_letters WHERE group_id = $1 AND id = ANY($2)
             RETURNING id, topic, partition, message_offset, key, payload, header_names, header_values
         ), published AS (
             INSERT INTO exactly.outbox (topic, key, payload, header_names, header_values)
             SELECT coalesce($3, topic), key, payload,
                    header_names || 'exactly.replayed-from'::text,
                    ARRAY(SELECT coalesce(v, ''::bytea) FROM unnest(header_values) WITH ORDINALITY AS u(v, n) ORDER BY n)
                        || convert_to(topic || '/' || partition || '/' || message_offset, 'UTF8')
             FROM moved ORDER BY id
         )
         SELECT id FROM moved ORDER BY id",
    )
    .bind(group)
    .bind(ids)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let missing = ids.iter().filter(|id| !moved.contains(id)).copied().collect();
    Ok(Replayed { moved, missing })
}

/// The dead letter `id` of `group`, locked for the caller's transaction (a concurrent
/// re-drive of the same letter waits, then finds it gone).
pub(crate) async fn lock(tx: &mut PgConnection, id: i64, group: &str) -> Result<Option<DeadLetter>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM exactly.dead_letters WHERE id = $1 AND group_id = $2 FOR UPDATE"
    )))
    .bind(id)
    .bind(group)
    .fetch_optional(tx)
    .await?;
    Ok(row.as_ref().map(dead_letter).transpose()?)
}

/// Deletes the dead letter `id` through the caller's transaction (it was handled).
pub(crate) async fn delete(tx: &mut PgConnection, id: i64) -> Result<()> {
    sqlx::query("DELETE FROM exactly.dead_letters WHERE id = $1").bind(id).execute(tx).await?;
    Ok(())
}

/// Notes that the dead letter `id` failed again, with `error`.
pub(crate) async fn failed_again(pool: &PgPool, id: i64, error: &str) -> Result<()> {
    sqlx::query("UPDATE exactly.dead_letters SET error = $2, attempts = attempts + 1 WHERE id = $1")
        .bind(id)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

fn dead_letter(row: &sqlx::postgres::PgRow) -> sqlx::Result<DeadLetter> {
    let names: Vec<String> = row.try_get("header_names")?;
    let values: Vec<Option<Vec<u8>>> = row.try_get("header_values")?;
    Ok(DeadLetter {
        id: row.try_get("id")?,
        group: row.try_get("group_id")?,
        topic: row.try_get("topic")?,
        partition: row.try_get("partition")?,
        offset: row.try_get("message_offset")?,
        key: row.try_get("key")?,
        payload: row.try_get("payload")?,
        error: row.try_get("error")?,
        attempts: row.try_get("attempts")?,
        headers: names.into_iter().zip(values).collect(),
        created_at: row.try_get("created_at")?,
    })
}
