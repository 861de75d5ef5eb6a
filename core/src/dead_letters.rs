//! Dead letters: messages a Database-mode handler could not process (undecodable, or out of
//! retries), kept in `exactly.dead_letters` with their original bytes, and re-driven from
//! there exactly once.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use sqlx::{PgPool, Row};

use crate::error::Result;
use crate::handler::{Context, Handler};
use crate::mode::Database;
use crate::runtime::decode::{Coordinates, Decoded, decode_parts};

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
}

/// What [`redrive`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redriven {
    /// Handled now: effects committed, dead letter removed, in one transaction.
    pub handled: Vec<i64>,
    /// Failed again: still dead letters, with the new error and one more attempt.
    pub failed: Vec<i64>,
    /// No longer there (re-driven by someone else meanwhile).
    pub gone: Vec<i64>,
}

const COLUMNS: &str =
    "id, group_id, topic, partition, message_offset, key, payload, error, attempts, header_names, header_values";

/// The dead letters of `group`, oldest first.
///
/// # Errors
/// When the query fails.
pub async fn list(pool: &PgPool, group: &str) -> Result<Vec<DeadLetter>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM exactly.dead_letters WHERE group_id = $1 ORDER BY id"
    )))
    .bind(group)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|row| Ok(dead_letter(row)?.0)).collect()
}

/// A record's headers, as Kafka gave them.
type Headers = Vec<(String, Option<Vec<u8>>)>;

fn dead_letter(row: &sqlx::postgres::PgRow) -> sqlx::Result<(DeadLetter, Headers)> {
    let names: Vec<String> = row.try_get("header_names")?;
    let values: Vec<Option<Vec<u8>>> = row.try_get("header_values")?;
    Ok((
        DeadLetter {
            id: row.try_get("id")?,
            group: row.try_get("group_id")?,
            topic: row.try_get("topic")?,
            partition: row.try_get("partition")?,
            offset: row.try_get("message_offset")?,
            key: row.try_get("key")?,
            payload: row.try_get("payload")?,
            error: row.try_get("error")?,
            attempts: row.try_get("attempts")?,
        },
        names.into_iter().zip(values).collect(),
    ))
}

/// Runs `handler` again on the dead letters `ids` of its group, each in a transaction that
/// also deletes the dead letter: its effects commit exactly once, even if `redrive` runs
/// twice at the same time or crashes half-way. A dead letter that fails again stays, with
/// the new error and one more attempt.
///
/// # Errors
/// When the database fails (what was re-driven before stays re-driven).
pub async fn redrive<H: Handler<Mode = Database>>(pool: &PgPool, handler: &H, ids: &[i64]) -> Result<Redriven> {
    let subscription = handler.subscription();
    let mut outcome = Redriven::default();
    for id in ids {
        let mut tx = pool.begin().await?;
        // The row lock makes a concurrent re-drive of the same letter wait, then find it gone.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM exactly.dead_letters WHERE id = $1 AND group_id = $2 FOR UPDATE"
        )))
        .bind(id)
        .bind(subscription.group())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            outcome.gone.push(*id);
            continue;
        };
        let (letter, headers) = dead_letter(&row)?;
        let at =
            Coordinates { topic: &letter.topic, partition: letter.partition, offset: letter.offset, timestamp: None };
        let failure = match decode_parts::<H>(letter.key.as_deref(), letter.payload.as_deref(), headers, &at) {
            Decoded::Failed { part, error } => Some(format!("cannot decode the {part}: {error}")),
            Decoded::Message(message) => {
                let mut cx = Context::new(&mut tx, subscription.outputs());
                match AssertUnwindSafe(handler.handle(&message, &mut cx)).catch_unwind().await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("the handler panicked".to_owned()),
                }
            }
        };
        match failure {
            None => {
                sqlx::query("DELETE FROM exactly.dead_letters WHERE id = $1").bind(id).execute(&mut *tx).await?;
                tx.commit().await?;
                outcome.handled.push(*id);
            }
            Some(error) => {
                tx.rollback().await?;
                sqlx::query("UPDATE exactly.dead_letters SET error = $2, attempts = attempts + 1 WHERE id = $1")
                    .bind(id)
                    .bind(&error)
                    .execute(pool)
                    .await?;
                outcome.failed.push(*id);
            }
        }
    }
    Ok(outcome)
}
