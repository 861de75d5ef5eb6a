//! Kafka mode: consume, transform, produce, with the input offsets committed in the same
//! Kafka transaction as the output (KIP-447).
//!
//! One thread per group polls the consumer and runs the handler message by message. Two
//! transactional producers per group take turns carrying every partition's output and
//! offsets: a transaction closes after the commit interval (or `max_records` messages), and
//! also before any partition is revoked. Its records are flushed on the loop's thread (so
//! the next transaction's cannot overtake them); adding its offsets and committing run on
//! a thread of their own while the loop goes on with the next messages on the other
//! producer. The next commit waits until the previous one ended, so transactions commit in
//! order, and a failed commit aborts the transaction after it too. Errors are classified
//! from librdkafka's flags: abortable ones abort and rewind every partition to its last
//! committed offset; fatal ones (a fenced producer) rebuild the producer, then rewind; an
//! indefinite commit outcome rebuilds the producer and re-reads the committed offsets from
//! Kafka before going on.
//! A zombie (its group generation gone) fails at `send_offsets_to_transaction`, so its
//! output is aborted. A record the producer refuses outright (over `message.max.bytes`)
//! fails the message that emitted it, which is dead-lettered like any permanent failure.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::decode::{Decoded, decode, headers, raw};
use super::panics;
use super::shared::{Backoff, Shared};
use crate::dead_letters::{self, Letter};
use crate::error::{Error, Location, Result};
use crate::handler::{Context, Handler};
use crate::metrics::handles::{GroupMetrics, PartitionId, PartitionMetrics};
use crate::mode::{Kafka, ModeKind};
use crate::output::Output;
use crate::producer::{CALL_TIMEOUT, CommitCall, TxnProducer, flush, record, send, transactional};
use crate::settings::{RetryPolicy, StartFrom};
use crate::subscription::Subscription;
use crate::trace_context::TraceContext;

type Partition = (String, i32);

/// A map keyed by partition, looked up several times per message: with the Fx hash, not
/// SipHash (its keys are the group's own assignment, not input an attacker chooses).
type PartitionMap<V> = HashMap<Partition, V, rustc_hash::FxBuildHasher>;

/// The `transactional.id`s of a group's two producers, from the one configured.
pub(crate) fn transactional_ids(id: &str) -> [String; 2] {
    [id.to_owned(), format!("{id}.2")]
}

/// Settings of one Kafka-mode group.
#[derive(Clone)]
pub(crate) struct KafkaModeSettings {
    /// The two producers' configurations (see [`transactional_ids`]).
    pub(crate) producers: [ClientConfig; 2],
    pub(crate) commit_interval: Duration,
    pub(crate) max_records: usize,
}

impl std::fmt::Debug for KafkaModeSettings {
    /// rdkafka's own `Debug` of a `ClientConfig` hides only five secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaModeSettings")
            .field("producer", &crate::redact::Properties(&self.producers[0].config_map()))
            .field("second_producer", &crate::redact::Properties(&self.producers[1].config_map()))
            .field("commit_interval", &self.commit_interval)
            .field("max_records", &self.max_records)
            .finish()
    }
}

/// A partition stopped at a message that failed, until its retry is due.
#[derive(Debug)]
struct Blocked {
    offset: i64,
    retry_at: Instant,
}

/// An assigned partition's metrics, and what the open transaction will add to them.
#[derive(Debug)]
struct PartitionState {
    metrics: Arc<PartitionMetrics>,
    /// The highest offset counted as consumed in this assignment.
    consumed_through: i64,
    /// Messages handled, and dead-lettered, in the open transaction.
    processed: u64,
    dead_lettered: u64,
}

/// A transaction committing on a thread of its own while the loop handles the next
/// messages with the other producer.
struct Committing {
    call: CommitCall,
    /// The producer it was written with.
    slot: usize,
    /// Next offsets it commits.
    pending: BTreeMap<Partition, i64>,
    records: usize,
    /// Messages handled and dead-lettered per partition, counted once it committed.
    counts: Vec<(Partition, u64, u64)>,
    span: Option<tracing::Span>,
}

/// The message of a partition that failed last, and how often.
#[derive(Debug, Clone, Copy)]
struct Failures {
    offset: i64,
    count: u32,
}

