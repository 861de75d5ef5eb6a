//! The consumer group protocol, a setting of every group consumer. It is a Kafka client
//! setting (librdkafka's `group.protocol`), so it lives with the other client settings; the
//! crate root re-exports it.

/// The consumer group protocol every handler's consumer speaks (librdkafka's
/// `group.protocol`), set with [`RuntimeBuilder::group_protocol`](crate::RuntimeBuilder::group_protocol).
///
/// [`Classic`](Self::Classic) is the default, as it is librdkafka's (2.12). exactly names
/// the protocol on every group consumer, so a librdkafka whose default changes cannot
/// change it underneath you.
///
/// Either way each partition is fenced the same: in Database mode by its claim epoch in
/// PostgreSQL, in Kafka mode by the group generation (under `Consumer`, the member epoch)
/// that each transaction's offsets carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    /// The classic protocol (JoinGroup and SyncGroup): one member of the group computes the
    /// assignment, with `cooperative-sticky` unless you set `partition.assignment.strategy`
    /// (the eager `range` and `roundrobin` work too). The session timeout and heartbeat
    /// interval are client settings (`session.timeout.ms`, `heartbeat.interval.ms`).
    #[default]
    Classic,
    /// The consumer group protocol of KIP-848 (brokers of Apache Kafka 4.0 or later;
    /// librdkafka 2.12 or later, as bundled). What changes:
    ///
    /// - The broker assigns the partitions. Its assignor is `group.remote.assignor`
    ///   (`uniform` or `range`; unset, the broker picks), not `partition.assignment.strategy`.
    /// - Rebalances are always incremental: a member joining or leaving moves only the
    ///   partitions that change owner, and the others keep working through it.
    /// - The session timeout and heartbeat interval are set on the broker
    ///   (`group.consumer.session.timeout.ms`, 45 s by default and at least 45 s unless
    ///   `group.consumer.min.session.timeout.ms` is lowered, and
    ///   `group.consumer.heartbeat.interval.ms`, 5 s), or per group (`consumer.session.timeout.ms`,
    ///   `consumer.heartbeat.interval.ms`). librdkafka refuses `session.timeout.ms`,
    ///   `heartbeat.interval.ms`, `partition.assignment.strategy` and `group.protocol.type`
    ///   with this protocol, so [`build`](crate::RuntimeBuilder::build) refuses them, saying
    ///   what to use instead.
    /// - Static membership (`group.instance.id`) works the other way round: a member that
    ///   joins with the id of one still in the group is refused, not the older one. An
    ///   instance restarted after a crash is refused until the broker's session timeout has
    ///   removed its predecessor; the runtime then stops with
    ///   [`Error::KafkaConsumerFailed`](crate::Error::KafkaConsumerFailed), which says so,
    ///   and nothing is lost. Start it again once the session timeout has passed (a
    ///   supervisor whose restart delay is longer does so by itself). A clean shutdown
    ///   leaves the group, so a restart after one is not refused.
    Consumer,
}

impl GroupProtocol {
    /// Its value of librdkafka's `group.protocol`.
    pub(crate) fn as_setting(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }

    /// The protocol a value of `group.protocol` names, as librdkafka reads it (either case).
    pub(crate) fn from_setting(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "classic" => Some(GroupProtocol::Classic),
            "consumer" => Some(GroupProtocol::Consumer),
            _ => None,
        }
    }
}
