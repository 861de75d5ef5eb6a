//! Dead letters: messages a handler could not process (undecodable, or out of retries).
//!
//! By default a Database-mode handler's dead letters are kept in `exactly.dead_letters`
//! with their original bytes, and re-driven from there exactly once ([`redrive`]). With a
//! dead-letter topic ([`Subscription::with_dead_letter_topic`](crate::Subscription::with_dead_letter_topic))
//! they go to Kafka instead, as the original record plus headers saying what failed.

use sqlx::{PgConnection, PgPool, Row};

use crate::error::{Location, Result};
use crate::handler::{Context, Handler};
use crate::mode::Database;
use crate::output::Output;
use crate::runtime::decode::{Coordinates, Decoded, Raw, decode_parts};
use crate::runtime::panics;

/// A message on its way to the dead letters.
pub(crate) struct Letter<'a> {
    pub(crate) at: &'a Location,
    pub(crate) raw: &'a Raw,
    pub(crate) error: &'a str,
    pub(crate) attempts: u32,
}

/// Writes `letter` through the caller's transaction: to `exactly.dead_letters`, or to
/// `topic` through the outbox. Writing it twice keeps one.
pub(crate) async fn write(tx: &mut PgConnection, letter: &Letter<'_>, topic: Option<&str>) -> Result<()> {
    if let Some(topic) = topic {
        crate::outbox::enqueue(tx, &record(topic, letter)).await?;
        return Ok(());
    }
    let (names, values): (Vec<&str>, Vec<Option<&[u8]>>) =
        letter.raw.headers.iter().map(|(name, value)| (name.as_str(), value.as_deref())).unzip();
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

/// The dead-letter record of `letter` for `topic`: the original key, payload and headers,
/// plus `exactly.*` headers saying where it came from and why it failed.
pub(crate) fn record(topic: &str, letter: &Letter<'_>) -> Output {
    let mut output = Output::to(topic);
    output.key = letter.raw.key.as_deref().map(bytes::Bytes::copy_from_slice);
    output.payload = letter.raw.payload.as_deref().map(bytes::Bytes::copy_from_slice);
    for (name, value) in &letter.raw.headers {
        output = output.header(name.clone(), value.clone().unwrap_or_default());
    }
    output
        .header("exactly.error", letter.error)
        .header("exactly.attempts", letter.attempts.to_string())
        .header("exactly.group", letter.at.group.as_str())
        .header("exactly.topic", letter.at.topic.as_str())
        .header("exactly.partition", letter.at.partition.to_string())
        .header("exactly.offset", letter.at.offset.to_string())
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
    rows.iter().map(|row| Ok(dead_letter(row)?.0)).collect()
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
    Ok(row.as_ref().map(dead_letter).transpose()?.map(|(letter, _)| letter))
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

/// Moves the dead letters `ids` of `group` back into processing without running any
/// handler: in one transaction, each is deleted and its original record (key, payload,
/// headers, plus `exactly.replayed-from: topic/partition/offset`) is written to the
/// outbox, addressed to its original topic or to `to`. The outbox relay then publishes it
/// once, and the group consumes it again as a new message. Two replays of the same dead
/// letter at once move it once.
///
/// Unlike [`redrive`] this needs no handler code (it is what `exactly dead-letters replay`
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

/// A record's headers, as Kafka gave them.
type Headers = Vec<(String, Option<Vec<u8>>)>;

fn dead_letter(row: &sqlx::postgres::PgRow) -> sqlx::Result<(DeadLetter, Headers)> {
    let names: Vec<String> = row.try_get("header_names")?;
    let values: Vec<Option<Vec<u8>>> = row.try_get("header_values")?;
    let headers: Headers = names.into_iter().zip(values).collect();
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
            headers: headers.clone(),
            created_at: row.try_get("created_at")?,
        },
        headers,
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
        let at = Coordinates {
            topic: letter.topic.clone(),
            partition: letter.partition,
            offset: letter.offset,
            timestamp: None,
        };
        let headers = if subscription.reads_headers() { headers } else { Vec::new() };
        let failure = match decode_parts::<H>(letter.key.as_deref(), letter.payload.as_deref(), headers, at) {
            Decoded::Failed { part, error } => Some(format!("cannot decode the {part}: {error}")),
            Decoded::Message(message) => {
                let mut cx = Context::new(&mut tx, subscription.outputs());
                match panics::catch(handler.handle(&message, &mut cx)).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(panic) => Some(panic),
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
