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
    output.payload.clone_from(&letter.raw.payload);
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

/// Properties of the dead-letter record over generated records: the original goes on byte
/// for byte, and the `exactly.*` headers after it say where it was and why it failed.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::store::record::RawRecord;

    fn raw() -> impl Strategy<Value = RawRecord> {
        let bytes = || prop::collection::vec(any::<u8>(), 0..16);
        let header = (any::<String>(), prop::option::of(bytes()));
        (prop::option::of(bytes()), prop::option::of(bytes()), prop::collection::vec(header, 0..5))
            .prop_map(|(key, payload, headers)| RawRecord { key, payload: payload.map(Into::into), headers })
    }

    fn location() -> impl Strategy<Value = Location> {
        (any::<String>(), any::<String>(), any::<i32>(), any::<i64>())
            .prop_map(|(group, topic, partition, offset)| Location { group, topic, partition, offset })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_dead_letter_record_is_the_original_and_where_and_why_it_failed(
            raw in raw(),
            at in location(),
            error in any::<String>(),
            attempts in any::<u32>(),
            topic in any::<String>(),
        ) {
            let output = record(&topic, &Letter { at: &at, raw: &raw, error: &error, attempts });
            prop_assert_eq!(&output.topic, &topic);
            prop_assert_eq!(output.key.as_deref(), raw.key.as_deref());
            prop_assert_eq!(output.payload.as_deref(), raw.payload.as_deref());
            let original: Vec<(String, Vec<u8>)> =
                raw.headers.iter().map(|(name, value)| (name.clone(), value.clone().unwrap_or_default())).collect();
            let (given, added) = output.headers.split_at(original.len().min(output.headers.len()));
            prop_assert_eq!(given, &original[..]);
            let added: Vec<(&str, String)> =
                added.iter().map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value).into_owned())).collect();
            prop_assert_eq!(added, vec![
                ("exactly.error", error.clone()),
                ("exactly.attempts", attempts.to_string()),
                ("exactly.group", at.group.clone()),
                ("exactly.topic", at.topic.clone()),
                ("exactly.partition", at.partition.to_string()),
                ("exactly.offset", at.offset.to_string()),
            ]);
        }
    }
}