/// The transaction state of a group; touched only from its polling thread (the loop, and
/// the rebalance callback that runs inside `poll`).
struct Transactions {
    group: String,
    /// Declared output topics; empty when the handler declared none.
    outputs: Vec<String>,
    settings: KafkaModeSettings,
    /// Two producers, used in turn: one commits a transaction while the other carries
    /// the next.
    producers: [Option<Arc<TxnProducer>>; 2],
    /// The producer of the open transaction.
    current: usize,
    /// When the open transaction handled its first message.
    open: Option<Instant>,
    /// Whether the current producer's transaction has begun.
    begun: bool,
    /// The previous transaction, while it commits.
    committing: Option<Committing>,
    /// Next offsets of the messages handled in the open transaction.
    pending: BTreeMap<Partition, i64>,
    records_in_txn: usize,
    /// Next offsets as last committed (what a rewind goes back to).
    committed: BTreeMap<Partition, i64>,
    blocked: PartitionMap<Blocked>,
    failures: PartitionMap<Failures>,
    retry: RetryPolicy,
    /// Where a message goes once its retries are spent; without one its partition waits.
    dead_letter_topic: Option<String>,
    /// Whether the handler is given the records' headers.
    reads_headers: bool,
    /// Per partition, a message one of whose records the producer refused outright after
    /// others of its records had joined the transaction (which was aborted for them), with
    /// the refusal: handled again, it fails at once instead of sending them again.
    refused: PartitionMap<(i64, String)>,
    /// The assigned partitions' metrics.
    partitions: PartitionMap<PartitionState>,
    metrics: GroupMetrics,
    /// The span of the open transaction (the "batch" of Kafka mode), from its first message.
    span: Option<tracing::Span>,
    /// The partition of the last message handled (its key is reused for the next one).
    last_key: Partition,
    /// The topic `String` of the last message handled, taken back from it once handled and
    /// given to the next one: no allocation per message for its topic.
    spare_topic: String,
}

pub(crate) struct KafkaModeContext {
    shared: Arc<Shared>,
    txn: Mutex<Transactions>,
}

impl ClientContext for KafkaModeContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::group::log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match crate::kafka_client::fatal(&error, reason) {
            Some(fatal) => self.shared.fail(fatal),
            None => tracing::warn!(target: "librdkafka", "{error}: {reason}"),
        }
    }
}

impl ConsumerContext for KafkaModeContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let mut txn = self.lock();
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                txn.assign(consumer, tpl, &self.shared, cooperative)
            }
            _ => {
                // Close the open transaction first: commit it if the partitions are still
                // ours, abort it if they were lost (another instance owns them already).
                if consumer.assignment_lost() {
                    if txn.open.is_some() || txn.committing.is_some() {
                        self.shared.report(&Error::AssignmentLost { group: txn.group.clone() });
                    }
                    txn.abort(consumer, &self.shared, false);
                } else {
                    txn.commit(consumer, &self.shared);
                }
                for element in tpl.elements() {
                    let key = (element.topic().to_owned(), element.partition());
                    txn.committed.remove(&key);
                    txn.blocked.remove(&key);
                    txn.failures.remove(&key);
                    txn.refused.remove(&key);
                    if let Some(state) = txn.partitions.remove(&key) {
                        self.shared.lag.remove(&state.metrics.id);
                    }
                }
                if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
            }
        };
        if let Err(e) = outcome {
            self.shared.report(&Error::from(e));
        }
    }
}

