//! The worker of one Database-mode partition: gathers the partition's messages into
//! batches and hands each to [`super::batch`], which commits its effects and the new
//! position in one PostgreSQL transaction.
//!
//! Order is kept because one worker owns a partition and handles its messages one after
//! another; partitions run concurrently, bounded by the runtime's batch permits. With key
//! parking, a failing message and the later messages of its key are parked and retried
//! per key (see [`super::parked`]), so order is kept per key.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tracing::Instrument;

use super::consumer::WorkerStart;
use super::parked::ParkedKeys;
use crate::api::codec::DecodeError;
use crate::api::message::Message;
use crate::api::mode::{Database, ModeKind};
use crate::api::settings::RetryPolicy;
use crate::engine::shared::Shared;
use crate::error::Error;
use crate::ops::metrics::handles::GroupMetrics;
use crate::pipeline::attempts::Attempts;
use crate::pipeline::decode::{Decoded, decode, raw};
use crate::pipeline::work::Work;
use crate::store::offsets::{self, Advance};
use crate::store::record::RawRecord;

/// How often, at most, a partition's position is copied to Kafka's committed offsets. Each
/// copy is an OffsetCommit request to the group coordinator, on the connection that also
/// carries the heartbeats: one per batch, with batches of one message, queues thousands of
/// requests ahead of the heartbeats, and the session expires.
const MIRROR_INTERVAL: Duration = Duration::from_secs(1);

/// One message of a batch: its raw bytes (for the dead letters and parking) and what
/// decoding gave.
pub(super) struct Item<K, P> {
    pub(super) offset: i64,
    pub(super) raw: RawRecord,
    pub(super) decoded: std::result::Result<Message<K, P>, (&'static str, DecodeError)>,
}

impl<K, P> Item<K, P> {
    /// A record, kept raw and decoded for the handler of `H` (with its headers if
    /// `reads_headers`).
    fn new<H: Work<Key = K, Payload = P>>(message: &BorrowedMessage<'_>, topic: &str, reads_headers: bool) -> Self {
        let raw = raw(message);
        let headers = if reads_headers { raw.headers.clone() } else { Vec::new() };
        let decoded = match decode::<H>(message, topic.to_owned(), headers) {
            Decoded::Message(message) => Ok(message),
            Decoded::Failed { part, error } => Err((part, error)),
        };
        Item { offset: message.offset(), raw, decoded }
    }

    pub(super) fn offset(&self) -> i64 {
        self.offset
    }
}

/// Why gathering stopped.
enum Gathered {
    /// A batch to commit (maybe cut short by a stop request).
    Batch,
    /// Stop requested and nothing pending.
    Stopped,
    /// Nothing gathered, but a parked key is due for its retry.
    ParkedDue,
    /// The partition can no longer be read.
    Broken(Error),
}

/// The worker of one partition, from its claim until it is revoked or the runtime stops.
pub(crate) struct PartitionWorker<H: Work<Mode = Database>> {
    pub(super) handler: Arc<H>,
    pub(super) shared: Arc<Shared>,
    pub(super) start: WorkerStart,
    /// The stored position: the next offset to process, as the database has it.
    pub(super) next: i64,
    pub(super) batch: Vec<Item<H::Key, H::Payload>>,
    /// The last attempt's COMMIT failed: whether it committed is unknown.
    pub(super) commit_unknown: bool,
    /// The handler's declared output topics.
    pub(super) outputs: Vec<String>,
    /// How many messages the next attempt takes (smaller while a failure is isolated).
    pub(super) limit: usize,
    /// While a batch handler's failure is bisected: how many messages from the head the
    /// failing one is among.
    pub(super) suspects: Option<usize>,
    /// How often the message that failed last has failed.
    pub(super) attempts: Attempts,
    /// The handler's retry policy, or the runtime's.
    pub(super) retry: RetryPolicy,
    /// Where dead letters go: this Kafka topic (through the outbox), or the table.
    pub(super) dead_letter_topic: Option<String>,
    /// The parked keys, when key parking is on.
    pub(super) parked: Option<ParkedKeys>,
    /// Whether the handler is given the records' headers.
    pub(super) reads_headers: bool,
    /// The group's histograms (the partition's counters are in `start.metrics`).
    pub(super) metrics: GroupMetrics,
    /// When the position was last copied to Kafka, and which.
    mirrored: Option<(Instant, i64)>,
}

impl<H: Work<Mode = Database>> PartitionWorker<H> {
    pub(crate) fn new(handler: Arc<H>, shared: Arc<Shared>, start: WorkerStart) -> Self {
        let next = start.claim.next_offset;
        let metrics = GroupMetrics::new(ModeKind::Database, &start.key.group);
        let subscription = handler.subscription();
        let limit = shared.batch.max_records;
        Self {
            outputs: subscription.outputs().to_vec(),
            retry: subscription.retry().unwrap_or(shared.retry),
            dead_letter_topic: subscription.dead_letter_topic().map(str::to_owned),
            parked: subscription.key_parking().then(ParkedKeys::default),
            reads_headers: subscription.reads_headers(),
            handler,
            shared,
            start,
            next,
            batch: Vec::new(),
            commit_unknown: false,
            limit,
            suspects: None,
            attempts: Attempts::default(),
            metrics,
            mirrored: None,
        }
    }

