//! Where a message goes when it cannot be handled: the table `exactly.dead_letters`, or a
//! dead-letter topic (through the outbox in Database mode, in the open transaction in
//! Kafka mode), as the original record plus headers saying what failed.

use sqlx::PgConnection;

use crate::api::output::Output;
use crate::error::{Location, Result};
use crate::store::dead_letters::{self, Letter};

/// Writes `letter` through the caller's transaction: to `exactly.dead_letters`, or to
/// `topic` through the outbox. Writing it twice keeps one.
pub(crate) async fn write(tx: &mut PgConnection, letter: &Letter<'_>, topic: Option<&str>) -> Result<()> {
    let Some(topic) = topic else { return dead_letters::insert(tx, letter).await };
    crate::store::outbox::insert(tx, &record(topic, letter).row()).await?;
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

/// A message moved to the dead letters: what [`RuntimeBuilder::on_dead_letter`](crate::RuntimeBuilder::on_dead_letter)
/// is called with. Its partition has gone on past it; the dead letter holds the original
/// record (see [`dead_letters`](crate::dead_letters)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLettered {
    /// Where the message was.
    pub location: Location,
    /// How many times it was tried (1 for a message that could not be decoded, or that
    /// failed for good at its first try).
    pub attempts: u32,
    /// Why it failed last.
    pub reason: String,
}

impl std::fmt::Display for DeadLettered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dead-lettered {} after {} attempt(s): {}", self.location, self.attempts, self.reason)
    }
}