impl KafkaModeContext {
    fn lock(&self) -> MutexGuard<'_, Transactions> {
        self.txn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Transactions {
    fn location(&self, (topic, partition): &Partition, offset: i64) -> Location {
        Location { group: self.group.clone(), topic: topic.clone(), partition: *partition, offset }
    }

    /// The producer of `slot`, made and initialised on first use and after a fatal error.
    fn producer(&mut self, slot: usize) -> Result<&Arc<TxnProducer>> {
        if self.producers[slot].is_none() {
            self.producers[slot] = Some(Arc::new(transactional(&self.settings.producers[slot])?));
        }
        match &self.producers[slot] {
            Some(producer) => Ok(producer),
            None => Err(Error::Config("internal: no transactional producer".into())),
        }
    }

    /// Aborts the transaction of `slot`'s producer; a producer that cannot abort (fenced,
    /// broken) is dropped, to be rebuilt.
    fn abort_slot(&mut self, slot: usize) {
        if let Some(producer) = &self.producers[slot]
            && let Err(e) = producer.abort_transaction(CALL_TIMEOUT)
        {
            tracing::warn!(group = %self.group, "abort failed ({e}); the producer is rebuilt");
            self.producers[slot] = None;
        }
    }

    fn assign(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        tpl: &mut TopicPartitionList,
        shared: &Shared,
        cooperative: bool,
    ) -> std::result::Result<(), KafkaError> {
        // Where each partition starts. A transient failure (a leader election, a coordinator
        // moving) is retried: giving up here would leave the partitions unassigned.
        let mut backoff = Backoff::new();
        let starts = loop {
            match self.starts(consumer, tpl, shared) {
                Ok(starts) => break starts,
                Err(error) if shared.shutting_down() => return Err(error),
                Err(error) => {
                    shared.report(&Error::from(error));
                    std::thread::sleep(backoff.next_delay());
                }
            }
        };
        for ((topic, partition), next) in starts {
            tpl.set_partition_offset(&topic, partition, Offset::Offset(next))?;
            tracing::info!(group = %self.group, %topic, partition, next_offset = next, "partition assigned");
            let id = PartitionId { group: self.group.clone(), topic: topic.clone(), partition };
            let metrics = Arc::new(PartitionMetrics::new(ModeKind::Kafka, id, next));
            shared.lag.insert(Arc::clone(&metrics));
            let state = PartitionState { metrics, consumed_through: next - 1, processed: 0, dead_lettered: 0 };
            self.partitions.insert((topic.clone(), partition), state);
            self.committed.insert((topic, partition), next);
        }
        if cooperative {
            consumer.incremental_assign(tpl)?
        } else {
            consumer.assign(tpl)?
        }
        shared.health.assigned(&self.group);
        Ok(())
    }

    /// The committed offset of each partition of `tpl`, or where the start policy says for
    /// a partition without one. Committed offsets are read with require_stable
    /// (read_committed), so an offset commit still inside a pending transaction is waited
    /// for, never read half-way.
    fn starts(
        &self,
        consumer: &BaseConsumer<KafkaModeContext>,
        tpl: &TopicPartitionList,
        shared: &Shared,
    ) -> std::result::Result<Vec<(Partition, i64)>, KafkaError> {
        let committed = consumer.committed_offsets(tpl.clone(), CALL_TIMEOUT)?;
        let mut starts = Vec::new();
        for element in committed.elements() {
            let (topic, partition) = (element.topic().to_owned(), element.partition());
            let next = match element.offset() {
                Offset::Offset(next) => next,
                _ => {
                    let (low, high) = consumer.fetch_watermarks(&topic, partition, CALL_TIMEOUT)?;
                    if shared.start_from == StartFrom::Earliest { low } else { high }
                }
            };
            starts.push(((topic, partition), next));
        }
        Ok(starts)
    }

    /// Handles one message: the handler's output and the message's offset join the open
    /// transaction. A failure blocks the partition at this message until its retry is due;
    /// when the retries are spent (or the failure is permanent) the message goes to the
    /// dead-letter topic in the open transaction, or, without one, keeps being retried.
    fn handle<H: Handler<Mode = Kafka>>(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        handler: &H,
        message: &BorrowedMessage<'_>,
        shared: &Shared,
        outputs: &mut Vec<Output>,
    ) {
        // Messages come in runs of one partition: its key is made once per run, not per message.
        let mut key = std::mem::take(&mut self.last_key);
        if key.1 != message.partition() || key.0 != message.topic() {
            key = (message.topic().to_owned(), message.partition());
        }
        self.handle_of(consumer, handler, message, &key, shared, outputs);
        self.last_key = key;
    }

    /// [`Transactions::handle`] of a message of partition `key`.
    fn handle_of<H: Handler<Mode = Kafka>>(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        handler: &H,
        message: &BorrowedMessage<'_>,
        key: &Partition,
        shared: &Shared,
        outputs: &mut Vec<Output>,
    ) {
        let offset = message.offset();
        if self.blocked.contains_key(key) || self.pending.get(key).is_some_and(|next| offset < *next) {
            return; // fetched before the partition was paused or rewound: it comes again
        }
        if let Some(state) = self.partitions.get_mut(key)
            && offset > state.consumed_through
        {
            state.consumed_through = offset;
            state.metrics.consumed.increment(1);
        }
        let span = self.message_span(key, offset);
        let _entered = span.enter();
        let mut topic = std::mem::take(&mut self.spare_topic);
        if topic != key.0 {
            topic.clone_from(&key.0);
        }
        // Headers are read only if the handler or the trace context wants them.
        let mut given = if self.reads_headers || shared.trace_context { headers(message) } else { Vec::new() };
        let trace = if shared.trace_context {
            TraceContext::from_headers(given.iter().map(|(n, v)| (n.as_str(), v.as_ref())))
        } else {
            None
        };
        if !self.reads_headers {
            given = Vec::new();
        }
        let failure = match decode::<H>(message, topic, given) {
            Decoded::Failed { part, error } => {
                Some((Error::Decode { location: self.location(key, offset), part, source: error }, true))
            }
            Decoded::Message(mut decoded) => {
                outputs.clear();
                let mut cx = Context::for_kafka(outputs);
                if let Some(trace) = &trace {
                    trace.record(&span);
                }
                cx.set_trace(trace);
                let handled = panics::catch_blocking(|| complete(&shared.handle, handler.handle(&decoded, &mut cx)));
                self.spare_topic = std::mem::take(&mut decoded.topic);
                match handled {
                    Ok(Ok(())) => self
                        .undeclared(outputs)
                        .map(|topic| {
                            let source = format!(
                                "emitted to topic `{topic}`, which is not among its declared outputs {:?}",
                                self.outputs
                            );
                            (Error::Handler { location: self.location(key, offset), source: source.into() }, false)
                        })
                        .or_else(|| {
                            let (_, reason) = self.refused.get(key).filter(|(at, _)| *at == offset)?;
                            let source = reason.clone().into();
                            Some((Error::Handler { location: self.location(key, offset), source }, true))
                        }),
                    Ok(Err(e)) => {
                        let permanent = e.is_permanent();
                        Some((
                            Error::Handler { location: self.location(key, offset), source: e.into_inner() },
                            permanent,
                        ))
                    }
                    Err(panic) => {
                        Some((Error::Handler { location: self.location(key, offset), source: panic.into() }, false))
                    }
                }
            }
        };
        let failure = match failure {
            Some(failure) => Some(failure),
            None => match self.produce(outputs) {
                Ok(()) => None,
                Err((sent, error)) if refused_outright(&error) => {
                    let reason = format!("Kafka cannot take a record it emitted: {error}");
                    if sent == 0 {
                        // Nothing of this message joined the transaction: it fails here.
                        Some((Error::Handler { location: self.location(key, offset), source: reason.into() }, true))
                    } else {
                        // Its records before the refused one did: they are aborted with
                        // the transaction, and the message fails when it comes again.
                        shared.report(&error);
                        self.refused.insert(key.clone(), (offset, reason));
                        self.abort(consumer, shared, true);
                        return;
                    }
                }
                Err((_, error)) => {
                    shared.report(&error);
                    self.abort(consumer, shared, true);
                    return;
                }
            },
        };
        if let Some((error, permanent)) = failure {
            shared.report(&error);
            if !matches!(error, Error::Decode { .. })
                && let Some(state) = self.partitions.get(key)
            {
                state.metrics.failed.increment(1);
            }
            let count = match self.failures.get(key) {
                Some(failed) if failed.offset == offset => failed.count + 1,
                _ => 1,
            };
            self.failures.insert(key.clone(), Failures { offset, count });
            let spent = permanent || count >= self.retry.max_attempts;
            match &self.dead_letter_topic {
                Some(topic) if spent => {
                    let (location, reason) = (self.location(key, offset), error.to_string());
                    let letter = Letter { at: &location, raw: &raw(message), error: &reason, attempts: count };
                    *outputs = vec![dead_letters::record(topic, &letter)];
                    if let Err((_, error)) = self.produce(outputs) {
                        shared.report(&error);
                        self.abort(consumer, shared, true);
                        return;
                    }
                    shared.report(&Error::DeadLettered { location, attempts: count, reason });
                    if let Some(state) = self.partitions.get_mut(key) {
                        state.dead_lettered += 1;
                    }
                    self.pending.insert(key.clone(), offset + 1);
                    self.records_in_txn += 1;
                }
                _ => {
                    if let Some(state) = self.partitions.get(key) {
                        state.metrics.retried.increment(1);
                    }
                    self.block(consumer, key.clone(), offset, count);
                }
            }
            return;
        }
        crate::failpoint::hit("kafka.after_produce");
        if let Some(state) = self.partitions.get_mut(key) {
            state.processed += 1;
        }
        match self.pending.get_mut(key) {
            Some(next) => *next = offset + 1,
            None => {
                self.pending.insert(key.clone(), offset + 1);
            }
        }
        self.records_in_txn += 1;
    }

    /// The span of one message's handling, inside the open transaction's span.
    fn message_span(&mut self, key: &Partition, offset: i64) -> tracing::Span {
        let attempt = match self.failures.get(key) {
            Some(failed) if failed.offset == offset => failed.count + 1,
            _ => 1,
        };
        let group = &self.group;
        let batch = self.span.get_or_insert_with(|| {
            tracing::info_span!("batch", mode = "kafka", group = %group, records = tracing::field::Empty,
                outcome = tracing::field::Empty)
        });
        tracing::debug_span!(parent: &*batch, "message", group = %self.group, topic = %key.0, partition = key.1,
            offset, attempt, trace_id = tracing::field::Empty, parent_span_id = tracing::field::Empty,
            span_id = tracing::field::Empty)
    }

    /// The open transaction's counts per partition, taken as it starts committing.
    fn take_counts(&mut self) -> Vec<(Partition, u64, u64)> {
        let mut counts = Vec::new();
        for (key, state) in &mut self.partitions {
            let (processed, dead_lettered) =
                (std::mem::take(&mut state.processed), std::mem::take(&mut state.dead_lettered));
            if processed + dead_lettered > 0 {
                counts.push((key.clone(), processed, dead_lettered));
            }
        }
        counts
    }

    /// A transaction committed: counts what it handled, and notes the positions.
    fn counted_committed(&self, counts: &[(Partition, u64, u64)], records: usize, took: Duration) {
        for (key, processed, dead_lettered) in counts {
            if let Some(state) = self.partitions.get(key) {
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
    fn forget_pending_counts(&mut self) {
        for state in self.partitions.values_mut() {
            state.processed = 0;
            state.dead_lettered = 0;
        }
    }

    /// Gives the lag gauges the committed offsets.
    fn note_positions(&self) {
        for (key, next) in &self.committed {
            if let Some(state) = self.partitions.get(key) {
                state.metrics.set_position(*next);
            }
        }
    }

    /// Ends the open transaction's span with its outcome.
    fn end_span(&mut self, outcome: &'static str, records: usize) {
        end_span(self.span.take(), outcome, records);
    }

    /// The first emitted topic that is not declared, when outputs are declared.
    fn undeclared<'o>(&self, outputs: &'o [Output]) -> Option<&'o str> {
        if self.outputs.is_empty() {
            return None;
        }
        outputs.iter().map(|o| o.topic.as_str()).find(|topic| !self.outputs.iter().any(|declared| declared == topic))
    }

    /// Adds `outputs` to the open transaction, opening it. On a failure, how many of them
    /// were sent before it.
    fn produce(&mut self, outputs: &[Output]) -> std::result::Result<(), (usize, Error)> {
        self.open.get_or_insert_with(Instant::now);
        if !self.begun {
            self.producer(self.current).and_then(|p| Ok(p.begin_transaction()?)).map_err(|e| (0, e))?;
            self.begun = true;
        }
        let producer = self.producer(self.current).map_err(|e| (0, e))?;
        for (sent, output) in outputs.iter().enumerate() {
            send(producer, record(&output.topic, output.key.as_deref(), output.payload.as_deref(), &output.headers))
                .map_err(|e| (sent, e))?;
        }
        Ok(())
    }

    /// Whether the open transaction should close at `now`.
    fn due_at(&self, now: Instant) -> bool {
        self.open.is_some_and(|opened| {
            now.saturating_duration_since(opened) >= self.settings.commit_interval
                || self.records_in_txn >= self.settings.max_records
        })
    }

    /// Commits the open transaction and waits for the outcome (before a revocation, at
    /// shutdown), after the one still committing.
    fn commit(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared) {
        self.start_commit(consumer, shared);
        self.settle_committing(consumer, shared, true);
    }

    /// Commits the open transaction, with the offsets of what it handled, and switches to
    /// the other producer. Its records are flushed here, so the next transaction's cannot
    /// overtake them; adding the offsets and `commit_transaction` run on a thread of their
    /// own while the loop goes on with the next messages. The previous commit (of the other
    /// producer), if still running, is waited for first.
    fn start_commit(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared) {
        if self.committing.is_some() {
            let waiting = Instant::now();
            self.settle_committing(consumer, shared, true);
            tracing::debug!(group = %self.group, waited = ?waiting.elapsed(), "waited for the previous commit");
        }
        if self.open.is_none() {
            return; // nothing handled, or dropped with the previous transaction
        }
        let span = self.span.clone().unwrap_or_else(tracing::Span::none);
        let call = span.in_scope(|| -> Result<CommitCall> {
            flush(self.producer(self.current)?, CALL_TIMEOUT)?;
            let mut offsets = TopicPartitionList::new();
            for ((topic, partition), next) in &self.pending {
                offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
            }
            let metadata =
                consumer.group_metadata().ok_or_else(|| Error::Config("no consumer group metadata".into()))?;
            CommitCall::start(self.producer(self.current)?, offsets, metadata)
        });
        match call {
            Ok(call) => {
                let counts = self.take_counts();
                self.committing = Some(Committing {
                    call,
                    slot: self.current,
                    pending: std::mem::take(&mut self.pending),
                    records: std::mem::take(&mut self.records_in_txn),
                    counts,
                    span: self.span.take(),
                });
                self.open = None;
                self.begun = false;
                self.current = 1 - self.current;
            }
            Err(error) => {
                shared.report(&error);
                self.abort(consumer, shared, true);
            }
        }
    }

    /// Ends the commit running on its own thread if it has ended (with `block`, once it
    /// has), and counts what it committed. On a failure the open transaction, which may
    /// hold records handled after it, is aborted too, and every partition goes back to its
    /// last committed offset.
    fn settle_committing(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared, block: bool) {
        let Some(outcome) = self.committing.as_ref().and_then(|committing| committing.call.outcome(block)) else {
            return;
        };
        let Some(committing) = self.committing.take() else { return };
        match outcome {
            Ok(took) => {
                tracing::debug!(group = %self.group, ?took, records = committing.records, "transaction committed");
                self.committed.extend(committing.pending);
                self.counted_committed(&committing.counts, committing.records, took);
                end_span(committing.span, "committed", committing.records);
            }
            Err(error) => {
                shared.report(&error);
                end_span(committing.span, "failed", committing.records);
                self.failed_commit(consumer, shared, committing.slot, &error);
            }
        }
    }

    /// The commit of `slot`'s transaction failed; that transaction is still open, and so is
    /// the current one, with what was handled since. Abortable: both are aborted, then every
    /// partition rewinds. Fatal: the producer is rebuilt, then rewind. Indefinite (the
    /// commit may or may not have happened): a new producer fences the old one, and its
    /// initialisation waits until the coordinator completed or aborted what the old one
    /// left; only then do the committed offsets (read with require_stable) say where each
    /// partition stands. Going on from the offsets remembered here could redo a transaction
    /// that committed.
    fn failed_commit(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        shared: &Shared,
        slot: usize,
        error: &Error,
    ) {
        let indefinite = matches!(error, Error::KafkaCallStuck { .. })
            || matches!(error, Error::Kafka(KafkaError::Transaction(e)) if !e.is_fatal() && !e.txn_requires_abort());
        if !indefinite {
            self.abort_slot(slot);
            self.abort(consumer, shared, true);
            return;
        }
        self.producers[slot] = None;
        self.abort(consumer, shared, false);
        let mut backoff = Backoff::new();
        loop {
            match self.producer(slot).map(|_| ()).and_then(|()| self.reload_committed(consumer)) {
                Ok(()) => {
                    self.note_positions();
                    break;
                }
                Err(e) => shared.report(&e),
            }
            if shared.shutting_down() {
                break;
            }
            std::thread::sleep(backoff.next_delay());
        }
        self.rewind(consumer, shared);
    }

    /// Aborts the open transaction (rebuilding the producer when it is fenced or broken)
    /// and drops what it handled; if `rewind`, puts every partition back at its last
    /// committed offset. A commit still running is waited for first.
    fn abort(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared, rewind: bool) {
        if self.committing.is_some() {
            // Its failure aborts (and rewinds) by itself; its success leaves ours to abort.
            self.settle_committing(consumer, shared, true);
        }
        if std::mem::take(&mut self.begun) {
            self.abort_slot(self.current);
        }
        self.open = None;
        self.forget_pending_counts();
        self.end_span("aborted", self.records_in_txn);
        self.pending.clear();
        self.records_in_txn = 0;
        if rewind {
            self.rewind(consumer, shared);
        }
    }

    fn reload_committed(&mut self, consumer: &BaseConsumer<KafkaModeContext>) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in self.committed.keys() {
            tpl.add_partition(topic, *partition);
        }
        for element in consumer.committed_offsets(tpl, CALL_TIMEOUT)?.elements() {
            if let Offset::Offset(next) = element.offset() {
                self.committed.insert((element.topic().to_owned(), element.partition()), next);
            }
        }
        Ok(())
    }

    /// When idle, with no transaction open: commits, in a transaction of its own, the
    /// offsets of partitions whose consumer position passed records never delivered
    /// (transaction markers, records of aborted transactions), so a partition whose log
    /// ends with a marker is seen at its end. Every record delivered before was handled and
    /// committed (or its partition is blocked, and left alone).
    fn skip_control_records(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared) {
        if self.open.is_some() || self.committing.is_some() {
            return;
        }
        let Ok(positions) = consumer.position() else { return };
        let mut ahead = BTreeMap::new();
        for element in positions.elements() {
            let key = (element.topic().to_owned(), element.partition());
            if let Offset::Offset(position) = element.offset()
                && !self.blocked.contains_key(&key)
                && self.committed.get(&key).is_some_and(|committed| position > *committed)
            {
                ahead.insert(key, position);
            }
        }
        if ahead.is_empty() {
            return;
        }
        if let Err((_, error)) = self.produce(&[]) {
            shared.report(&error);
            self.abort(consumer, shared, true);
            return;
        }
        self.pending = ahead;
        self.commit(consumer, shared);
    }

    /// Seeks every partition to its last committed offset and resumes the blocked ones.
    fn rewind(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared) {
        let blocked: Vec<Partition> = self.blocked.drain().map(|(key, _)| key).collect();
        for ((topic, partition), next) in &self.committed {
            if let Err(e) = consumer.seek(topic, *partition, Offset::Offset(*next), CALL_TIMEOUT) {
                shared.report(&Error::from(e));
            }
        }
        let mut resume = TopicPartitionList::new();
        for (topic, partition) in &blocked {
            resume.add_partition(topic, *partition);
        }
        if resume.count() > 0
            && let Err(e) = consumer.resume(&resume)
        {
            shared.report(&Error::from(e));
        }
    }

    /// Stops a partition at `offset`, after `failures` failures, until its retry is due.
    fn block(&mut self, consumer: &BaseConsumer<KafkaModeContext>, key: Partition, offset: i64, failures: u32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&key.0, key.1);
        let _ = consumer.pause(&tpl);
        self.blocked.insert(key, Blocked { offset, retry_at: Instant::now() + self.retry.delay(failures) });
    }

