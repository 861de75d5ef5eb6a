//! The state of a Kafka-mode group's loop: how its handler's messages are handled, its two
//! transactional producers, the transaction being filled, the one committing, and what is
//! known of each assigned partition. Touched only from the group's polling thread (the
//! loop, and the rebalance callback that runs inside `poll`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::Producer;

use super::{KafkaModeSettings, Partition, PartitionMap};
use crate::api::settings::RetryPolicy;
use crate::error::{Error, Location, Result};
use crate::kafka::producer::{CALL_TIMEOUT, CommitCall, TxnProducer, transactional};
use crate::ops::metrics::handles::{GroupMetrics, KeyedMetrics, PartitionMetrics};
use crate::pipeline::attempts::Attempts;

/// The state of one Kafka-mode group.
pub(crate) struct GroupState {
    pub(super) handling: Handling,
    pub(super) producers: Producers,
    /// The transaction being filled.
    pub(super) txn: OpenTransaction,
    /// The previous transaction, while it commits.
    pub(super) committing: Option<Committing>,
    pub(super) partitions: Partitions,
    pub(super) metrics: GroupMetrics,
    pub(super) reuse: Reuse,
}

/// How the group's handler's messages are handled.
pub(super) struct Handling {
    pub(super) group: String,
    /// Declared output topics; empty when the handler declared none.
    pub(super) outputs: Vec<String>,
    pub(super) retry: RetryPolicy,
    /// Where a message goes once its retries are spent; without one its partition waits.
    pub(super) dead_letter_topic: Option<String>,
    /// Whether the handler is given the records' headers.
    pub(super) reads_headers: bool,
    /// How many keys of one partition may be handled at once (1: one message after
    /// another; above 1, see [`super::keyed`]).
    pub(super) key_concurrency: usize,
    /// How long one handler call may run (see [`super::KafkaModeSettings::handler_deadline`]).
    pub(super) deadline: std::time::Duration,
}

/// Two transactional producers, used in turn: one commits a transaction while the other
/// carries the next.
pub(super) struct Producers {
    pub(super) settings: KafkaModeSettings,
    pub(super) slots: [Option<Arc<TxnProducer>>; 2],
    /// The producer of the open transaction.
    pub(super) current: usize,
}

impl Producers {
    /// The producer of `slot`, made and initialised on first use and after a fatal error.
    pub(super) fn get(&mut self, slot: usize) -> Result<&Arc<TxnProducer>> {
        if self.slots[slot].is_none() {
            self.slots[slot] = Some(Arc::new(transactional(&self.settings.producers[slot])?));
        }
        self.slots[slot].as_ref().ok_or_else(|| Error::Internal("a transactional producer vanished".into()))
    }

    /// Aborts the transaction of `slot`'s producer; a producer that cannot abort (fenced,
    /// broken) is dropped, to be rebuilt.
    pub(super) fn abort(&mut self, slot: usize, group: &str) {
        if let Some(producer) = &self.slots[slot]
            && let Err(e) = producer.abort_transaction(CALL_TIMEOUT)
        {
            tracing::warn!(%group, "abort failed ({e}); the producer is rebuilt");
            self.slots[slot] = None;
        }
    }
}

/// The transaction being filled.
#[derive(Default)]
pub(super) struct OpenTransaction {
    /// When it handled its first message (`None`: nothing open).
    pub(super) opened: Option<Instant>,
    /// Whether the current producer's transaction has begun.
    pub(super) begun: bool,
    /// Next offsets of the messages handled in it.
    pub(super) pending: BTreeMap<Partition, i64>,
    /// Messages it holds.
    pub(super) records: usize,
    /// Its span (the "batch" of Kafka mode), from its first message.
    pub(super) span: Option<tracing::Span>,
}

impl OpenTransaction {
    /// Its span, opened with the first message's handling.
    pub(super) fn span(&mut self, group: &str) -> &tracing::Span {
        self.span.get_or_insert_with(|| {
            tracing::info_span!("batch", mode = "kafka", group = %group, records = tracing::field::Empty,
                outcome = tracing::field::Empty)
        })
    }
}

/// A transaction committing on a thread of its own while the loop handles the next
/// messages with the other producer.
pub(super) struct Committing {
    pub(super) call: CommitCall,
    /// The producer it was written with.
    pub(super) slot: usize,
    /// Next offsets it commits.
    pub(super) pending: BTreeMap<Partition, i64>,
    pub(super) records: usize,
    /// Messages handled and dead-lettered per partition, counted once it committed.
    pub(super) counts: Vec<(Partition, u64, u64)>,
    pub(super) span: Option<tracing::Span>,
}

