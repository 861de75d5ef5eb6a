//! The metrics the runtime and the outbox relay emit through the [`metrics` crate](::metrics)
//! facade: their names, types, labels and meaning.
//!
//! Nothing is recorded until a recorder is installed: the application's own (any
//! `metrics` exporter, installed before [`Runtime::run`](crate::Runtime::run)), or, with the
//! `prometheus` feature, the one [`RuntimeBuilder::serve_http`](crate::RuntimeBuilder::serve_http)
//! installs and serves at `GET /metrics`.
//!
//! Labels: `mode` (`database` or `kafka`), `group` (the handler's consumer group), `topic`
//! and `partition` (the input partition), `relay` (the outbox relay's name). Counters count
//! from the start of the process; a partition's counters go on where they were when it is
//! assigned to this instance again.
//!
//! How the message counters relate, per partition, once everything consumed is settled
//! (within one assignment, without key parking, and barring infrastructure failures while
//! settling a message):
//! `consumed = processed + dead_lettered`, and each handler failure is followed by one
//! retry or one dead letter, so `failed = retried + dead_lettered - (dead letters that
//! followed no failure: undecodable messages)`.

pub(crate) mod handles;
pub(crate) mod lag;
#[cfg(feature = "prometheus")]
pub(crate) mod prometheus;

/// Counter (`mode`, `group`, `topic`, `partition`): messages read from Kafka for a handler.
/// Each offset counts once per assignment of its partition: a retry, or a rewind after an
/// aborted Kafka transaction, does not count it again; a new assignment after a rebalance
/// does.
pub const MESSAGES_CONSUMED: &str = "exactly_messages_consumed_total";

/// Counter (`mode`, `group`, `topic`, `partition`): messages the handler succeeded on whose
/// effects committed: in Database mode with the position in PostgreSQL (a parked message
/// once its retry commits), in Kafka mode in the Kafka transaction with the offsets.
pub const MESSAGES_PROCESSED: &str = "exactly_messages_processed_total";

/// Counter (`mode`, `group`, `topic`, `partition`): handler calls that returned an error or
/// panicked (in Kafka mode also: emitted to an undeclared topic). Each failed attempt counts.
pub const MESSAGES_FAILED: &str = "exactly_messages_failed_total";

/// Counter (`mode`, `group`, `topic`, `partition`): failed messages that are tried again
/// (after the retry policy's backoff, alone instead of in a batch, or after the messages
/// before them in the batch committed).
pub const MESSAGES_RETRIED: &str = "exactly_messages_retried_total";

/// Counter (`mode`, `group`, `topic`, `partition`): messages moved to the dead letters
/// (undecodable, failed permanently, or out of retries), counted once that move committed.
pub const MESSAGES_DEAD_LETTERED: &str = "exactly_messages_dead_lettered_total";

/// Counter (`mode`, `group`, `topic`, `partition`): messages parked with their key (Database
/// mode with key parking), counted once the parking committed. Their later success counts
/// in [`MESSAGES_PROCESSED`], their dead letter in [`MESSAGES_DEAD_LETTERED`].
pub const MESSAGES_PARKED: &str = "exactly_messages_parked_total";

/// Gauge (`mode`, `group`, `topic`, `partition`): with key-level concurrency, messages of
/// the partition handed to its lanes and not yet committed (Kafka mode: in the window
/// running now).
pub const PARTITION_IN_FLIGHT: &str = "exactly_partition_in_flight";

/// Gauge (`mode`, `group`, `topic`, `partition`): with key-level concurrency, messages
/// committed above the stored position (which waits for a message below them). Bounded by
/// the partition's window: reading pauses when it is full. Always 0 in Kafka mode, which
/// commits nothing above a message not done.
pub const PARTITION_COMPLETED_ABOVE_POSITION: &str = "exactly_partition_completed_above_position";

/// Counter (`mode`, `group`, `topic`, `partition`): with key-level concurrency, messages
/// that waited because a lane held an earlier message of their key (each counts once; Kafka
/// mode: an earlier message of their key in the same window).
pub const KEY_WAITS: &str = "exactly_key_waits_total";

