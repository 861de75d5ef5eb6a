//! The offset store: each group's position in each partition, kept in PostgreSQL.
//!
//! A position is the next offset to process. It commits in the same transaction as the
//! handler's effects, so effects and position are never out of step. Every assignment of a
//! partition *claims* it, raising its epoch; every commit checks both the epoch and the
//! expected position (compare-and-set), so an instance that lost the partition (a zombie)
//! can never commit effects for it again.

use sqlx::{PgConnection, PgPool};

use crate::error::{Error, Location, Result};

/// A partition of a topic, as consumed by a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PartitionKey {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) partition: i32,
}

impl PartitionKey {
    pub(crate) fn location(&self, offset: i64) -> Location {
        Location { group: self.group.clone(), topic: self.topic.clone(), partition: self.partition, offset }
    }
}

/// The result of claiming a partition on assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    /// Where to start reading.
    pub(crate) next_offset: i64,
    /// The epoch every commit must present.
    pub(crate) epoch: i64,
}

/// What a conditional advance found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Advance {
    /// The position moved from the expected offset to the new one.
    Advanced,
    /// The position already is the new one with our epoch: an earlier attempt whose COMMIT
    /// reported an error did in fact commit.
    AlreadyCommitted,
}

/// Claims `key`: raises its epoch and returns where to start. A partition with no row
/// starts at `initial()`, asked only then.
pub(crate) async fn claim(pool: &PgPool, key: &PartitionKey, initial: impl FnOnce() -> Result<i64>) -> Result<Claim> {
    let existing: Option<(i64, i64)> = sqlx::query_as(
        "UPDATE exactly.offsets SET epoch = epoch + 1, updated_at = now() \
         WHERE group_id = $1 AND topic = $2 AND partition = $3 RETURNING next_offset, epoch",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .fetch_optional(pool)
    .await?;
    let (next_offset, epoch) = match existing {
        Some(row) => row,
        None => {
            let start = initial()?;
            // Another instance may insert first; then its row wins and the epoch still rises.
            sqlx::query_as(
                "INSERT INTO exactly.offsets (group_id, topic, partition, next_offset, epoch) \
                 VALUES ($1, $2, $3, $4, 1) \
                 ON CONFLICT (group_id, topic, partition) \
                 DO UPDATE SET epoch = exactly.offsets.epoch + 1, updated_at = now() \
                 RETURNING next_offset, epoch",
            )
            .bind(&key.group)
            .bind(&key.topic)
            .bind(key.partition)
            .bind(start)
            .fetch_one(pool)
            .await?
        }
    };
    Ok(Claim { next_offset, epoch })
}

/// Moves the position of `key` from `expected` to `next` inside the caller's transaction,
/// if and only if the caller still holds `epoch`. Takes the row lock, so it also
/// serialises with a concurrent claim.
pub(crate) async fn advance(
    tx: &mut PgConnection,
    key: &PartitionKey,
    epoch: i64,
    expected: i64,
    next: i64,
) -> Result<Advance> {
    let moved = sqlx::query(
        "UPDATE exactly.offsets SET next_offset = $6, updated_at = now() \
         WHERE group_id = $1 AND topic = $2 AND partition = $3 AND epoch = $4 AND next_offset = $5",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .bind(epoch)
    .bind(expected)
    .bind(next)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 1 {
        return Ok(Advance::Advanced);
    }
    let current: Option<(i64, i64)> = sqlx::query_as(
        "SELECT next_offset, epoch FROM exactly.offsets WHERE group_id = $1 AND topic = $2 AND partition = $3",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .fetch_optional(&mut *tx)
    .await?;
    match current {
        Some((stored, current_epoch)) if current_epoch == epoch && stored == next => Ok(Advance::AlreadyCommitted),
        Some((_, current_epoch)) if current_epoch != epoch => {
            Err(Error::Fenced { location: key.location(expected), epoch })
        }
        Some((stored, _)) => Err(Error::PositionMoved { location: key.location(expected), stored }),
        None => Err(Error::Fenced { location: key.location(expected), epoch }),
    }
}

/// The stored position of `key`, if any (for tools and tests).
pub async fn position(pool: &PgPool, group: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT next_offset FROM exactly.offsets WHERE group_id = $1 AND topic = $2 AND partition = $3",
    )
    .bind(group)
    .bind(topic)
    .bind(partition)
    .fetch_optional(pool)
    .await?)
}

/// A stored position, as tools show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct StoredPosition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset to process.
    pub next_offset: i64,
    /// The claim epoch: raised by every assignment, and by [`set`].
    pub epoch: i64,
    /// When it last moved or was claimed, as PostgreSQL prints a `timestamptz`.
    pub updated_at: String,
}

