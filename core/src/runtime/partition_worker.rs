//! The worker of one partition: gathers messages into batches and commits each batch's
//! effects and the new position in one PostgreSQL transaction.
//!
//! Order is kept because one worker owns a partition and handles its messages one after
//! another; partitions run concurrently, bounded by the runtime's batch permits.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tracing::Instrument;

use super::decode::{Decoded, Raw, decode, raw};
use super::group::WorkerStart;
use super::shared::{Backoff, Shared};
use crate::codec::DecodeError;
use crate::error::{Error, Result};
use crate::handler::{Context, Handler};
use crate::message::Message;
use crate::mode::Database;
use crate::offsets::{self, Advance};

/// One message of a batch: its raw bytes (for the dead letters) and what decoding gave.
struct Item<K, P> {
    offset: i64,
    raw: Raw,
    decoded: std::result::Result<Message<K, P>, (&'static str, DecodeError)>,
}

impl<K, P> Item<K, P> {
    fn offset(&self) -> i64 {
        self.offset
    }
}

/// The message that failed last: how often so far, whether for good, and why.
struct Failed {
    offset: i64,
    count: u32,
    permanent: bool,
    reason: String,
}

/// How an attempt at the head of the batch failed.
enum Failure {
    /// Infrastructure (database, connection): try the same again after a backoff.
    Transient(Error),
    /// The partition cannot go on here (fenced, misconfigured).
    Fatal(Error),
    /// The message at `index` of the attempt failed.
    Message { index: usize, error: Error, permanent: bool },
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
    /// How many messages the next attempt takes (smaller while a failure is isolated).
    limit: usize,
    /// The message that failed last.
    failures: Option<Failed>,
}

impl<H: Handler<Mode = Database>> PartitionWorker<H> {
    pub(crate) fn new(handler: Arc<H>, shared: Arc<Shared>, start: WorkerStart) -> Self {
        let next = start.claim.next_offset;
        let outputs = handler.subscription().outputs().to_vec();
        let limit = shared.batch.max_records;
        Self { handler, shared, start, next, batch: Vec::new(), commit_unknown: false, outputs, limit, failures: None }
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

    /// Commits the gathered batch, message failures isolated and retried as the retry policy
    /// says, infrastructure failures retried until they pass. Returns `false` when the
    /// worker must end (fenced, stopped, or a permanent failure of the partition).
    async fn commit_with_retries(&mut self) -> bool {
        let mut infrastructure = Backoff::new();
        while !self.batch.is_empty() {
            let delay = match self.attempt().await {
                Ok(()) => {
                    infrastructure = Backoff::new();
                    continue;
                }
                Err(Failure::Fatal(error)) => {
                    self.shared.report(&error);
                    return false;
                }
                Err(Failure::Transient(error)) => {
                    self.shared.report(&error);
                    infrastructure.next_delay()
                }
                Err(Failure::Message { index, error, permanent }) => {
                    self.shared.report(&error);
                    let failed = self.batch[index].offset();
                    let count = match &self.failures {
                        Some(previous) if previous.offset == failed => previous.count + 1,
                        _ => 1,
                    };
                    self.failures = Some(Failed { offset: failed, count, permanent, reason: error.to_string() });
                    if index > 0 {
                        // The messages before it are fine: commit them first.
                        self.limit = index;
                        continue;
                    }
                    if permanent || count >= self.shared.retry.max_attempts {
                        if let Err(error) = self.dead_letter(error.to_string()).await {
                            self.shared.report(&error);
                            if matches!(error, Error::Fenced { .. }) {
                                return false;
                            }
                        }
                        continue;
                    }
                    if self.limit > 1 {
                        // Alone it may pass (its failure may come from a neighbour): try now.
                        self.limit = 1;
                        continue;
                    }
                    self.shared.retry.delay(count)
                }
            };
            if self.stopping() {
                return false;
            }
            let mut stop = self.start.stop.clone();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return false,
            }
        }
        true
    }