/// Histogram (`mode`, `group`): messages per committed transaction: a PostgreSQL
/// transaction of one partition's batch (Database mode), a Kafka transaction over the
/// group's partitions (Kafka mode).
pub const BATCH_SIZE: &str = "exactly_batch_size";

/// Histogram (`mode`, `group`), seconds: how long the PostgreSQL `COMMIT` of a batch took
/// (Database mode).
pub const DATABASE_COMMIT_SECONDS: &str = "exactly_database_commit_seconds";

/// Histogram (`mode`, `group`), seconds: how long committing a Kafka transaction took, its
/// offsets sent and its commit acknowledged (Kafka mode).
pub const KAFKA_COMMIT_SECONDS: &str = "exactly_kafka_commit_seconds";

/// Gauge (`mode`, `group`, `topic`, `partition`): messages a `read_committed` reader could
/// read that this group has not committed yet: the partition's last stable offset minus the
/// stored position (Database mode) or the committed offset (Kafka mode). Measured every
/// [`RuntimeBuilder::lag_interval`](crate::RuntimeBuilder::lag_interval), idle or not, for
/// the partitions this instance owns; 0 for a partition it no longer owns (so a sum over
/// instances is the group's lag).
pub const CONSUMER_LAG: &str = "exactly_consumer_lag";

/// Counter (`relay`): outbox records published, counted once their Kafka transaction
/// committed.
pub const OUTBOX_PUBLISHED: &str = "exactly_outbox_published_total";

/// Gauge (`relay`): rows waiting in `exactly.outbox`, counted every few seconds by the relay
/// instance that publishes.
pub const OUTBOX_BACKLOG: &str = "exactly_outbox_backlog";

/// Histogram (`relay`), seconds: how long committing one of the relay's Kafka transactions
/// took.
pub const OUTBOX_COMMIT_SECONDS: &str = "exactly_outbox_commit_seconds";

/// Gives every metric its description and unit, for exporters that show them (Prometheus'
/// `# HELP`). Safe to call more than once.
pub(crate) fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(MESSAGES_CONSUMED, Unit::Count, "Messages read from Kafka for a handler");
    describe_counter!(MESSAGES_PROCESSED, Unit::Count, "Messages handled successfully, effects committed");
    describe_counter!(MESSAGES_FAILED, Unit::Count, "Handler calls that failed (error or panic)");
    describe_counter!(MESSAGES_RETRIED, Unit::Count, "Failed messages tried again");
    describe_counter!(MESSAGES_DEAD_LETTERED, Unit::Count, "Messages moved to the dead letters");
    describe_counter!(MESSAGES_PARKED, Unit::Count, "Messages parked with their key");
    describe_gauge!(PARTITION_IN_FLIGHT, Unit::Count, "Messages handed to a partition's lanes, not yet committed");
    describe_gauge!(PARTITION_COMPLETED_ABOVE_POSITION, Unit::Count, "Messages committed above the stored position");
    describe_counter!(KEY_WAITS, Unit::Count, "Messages that waited for an earlier message of their key");
    describe_histogram!(BATCH_SIZE, Unit::Count, "Messages per committed transaction");
    describe_histogram!(DATABASE_COMMIT_SECONDS, Unit::Seconds, "PostgreSQL COMMIT of a batch");
    describe_histogram!(KAFKA_COMMIT_SECONDS, Unit::Seconds, "Commit of a Kafka transaction with its offsets");
    describe_gauge!(CONSUMER_LAG, Unit::Count, "Last stable offset minus the committed position");
    describe_counter!(OUTBOX_PUBLISHED, Unit::Count, "Outbox records published to Kafka");
    describe_gauge!(OUTBOX_BACKLOG, Unit::Count, "Rows waiting in exactly.outbox");
    describe_histogram!(OUTBOX_COMMIT_SECONDS, Unit::Seconds, "Commit of an outbox relay Kafka transaction");
}