    /// Seeks blocked partitions whose retry is due back to their failed message, and resumes them.
    fn retry_due(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared) {
        if self.blocked.is_empty() {
            return;
        }
        let now = Instant::now();
        let due: Vec<(Partition, i64)> =
            self.blocked.iter().filter(|(_, b)| b.retry_at <= now).map(|(key, b)| (key.clone(), b.offset)).collect();
        for ((topic, partition), offset) in due {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            let seek = consumer.seek(&topic, partition, Offset::Offset(offset), CALL_TIMEOUT);
            match seek.and_then(|()| consumer.resume(&tpl)) {
                Ok(()) => {
                    self.blocked.remove(&(topic, partition));
                }
                Err(e) => shared.report(&Error::from(e)),
            }
        }
    }
}

/// Runs `future` to its end on this (blocking) thread: polled once in place, which is all a
/// handler that does not wait needs; only one that waits is driven on by `block_on`.
/// Entering the runtime with `block_on` for every message cost more CPU than copying the
/// message. The loop runs on tokio's blocking pool, whose threads are inside the runtime's
/// context already, so a handler can use tokio (timers, spawning) in place.
fn complete<F: std::future::Future>(handle: &tokio::runtime::Handle, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
        return output;
    }
    handle.block_on(future)
}

/// Whether the producer refused a record for what it is, so that sending it again cannot
/// succeed: larger than `message.max.bytes`. librdkafka checks that before the record
/// joins the transaction, which the refusal leaves as it was.
fn refused_outright(error: &Error) -> bool {
    matches!(error, Error::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)))
}

