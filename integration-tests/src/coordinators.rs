//! Which broker of a cluster coordinates a consumer group or a transactional id, found the
//! way Kafka assigns them: the leader of the partition of `__consumer_offsets` (or
//! `__transaction_state`) that the id hashes to. librdkafka exposes no FindCoordinator, and
//! Kafka's own tools take seconds of JVM start per question.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};

use crate::{Kafka, unique};

/// The topic that holds consumer groups' offsets.
const GROUPS_TOPIC: &str = "__consumer_offsets";

/// The topic that holds transactions' state.
const TRANSACTIONS_TOPIC: &str = "__transaction_state";

/// Java's `String.hashCode` for an ASCII id.
fn java_hash(id: &str) -> i32 {
    id.encode_utf16().fold(0_i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

/// Kafka's `Utils.abs(id.hashCode()) % partitions`.
fn partition_for(id: &str, partitions: usize) -> i32 {
    let hash = java_hash(id);
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions as i32
}

/// The broker (1-based id) leading the partition of `topic` that `id` hashes to.
fn leader_for(kafka: &Kafka, topic: &str, id: &str) -> anyhow::Result<usize> {
    leader_of(kafka.client_config(), topic, |partitions| partition_for(id, partitions))
}

/// The broker (1-based id) leading `partition` of `topic` now.
///
/// # Errors
/// When the metadata cannot be read, or the partition has no leader.
pub fn partition_leader(kafka: &Kafka, topic: &str, partition: i32) -> anyhow::Result<usize> {
    leader_of(kafka.client_config(), topic, |_| partition)
}

/// The broker (1-based id) leading `partition` of `topic`, as broker `asked` sees it (a new
/// client's first metadata request goes to its bootstrap broker).
///
/// # Errors
/// As [`partition_leader`].
pub fn partition_leader_seen_by(kafka: &Kafka, asked: usize, topic: &str, partition: i32) -> anyhow::Result<usize> {
    let mut config = kafka.client_config();
    config.set("bootstrap.servers", kafka.broker_address(asked)?);
    leader_of(config, topic, |_| partition)
}

/// The broker leading the partition of `topic` that `pick` chooses from the partition count.
fn leader_of(config: ClientConfig, topic: &str, pick: impl FnOnce(usize) -> i32) -> anyhow::Result<usize> {
    let probe: BaseConsumer = config.clone().set("group.id", unique("coordinators")).create()?;
    let metadata = probe.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata.topics().first().map(|t| t.partitions()).unwrap_or_default();
    anyhow::ensure!(!partitions.is_empty(), "{topic} does not exist yet");
    let wanted = pick(partitions.len());
    let leader = partitions.iter().find(|p| p.id() == wanted).map(|p| p.leader());
    match leader {
        Some(leader) if leader > 0 => Ok(usize::try_from(leader)?),
        _ => anyhow::bail!("{topic} partition {wanted} has no leader now"),
    }
}

/// The broker coordinating consumer group `group`.
pub fn group_coordinator(kafka: &Kafka, group: &str) -> anyhow::Result<usize> {
    leader_for(kafka, GROUPS_TOPIC, group)
}

/// The broker coordinating the transactions of `transactional_id`.
pub fn transaction_coordinator(kafka: &Kafka, transactional_id: &str) -> anyhow::Result<usize> {
    leader_for(kafka, TRANSACTIONS_TOPIC, transactional_id)
}

/// Makes the cluster create both internal topics, which Kafka does on first use: a group
/// looks up its offsets and a transactional producer initialises.
pub fn create_internal_topics(kafka: &Kafka) -> anyhow::Result<()> {
    let consumer: BaseConsumer = kafka.client_config().set("group.id", unique("first-group")).create()?;
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions.add_partition("coordinators-probe", 0);
    let _ = consumer.committed_offsets(partitions, Duration::from_secs(30));
    let producer: BaseProducer = kafka.client_config().set("transactional.id", unique("first-tx")).create()?;
    producer.init_transactions(Duration::from_secs(60))?;
    Ok(())
}

/// A transactional id starting with `prefix` whose coordinator is `broker`.
pub fn transactional_id_coordinated_by(kafka: &Kafka, prefix: &str, broker: usize) -> anyhow::Result<String> {
    for attempt in 0..1_000 {
        let id = format!("{prefix}-{attempt}");
        if transaction_coordinator(kafka, &id)? == broker {
            return Ok(id);
        }
    }
    anyhow::bail!("no transactional id {prefix}-N is coordinated by broker {broker}")
}

/// The brokers coordinating `group` and `transactional_id` as Kafka's own tools describe
/// them, asked from inside broker `via`. A JVM start per question: used to confirm
/// [`group_coordinator`] and [`transaction_coordinator`], not instead of them.
pub async fn described_coordinators(
    kafka: &Kafka,
    via: usize,
    group: &str,
    transactional_id: &str,
) -> anyhow::Result<(usize, usize)> {
    let script = "/opt/kafka/bin/kafka-consumer-groups.sh --bootstrap-server localhost:19092 --describe --state \
                    --group \"$GROUP\" && echo '--' && \
                  /opt/kafka/bin/kafka-transactions.sh --bootstrap-server localhost:19092 describe \
                    --transactional-id \"$TRANSACTIONAL_ID\"";
    let env = [("GROUP", group), ("TRANSACTIONAL_ID", transactional_id)];
    let (code, output) = kafka.broker(via).exec(script, &env).await?;
    anyhow::ensure!(code == 0, "describing the coordinators failed (exit {code}):\n{output}");
    let (groups, transactions) = output.split_once("\n--\n").unwrap_or((output.as_str(), ""));
    // `GROUP  COORDINATOR (ID) ...` then `<group>  <host>:<port> (<id>) ...`
    let group_line = groups.lines().find(|l| l.starts_with(group));
    let group_at = group_line.and_then(|l| l.split_once('(')).and_then(|(_, rest)| rest.split_once(')'));
    // `CoordinatorId  TransactionalId ...` then `<id>  <transactional id> ...`
    let transaction_line = transactions.lines().find(|l| l.contains(transactional_id));
    let transactions_at = transaction_line.and_then(|l| l.split_whitespace().next());
    match (group_at, transactions_at) {
        (Some((group_at, _)), Some(transactions_at)) => Ok((group_at.trim().parse()?, transactions_at.parse()?)),
        _ => anyhow::bail!("cannot read the coordinators from:\n{output}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_as_java_does() {
        // Values of "".hashCode(), "a".hashCode(), "group".hashCode() in Java.
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("group"), 98_629_247);
        assert_eq!(partition_for("group", 4), 98_629_247 % 4);
    }
}