    pub(crate) async fn run(mut self) {
        let span = tracing::info_span!("partition", group = %self.start.key.group, topic = %self.start.key.topic,
            partition = self.start.key.partition, epoch = self.start.claim.epoch);
        async move {
            self.work().await;
            self.mirror_to_kafka(true);
        }
        .instrument(span)
        .await
    }

    /// Gathers and commits batches until stopped.
    async fn work(&mut self) {
        if self.parked.is_some() && !self.load_parked().await {
            return;
        }
        loop {
            if !self.retry_parked().await {
                return;
            }
            match self.gather().await {
                Gathered::Stopped => return,
                Gathered::Broken(error) => {
                    self.shared.report(&error);
                    return;
                }
                Gathered::ParkedDue => continue,
                Gathered::Batch => {}
            }
            if !self.commit_with_retries().await {
                return;
            }
            if self.stopping() {
                return;
            }
        }
    }

    pub(super) fn stopping(&self) -> bool {
        *self.start.stop.borrow() || self.shared.shutting_down()
    }

    /// Fills `self.batch` up to the batch size or its deadline.
    async fn gather(&mut self) -> Gathered {
        let max = self.shared.batch.max_records;
        let mut deadline: Option<Instant> = None;
        loop {
            if let Some(broken) = self.drain(max) {
                return Gathered::Broken(broken);
            }
            if self.batch.len() >= max {
                return Gathered::Batch;
            }
            if !self.batch.is_empty() && deadline.is_none() {
                deadline = Some(Instant::now() + self.shared.batch.max_wait);
            }
            if self.stopping() {
                return if self.batch.is_empty() { Gathered::Stopped } else { Gathered::Batch };
            }
            if self.batch.is_empty() {
                self.skip_control_records().await;
            }
            let notified = self.start.notify.notified();
            let mut stop = self.start.stop.clone();
            let parked_due = self.parked.as_ref().and_then(ParkedKeys::next_due);
            let mirror_due = self.mirror_due();
            let wake = [deadline, parked_due, mirror_due].into_iter().flatten().min();
            match wake {
                None => tokio::select! {
                    () = notified => {}
                    _ = stop.changed() => {}
                },
                Some(at) => tokio::select! {
                    () = notified => {}
                    _ = stop.changed() => {}
                    () = tokio::time::sleep_until(at) => {
                        self.mirror_to_kafka(false);
                        let now = Instant::now();
                        if deadline.is_some_and(|d| d <= now) || parked_due.is_some_and(|p| p <= now) {
                            return if self.batch.is_empty() { Gathered::ParkedDue } else { Gathered::Batch };
                        }
                    }
                },
            }
        }
    }

