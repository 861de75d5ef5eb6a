//! Dead letters: messages a handler could not process (undecodable, or out of retries).
//!
//! By default a Database-mode handler's dead letters are kept in `exactly.dead_letters`
//! with their original bytes, and re-driven from there exactly once ([`redrive`]). With a
//! dead-letter topic ([`Subscription::with_dead_letter_topic`](crate::Subscription::with_dead_letter_topic))
//! they go to Kafka instead, as the original record plus headers saying what failed.

use sqlx::PgPool;

use crate::api::batch::BatchHandler;
use crate::api::context::Context;
use crate::api::handler::Handler;
use crate::api::mode::Database;
use crate::api::subscription::Subscription;
use crate::engine::backoff::Backoff;
use crate::error::{Error, Location, Result};
use crate::kafka::trace_context::TraceContext;
use crate::pipeline::decode::{Coordinates, Decoded, decode_parts};
use crate::pipeline::invoke::{Call, Cause, Outcome};
use crate::pipeline::work::{Entry, PerBatch, PerMessage, Work};
use crate::store::dead_letters;
pub use crate::store::dead_letters::{DeadLetter, Replayed, get, list, page, replay};

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

/// How often one dead letter is re-driven again after a transient database failure
/// (a serialization failure, a deadlock) before `redrive` gives up with the error.
const TRANSIENT_TRIES: u32 = 8;

/// Runs `handler` again on the dead letters `ids` of its group, each in a transaction that
/// also deletes the dead letter: its effects commit exactly once, even if `redrive` runs
/// twice at the same time or crashes half-way. A dead letter that fails again stays, with
/// the new error and one more attempt.
///
/// The handler is called as the runtime calls it: in a `message` span (with the dead
/// letter's topic, partition and offset, and its try), with the trace context of its
/// `traceparent` header (so records it emits carry it on), with its panics caught, and
/// without headers if it declines them. A transient database failure under it (a
/// serialization failure, a deadlock) is retried after a backoff without counting as an
/// attempt.
///
/// # Errors
/// When the database fails, or a dead letter keeps failing transiently (what was
/// re-driven before stays re-driven).
pub async fn redrive<H: Handler<Mode = Database>>(pool: &PgPool, handler: &H, ids: &[i64]) -> Result<Redriven> {
    redrive_with(pool, &PerMessage(handler), ids).await
}

/// [`redrive`] for a batch handler: each dead letter is handed to it as a batch of one, in
/// a transaction that also deletes the dead letter.
///
/// # Errors
/// As [`redrive`].
pub async fn redrive_batch<B: BatchHandler<Mode = Database>>(
    pool: &PgPool,
    handler: &B,
    ids: &[i64],
) -> Result<Redriven> {
    redrive_with(pool, &PerBatch(handler), ids).await
}

/// [`redrive`] for either kind of handler.
async fn redrive_with<W: Work<Mode = Database>>(pool: &PgPool, handler: &W, ids: &[i64]) -> Result<Redriven> {
    let subscription = handler.subscription();
    let mut outcome = Redriven::default();
    for id in ids {
        let mut backoff = Backoff::new();
        let mut tries = 0;
        loop {
            match redrive_one(pool, handler, &subscription, *id).await? {
                Attempt::Handled => outcome.handled.push(*id),
                Attempt::Gone => outcome.gone.push(*id),
                Attempt::Failed(error) => {
                    dead_letters::failed_again(pool, *id, &error).await?;
                    outcome.failed.push(*id);
                }
                Attempt::Transient { cause, location } if tries + 1 >= TRANSIENT_TRIES => {
                    return Err(Error::Handler { location, source: cause });
                }
                Attempt::Transient { cause, .. } => {
                    tracing::warn!(dead_letter = id, "re-drive failed transiently, trying again: {cause}");
                    tries += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
            break;
        }
    }
    Ok(outcome)
}

/// How one re-drive of one dead letter ended.
enum Attempt {
    Handled,
    Gone,
    /// Failed again, with this error: it stays, one attempt more.
    Failed(String),
    /// The database failed under the handler: try again, not counted.
    Transient {
        cause: Cause,
        location: Location,
    },
}

/// Re-drives the dead letter `id` once, in a transaction that deletes it if it is handled.
async fn redrive_one<W: Work<Mode = Database>>(
    pool: &PgPool,
    handler: &W,
    subscription: &Subscription,
    id: i64,
) -> Result<Attempt> {
    let mut tx = pool.begin().await?;
    let Some(letter) = dead_letters::lock(&mut tx, id, subscription.group()).await? else {
        return Ok(Attempt::Gone);
    };
    let headers = if subscription.reads_headers() { letter.headers.clone() } else { Vec::new() };
    let at = Coordinates {
        topic: letter.topic.clone(),
        partition: letter.partition,
        offset: letter.offset,
        timestamp: None,
    };
    let message = match decode_parts::<W>(letter.key.as_deref(), letter.payload.as_deref(), headers, at) {
        Decoded::Failed { part, error } => return Ok(Attempt::Failed(format!("cannot decode the {part}: {error}"))),
        Decoded::Message(message) => message,
    };
    let call = Call {
        group: &letter.group,
        topic: &letter.topic,
        partition: letter.partition,
        offset: letter.offset,
        attempt: u32::try_from(letter.attempts).unwrap_or(0) + 1,
        parent: None,
    };
    let trace = TraceContext::from_headers(letter.headers.iter().map(|(name, value)| (name.as_str(), value.as_ref())));
    let mut cx = Context::new(&mut tx, subscription.outputs());
    let entry = Entry { message: &message, call, trace };
    match handler.run(std::slice::from_ref(&entry), &mut cx).await.into_outcome() {
        Outcome::Handled => {
            dead_letters::delete(&mut tx, id).await?;
            tx.commit().await?;
            Ok(Attempt::Handled)
        }
        Outcome::Transient(cause) => Ok(Attempt::Transient { cause, location: call.location() }),
        Outcome::Failed { cause, .. } => Ok(Attempt::Failed(cause.to_string())),
    }
}
