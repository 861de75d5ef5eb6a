//! How far a system under measurement has come: the sum of the next offsets it has made
//! durable, read from where that system keeps them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;

/// Where a system's durable progress can be read.
#[derive(Clone)]
pub(crate) enum Progress {
    /// Offsets committed to Kafka by a consumer group (transactional ones included once
    /// their transaction commits).
    Committed { consumer: Arc<BaseConsumer>, partitions: TopicPartitionList },
    /// exactly's stored positions (Database mode).
    Stored { pool: PgPool, group: String },
    /// The plain loop's own `bench_positions` table.
    Upserted { pool: PgPool, group: String },
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Committed { .. } => "Progress::Committed",
            Self::Stored { .. } => "Progress::Stored",
            Self::Upserted { .. } => "Progress::Upserted",
        })
    }
}

impl Progress {
    /// The offsets group `group` commits for `topic`'s `partitions` partitions.
    pub(crate) fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .context("cannot create the progress reader")?;
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions {
            list.add_partition_offset(topic, partition, Offset::Invalid)?;
        }
        Ok(Self::Committed { consumer: Arc::new(consumer), partitions: list })
    }

    /// Messages made durable so far (every input starts at offset 0).
    pub(crate) async fn done(&self) -> anyhow::Result<i64> {
        match self {
            Self::Committed { consumer, partitions } => {
                let (consumer, partitions) = (Arc::clone(consumer), partitions.clone());
                let committed = tokio::task::spawn_blocking(move || {
                    consumer.committed_offsets(partitions, Duration::from_secs(10))
                })
                .await??;
                Ok(committed.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0).max(0)).sum())
            }
            Self::Stored { pool, group } => Ok(sqlx::query_scalar(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM exactly.offsets WHERE group_id = $1",
            )
            .bind(group)
            .fetch_one(pool)
            .await?),
            Self::Upserted { pool, group } => Ok(sqlx::query_scalar(
                "SELECT coalesce(sum(next_offset), 0)::bigint FROM bench_positions WHERE group_id = $1",
            )
            .bind(group)
            .fetch_one(pool)
            .await?),
        }
    }
}
