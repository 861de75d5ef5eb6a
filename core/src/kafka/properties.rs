//! The librdkafka properties a user gives, checked against the guarantee before any client
//! is made, and the consumer and producer configurations made from them.
//!
//! The consumer group protocol is one of those properties (`group.protocol`, which
//! [`RuntimeBuilder::group_protocol`](crate::RuntimeBuilder::group_protocol) sets): under the
//! consumer protocol the settings librdkafka refuses with it are refused here first, with
//! what to use instead, and consumers are made without them. The clients made from the same
//! properties that never subscribe (the start check, the lag client, the relay's position
//! reader, which assigns its partitions itself) speak the same protocol: without a
//! subscription librdkafka sends no group heartbeat under either, so it makes no difference
//! to them.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

use super::group_protocol::GroupProtocol;
use crate::error::{Error, Result};
use crate::redact;

/// librdkafka properties given by the user, checked before any client is made.
#[derive(Clone, Default)]
pub(crate) struct KafkaProperties {
    properties: BTreeMap<String, String>,
    producer: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProperties")
            .field("properties", &redact::Properties(&self.properties))
            .field("producer", &redact::Properties(&self.producer))
            .finish()
    }
}

/// Properties the runtime sets on every consumer: the guarantee depends on them.
const CONSUMER_FIXED: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("isolation.level", "read_committed"),
    ("auto.offset.reset", "error"),
];

/// How long librdkafka waits before fetching again for a partition whose prefetch queue
/// was full (a default; yours wins). At librdkafka's default, 1000 ms, a consumer that
/// drains its queue faster than that waits on an empty one: in benchmark S3 the Kafka-mode
/// copy ran at about 75 000 msg/s (1 KB) and 125 000 (100 B) with it, and about 160 000 and
/// 470 000 with 20 ms. Checking a full queue 50 times a second costs next to nothing.
const FETCH_QUEUE_BACKOFF: (&str, &str) = ("fetch.queue.backoff.ms", "20");

/// The consumer properties librdkafka refuses under the consumer group protocol (KIP-848
/// moved them to the broker), each with why and what to use instead.
const MOVED_TO_THE_BROKER: &[(&str, &str)] = &[
    (
        "session.timeout.ms",
        "the broker gives every member its session timeout; set the broker's \
         `group.consumer.session.timeout.ms` (or the group's `consumer.session.timeout.ms`) instead",
    ),
    (
        "heartbeat.interval.ms",
        "the broker tells every member how often to heartbeat; set the broker's \
         `group.consumer.heartbeat.interval.ms` (or the group's `consumer.heartbeat.interval.ms`) instead",
    ),
    (
        "partition.assignment.strategy",
        "the broker assigns the partitions; choose its assignor with `group.remote.assignor` \
         (`uniform` or `range`) instead",
    ),
    (
        "group.protocol.type",
        "it names the embedded protocol of a classic group, which a group of the consumer protocol \
         does not have; leave it out",
    ),
];

/// Client properties that only consumers read; not copied to the producer.
fn consumer_only(key: &str) -> bool {
    key.starts_with("fetch.")
        || matches!(
            key,
            "group.instance.id"
                | "session.timeout.ms"
                | "heartbeat.interval.ms"
                | "max.poll.interval.ms"
                | "partition.assignment.strategy"
                | "isolation.level"
                | "enable.auto.commit"
                | "enable.auto.offset.store"
                | "auto.offset.reset"
                | "auto.commit.interval.ms"
                | "enable.partition.eof"
                | "queued.min.messages"
                | "queued.max.messages.kbytes"
                | "group.protocol"
                | "group.protocol.type"
                | "group.remote.assignor"
        )
}

