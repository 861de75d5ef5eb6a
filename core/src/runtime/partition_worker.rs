//! The worker of one partition: gathers messages into batches and commits each batch's
//! effects and the new position in one PostgreSQL transaction.
//!
//! Order is kept because one worker owns a partition and handles its messages one after
//! another; partitions run concurrently, bounded by the runtime's batch permits.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tracing::Instrument;

use super::decode::{Decoded, decode};
use super::group::WorkerStart;
use super::shared::{Backoff, Shared};
use crate::error::{Error, ErrorClass, Result};
use crate::handler::{Context, Handler};
use crate::message::Message;
use crate::mode::Database;
use crate::offsets::{self, Advance};

/// One message of a batch: decoded, or the reason it could not be.
enum Item<K, P> {
    Decoded(Message<K, P>),
    Undecodable { offset: i64, part: &'static str, error: crate::codec::DecodeError },
}

impl<K, P> Item<K, P> {
    fn offset(&self) -> i64 {
        match self {
            Item::Decoded(message) => message.offset,
            Item::Undecodable { offset, .. } => *offset,
        }
    }
}

/// Why gathering stopped.
enum Gathered {
    /// A batch to commit (maybe cut short by a stop request).
    Batch,
    /// Stop requested and nothing pending.
    Stopped,
    /// The partition can no longer be read.
    Broken(Error),
}

pub(crate) struct PartitionWorker<H: Handler<Mode = Database>> {
    handler: Arc<H>,
    shared: Arc<Shared>,
    start: WorkerStart,
    /// The stored position: the next offset to process, as the database has it.
    next: i64,
    batch: Vec<Item<H::Key, H::Payload>>,
    /// The last attempt's COMMIT failed: whether it committed is unknown.
    commit_unknown: bool,
    /// The handler's declared output topics.
    outputs: Vec<String>,
}

impl<H: Handler<Mode = Database>> PartitionWorker<H> {
    pub(crate) fn new(handler: Arc<H>, shared: Arc<Shared>, start: WorkerStart) -> Self {
        let next = start.claim.next_offset;
        let outputs = handler.subscription().outputs().to_vec();
        Self { handler, shared, start, next, batch: Vec::new(), commit_unknown: false, outputs }
    }

    pub(crate) async fn run(mut self) {
        let span = tracing::info_span!("partition", group = %self.start.key.group, topic = %self.start.key.topic,
            partition = self.start.key.partition, epoch = self.start.claim.epoch);
        async move {
            loop {
                match self.gather().await {
                    Gathered::Stopped => return,
                    Gathered::Broken(error) => {
                        self.shared.report(&error);
                        return;
                    }
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
        .instrument(span)
        .await
    }

    fn stopping(&self) -> bool {
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
            let notified = self.start.notify.notified();
            let mut stop = self.start.stop.clone();
            match deadline {
                None => tokio::select! {
                    () = notified => {}
                    _ = stop.changed() => {}
                },
                Some(at) => tokio::select! {
                    () = notified => {}
                    _ = stop.changed() => {}
                    () = tokio::time::sleep_until(at) => return Gathered::Batch,
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
                    let item = item::<H>(&message);
                    self.batch.push(item);
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

    /// Commits the gathered batch, retrying what may succeed later. Returns `false` when the
    /// worker must end (fenced, stopped while failing, or a permanent failure).
    async fn commit_with_retries(&mut self) -> bool {
        let mut backoff = Backoff::new();
        loop {
            match self.commit_batch().await {
                Ok(()) => return true,
                Err(error) => {
                    self.shared.report(&error);
                    // Fenced: the partition is another instance's now. Other fatal errors need a
                    // person; a decode failure stays (it blocks the partition, never skipped).
                    let permanent = error.class() == ErrorClass::Fatal && !matches!(error, Error::Decode { .. });
                    if permanent || self.stopping() {
                        return false;
                    }
                    // The batch rolled back and the partition does not advance: try again.
                    let mut stop = self.start.stop.clone();
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.changed() => return false,
                    }
                }
            }
        }
    }

    /// One attempt: run the handler on every message, advance the position, commit.
    async fn commit_batch(&mut self) -> Result<()> {
        // Messages before an undecodable one commit on their own; the bad one then fails alone.
        let cut =
            self.batch.iter().position(|item| matches!(item, Item::Undecodable { .. })).unwrap_or(self.batch.len());
        if cut == 0 {
            return Err(self.decode_error());
        }
        let first = self.batch[0].offset();
        let new_next = self.batch[cut - 1].offset() + 1;
        let key = &self.start.key;
        let shared = Arc::clone(&self.shared);
        let _permit = shared.batch_permits.acquire().await.map_err(|_| Error::Config("runtime closed".into()))?;
        if self.commit_unknown {
            // The last COMMIT failed on the wire: it may have committed. Never redo it.
            let stored = offsets::position(self.shared.pool()?, &key.group, &key.topic, key.partition).await?;
            self.commit_unknown = false;
            if stored == Some(new_next) {
                return self.committed(first, new_next, cut);
            }
        }
        let mut tx = self.shared.pool()?.begin().await?;
        let mut cx = Context::new(&mut tx, &self.outputs);
        for item in &self.batch[..cut] {
            if let Item::Decoded(message) = item {
                self.handler
                    .handle(message, &mut cx)
                    .await
                    .map_err(|e| Error::Handler { location: key.location(message.offset), source: e.into_inner() })?;
            }
        }
        // Last, so a zombie's row lock never blocks the partition's new owner for long; a
        // stale epoch fails here and the whole transaction rolls back.
        match offsets::advance(&mut tx, key, self.start.claim.epoch, self.next, new_next).await? {
            Advance::Advanced => {
                if let Err(e) = tx.commit().await {
                    self.commit_unknown = true;
                    return Err(e.into());
                }
            }
            Advance::AlreadyCommitted => tx.rollback().await?,
        }
        self.committed(first, new_next, cut)
    }

    fn committed(&mut self, first: i64, new_next: i64, cut: usize) -> Result<()> {
        tracing::debug!(first, next = new_next, records = cut, "batch committed");
        self.next = new_next;
        self.batch.drain(..cut);
        self.mirror_to_kafka();
        if self.batch.is_empty() { Ok(()) } else { Err(self.decode_error()) }
    }

    fn decode_error(&mut self) -> Error {
        match self.batch.first_mut() {
            Some(Item::Undecodable { offset, part, error }) => Error::Decode {
                location: self.start.key.location(*offset),
                part,
                source: std::mem::replace(error, error.to_string().into()),
            },
            _ => Error::Config("internal: no undecodable message at the head of the batch".into()),
        }
    }

    /// Copies the position to Kafka's committed offsets, for lag tools only; the database
    /// stays the source of truth.
    fn mirror_to_kafka(&self) {
        let mut tpl = TopicPartitionList::new();
        let key = &self.start.key;
        if tpl.add_partition_offset(&key.topic, key.partition, Offset::Offset(self.next)).is_ok()
            && let Err(e) = self.start.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!("mirroring the position to Kafka failed (harmless): {e}");
        }
    }
}

fn item<H: Handler>(message: &BorrowedMessage<'_>) -> Item<H::Key, H::Payload> {
    match decode::<H>(message) {
        Decoded::Message(message) => Item::Decoded(message),
        Decoded::Failed { part, error } => Item::Undecodable { offset: message.offset(), part, error },
    }
}