/// What is known of each assigned partition.
#[derive(Default)]
pub(super) struct Partitions {
    /// Next offsets as last committed (what a rewind goes back to).
    pub(super) committed: BTreeMap<Partition, i64>,
    /// Partitions stopped at a message that failed, until its retry is due.
    pub(super) blocked: PartitionMap<Blocked>,
    /// The message of each partition that failed last, and how often.
    pub(super) attempts: PartitionMap<Attempts>,
    /// Per partition, a message one of whose records the producer refused outright after
    /// others of its records had joined the transaction (which was aborted for them), with
    /// the refusal: handled again, it fails at once instead of sending them again.
    pub(super) refused: PartitionMap<(i64, String)>,
    /// Metrics and counts.
    pub(super) states: PartitionMap<PartitionState>,
    /// Assignments so far: each assignment of a partition gets the next number.
    pub(super) assignments: u64,
    /// Rewinds so far: each puts every partition back at its committed offset.
    pub(super) rewinds: u64,
}

impl Partitions {
    /// Forgets a partition that was revoked; its metrics, if it had any.
    pub(super) fn remove(&mut self, key: &Partition) -> Option<PartitionState> {
        self.committed.remove(key);
        self.blocked.remove(key);
        self.attempts.remove(key);
        self.refused.remove(key);
        self.states.remove(key)
    }
}

/// A partition stopped at a message that failed, until its retry is due.
#[derive(Debug)]
pub(super) struct Blocked {
    pub(super) offset: i64,
    pub(super) retry_at: Instant,
}

/// An assigned partition's metrics, and what the open transaction will add to them.
#[derive(Debug)]
pub(super) struct PartitionState {
    pub(super) metrics: Arc<PartitionMetrics>,
    /// The highest offset counted as consumed in this assignment.
    pub(super) consumed_through: i64,
    /// Messages handled, and dead-lettered, in the open transaction.
    pub(super) processed: u64,
    pub(super) dead_lettered: u64,
    /// Which assignment of the partition this is (see [`Partitions::assignments`]).
    pub(super) assignment: u64,
    /// With key concurrency, its metrics of messages in flight and key waits.
    pub(super) keyed: Option<KeyedMetrics>,
}

/// What is reused from one message to the next.
#[derive(Default)]
pub(super) struct Reuse {
    /// The partition of the last message handled (its key is reused for the next one).
    pub(super) last_key: Partition,
    /// The topic `String` of the last message handled, taken back from it once handled and
    /// given to the next one: no allocation per message for its topic.
    pub(super) spare_topic: String,
}

impl GroupState {
    /// A group's state before its first assignment.
    pub(super) fn new(handling: Handling, settings: KafkaModeSettings) -> Self {
        let metrics = GroupMetrics::new(crate::api::mode::ModeKind::Kafka, &handling.group);
        Self {
            handling,
            producers: Producers { settings, slots: [None, None], current: 0 },
            txn: OpenTransaction::default(),
            committing: None,
            partitions: Partitions::default(),
            metrics,
            reuse: Reuse { last_key: (String::new(), -1), spare_topic: String::new() },
        }
    }

    pub(super) fn location(&self, (topic, partition): &Partition, offset: i64) -> Location {
        Location { group: self.handling.group.clone(), topic: topic.clone(), partition: *partition, offset }
    }

    /// The open transaction's counts per partition, taken as it starts committing.
    pub(super) fn take_counts(&mut self) -> Vec<(Partition, u64, u64)> {
        let mut counts = Vec::new();
        for (key, state) in &mut self.partitions.states {
            let (processed, dead_lettered) =
                (std::mem::take(&mut state.processed), std::mem::take(&mut state.dead_lettered));
            if processed + dead_lettered > 0 {
                counts.push((key.clone(), processed, dead_lettered));
            }
        }
        counts
    }

    /// A transaction committed: counts what it handled, and notes the positions.
    pub(super) fn counted_committed(&self, counts: &[(Partition, u64, u64)], records: usize, took: Duration) {
        for (key, processed, dead_lettered) in counts {
            if let Some(state) = self.partitions.states.get(key) {
                state.metrics.processed.increment(*processed);
                state.metrics.dead_lettered.increment(*dead_lettered);
            }
        }
        if records > 0 {
            #[allow(clippy::cast_precision_loss)] // a transaction holds far fewer than 2^52 records
            self.metrics.batch_size.record(records as f64);
            self.metrics.commit.record(took.as_secs_f64());
        }
        self.note_positions();
    }

    /// The open transaction's messages will not commit (aborted, or its outcome unknown and
    /// read back from Kafka instead): nothing of it is counted.
    pub(super) fn forget_pending_counts(&mut self) {
        for state in self.partitions.states.values_mut() {
            state.processed = 0;
            state.dead_lettered = 0;
        }
    }

    /// Gives the lag gauges the committed offsets.
    pub(super) fn note_positions(&self) {
        for (key, next) in &self.partitions.committed {
            if let Some(state) = self.partitions.states.get(key) {
                state.metrics.set_position(*next);
            }
        }
    }

    /// Ends the open transaction's span with its outcome.
    pub(super) fn end_span(&mut self, outcome: &'static str, records: usize) {
        end_span(self.txn.span.take(), outcome, records);
    }
}

/// Ends a transaction's span with its outcome and size.
pub(super) fn end_span(span: Option<tracing::Span>, outcome: &'static str, records: usize) {
    if let Some(span) = span {
        span.record("records", records);
        span.record("outcome", outcome);
    }
}
