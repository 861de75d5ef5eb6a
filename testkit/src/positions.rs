//! Where a group stands: the positions it stored (in PostgreSQL in Database mode, in Kafka's
//! committed offsets in Kafka mode), the ends of a topic's partitions, and the wait until the
//! first reach the second.
//!
//! Waiting on stored positions rather than on effects or on time is what makes a test both
//! quick and sure: a position is stored in the transaction of the effects before it, so once
//! every partition's position is at the end of the partition, every input has taken effect
//! and no later redelivery can happen.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::PgPool;

use crate::wait::{Check, wait_for};
use crate::{Kafka, unique};

/// Where a group's positions are stored: the runtime's mode.
#[derive(Debug, Clone, Copy)]
pub enum Store<'a> {
    /// Database mode: `exactly.offsets` in this database.
    Database(&'a PgPool),
    /// Kafka mode: the group's committed offsets.
    Kafka,
}

/// Waits until `group` has stored, for every partition of `topic`, a position at the end of
/// the partition (its high watermark): every input written so far has taken effect.
///
/// # Errors
/// [`Error::TimedOut`](crate::Error::TimedOut) after `timeout`, naming the partitions behind.
pub async fn caught_up(
    kafka: &Kafka,
    store: Store<'_>,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let config = kafka.client_config();
    wait_for(timeout, &format!("group {group} to catch up with {topic}"), || {
        let config = config.clone();
        async move {
            let look = async {
                let ends = high_watermarks(config, topic, "read_uncommitted")?;
                let partitions = i32::try_from(ends.len())?;
                let positions = match store {
                    Store::Database(pool) => stored_positions(pool, group, topic, partitions).await?,
                    Store::Kafka => CommittedOffsets::new(kafka, group, topic, partitions)?.per_partition()?,
                };
                anyhow::Ok((ends, positions))
            };
            match look.await {
                Ok((ends, positions)) if ends.iter().zip(&positions).all(|((_, end), at)| at >= end) => Check::Done(()),
                Ok((ends, positions)) => Check::NotYet(format!("positions {positions:?}, ends {ends:?}")),
                // A broker or database being restarted answers again soon: look again.
                Err(e) => Check::NotYet(format!("{e:#}")),
            }
        }
    })
    .await?;
    Ok(())
}

/// The end of every partition of `topic`, as a reader with `isolation` sees it: the high
/// watermark for `read_uncommitted`, the last stable offset for `read_committed`.
pub fn high_watermarks(config: ClientConfig, topic: &str, isolation: &str) -> anyhow::Result<Vec<(i32, i64)>> {
    let consumer: BaseConsumer =
        config.clone().set("group.id", unique("watermarks")).set("isolation.level", isolation).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut ends = Vec::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) = consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
        ends.push((partition.id(), high));
    }
    ends.sort_unstable();
    Ok(ends)
}

/// Reads the offsets a group committed to Kafka for a topic, without joining the group.
pub struct CommittedOffsets {
    consumer: BaseConsumer,
    partitions: TopicPartitionList,
}

impl std::fmt::Debug for CommittedOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommittedOffsets").field("partitions", &self.partitions).finish_non_exhaustive()
    }
}

impl CommittedOffsets {
    /// For `group` on partitions `0..partitions` of `topic`.
    pub fn new(kafka: &Kafka, group: &str, topic: &str, partitions: i32) -> anyhow::Result<Self> {
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions {
            list.add_partition(topic, partition);
        }
        // read_uncommitted: do not wait for offsets inside a transaction a killed copier left
        // open (require_stable would, until the next copier aborts it).
        let consumer =
            kafka.client_config().set("group.id", group).set("isolation.level", "read_uncommitted").create()?;
        Ok(Self { consumer, partitions: list })
    }

    /// The committed offset of each partition, in partition order (0 where none).
    pub fn per_partition(&self) -> anyhow::Result<Vec<i64>> {
        let committed = self.consumer.committed_offsets(self.partitions.clone(), Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(next) => next,
                _ => 0,
            })
            .collect())
    }

    /// Their sum: how many input offsets the group committed.
    pub fn sum(&self) -> anyhow::Result<u64> {
        Ok(self.per_partition()?.iter().map(|o| *o as u64).sum())
    }
}

/// The positions `group` stored in PostgreSQL for partitions `0..partitions` of `topic`
/// (0 where none).
pub async fn stored_positions(pool: &PgPool, group: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    let mut positions = Vec::new();
    for partition in 0..partitions {
        positions.push(exactly::offsets::position(pool, group, topic, partition).await?.unwrap_or(0));
    }
    Ok(positions)
}
