//! The Kafka calls the commands make: group membership, partitions and their ends,
//! committed offsets, offsets for a time, the record where an open transaction starts,
//! and fencing a transactional id.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::{Context, Error};

const TIMEOUT: Duration = Duration::from_secs(15);

/// A consumer for metadata and offsets: never joins a group, never commits by itself.
fn observer(config: &ClientConfig, group: &str, isolation: &str) -> Result<BaseConsumer, Error> {
    config
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .context(|| "cannot create a Kafka client".to_owned())
}

/// The state of `group` (`Stable`, `Empty`, `Dead` when unknown, ...) and its live members,
/// under either group protocol. `DescribeGroups`, which librdkafka's group list sends, knows
/// only classic groups and says `Dead` of a group of the consumer protocol (KIP-848), live
/// members or not: such a group is asked about with `ConsumerGroupDescribe` (whenever the
/// tool can log in itself: not with SASL GSSAPI or OAUTHBEARER, where it stays `Dead`).
pub(crate) fn group_state(config: &ClientConfig, group: &str) -> Result<(String, usize), Error> {
    let client = observer(config, "exactly-cli", "read_committed")?;
    let list = client.fetch_group_list(Some(group), TIMEOUT).context(|| format!("cannot describe group {group}"))?;
    let classic =
        list.groups().first().map_or_else(|| ("Dead".to_owned(), 0), |g| (g.state().to_owned(), g.members().len()));
    let unknown = classic.1 == 0 && matches!(classic.0.as_str(), "Dead" | "");
    if !unknown || !crate::admin::usable(config) {
        return Ok(classic);
    }
    Ok(crate::admin::consumer_group(config, group)?.unwrap_or(classic))
}

/// The partitions of `topic`, in order.
pub(crate) fn partitions(config: &ClientConfig, topic: &str) -> Result<Vec<i32>, Error> {
    let client = observer(config, "exactly-cli", "read_committed")?;
    let metadata =
        client.fetch_metadata(Some(topic), TIMEOUT).context(|| format!("cannot read the metadata of {topic}"))?;
    let mut partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions.sort_unstable();
    if partitions.is_empty() {
        return Err(Error::NotFound(format!("topic {topic} does not exist (or has no partitions)")));
    }
    Ok(partitions)
}

/// The ends of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ends {
    /// The first offset still in the log.
    pub(crate) low: i64,
    /// The last stable offset: the end a read_committed reader sees.
    pub(crate) stable: i64,
    /// The high watermark: the end of the log, open transactions included.
    pub(crate) high: i64,
}

/// The ends of each partition of `topic` named in `partitions`.
pub(crate) fn ends(config: &ClientConfig, topic: &str, partitions: &[i32]) -> Result<Vec<(i32, Ends)>, Error> {
    let committed = observer(config, "exactly-cli", "read_committed")?;
    let uncommitted = observer(config, "exactly-cli", "read_uncommitted")?;
    partitions
        .iter()
        .map(|&partition| {
            let what = || format!("cannot read the ends of {topic}/{partition}");
            let (low, stable) = committed.fetch_watermarks(topic, partition, TIMEOUT).context(what)?;
            let (_, high) = uncommitted.fetch_watermarks(topic, partition, TIMEOUT).context(what)?;
            Ok((partition, Ends { low, stable, high }))
        })
        .collect()
}

/// The offsets `group` committed in `topic` (`None` where it has none).
pub(crate) fn committed(
    config: &ClientConfig,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, Option<i64>)>, Error> {
    let client = observer(config, group, "read_committed")?;
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition(topic, *partition);
    }
    let committed = client
        .committed_offsets(list, TIMEOUT)
        .context(|| format!("cannot read the offsets group {group} committed in {topic}"))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(offset) => (e.partition(), Some(offset)),
            _ => (e.partition(), None),
        })
        .collect())
}

/// Commits `offsets` for `group` in `topic`; Kafka accepts it only while the group has no
/// members.
pub(crate) fn commit(config: &ClientConfig, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<(), Error> {
    let client = observer(config, group, "read_committed")?;
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .context(|| format!("offset {offset} is not valid for {topic}/{partition}"))?;
    }
    client
        .commit(&list, rdkafka::consumer::CommitMode::Sync)
        .context(|| format!("cannot commit offsets for group {group} in {topic}"))
}

/// For each partition, the first offset whose timestamp is at or after `millis` (the high
/// watermark when there is none).
pub(crate) fn offsets_for_time(
    config: &ClientConfig,
    topic: &str,
    partitions: &[i32],
    millis: i64,
) -> Result<Vec<(i32, i64)>, Error> {
    let client = observer(config, "exactly-cli", "read_committed")?;
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        list.add_partition_offset(topic, *partition, Offset::Offset(millis))
            .context(|| format!("cannot look up {topic}/{partition}"))?;
    }
    let found =
        client.offsets_for_times(list, TIMEOUT).context(|| format!("cannot look up offsets by time in {topic}"))?;
    found
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(offset) => Ok((e.partition(), offset)),
            _ => {
                let (_, high) = client
                    .fetch_watermarks(topic, e.partition(), TIMEOUT)
                    .context(|| format!("cannot read the end of {topic}/{}", e.partition()))?;
                Ok((e.partition(), high))
            }
        })
        .collect()
}

/// The timestamp (ms since the epoch) of the record at `offset`, read uncommitted: where
/// an open transaction starts, the last stable offset, it is that transaction's first.
/// `None` when it cannot be read in time, or may not be read: reading needs Read on the
/// topic and Describe on the group `exactly-cli`, which the tool's read-only ACLs do not give.
pub(crate) fn timestamp_at(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<i64>, Error> {
    let client = observer(config, "exactly-cli", "read_uncommitted")?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset))
        .context(|| format!("cannot read {topic}/{partition}"))?;
    client.assign(&list).context(|| format!("cannot read {topic}/{partition}"))?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        match client.poll(Duration::from_millis(200)) {
            Some(Ok(message)) if message.offset() >= offset => return Ok(message.timestamp().to_millis()),
            Some(Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::GroupAuthorizationFailed,
            ))) => return Ok(None),
            Some(Err(e)) => return Err(e).context(|| format!("cannot read {topic}/{partition} at {offset}")),
            _ => {}
        }
    }
    Ok(None)
}

/// Fences `transactional_id`: initialising a producer with it makes the coordinator abort
/// (or finish committing) whatever the previous holder left open, and bumps the epoch so
/// the previous holder can no longer commit.
pub(crate) fn fence(config: &ClientConfig, transactional_id: &str) -> Result<(), Error> {
    let producer: BaseProducer = config
        .clone()
        .set("transactional.id", transactional_id)
        .create()
        .context(|| "cannot create a Kafka producer".to_owned())?;
    producer
        .init_transactions(Duration::from_secs(60))
        .context(|| format!("cannot fence transactional id {transactional_id}"))
}
