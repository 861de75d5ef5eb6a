//! Settings a user gives the runtime or a handler: batching, retries, where a partition
//! with no stored position starts, and the consumer group protocol.

use std::time::Duration;

/// Where a partition with no stored position starts. Resolved once, on the first claim of
/// the partition, and stored, so later rebalances never re-apply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The oldest record still in the log: nothing already in Kafka is skipped.
    #[default]
    Earliest,
    /// The end of the log at the moment of the first claim: older records are skipped.
    Latest,
}

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

/// How many messages go into one database transaction.
///
/// A batch closes when it holds `max_records` messages or `max_wait` has passed since its
/// first message arrived, whichever comes first. Larger batches mean fewer commits (faster);
/// a failing message rolls back its whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub(crate) max_records: usize,
    pub(crate) max_wait: Duration,
}

impl Default for Batch {
    /// Up to 500 messages or 50 ms.
    fn default() -> Self {
        Self { max_records: 500, max_wait: Duration::from_millis(50) }
    }
}

impl Batch {
    /// One message per transaction.
    pub fn single() -> Self {
        Self { max_records: 1, max_wait: Duration::ZERO }
    }

    /// At most `max_records` messages per transaction (at least 1).
    pub fn max_records(mut self, max_records: usize) -> Self {
        self.max_records = max_records.max(1);
        self
    }

    /// Wait at most `max_wait` after a batch's first message for more.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }
}

/// How often, and how far apart, a failing message is tried before it goes to the dead
/// letters. Transient database errors (serialization failures, deadlocks, lost connections)
/// are retried without counting; a [`HandlerError::permanent`](crate::HandlerError::permanent)
/// error is not retried at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, backoff from 100 ms doubling up to 30 s, with jitter.
    fn default() -> Self {
        Self { max_attempts: 5, initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(30) }
    }
}

impl RetryPolicy {
    /// Attempts before a message is dead-lettered (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The wait after the first failure; it doubles after each further one.
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// The longest wait between attempts.
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// The wait after `failures` failures: exponential, capped, with full jitter in its upper half.
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let exponential = self.initial_backoff.saturating_mul(2_u32.saturating_pow(failures.saturating_sub(1)));
        let capped = exponential.min(self.max_backoff);
        capped.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}
