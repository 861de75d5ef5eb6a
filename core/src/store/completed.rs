//! The completed offsets of a key-concurrent partition: messages handled above its stored
//! position (the lowest offset not yet handled), each recorded in the transaction of its
//! effects. Together, the position and these rows say exactly which messages are done, so
//! a new owner skips those and nothing else.
//!
//! Fencing is the position row's epoch, as for a sequential partition: a lane's
//! transaction takes the row in share mode, which concurrent lanes may all hold while a
//! claim (an exclusive update of the row) waits for them and then raises the epoch; a
//! lane that comes after the claim sees the new epoch and rolls back.

use sqlx::{PgConnection, PgPool};

use super::offsets::{self, Advance, PartitionKey};
use crate::error::Result;

/// Records `done` (offsets of `key`) as completed in the caller's transaction, if and only
/// if the caller still holds `epoch`. Last in the transaction, so the share lock waits only
/// for the COMMIT; the epoch first, so a zombie fails as fenced rather than on the new
/// owner's row for the same offset.
pub(crate) async fn record(tx: &mut PgConnection, key: &PartitionKey, epoch: i64, done: &[i64]) -> Result<()> {
    offsets::hold(&mut *tx, key, epoch, done.first().copied().unwrap_or_default()).await?;
    sqlx::query(
        "INSERT INTO exactly.completed (group_id, topic, partition, message_offset) \
         SELECT $1, $2, $3, UNNEST($4::BIGINT[])",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .bind(done)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The completed offsets of `key` at or above `from` (its stored position), lowest first.
pub(crate) async fn load(pool: &PgPool, key: &PartitionKey, from: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT message_offset FROM exactly.completed \
         WHERE group_id = $1 AND topic = $2 AND partition = $3 AND message_offset >= $4 ORDER BY message_offset",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .bind(from)
    .fetch_all(pool)
    .await?)
}

/// Which of `offsets` of `key` are recorded as completed: after a COMMIT whose outcome is
/// unknown, whether it happened.
pub(crate) async fn recorded(pool: &PgPool, key: &PartitionKey, offsets: &[i64]) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT message_offset FROM exactly.completed \
         WHERE group_id = $1 AND topic = $2 AND partition = $3 AND message_offset = ANY($4::BIGINT[])",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .bind(offsets)
    .fetch_all(pool)
    .await?)
}

/// Moves the stored position of `key` from `expected` to `next` (every message below
/// `next` is done) and deletes the completed rows it passed, in one transaction, if and
/// only if the caller still holds `epoch`.
pub(crate) async fn compact(pool: &PgPool, key: &PartitionKey, epoch: i64, expected: i64, next: i64) -> Result<()> {
    let mut tx = pool.begin().await?;
    match offsets::advance(&mut tx, key, epoch, expected, next).await? {
        Advance::Advanced => {
            delete_below(&mut tx, key, next).await?;
            tx.commit().await?;
        }
        Advance::AlreadyCommitted => tx.rollback().await?,
    }
    Ok(())
}

/// Deletes the completed rows of `key` below `next` (every row, with `i64::MAX`).
pub(crate) async fn delete_below(tx: &mut PgConnection, key: &PartitionKey, next: i64) -> Result<()> {
    sqlx::query(
        "DELETE FROM exactly.completed \
         WHERE group_id = $1 AND topic = $2 AND partition = $3 AND message_offset < $4",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .bind(next)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
