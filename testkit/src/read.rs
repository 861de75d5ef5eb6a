//! Reading a whole topic back, to check what a test wrote.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::names::unique;

/// Which records a reader sees: Kafka's `isolation.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Only records of committed transactions (and non-transactional ones).
    ReadCommitted,
    /// Every record written, aborted transactions included.
    ReadUncommitted,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its payload, if any.
    pub payload: Option<Vec<u8>>,
    /// Its headers (a null value read as empty).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ReadRecord {
    /// The value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Reads every partition of `topic` from the beginning to its end (the last stable offset
/// under [`Isolation::ReadCommitted`]), as librdkafka reports it with partition EOF events.
pub async fn read_to_end(
    config: ClientConfig,
    topic: &str,
    isolation: Isolation,
    timeout: Duration,
) -> anyhow::Result<Vec<ReadRecord>> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let level = match isolation {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        };
        let consumer: BaseConsumer = config
            .clone()
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", level)
            .create()
            .context("cannot create a reader")?;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let partitions: Vec<i32> =
            metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        if partitions.is_empty() {
            bail!("topic {topic} has no partitions");
        }
        let mut assignment = TopicPartitionList::new();
        for partition in &partitions {
            assignment.add_partition_offset(&topic, *partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let mut at_end = HashSet::new();
        let mut records = Vec::new();
        let deadline = Instant::now() + timeout;
        while at_end.len() < partitions.len() {
            if Instant::now() > deadline {
                bail!("reading {topic} did not reach the end of every partition within {timeout:?}");
            }
            match consumer.poll(Duration::from_millis(500)) {
                None => {}
                Some(Ok(message)) => {
                    at_end.remove(&message.partition());
                    records.push(ReadRecord {
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().map(<[u8]>::to_vec),
                        headers: message
                            .headers()
                            .map(|h| {
                                h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect()
                            })
                            .unwrap_or_default(),
                    });
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    at_end.insert(partition);
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure))) => {}
                Some(Err(e)) => return Err(e).context(format!("reading {topic}")),
            }
        }
        Ok(records)
    })
    .await?
}

/// Every record of `topic` a `read_committed` reader sees, read to the end.
pub async fn committed_records(config: ClientConfig, topic: &str) -> anyhow::Result<Vec<ReadRecord>> {
    read_to_end(config, topic, Isolation::ReadCommitted, Duration::from_secs(120)).await
}
