//! Key-level parking: the parked messages of one partition, in `exactly.parked`.
//!
//! A parked key's messages wait in the table in offset order; the partition's worker
//! parks them (in the transaction that moves its position past them), retries the oldest
//! of each key when due, and removes each in the transaction that commits its effects or
//! dead-letters it. Every such transaction first locks the position row with the worker's
//! epoch, so a worker that lost the partition cannot touch its parked messages.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row};
use tokio::time::Instant;

use super::decode::Raw;
use crate::error::Result;
use crate::offsets::PartitionKey;

/// A message key as Kafka gave it (`None`: no key; those share one queue).
pub(crate) type KeyBytes = Option<Vec<u8>>;

/// The parked keys of one partition and when each is due for its next try.
#[derive(Debug, Default)]
pub(crate) struct ParkedKeys {
    due: HashMap<KeyBytes, Instant>,
}

impl ParkedKeys {
    pub(crate) fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    pub(crate) fn contains(&self, key: &KeyBytes) -> bool {
        !self.due.is_empty() && self.due.contains_key(key)
    }

    pub(crate) fn set_due(&mut self, key: KeyBytes, at: Instant) {
        self.due.insert(key, at);
    }

    pub(crate) fn release(&mut self, key: &KeyBytes) {
        self.due.remove(key);
    }

    /// The earliest moment a key is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// The keys due now, earliest first.
    pub(crate) fn due_now(&self) -> Vec<KeyBytes> {
        let now = Instant::now();
        let mut due: Vec<(&KeyBytes, &Instant)> = self.due.iter().filter(|(_, at)| **at <= now).collect();
        due.sort_by_key(|(_, at)| **at);
        due.into_iter().map(|(key, _)| key.clone()).collect()
    }

    /// Reads the partition's parked keys, each due when its oldest message is.
    pub(crate) async fn load(pool: &PgPool, key: &PartitionKey) -> Result<Self> {
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
        let mut parked = Self::default();
        let now = Instant::now();
        for row in rows {
            let wait: f64 = row.try_get("wait")?;
            parked.set_due(row.try_get("key")?, now + Duration::from_secs_f64(wait.clamp(0.0, 86_400.0)));
        }
        Ok(parked)
    }
}

/// One parked message, as read back for its retry.
pub(crate) struct ParkedMessage {
    pub(crate) offset: i64,
    pub(crate) raw: Raw,
    /// Tries so far.
    pub(crate) attempts: u32,
}

/// Parks the message at `offset` through the caller's transaction.
pub(crate) async fn park(
    tx: &mut PgConnection,
    key: &PartitionKey,
    offset: i64,
    raw: &Raw,
    attempts: u32,
    error: Option<&str>,
    retry_in: Duration,
) -> Result<()> {
    let (names, values): (Vec<&str>, Vec<Option<&[u8]>>) =
        raw.headers.iter().map(|(name, value)| (name.as_str(), value.as_deref())).unzip();
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
        raw: Raw {
            key: row.try_get("key")?,
            payload: row.try_get("payload")?,
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
