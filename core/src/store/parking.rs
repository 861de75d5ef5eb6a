//! Key-level parking's table, `exactly.parked`: the parked messages of each partition.
//!
//! A parked key's messages wait in the table in offset order; the partition's worker
//! parks them (in the transaction that moves its position past them), retries the oldest
//! of each key when due, and removes each in the transaction that commits its effects or
//! dead-letters it. Every such transaction first locks the position row with the worker's
//! epoch, so a worker that lost the partition cannot touch its parked messages.

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row};

use super::offsets::PartitionKey;
use super::record::RawRecord;
use crate::error::Result;

/// A message key as Kafka gave it (`None`: no key; those share one queue).
pub(crate) type KeyBytes = Option<Vec<u8>>;

/// The partition's parked keys, each with how long until its oldest message is due.
pub(crate) async fn due_keys(pool: &PgPool, key: &PartitionKey) -> Result<Vec<(KeyBytes, Duration)>> {
    let rows = sqlx::query(
        "SELECT DISTINCT ON (key) key, GREATEST(0, EXTRACT(EPOCH FROM retry_at - now()))::float8 AS wait
         FROM exactly.parked WHERE group_id = $1 AND topic = $2 AND partition = $3
         ORDER BY key, message_offset",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .fetch_all(pool)
    .await?;
    let mut due = Vec::with_capacity(rows.len());
    for row in rows {
        let wait: f64 = row.try_get("wait")?;
        due.push((row.try_get("key")?, Duration::from_secs_f64(wait.clamp(0.0, 86_400.0))));
    }
    Ok(due)
}

/// One parked message, as read back for its retry.
pub(crate) struct ParkedMessage {
    pub(crate) offset: i64,
    pub(crate) raw: RawRecord,
    /// Tries so far.
    pub(crate) attempts: u32,
}

/// Parks the message at `offset` through the caller's transaction.
pub(crate) async fn park(
    tx: &mut PgConnection,
    key: &PartitionKey,
    offset: i64,
    raw: &RawRecord,
    attempts: u32,
    error: Option<&str>,
    retry_in: Duration,
) -> Result<()> {
    let (names, values) = raw.header_columns();
    sqlx::query(
        "INSERT INTO exactly.parked
             (group_id, topic, partition, message_offset, key, payload, header_names, header_values, error, attempts,
              retry_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11))
         ON CONFLICT (group_id, topic, partition, message_offset) DO NOTHING",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .bind(offset)
    .bind(raw.key.as_deref())
    .bind(raw.payload.as_deref())
    .bind(&names)
    .bind(&values)
    .bind(error)
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(retry_in.as_secs_f64())
    .execute(tx)
    .await?;
    Ok(())
}

/// The oldest parked message of `message_key`, locked for the caller's transaction.
pub(crate) async fn oldest(
    tx: &mut PgConnection,
    key: &PartitionKey,
    message_key: &KeyBytes,
) -> Result<Option<ParkedMessage>> {
    let row = sqlx::query(
        "SELECT message_offset, key, payload, header_names, header_values, attempts FROM exactly.parked
         WHERE group_id = $1 AND topic = $2 AND partition = $3 AND key IS NOT DISTINCT FROM $4
         ORDER BY message_offset LIMIT 1 FOR UPDATE",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .bind(message_key.as_deref())
    .fetch_optional(tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let names: Vec<String> = row.try_get("header_names")?;
    let values: Vec<Option<Vec<u8>>> = row.try_get("header_values")?;
    let attempts: i32 = row.try_get("attempts")?;
    Ok(Some(ParkedMessage {
        offset: row.try_get("message_offset")?,
        raw: RawRecord {
            key: row.try_get("key")?,
            payload: row.try_get::<Option<Vec<u8>>, _>("payload")?.map(bytes::Bytes::from),
            headers: names.into_iter().zip(values).collect(),
        },
        attempts: u32::try_from(attempts).unwrap_or(0),
    }))
}

/// Removes a parked message (handled, or dead-lettered) through the caller's transaction.
pub(crate) async fn remove(tx: &mut PgConnection, key: &PartitionKey, offset: i64) -> Result<()> {
    sqlx::query(
        "DELETE FROM exactly.parked WHERE group_id = $1 AND topic = $2 AND partition = $3 AND message_offset = $4",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .bind(offset)
    .execute(tx)
    .await?;
    Ok(())
}

/// Notes a failed retry of a parked message and when to try it next.
pub(crate) async fn reschedule(
    tx: &mut PgConnection,
    key: &PartitionKey,
    offset: i64,
    attempts: u32,
    error: &str,
    retry_in: Duration,
) -> Result<()> {
    sqlx::query(
        "UPDATE exactly.parked SET attempts = $5, error = $6, retry_at = now() + make_interval(secs => $7)
         WHERE group_id = $1 AND topic = $2 AND partition = $3 AND message_offset = $4",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .bind(offset)
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(error)
    .bind(retry_in.as_secs_f64())
    .execute(tx)
    .await?;
    Ok(())
}