/// Ends a transaction's span with its outcome and size.
fn end_span(span: Option<tracing::Span>, outcome: &'static str, records: usize) {
    if let Some(span) = span {
        span.record("records", records);
        span.record("outcome", outcome);
    }
}

/// Starts a Kafka-mode group: its consumer and the thread that runs it.
pub(crate) fn start<H: Handler<Mode = Kafka>>(
    handler: Arc<H>,
    shared: &Arc<Shared>,
    consumer_config: ClientConfig,
    subscription: &Subscription,
    settings: KafkaModeSettings,
) -> Result<super::group::Group> {
    let group = subscription.group().to_owned();
    let context = KafkaModeContext {
        shared: Arc::clone(shared),
        txn: Mutex::new(Transactions {
            group: group.clone(),
            outputs: subscription.outputs().to_vec(),
            settings,
            producers: [None, None],
            current: 0,
            open: None,
            begun: false,
            committing: None,
            pending: BTreeMap::new(),
            records_in_txn: 0,
            committed: BTreeMap::new(),
            blocked: PartitionMap::default(),
            failures: PartitionMap::default(),
            retry: subscription.retry().unwrap_or(shared.retry),
            dead_letter_topic: subscription.dead_letter_topic().map(str::to_owned),
            reads_headers: subscription.reads_headers(),
            refused: PartitionMap::default(),
            partitions: PartitionMap::default(),
            metrics: GroupMetrics::new(ModeKind::Kafka, &group),
            span: None,
            last_key: (String::new(), -1),
            spare_topic: String::new(),
        }),
    };
    let consumer: BaseConsumer<KafkaModeContext> = consumer_config.create_with_context(context)?;
    // Initialise the producers now, so a wrong setting fails at start, not at the first
    // message, and each fences what an earlier incarnation left open.
    {
        let mut txn = consumer.context().lock();
        txn.producer(0)?;
        txn.producer(1)?;
    }
    let topics: Vec<&str> = subscription.topics().iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let topics = subscription.topics().to_vec();
    let shared = Arc::clone(shared);
    let alive = shared.health.loop_guard(format!("the consumer loop of group {group}"));
    let poller = shared.handle.clone().spawn_blocking(move || {
        let _alive = alive;
        run(&consumer, &*handler, &shared, &topics)
    });
    Ok(super::group::Group { name: group, poller })
}