impl KafkaProperties {
    pub(crate) fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.properties.insert(key.into(), value.into());
    }

    pub(crate) fn set_producer(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.producer.insert(key.into(), value.into());
    }

    /// The consumer group protocol the group consumers speak: `group.protocol` as given,
    /// classic when it is not (a value [`check`](Self::check) refuses counts as classic).
    pub(crate) fn group_protocol(&self) -> GroupProtocol {
        let given = self.properties.get("group.protocol").map(String::as_str);
        given.and_then(GroupProtocol::from_setting).unwrap_or_default()
    }

    /// Refuses producer properties that would break exactly-once output, with the reason.
    pub(crate) fn check_producer(&self, commit_interval: Duration) -> Result<()> {
        for (key, value) in self.producer.iter().chain(self.properties.iter().filter(|(k, _)| !consumer_only(k))) {
            let normalized = value.trim().to_ascii_lowercase();
            let refuse = |reason| Err(Error::unsafe_setting(key, value, reason));
            match key.as_str() {
                "acks" | "request.required.acks" if !matches!(normalized.as_str(), "all" | "-1") => {
                    return refuse(
                        "a record acknowledged by fewer than all in-sync replicas is lost when the leader \
                         fails; transactions need acks=all",
                    );
                }
                "enable.idempotence" if normalized != "true" => {
                    return refuse("without idempotence a retried send can write a record twice");
                }
                "max.in.flight.requests.per.connection" | "max.in.flight"
                    if normalized.parse::<u32>().is_ok_and(|n| n > 5) =>
                {
                    return refuse("an idempotent producer keeps order only with at most 5 requests in flight");
                }
                "transactional.id" => {
                    return refuse("set it with `transactional_id(...)`: the runtime derives one per group from it");
                }
                "transaction.timeout.ms" => {
                    let floor = commit_interval + Duration::from_secs(10);
                    if normalized.parse::<u64>().map_or(true, |ms| Duration::from_millis(ms) < floor) {
                        return refuse(
                            "Kafka aborts a transaction open longer than this, and one stays open for the \
                             commit interval plus the commit itself: allow at least the commit interval + 10 s",
                        );
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The configuration of the transactional producer with `transactional_id`.
    pub(crate) fn producer(&self, transactional_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in self.properties.iter().filter(|(k, _)| !consumer_only(k)) {
            config.set(key, value);
        }
        for (key, value) in &self.producer {
            config.set(key, value);
        }
        config.set("enable.idempotence", "true");
        config.set("acks", "all");
        config.set("transactional.id", transactional_id);
        config
    }

    /// Refuses every property that would break the exactly-once guarantee, with the reason.
    pub(crate) fn check(&self) -> Result<()> {
        for (key, value) in &self.properties {
            let normalized = value.trim().to_ascii_lowercase();
            let refuse = |reason| Err(Error::unsafe_setting(key, value, reason));
            match key.as_str() {
                "enable.auto.commit" if normalized != "false" => {
                    return refuse(
                        "Kafka's auto-commit marks messages as done on a timer, before their effects commit; \
                         exactly commits each position in PostgreSQL with the effects instead",
                    );
                }
                "enable.auto.offset.store" if normalized != "false" => {
                    return refuse("offsets are stored by exactly after the database commit, never automatically");
                }
                "isolation.level" if normalized != "read_committed" => {
                    return refuse(
                        "read_uncommitted hands your handler records of Kafka transactions that may still \
                         abort, so their effects would outlive the records",
                    );
                }
                "auto.offset.reset" if normalized != "error" => {
                    return refuse(
                        "exactly positions every partition from PostgreSQL; an automatic reset would silently \
                         skip or replay messages. Use `start_from` for partitions with no stored position",
                    );
                }
                "group.id" => {
                    return refuse("each handler's group comes from its subscription (`#[exactly(group = ...)]`)");
                }
                "group.protocol" if GroupProtocol::from_setting(value).is_none() => {
                    return Err(Error::Config(format!(
                        "`group.protocol` = `{value}` is not a consumer group protocol: use \
                         `group_protocol(GroupProtocol::Classic)` or `group_protocol(GroupProtocol::Consumer)` \
                         (`classic` or `consumer`)"
                    )));
                }
                "enable.partition.eof" | "group.instance.id" => {}
                _ => {}
            }
        }
        if self.group_protocol() == GroupProtocol::Consumer {
            self.check_consumer_protocol()?;
        }
        if !self.properties.contains_key("bootstrap.servers") {
            return Err(Error::Config("no Kafka brokers: call `brokers(\"host:port,...\")`".into()));
        }
        Ok(())
    }

    /// Refuses the properties librdkafka refuses under the consumer group protocol: it would
    /// refuse to make the consumer only when the runtime runs, and without saying what to use
    /// instead.
    fn check_consumer_protocol(&self) -> Result<()> {
        match MOVED_TO_THE_BROKER.iter().find(|(key, _)| self.properties.contains_key(*key)) {
            Some((key, instead)) => Err(Error::Config(format!(
                "`{key}` is refused with the consumer group protocol (`GroupProtocol::Consumer`), as \
                 librdkafka refuses it there: {instead} (or keep the classic protocol)"
            ))),
            None => Ok(()),
        }
    }

    /// The configuration of a consumer for `group`: the user's properties, then the fixed ones.
    pub(crate) fn consumer(&self, group: &str) -> ClientConfig {
        self.consumer_with(group, &[FETCH_QUEUE_BACKOFF])
    }

    /// A Database-mode group's consumer. Its partitions have queues of their own, and then
    /// librdkafka applies `queued.max.messages.kbytes` to each queue rather than to the
    /// consumer: at the default (64 MiB) a process working through a backlog of 1 KB
    /// messages on 8 partitions peaked at 827 MiB (benchmark S6). A Database-mode batch
    /// commits a few thousand messages a second, so 4 MiB per partition is seconds of work.
    pub(crate) fn database_consumer(&self, group: &str) -> ClientConfig {
        self.consumer_with(group, &[("queued.max.messages.kbytes", "4096"), FETCH_QUEUE_BACKOFF])
    }

    /// A consumer of `group` with `defaults` under the user's properties and the fixed ones
    /// over them, speaking the group protocol they name.
    fn consumer_with(&self, group: &str, defaults: &[(&str, &str)]) -> ClientConfig {
        let protocol = self.group_protocol();
        let mut config = ClientConfig::new();
        match protocol {
            // Incremental rebalances: only the partitions that change owner stop.
            GroupProtocol::Classic => {
                config.set("partition.assignment.strategy", "cooperative-sticky");
            }
            // The broker assigns, always incrementally; librdkafka refuses the strategy.
            GroupProtocol::Consumer => {}
        }
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        // Named even when it is librdkafka's default, so a later default cannot change it.
        config.set("group.protocol", protocol.as_setting());
        for (key, value) in CONSUMER_FIXED {
            config.set(*key, *value);
        }
        config.set("group.id", group);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(key: &str, value: &str) -> KafkaProperties {
        let mut properties = KafkaProperties::default();
        properties.set("bootstrap.servers", "localhost:9092");
        properties.set(key, value);
        properties
    }

    #[test]
    fn consumers_fetch_again_soon_after_a_full_queue_unless_told_otherwise() {
        let defaults = KafkaProperties::default();
        for config in [defaults.consumer("g"), defaults.database_consumer("g")] {
            assert_eq!(config.get("fetch.queue.backoff.ms"), Some("20"));
        }
        assert_eq!(defaults.database_consumer("g").get("queued.max.messages.kbytes"), Some("4096"));
        let mine = with("fetch.queue.backoff.ms", "500");
        for config in [mine.consumer("g"), mine.database_consumer("g")] {
            assert_eq!(config.get("fetch.queue.backoff.ms"), Some("500"), "the user's value wins");
        }
        assert_eq!(mine.producer("tx").get("fetch.queue.backoff.ms"), None, "a consumer setting");
    }

    #[test]
    fn refuses_producer_settings_that_break_exactly_once_output() {
        for (key, value) in [
            ("acks", "1"),
            ("acks", "0"),
            ("enable.idempotence", "false"),
            ("max.in.flight.requests.per.connection", "10"),
            ("transaction.timeout.ms", "5000"),
            ("transactional.id", "mine"),
        ] {
            let mut properties = KafkaProperties::default();
            properties.set_producer(key, value);
            let error = properties.check_producer(Duration::from_millis(100)).err().map(|e| e.to_string());
            assert!(error.is_some_and(|e| e.contains(key) && e.contains("refused")), "{key}={value} accepted");
        }
        let mut fine = KafkaProperties::default();
        fine.set_producer("acks", "all");
        fine.set_producer("transaction.timeout.ms", "60000");
        assert!(fine.check_producer(Duration::from_millis(100)).is_ok());
        let producer = fine.producer("tx-1");
        assert_eq!(producer.get("transactional.id"), Some("tx-1"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn refuses_settings_that_break_the_guarantee() {
        for (key, value) in [
            ("enable.auto.commit", "true"),
            ("enable.auto.offset.store", "true"),
            ("isolation.level", "read_uncommitted"),
            ("auto.offset.reset", "earliest"),
            ("group.id", "x"),
        ] {
            let error = with(key, value).check().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(key) && error.contains("refused"), "{key}={value} was accepted: {error}");
        }
        assert!(with("isolation.level", "read_committed").check().is_ok());
        assert!(with("client.id", "me").check().is_ok());
        assert!(KafkaProperties::default().check().is_err(), "no brokers must be an error");
    }

    #[test]
    fn consumers_name_their_group_protocol_and_speak_classic_unless_told_otherwise() {
        let classic = with("client.id", "me");
        assert_eq!(classic.group_protocol(), GroupProtocol::Classic);
        for config in [classic.consumer("g"), classic.database_consumer("g")] {
            assert_eq!(config.get("group.protocol"), Some("classic"), "named, not left to librdkafka's default");
            assert_eq!(config.get("partition.assignment.strategy"), Some("cooperative-sticky"));
        }
        let range = with("partition.assignment.strategy", "range").consumer("g");
        assert_eq!(range.get("partition.assignment.strategy"), Some("range"), "the user's strategy wins");

        let consumer = with("group.protocol", " Consumer ");
        assert_eq!(consumer.group_protocol(), GroupProtocol::Consumer);
        assert!(consumer.check().is_ok());
        for config in [consumer.consumer("g"), consumer.database_consumer("g")] {
            assert_eq!(config.get("group.protocol"), Some("consumer"));
            for (key, _) in MOVED_TO_THE_BROKER {
                assert_eq!(config.get(key), None, "librdkafka refuses {key} under the consumer protocol");
            }
            assert_eq!(config.get("isolation.level"), Some("read_committed"), "the fixed ones stay");
            assert_eq!(config.get("group.id"), Some("g"));
        }
        assert_eq!(consumer.producer("tx").get("group.protocol"), None, "a consumer setting");

        let mut assignor = with("group.protocol", "consumer");
        assignor.set("group.remote.assignor", "range");
        assert!(assignor.check().is_ok(), "the broker's assignor is chosen this way");
        assert_eq!(assignor.consumer("g").get("group.remote.assignor"), Some("range"));
    }

    #[test]
    fn the_consumer_protocol_refuses_the_settings_it_moved_to_the_broker_saying_what_to_use() {
        for (key, value, instead) in [
            ("session.timeout.ms", "6000", "`group.consumer.session.timeout.ms`"),
            ("heartbeat.interval.ms", "1000", "`group.consumer.heartbeat.interval.ms`"),
            ("partition.assignment.strategy", "cooperative-sticky", "`group.remote.assignor`"),
            ("group.protocol.type", "consumer", "leave it out"),
        ] {
            let mut properties = with("group.protocol", "consumer");
            properties.set(key, value);
            let error = properties.check().err();
            assert!(matches!(error, Some(Error::Config(_))), "{key} accepted, or refused otherwise: {error:?}");
            let error = error.map(|e| e.to_string()).unwrap_or_default();
            let refused = format!("`{key}` is refused with the consumer group protocol");
            assert!(error.contains(&refused) && error.contains(instead), "{error}");
            let mut classic = with("group.protocol", "classic");
            classic.set(key, value);
            assert!(classic.check().is_ok(), "{key} refused under the classic protocol");
        }
        let unknown = with("group.protocol", "streams").check().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(unknown.contains("`streams` is not a consumer group protocol"), "{unknown}");
    }

    /// librdkafka makes the consumers made under either protocol, and refuses, under the
    /// consumer protocol, each setting `check` refuses: the list is librdkafka's.
    #[test]
    fn librdkafka_takes_the_consumers_made_and_refuses_what_check_refuses() {
        use rdkafka::consumer::BaseConsumer;
        use rdkafka::error::KafkaResult;

        // Without a group the client leaves none when dropped: nothing waits on a broker.
        let create = |mut config: ClientConfig| -> KafkaResult<BaseConsumer> { config.remove("group.id").create() };
        for protocol in ["classic", "consumer"] {
            let properties = with("group.protocol", protocol);
            for config in [properties.consumer("g"), properties.database_consumer("g")] {
                let created = create(config);
                assert!(created.is_ok(), "{protocol}: {:?}", created.err());
            }
        }
        for (key, value) in [
            ("session.timeout.ms", "45000"),
            ("heartbeat.interval.ms", "3000"),
            ("partition.assignment.strategy", "range"),
            ("group.protocol.type", "consumer"),
        ] {
            assert!(MOVED_TO_THE_BROKER.iter().any(|(moved, _)| *moved == key), "{key} is not refused by check");
            let mut config = with("group.protocol", "consumer").consumer("g");
            config.set(key, value);
            let refused = create(config).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(refused.contains(key), "librdkafka took {key} under the consumer protocol: {refused}");
        }
    }
}