    /// One attempt: up to `limit` messages in one transaction with the new position.
    async fn attempt(&mut self) -> std::result::Result<(), Failure> {
        let undecodable = self.batch.iter().position(|item| item.decoded.is_err()).unwrap_or(self.batch.len());
        if undecodable == 0 {
            // Decoding cannot succeed later: straight to the dead letters.
            let reason = match &self.batch[0].decoded {
                Err((part, error)) => format!("cannot decode the {part}: {error}"),
                Ok(_) => String::new(),
            };
            self.failures =
                Some(Failed { offset: self.batch[0].offset(), count: 1, permanent: true, reason: reason.clone() });
            return self.dead_letter(reason).await.map_err(classify);
        }
        if let Some(failed) = &self.failures
            && failed.permanent
            && failed.offset == self.batch[0].offset()
        {
            // It failed for good inside a batch; the messages before it have committed since.
            let reason = failed.reason.clone();
            return self.dead_letter(reason).await.map_err(classify);
        }
        let end = undecodable.min(self.limit).max(1);
        let first = self.batch[0].offset();
        let new_next = self.batch[end - 1].offset() + 1;
        let shared = Arc::clone(&self.shared);
        let _permit =
            shared.batch_permits.acquire().await.map_err(|_| Failure::Fatal(Error::Config("runtime closed".into())))?;
        let key = &self.start.key;
        let pool = self.shared.pool().map_err(Failure::Fatal)?;
        if self.commit_unknown {
            // The last COMMIT failed on the wire: it may have committed. Never redo it.
            let stored = offsets::position(pool, &key.group, &key.topic, key.partition).await.map_err(classify)?;
            self.commit_unknown = false;
            if stored == Some(new_next) {
                self.committed(first, new_next, end);
                return Ok(());
            }
        }
        let mut tx = pool.begin().await.map_err(|e| classify(e.into()))?;
        let mut cx = Context::new(&mut tx, &self.outputs);
        for (index, item) in self.batch[..end].iter().enumerate() {
            let Ok(message) = &item.decoded else { continue };
            let outcome = AssertUnwindSafe(self.handler.handle(message, &mut cx)).catch_unwind().await;
            let failure = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(e)) if e.is_transient() => {
                    return Err(Failure::Transient(Error::Handler {
                        location: key.location(item.offset),
                        source: e.into_inner(),
                    }));
                }
                Ok(Err(e)) => {
                    let permanent = e.is_permanent();
                    (Error::Handler { location: key.location(item.offset), source: e.into_inner() }, permanent)
                }
                Err(panic) => (
                    Error::Handler {
                        location: key.location(item.offset),
                        source: panic_message(panic.as_ref()).into(),
                    },
                    false,
                ),
            };
            return Err(Failure::Message { index, error: failure.0, permanent: failure.1 });
        }
        // Last, so a zombie's row lock never blocks the partition's new owner for long; a
        // stale epoch fails here and the whole transaction rolls back.
        match offsets::advance(&mut tx, key, self.start.claim.epoch, self.next, new_next).await.map_err(classify)? {
            Advance::Advanced => {
                if let Err(e) = tx.commit().await {
                    self.commit_unknown = true;
                    return Err(Failure::Transient(e.into()));
                }
            }
            Advance::AlreadyCommitted => tx.rollback().await.map_err(|e| classify(e.into()))?,
        }
        self.committed(first, new_next, end);
        Ok(())
    }

    /// Moves the head message to the dead letters, in the transaction that moves the
    /// position past it.
    async fn dead_letter(&mut self, reason: String) -> Result<()> {
        let Some(item) = self.batch.first() else { return Ok(()) };
        let key = &self.start.key;
        let offset = item.offset();
        let attempts = match &self.failures {
            Some(failed) if failed.offset == offset => failed.count,
            _ => 1,
        };
        let mut tx = self.shared.pool()?.begin().await?;
        let (names, values): (Vec<&str>, Vec<Option<&[u8]>>) =
            item.raw.headers.iter().map(|(name, value)| (name.as_str(), value.as_deref())).unzip();
        sqlx::query(
            "INSERT INTO exactly.dead_letters
                 (group_id, topic, partition, message_offset, key, payload, header_names, header_values, error, attempts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (group_id, topic, partition, message_offset) DO NOTHING",
        )
        .bind(&key.group)
        .bind(&key.topic)
        .bind(key.partition)
        .bind(offset)
        .bind(item.raw.key.as_deref())
        .bind(item.raw.payload.as_deref())
        .bind(&names)
        .bind(&values)
        .bind(&reason)
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        match offsets::advance(&mut tx, key, self.start.claim.epoch, self.next, offset + 1).await? {
            Advance::Advanced => tx.commit().await?,
            Advance::AlreadyCommitted => tx.rollback().await?,
        }
        self.shared.report(&Error::DeadLettered { location: key.location(offset), attempts, reason });
        self.committed(offset, offset + 1, 1);
        Ok(())
    }

    fn committed(&mut self, first: i64, new_next: i64, count: usize) {
        tracing::debug!(first, next = new_next, records = count, "batch committed");
        self.next = new_next;
        self.batch.drain(..count);
        self.limit = self.shared.batch.max_records;
        self.mirror_to_kafka();
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
    let decoded = match decode::<H>(message) {
        Decoded::Message(message) => Ok(message),
        Decoded::Failed { part, error } => Err((part, error)),
    };
    Item { offset: message.offset(), raw: raw(message), decoded }
}

/// Sorts an error into what to do about it.
fn classify(error: Error) -> Failure {
    if error.is_retriable() { Failure::Transient(error) } else { Failure::Fatal(error) }
}

/// The text a panic carried.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    format!("the handler panicked: {text}")
}