/// The group's loop: poll, handle, commit when due; at shutdown commit and leave. A
/// refused authorization (a missing ACL on the group or one of `topics`) stops the runtime.
fn run<H: Handler<Mode = Kafka>>(
    consumer: &BaseConsumer<KafkaModeContext>,
    handler: &H,
    shared: &Shared,
    topics: &[String],
) -> Result<()> {
    let mut outputs = Vec::new();
    // Read once per message, after it is handled (the clock is a fair share of the loop's
    // CPU): for when the transaction is due, and for how long the next poll may wait.
    let mut now = Instant::now();
    while !shared.shutting_down() {
        // The rebalance callback runs inside poll and takes the lock itself. A message
        // already fetched is taken without a timeout first: librdkafka then reads no clock
        // and arms no wait, which under a steady stream is most of what a poll costs; how
        // long to wait is worked out only when there is none.
        let polled = match consumer.poll(Duration::ZERO) {
            None => {
                let wait = {
                    let txn = consumer.context().lock();
                    // While a commit runs, look for its end often.
                    let most =
                        if txn.committing.is_some() { Duration::from_millis(5) } else { Duration::from_millis(100) };
                    match txn.open {
                        Some(opened) => {
                            txn.settings.commit_interval.saturating_sub(now.saturating_duration_since(opened)).min(most)
                        }
                        None => most,
                    }
                };
                consumer.poll(wait)
            }
            ready => ready,
        };
        let mut txn = consumer.context().lock();
        match polled {
            Some(Ok(message)) => txn.handle(consumer, handler, &message, shared, &mut outputs),
            Some(Err(e @ KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange))) => {
                shared.report(&Error::from(e));
            }
            Some(Err(e)) => match crate::kafka_client::consumer_refusal(consumer, &e, &txn.group, topics) {
                Some(refusal) => shared.fail(refusal),
                None => tracing::warn!(group = %txn.group, "consumer: {e}"),
            },
            None => txn.skip_control_records(consumer, shared),
        }
        txn.settle_committing(consumer, shared, false);
        now = Instant::now();
        if txn.due_at(now) {
            txn.start_commit(consumer, shared);
        }
        txn.retry_due(consumer, shared);
    }
    consumer.context().lock().commit(consumer, shared);
    consumer.unsubscribe();
    Ok(())
}
