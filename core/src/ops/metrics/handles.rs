//! Metric handles, registered once (a partition's when it is assigned, a group's when it
//! starts, a relay's when it starts), so that the hot path only adds to an atomic.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use ::metrics::{Counter, Gauge, Histogram, Label, counter, gauge, histogram};

use super::{
    BATCH_SIZE, DATABASE_COMMIT_SECONDS, KAFKA_COMMIT_SECONDS, KEY_WAITS, MESSAGES_CONSUMED, MESSAGES_DEAD_LETTERED,
    MESSAGES_FAILED, MESSAGES_PARKED, MESSAGES_PROCESSED, MESSAGES_RETRIED, OUTBOX_BACKLOG, OUTBOX_COMMIT_SECONDS,
    OUTBOX_PUBLISHED, PARTITION_COMPLETED_ABOVE_POSITION, PARTITION_IN_FLIGHT,
};
use crate::mode::ModeKind;

/// The `mode` label of a handler's metrics.
pub(crate) fn mode_label(kind: ModeKind) -> &'static str {
    match kind {
        ModeKind::Database => "database",
        ModeKind::Kafka => "kafka",
    }
}

/// One input partition as consumed by one group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PartitionId {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) partition: i32,
}

impl PartitionId {
    /// The labels of the partition's metrics.
    pub(crate) fn labels(&self, mode: &'static str) -> Vec<Label> {
        vec![
            Label::new("mode", mode),
            Label::new("group", self.group.clone()),
            Label::new("topic", self.topic.clone()),
            Label::new("partition", self.partition.to_string()),
        ]
    }
}

/// The counters of one assigned partition, and its committed position (for the lag).
#[derive(Debug)]
pub(crate) struct PartitionMetrics {
    pub(crate) id: PartitionId,
    pub(crate) mode: &'static str,
    pub(crate) consumed: Counter,
    pub(crate) processed: Counter,
    pub(crate) failed: Counter,
    pub(crate) retried: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) parked: Counter,
    /// The next offset to process, as committed; -1 while unknown.
    position: AtomicI64,
}

impl PartitionMetrics {
    /// Registers the partition's counters, starting at the committed position `next`.
    pub(crate) fn new(kind: ModeKind, id: PartitionId, next: i64) -> Self {
        let mode = mode_label(kind);
        let labels = id.labels(mode);
        Self {
            consumed: counter!(MESSAGES_CONSUMED, labels.iter()),
            processed: counter!(MESSAGES_PROCESSED, labels.iter()),
            failed: counter!(MESSAGES_FAILED, labels.iter()),
            retried: counter!(MESSAGES_RETRIED, labels.iter()),
            dead_lettered: counter!(MESSAGES_DEAD_LETTERED, labels.iter()),
            // Only Database mode parks.
            parked: match kind {
                ModeKind::Database => counter!(MESSAGES_PARKED, labels.iter()),
                ModeKind::Kafka => Counter::noop(),
            },
            position: AtomicI64::new(next),
            id,
            mode,
        }
    }

    /// Notes the committed position (call after the counters of what it commits).
    pub(crate) fn set_position(&self, next: i64) {
        self.position.store(next, Ordering::Release);
    }

    /// The committed position, if known.
    pub(crate) fn position(&self) -> Option<i64> {
        let position = self.position.load(Ordering::Acquire);
        (position >= 0).then_some(position)
    }
}

/// The metrics of a key-concurrent partition (Database mode).
#[derive(Debug)]
pub(crate) struct KeyedMetrics {
    in_flight: Gauge,
    completed_above_position: Gauge,
    pub(crate) key_waits: Counter,
}

impl KeyedMetrics {
    pub(crate) fn new(kind: ModeKind, id: &PartitionId) -> Self {
        let labels = id.labels(mode_label(kind));
        Self {
            in_flight: gauge!(PARTITION_IN_FLIGHT, labels.iter()),
            completed_above_position: gauge!(PARTITION_COMPLETED_ABOVE_POSITION, labels.iter()),
            key_waits: counter!(KEY_WAITS, labels.iter()),
        }
    }

    /// `messages` are handed to the lanes and not yet committed.
    pub(crate) fn in_flight(&self, messages: usize) {
        #[allow(clippy::cast_precision_loss)] // bounded by the partition's window
        self.in_flight.set(messages as f64);
    }

    /// `messages` are committed above the stored position.
    pub(crate) fn completed_above_position(&self, messages: usize) {
        #[allow(clippy::cast_precision_loss)] // bounded by the partition's window
        self.completed_above_position.set(messages as f64);
    }
}

/// The histograms of one group.
#[derive(Debug, Clone)]
pub(crate) struct GroupMetrics {
    pub(crate) batch_size: Histogram,
    /// How long a commit took: PostgreSQL's in Database mode, Kafka's in Kafka mode.
    pub(crate) commit: Histogram,
}

impl GroupMetrics {
    pub(crate) fn new(kind: ModeKind, group: &str) -> Self {
        let labels = [Label::new("mode", mode_label(kind)), Label::new("group", group.to_owned())];
        let commit = match kind {
            ModeKind::Database => DATABASE_COMMIT_SECONDS,
            ModeKind::Kafka => KAFKA_COMMIT_SECONDS,
        };
        Self { batch_size: histogram!(BATCH_SIZE, labels.iter()), commit: histogram!(commit, labels.iter()) }
    }
}

/// How often the publishing relay counts its backlog.
const BACKLOG_INTERVAL: Duration = Duration::from_secs(5);

/// The metrics of one outbox relay.
#[derive(Debug)]
pub(crate) struct RelayMetrics {
    published: Counter,
    commit: Histogram,
    backlog: Gauge,
    /// When the backlog was counted last (the relay's thread alone touches it).
    counted: Cell<Option<Instant>>,
}

impl RelayMetrics {
    pub(crate) fn new(relay: &str) -> Self {
        let labels = [Label::new("relay", relay.to_owned())];
        Self {
            published: counter!(OUTBOX_PUBLISHED, labels.iter()),
            commit: histogram!(OUTBOX_COMMIT_SECONDS, labels.iter()),
            backlog: gauge!(OUTBOX_BACKLOG, labels.iter()),
            counted: Cell::new(None),
        }
    }

    /// A batch of `records` committed, its commit having taken `commit`.
    pub(crate) fn published(&self, records: usize, commit: Duration) {
        self.published.increment(u64::try_from(records).unwrap_or(u64::MAX));
        self.commit.record(commit.as_secs_f64());
    }

    /// Whether the rows waiting in the outbox are due to be counted again (at most every
    /// few seconds); if so, the count is taken as done now.
    pub(crate) fn backlog_due(&self) -> bool {
        if self.counted.get().is_some_and(|at| at.elapsed() < BACKLOG_INTERVAL) {
            return false;
        }
        self.counted.set(Some(Instant::now()));
        true
    }

    /// `rows` wait in the outbox.
    pub(crate) fn backlog(&self, rows: i64) {
        #[allow(clippy::cast_precision_loss)] // a row count stays far below 2^52
        self.backlog.set(rows as f64);
    }
}