    /// Takes what the partition queue holds now, up to `max` in the batch.
    fn drain(&mut self, max: usize) -> Option<Error> {
        while self.batch.len() < max {
            match self.start.queue.poll(Duration::ZERO) {
                None => return None,
                Some(Ok(message)) => {
                    // Records below the position were committed already (a seek replays them).
                    if message.offset() < self.next || self.batch.last().is_some_and(|i| message.offset() <= i.offset())
                    {
                        continue;
                    }
                    let item = Item::new::<H>(&message, &self.start.key.topic, self.reads_headers);
                    self.batch.push(item);
                    self.start.metrics.consumed.increment(1);
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange))) => {
                    return Some(Error::OffsetOutOfRange { location: self.start.key.location(self.next) });
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => tracing::warn!("reading the partition: {e}"),
            }
        }
        None
    }

    /// Moves the stored position past records the consumer skipped without delivering them
    /// (transaction markers, records of aborted transactions), so a partition whose log
    /// ends with a marker is seen at its end. Safe: the consumer's position only passes a
    /// deliverable record once it was delivered to this worker. Called only when idle.
    async fn skip_control_records(&mut self) {
        let Ok(positions) = self.start.consumer.position() else { return };
        let key = &self.start.key;
        let Some(Offset::Offset(position)) =
            positions.find_partition(&key.topic, key.partition).map(|element| element.offset())
        else {
            return;
        };
        if position <= self.next {
            return;
        }
        let outcome = async {
            let mut tx = self.shared.pool()?.begin().await?;
            match offsets::advance(&mut tx, key, self.start.claim.epoch, self.next, position).await? {
                Advance::Advanced => tx.commit().await?,
                Advance::AlreadyCommitted => tx.rollback().await?,
            }
            Ok::<(), Error>(())
        };
        let outcome = tokio::time::timeout(self.shared.transaction_timeout, outcome)
            .await
            .unwrap_or_else(|_| Err(self.timed_out("moving past control records")));
        match outcome {
            Ok(()) => {
                tracing::debug!(from = self.next, to = position, "position moved past records not delivered");
                self.next = position;
                self.start.metrics.set_position(position);
                self.mirror_to_kafka(false);
            }
            Err(error) => {
                // Harmless: the position stays where the last message left it, or the COMMIT
                // happened after all; the next attempt first finds out which.
                tracing::debug!("moving past control records failed: {error}");
                self.commit_unknown = true;
            }
        }
    }

    /// The messages `first..new_next` (`count` of the batch) committed.
    pub(super) fn committed(&mut self, first: i64, new_next: i64, count: usize) {
        tracing::debug!(first, next = new_next, records = count, "batch committed");
        self.next = new_next;
        self.start.metrics.set_position(new_next);
        self.batch.drain(..count);
        // While bisecting, the failing message is among the suspects not yet committed.
        self.limit = match self.suspects.take() {
            Some(suspects) if suspects > count => {
                self.suspects = Some(suspects - count);
                (suspects - count).min(self.limit)
            }
            _ => self.shared.batch.max_records,
        };
        self.mirror_to_kafka(false);
    }

    /// When the position not yet copied to Kafka is due to be, if one is pending.
    fn mirror_due(&self) -> Option<Instant> {
        match self.mirrored {
            Some((_, offset)) if offset == self.next => None,
            Some((at, _)) => Some(at + MIRROR_INTERVAL),
            None => Some(Instant::now()),
        }
    }

    /// Copies the position to Kafka's committed offsets, for lag tools only (the database
    /// stays the source of truth): at most every [`MIRROR_INTERVAL`], unless `now`.
    fn mirror_to_kafka(&mut self, now: bool) {
        match self.mirror_due() {
            None => return,
            Some(due) if !now && due > Instant::now() => return,
            Some(_) => {}
        }
        let mut tpl = TopicPartitionList::new();
        let key = &self.start.key;
        if tpl.add_partition_offset(&key.topic, key.partition, Offset::Offset(self.next)).is_ok()
            && let Err(e) = self.start.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!("mirroring the position to Kafka failed (harmless): {e}");
        }
        self.mirrored = Some((Instant::now(), self.next));
    }
}