/// Every stored position of `group`, by topic and partition.
///
/// # Errors
/// When the query fails.
pub async fn list(pool: &PgPool, group: &str) -> Result<Vec<StoredPosition>> {
    let rows: Vec<(String, i32, i64, i64, String)> = sqlx::query_as(
        "SELECT topic, partition, next_offset, epoch, updated_at::text FROM exactly.offsets \
         WHERE group_id = $1 ORDER BY topic, partition",
    )
    .bind(group)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(topic, partition, next_offset, epoch, updated_at)| StoredPosition {
            topic,
            partition,
            next_offset,
            epoch,
            updated_at,
        })
        .collect())
}

/// Sets the position of `group` in `topic`/`partition` to `next_offset` and raises its
/// epoch, so that an instance still holding the partition is fenced: its next commit
/// fails instead of overwriting the new position. Completed offsets recorded above the
/// old position (key-level concurrency) are forgotten: every message from `next_offset`
/// on is processed. Returns the position before.
///
/// This is an operator's tool (`exactly offsets set|reset`): run it while the group has no
/// live members, or accept that the fenced owners stop processing the partition until
/// the next rebalance.
///
/// # Errors
/// When `next_offset` is negative or the query fails.
pub async fn set(pool: &PgPool, group: &str, topic: &str, partition: i32, next_offset: i64) -> Result<Option<i64>> {
    if next_offset < 0 || partition < 0 {
        return Err(Error::InvalidArgument(format!(
            "cannot set the position of {group} in {topic}/{partition} to {next_offset}: \
             partitions and offsets are never negative"
        )));
    }
    let mut tx = pool.begin().await?;
    let before: Option<i64> = sqlx::query_scalar(
        "SELECT next_offset FROM exactly.offsets WHERE group_id = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
    )
    .bind(group)
    .bind(topic)
    .bind(partition)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO exactly.offsets (group_id, topic, partition, next_offset, epoch) VALUES ($1, $2, $3, $4, 1) \
         ON CONFLICT (group_id, topic, partition) \
         DO UPDATE SET next_offset = $4, epoch = exactly.offsets.epoch + 1, updated_at = now()",
    )
    .bind(group)
    .bind(topic)
    .bind(partition)
    .bind(next_offset)
    .execute(&mut *tx)
    .await?;
    // Completed offsets recorded under the old position (key-level concurrency) would make
    // the new owner skip messages from the new one.
    let key = PartitionKey { group: group.to_owned(), topic: topic.to_owned(), partition };
    super::completed::delete_below(&mut tx, &key, i64::MAX).await?;
    tx.commit().await?;
    Ok(before)
}

/// Locks the position row of `key` in the caller's transaction, if and only if the caller
/// still holds `epoch`: work that does not move the position (a parked message's retry)
/// is fenced by it as [`advance`] fences a batch. In share mode, so the lanes of a
/// key-concurrent partition hold it together, while a claim waits for them and then
/// raises the epoch.
pub(crate) async fn hold(tx: &mut PgConnection, key: &PartitionKey, epoch: i64, offset: i64) -> Result<()> {
    let current: Option<i64> = sqlx::query_scalar(
        "SELECT epoch FROM exactly.offsets WHERE group_id = $1 AND topic = $2 AND partition = $3 FOR SHARE",
    )
    .bind(&key.group)
    .bind(&key.topic)
    .bind(key.partition)
    .fetch_optional(&mut *tx)
    .await?;
    match current {
        Some(current) if current == epoch => Ok(()),
        _ => Err(Error::Fenced { location: key.location(offset), epoch }),
    }
}
