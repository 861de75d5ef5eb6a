//! What every Database-mode worker of a partition has: the messages it holds, and how it
//! hands them to the handler and commits them ([`super::batch`]), isolating and retrying
//! what fails ([`super::failures`]) and retrying parked keys ([`super::parked`]).
//!
//! A partition has one such worker, which reads the partition itself
//! ([`super::sequential`]), or, with key-level concurrency, several lanes fed by the
//! partition's dispatcher ([`super::keyed`]). The two differ only in what a commit
//! records: a sequential worker moves the stored position past its messages, a lane
//! records its messages as completed and reports them to the dispatcher, which moves the
//! position once everything below it is done.

use std::sync::Arc;

use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::consumer::WorkerStart;
use super::parked::ParkedKeys;
use crate::api::codec::DecodeError;
use crate::api::message::Message;
use crate::api::mode::{Database, ModeKind};
use crate::api::settings::RetryPolicy;
use crate::engine::shared::Shared;
use crate::error::{Error, Location};
use crate::ops::metrics::handles::{GroupMetrics, PartitionMetrics};
use crate::pipeline::attempts::Attempts;
use crate::pipeline::decode::{Coordinates, Decoded, decode_kept, raw};
use crate::pipeline::work::Work;
use crate::store::offsets::PartitionKey;
use crate::store::parking::KeyBytes;
use crate::store::record::RawRecord;

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
    pub(super) fn new<H: Work<Key = K, Payload = P>>(
        message: &BorrowedMessage<'_>,
        topic: &str,
        reads_headers: bool,
    ) -> Self {
        let raw = raw(message);
        let headers = if reads_headers { raw.headers.clone() } else { Vec::new() };
        let decoded = match decode_kept::<H>(&raw, headers, Coordinates::of(message, topic.to_owned())) {
            Decoded::Message(message) => Ok(message),
            Decoded::Failed { part, error } => Err((part, error)),
        };
        Item { offset: message.offset(), raw, decoded }
    }

    pub(super) fn offset(&self) -> i64 {
        self.offset
    }
}

/// A partition queue's `error`: the partition broken (its position is out of range, at
/// `location`), or nothing to act on (its end reached, or logged and read on).
pub(super) fn read_failed(error: KafkaError, location: impl FnOnce() -> Location) -> Option<Error> {
    match error {
        KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange) => {
            Some(Error::OffsetOutOfRange { location: location() })
        }
        KafkaError::PartitionEOF(_) => None,
        e => {
            tracing::warn!("reading the partition: {e}");
            None
        }
    }
}

/// What a worker's commit records besides the messages' effects.
pub(super) enum Progress {
    /// The partition's only worker: the stored position moves past the committed messages
    /// (compare-and-set from `next`).
    Position,
    /// Lane `lane` of a key-concurrent partition: the committed messages are recorded as
    /// completed, and reported to the dispatcher through `reports`.
    Lane { lane: usize, reports: mpsc::UnboundedSender<Report> },
}

/// What a lane reports to its partition's dispatcher.
pub(super) enum Report {
    /// These of its messages committed.
    Done { lane: usize, offsets: Vec<i64> },
    /// It parked a message of `key` (key parking): the key's later messages are parked too,
    /// until its retry, due at `due`, empties the key.
    Parked { key: KeyBytes, due: Instant },
    /// Its retry of the parked key `key` ended: the next is due at `due`, or none of its
    /// messages is parked any more (`None`: the key is free).
    Retried { lane: usize, key: KeyBytes, due: Option<Instant> },
}

/// The messages of one partition a worker holds, and what it needs to handle and commit
/// them, from the partition's claim until it is revoked or the runtime stops.
pub(crate) struct PartitionWorker<H: Work<Mode = Database>> {
    pub(super) handler: Arc<H>,
    pub(super) shared: Arc<Shared>,
    pub(super) key: PartitionKey,
    /// The claim's epoch, which every commit presents.
    pub(super) epoch: i64,
    /// Set when the partition is revoked or the runtime stops.
    pub(super) stop: watch::Receiver<bool>,
    /// The partition's counters and position (registered for the lag gauge).
    pub(super) counters: Arc<PartitionMetrics>,
    /// What a commit records besides the effects.
    pub(super) progress: Progress,
    /// The stored position, the next offset to process, as the database has it (a lane
    /// keeps the position of the claim, to locate errors when it holds no message).
    pub(super) next: i64,
    pub(super) batch: Vec<Item<H::Key, H::Payload>>,
    /// The last attempt's COMMIT failed: whether it committed is unknown.
    pub(super) commit_unknown: bool,
    /// The handler's declared output topics.
    pub(super) outputs: Vec<String>,
    /// The most messages an attempt takes.
    pub(super) batch_limit: usize,
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
    /// The group's histograms (the partition's counters are in `counters`).
    pub(super) metrics: GroupMetrics,
}

impl<H: Work<Mode = Database>> PartitionWorker<H> {
    /// A worker of the partition `start` claimed, whose attempts take up to `batch_limit`
    /// messages.
    pub(super) fn new(
        handler: Arc<H>,
        shared: Arc<Shared>,
        start: &WorkerStart,
        progress: Progress,
        batch_limit: usize,
    ) -> Self {
        let metrics = GroupMetrics::new(ModeKind::Database, &start.key.group);
        let subscription = handler.subscription();
        Self {
            outputs: subscription.outputs().to_vec(),
            retry: subscription.retry().unwrap_or(shared.retry),
            dead_letter_topic: subscription.dead_letter_topic().map(str::to_owned),
            parked: subscription.key_parking().then(ParkedKeys::default),
            reads_headers: subscription.reads_headers(),
            handler,
            shared,
            key: start.key.clone(),
            epoch: start.claim.epoch,
            stop: start.stop.clone(),
            counters: Arc::clone(&start.metrics),
            progress,
            next: start.claim.next_offset,
            batch: Vec::new(),
            commit_unknown: false,
            batch_limit,
            limit: batch_limit,
            suspects: None,
            attempts: Attempts::default(),
            metrics,
        }
    }

    pub(super) fn stopping(&self) -> bool {
        *self.stop.borrow() || self.shared.shutting_down()
    }

    /// The first `count` messages of the batch committed; the stored position is past
    /// them (a sequential worker), or they are recorded as completed (a lane).
    pub(super) fn committed(&mut self, count: usize) {
        let done: Vec<i64> = self.batch.drain(..count).map(|item| item.offset).collect();
        tracing::debug!(first = done.first(), last = done.last(), records = count, "batch committed");
        match &self.progress {
            Progress::Position => {
                if let Some(last) = done.last() {
                    self.next = self.next.max(last + 1);
                    self.counters.set_position(self.next);
                }
            }
            Progress::Lane { lane, .. } => self.report(Report::Done { lane: *lane, offsets: done }),
        }
        // While bisecting, the failing message is among the suspects not yet committed.
        self.limit = match self.suspects.take() {
            Some(suspects) if suspects > count => {
                self.suspects = Some(suspects - count);
                (suspects - count).min(self.limit)
            }
            _ => self.batch_limit,
        };
    }

    /// Tells the dispatcher, if this is a lane.
    pub(super) fn report(&self, report: Report) {
        if let Progress::Lane { reports, .. } = &self.progress {
            // The dispatcher is gone only when the partition stops; the database has it all.
            let _ = reports.send(report);
        }
    }
}
