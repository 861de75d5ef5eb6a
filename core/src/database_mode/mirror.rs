//! A partition's position as Kafka sees it: the stored position copied to the group's
//! committed offsets, for lag tools, and the consumer's own position, which passes
//! records it never delivers (transaction markers, aborted records).

use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use super::consumer::GroupConsumer;
use crate::store::offsets::PartitionKey;

/// How often, at most, a partition's position is copied to Kafka's committed offsets. Each
/// copy is an OffsetCommit request to the group coordinator, on the connection that also
/// carries the heartbeats: one per batch, with batches of one message, queues thousands of
/// requests ahead of the heartbeats, and the session expires.
const MIRROR_INTERVAL: Duration = Duration::from_secs(1);

/// The consumer's position in the partition of `key`: the offset after the last record it
/// delivered or skipped.
pub(super) fn consumer_position(consumer: &GroupConsumer, key: &PartitionKey) -> Option<i64> {
    let positions = consumer.position().ok()?;
    match positions.find_partition(&key.topic, key.partition).map(|element| element.offset()) {
        Some(Offset::Offset(position)) => Some(position),
        _ => None,
    }
}

/// Copies a partition's position to Kafka's committed offsets, for lag tools only (the
/// database stays the source of truth): at most every [`MIRROR_INTERVAL`].
pub(super) struct Mirror {
    key: PartitionKey,
    /// When the position was last copied, and which.
    copied: Option<(Instant, i64)>,
}

impl Mirror {
    pub(super) fn new(key: PartitionKey) -> Self {
        Self { key, copied: None }
    }

    /// When the position `next` is due to be copied, if it was not yet.
    pub(super) fn due(&self, next: i64) -> Option<Instant> {
        match self.copied {
            Some((_, offset)) if offset == next => None,
            Some((at, _)) => Some(at + MIRROR_INTERVAL),
            None => Some(Instant::now()),
        }
    }

    /// Copies `next` if it is due, or at once if `now`.
    pub(super) fn copy(&mut self, consumer: &GroupConsumer, next: i64, now: bool) {
        match self.due(next) {
            None => return,
            Some(due) if !now && due > Instant::now() => return,
            Some(_) => {}
        }
        let mut tpl = TopicPartitionList::new();
        if tpl.add_partition_offset(&self.key.topic, self.key.partition, Offset::Offset(next)).is_ok()
            && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!("mirroring the position to Kafka failed (harmless): {e}");
        }
        self.copied = Some((Instant::now(), next));
    }
}
