//! The worker of one partition: gathers messages into batches and commits each batch's
//! effects and the new position in one PostgreSQL transaction.
//!
//! Order is kept because one worker owns a partition and handles its messages one after
//! another; partitions run concurrently, bounded by the runtime's batch permits. With key
//! parking, a failing message and the later messages of its key are parked and retried
//! per key (see [`super::parking`]), so order is kept per key.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tracing::Instrument;

use super::decode::{Coordinates, Decoded, Raw, decode, decode_parts, raw};
use super::group::WorkerStart;
use super::panics;
use super::parking::{self, KeyBytes, ParkedKeys};
use super::shared::{Backoff, Shared};
use crate::codec::DecodeError;
use crate::dead_letters::{self, Letter};
use crate::error::{Error, ErrorClass, Result};
use crate::handler::{Context, Handler};
use crate::message::Message;
use crate::metrics::handles::GroupMetrics;
use crate::mode::{Database, ModeKind};
use crate::offsets::{self, Advance, PartitionKey};
use crate::settings::RetryPolicy;
use crate::trace_context::TraceContext;

/// How often, at most, a partition's position is copied to Kafka's committed offsets. Each
/// copy is an OffsetCommit request to the group coordinator, on the connection that also
/// carries the heartbeats: one per batch, with batches of one message, queued thousands of
/// requests ahead of the heartbeats, and the session expired (found by the benchmark S2).
const MIRROR_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Nothing gathered, but a parked key is due for its retry.
    ParkedDue,
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
    /// The handler's retry policy, or the runtime's.
    retry: RetryPolicy,
    /// Where dead letters go: this Kafka topic (through the outbox), or the table.
    dead_letter_topic: Option<String>,
    /// The parked keys, when key parking is on.
    parked: Option<ParkedKeys>,
    /// Whether the handler is given the records' headers.
    reads_headers: bool,
    /// The group's histograms (the partition's counters are in `start.metrics`).
    metrics: GroupMetrics,
    /// When the position was last copied to Kafka, and which.
    mirrored: Option<(Instant, i64)>,
}

impl<H: Handler<Mode = Database>> PartitionWorker<H> {
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
            failures: None,
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
                    let item = item::<H>(&message, &self.start.key.topic, self.reads_headers);
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

    /// Commits the gathered batch, message failures isolated and retried as the retry policy
    /// says, infrastructure failures retried until they pass. Returns `false` when the
    /// worker must end (fenced, stopped, or a permanent failure of the partition).
    async fn commit_with_retries(&mut self) -> bool {
        let mut infrastructure = Backoff::new();
        while !self.batch.is_empty() {
            let span = self.batch_span();
            let attempt = tokio::time::timeout(self.shared.transaction_timeout, self.attempt().instrument(span));
            let outcome = attempt.await.unwrap_or_else(|_| Err(Failure::Transient(self.abandoned("the batch"))));
            let delay = match outcome {
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
                    // Only a failure of the message tried on its own counts as an attempt: in
                    // a batch, a neighbour's effects may have caused it.
                    let alone = index == 0 && (self.limit == 1 || self.batch.len() == 1);
                    let before = match &self.failures {
                        Some(previous) if previous.offset == failed => previous.count,
                        _ => 0,
                    };
                    let count = before + u32::from(alone);
                    self.failures = Some(Failed { offset: failed, count, permanent, reason: error.to_string() });
                    if index > 0 {
                        // The messages before it are fine: commit them first.
                        self.start.metrics.retried.increment(1);
                        self.limit = index;
                        continue;
                    }
                    // Settle it for good (dead letter), try it alone now, park it (its key
                    // waits, the other keys go on), or retry it after the policy's backoff.
                    let limit = self.shared.transaction_timeout;
                    let settled = if permanent || count >= self.retry.max_attempts {
                        let settling = tokio::time::timeout(limit, self.dead_letter(error.to_string())).await;
                        Some(settling.unwrap_or_else(|_| Err(self.abandoned("dead-lettering the message"))))
                    } else if self.limit > 1 {
                        // Alone it may pass (its failure may come from a neighbour): try now.
                        self.start.metrics.retried.increment(1);
                        self.limit = 1;
                        continue;
                    } else if self.parked.is_some() {
                        let settling = tokio::time::timeout(limit, self.park_head(count, error.to_string())).await;
                        Some(settling.unwrap_or_else(|_| Err(self.abandoned("parking the message"))))
                    } else {
                        None
                    };
                    match settled {
                        None => {
                            self.start.metrics.retried.increment(1);
                            self.retry.delay(count)
                        }
                        Some(Ok(())) => continue,
                        Some(Err(error)) if error.class() == ErrorClass::Fatal => {
                            self.shared.report(&error);
                            return false;
                        }
                        Some(Err(error)) => {
                            self.shared.report(&error);
                            infrastructure.next_delay()
                        }
                    }
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
        if self.commit_unknown {
            // The last COMMIT failed on the wire: it may have committed. Never redo it.
            self.resolve_unknown_commit().await.map_err(classify)?;
            if self.batch.is_empty() {
                return Ok(());
            }
        }
        let parked = self.parked.as_ref();
        let undecodable = self
            .batch
            .iter()
            .position(|item| item.decoded.is_err() && !parked.is_some_and(|p| p.contains(&item.raw.key)))
            .unwrap_or(self.batch.len());
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
        let mut tx = pool.begin().await.map_err(|e| classify(e.into()))?;
        let mut cx = Context::new(&mut tx, &self.outputs);
        let metrics = &self.start.metrics;
        let (mut handled, mut parked_now) = (0_u64, 0_u64);
        tracing::Span::current().record("records", end);
        for (index, item) in self.batch[..end].iter().enumerate() {
            if let Some(parked) = &self.parked
                && parked.contains(&item.raw.key)
            {
                // Its key waits: it joins the key's parked messages, in this transaction.
                parking::park(cx.db(), key, item.offset, &item.raw, 0, None, Duration::ZERO).await.map_err(classify)?;
                parked_now += 1;
                continue;
            }
            let Ok(message) = &item.decoded else { continue };
            let span = message_span(key, item.offset, self.attempt_of(item.offset));
            let trace = self.shared.trace_context.then(|| trace_of(&item.raw)).flatten();
            if let Some(trace) = &trace {
                trace.record(&span);
            }
            cx.set_trace(trace);
            let outcome = panics::catch(self.handler.handle(message, &mut cx).instrument(span)).await;
            if !matches!(outcome, Ok(Ok(()))) {
                metrics.failed.increment(1);
            }
            let failure = match outcome {
                Ok(Ok(())) => {
                    handled += 1;
                    continue;
                }
                Ok(Err(e)) if e.is_transient() => {
                    metrics.retried.increment(1);
                    return Err(Failure::Transient(Error::Handler {
                        location: key.location(item.offset),
                        source: e.into_inner(),
                    }));
                }
                Ok(Err(e)) => {
                    let permanent = e.is_permanent();
                    (Error::Handler { location: key.location(item.offset), source: e.into_inner() }, permanent)
                }
                Err(panic) => (Error::Handler { location: key.location(item.offset), source: panic.into() }, false),
            };
            return Err(Failure::Message { index, error: failure.0, permanent: failure.1 });
        }
        // Last, so a zombie's row lock never blocks the partition's new owner for long; a
        // stale epoch fails here and the whole transaction rolls back.
        match offsets::advance(&mut tx, key, self.start.claim.epoch, self.next, new_next).await.map_err(classify)? {
            Advance::Advanced => {
                crate::failpoint::hit("db.before_commit");
                if let Err(e) = self.commit_timed(tx).await {
                    self.commit_unknown = true;
                    return Err(Failure::Transient(e.into()));
                }
                crate::failpoint::hit("db.after_commit");
            }
            Advance::AlreadyCommitted => tx.rollback().await.map_err(|e| classify(e.into()))?,
        }
        let metrics = &self.start.metrics;
        metrics.processed.increment(handled);
        metrics.parked.increment(parked_now);
        #[allow(clippy::cast_precision_loss)] // a batch holds far fewer than 2^52 messages
        self.metrics.batch_size.record(end as f64);
        self.committed(first, new_next, end);
        Ok(())
    }

    /// COMMITs `tx`, timing it for the commit latency histogram.
    async fn commit_timed(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
    ) -> std::result::Result<(), sqlx::Error> {
        let started = Instant::now();
        tx.commit().await?;
        self.metrics.commit.record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// [`Error::DatabaseTimedOut`] for `during`, at the head of the batch.
    fn timed_out(&self, during: &'static str) -> Error {
        let offset = self.batch.first().map_or(self.next, Item::offset);
        let location = Some(self.start.key.location(offset));
        Error::DatabaseTimedOut { during: during.to_owned(), location, after: self.shared.transaction_timeout }
    }

    /// Work on the database ran past the deadline and was dropped where it waited: its
    /// transaction rolls back once its connection goes, unless the deadline struck during
    /// `COMMIT`, so the stored position is read before the next attempt.
    fn abandoned(&mut self, during: &'static str) -> Error {
        self.commit_unknown = true;
        self.timed_out(during)
    }

    /// The try at the message at `offset` this is, as the retry policy counts them.
    fn attempt_of(&self, offset: i64) -> u32 {
        match &self.failures {
            Some(failed) if failed.offset == offset => failed.count + 1,
            _ => 1,
        }
    }

    /// The span of one attempt at the head of the batch (its record count is filled in).
    fn batch_span(&self) -> tracing::Span {
        let key = &self.start.key;
        let offset = self.batch.first().map_or(self.next, Item::offset);
        tracing::info_span!("batch", mode = "database", group = %key.group, topic = %key.topic,
            partition = key.partition, offset, records = tracing::field::Empty, attempt = self.attempt_of(offset))
    }

    /// After a COMMIT whose outcome is unknown: reads the stored position and, if that
    /// commit did happen, takes its messages off the batch.
    async fn resolve_unknown_commit(&mut self) -> Result<()> {
        let key = &self.start.key;
        let pool = self.shared.pool()?;
        let stored = offsets::position(pool, &key.group, &key.topic, key.partition).await?;
        if self.parked.is_some() {
            // It may have parked a key.
            self.parked = Some(ParkedKeys::load(pool, key).await?);
        }
        self.commit_unknown = false;
        if let Some(stored) = stored
            && stored > self.next
        {
            let count = self.batch.iter().take_while(|item| item.offset() < stored).count();
            let first = self.batch.first().map_or(self.next, Item::offset);
            // It committed: its messages count as processed (parked ones too, a rare miscount).
            self.start.metrics.processed.increment(u64::try_from(count).unwrap_or(0));
            self.committed(first, stored, count);
        }
        Ok(())
    }

    /// Commits `tx` after it moved the position past the head message; an error on the
    /// wire leaves the outcome unknown, resolved before the next attempt.
    async fn commit_single(&mut self, mut tx: sqlx::Transaction<'static, sqlx::Postgres>, offset: i64) -> Result<()> {
        match offsets::advance(&mut tx, &self.start.key, self.start.claim.epoch, self.next, offset + 1).await? {
            Advance::Advanced => {
                if let Err(e) = self.commit_timed(tx).await {
                    self.commit_unknown = true;
                    return Err(e.into());
                }
            }
            Advance::AlreadyCommitted => tx.rollback().await?,
        }
        Ok(())
    }

    /// Moves the head message to the dead letters, in the transaction that moves the
    /// position past it.
    async fn dead_letter(&mut self, reason: String) -> Result<()> {
        let Some(item) = self.batch.first() else { return Ok(()) };
        let offset = item.offset();
        let attempts = match &self.failures {
            Some(failed) if failed.offset == offset => failed.count.max(1),
            _ => 1,
        };
        let location = self.start.key.location(offset);
        let mut tx = self.shared.pool()?.begin().await?;
        let letter = Letter { at: &location, raw: &item.raw, error: &reason, attempts };
        dead_letters::write(&mut tx, &letter, self.dead_letter_topic.as_deref()).await?;
        self.commit_single(tx, offset).await?;
        self.start.metrics.dead_lettered.increment(1);
        self.shared.report(&Error::DeadLettered { location, attempts, reason });
        self.committed(offset, offset + 1, 1);
        Ok(())
    }

    /// Parks the head message, after `count` failures, in the transaction that moves the
    /// position past it; its key's later messages will follow it into the table.
    async fn park_head(&mut self, count: u32, reason: String) -> Result<()> {
        let Some(item) = self.batch.first() else { return Ok(()) };
        let offset = item.offset();
        let delay = self.retry.delay(count);
        let mut tx = self.shared.pool()?.begin().await?;
        parking::park(&mut tx, &self.start.key, offset, &item.raw, count, Some(&reason), delay).await?;
        let message_key = item.raw.key.clone();
        self.commit_single(tx, offset).await?;
        self.start.metrics.parked.increment(1);
        tracing::info!(offset, attempts = count, retry_in = ?delay, "message parked; its key waits, the others go on");
        if let Some(parked) = &mut self.parked {
            parked.set_due(message_key, Instant::now() + delay);
        }
        self.committed(offset, offset + 1, 1);
        Ok(())
    }

    /// Reads the partition's parked keys at start, retrying while the database is away.
    async fn load_parked(&mut self) -> bool {
        let mut backoff = Backoff::new();
        loop {
            let loaded = match self.shared.pool() {
                Ok(pool) => {
                    tokio::time::timeout(self.shared.transaction_timeout, ParkedKeys::load(pool, &self.start.key))
                        .await
                        .unwrap_or_else(|_| Err(self.timed_out("loading the parked keys")))
                }
                Err(error) => Err(error),
            };
            match loaded {
                Ok(parked) => {
                    self.parked = Some(parked);
                    return true;
                }
                Err(error) => {
                    self.shared.report(&error);
                    if error.class() == ErrorClass::Fatal || self.stopping() {
                        return false;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Retries every parked key that is due. Returns `false` when the worker must end.
    async fn retry_parked(&mut self) -> bool {
        let due = match &self.parked {
            Some(parked) if !parked.is_empty() => parked.due_now(),
            _ => return true,
        };
        for message_key in due {
            if self.stopping() {
                return false;
            }
            let retrying = tokio::time::timeout(self.shared.transaction_timeout, self.retry_parked_key(&message_key));
            let outcome = retrying.await.unwrap_or_else(|_| Err(self.abandoned("retrying a parked key")));
            if let Err(error) = outcome {
                self.shared.report(&error);
                if error.class() == ErrorClass::Fatal {
                    return false;
                }
                if let Some(parked) = &mut self.parked {
                    parked.set_due(message_key, Instant::now() + Duration::from_secs(1));
                }
            }
        }
        true
    }

    /// Handles the parked messages of `message_key` oldest first, each in a transaction that
    /// also removes it, until one fails (rescheduled, or dead-lettered when out of retries)
    /// or none is left (the key is free again).
    async fn retry_parked_key(&mut self, message_key: &KeyBytes) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let pool = shared.pool()?;
        let key = &self.start.key;
        let epoch = self.start.claim.epoch;
        loop {
            let _permit = shared.batch_permits.acquire().await.map_err(|_| Error::Config("runtime closed".into()))?;
            let mut tx = pool.begin().await?;
            offsets::hold(&mut tx, key, epoch, self.next).await?;
            let Some(message) = parking::oldest(&mut tx, key, message_key).await? else {
                tx.rollback().await?;
                if let Some(parked) = &mut self.parked {
                    parked.release(message_key);
                }
                return Ok(());
            };
            let location = key.location(message.offset);
            let attempts = message.attempts + 1;
            let at = Coordinates {
                topic: key.topic.clone(),
                partition: key.partition,
                offset: message.offset,
                timestamp: None,
            };
            let headers = if self.reads_headers { message.raw.headers.clone() } else { Vec::new() };
            let metrics = &self.start.metrics;
            let failure =
                match decode_parts::<H>(message.raw.key.as_deref(), message.raw.payload.as_deref(), headers, at) {
                    Decoded::Failed { part, error } => Some((format!("cannot decode the {part}: {error}"), true)),
                    Decoded::Message(decoded) => {
                        let mut cx = Context::new(&mut tx, &self.outputs);
                        let span = message_span(key, message.offset, attempts);
                        let trace = self.shared.trace_context.then(|| trace_of(&message.raw)).flatten();
                        if let Some(trace) = &trace {
                            trace.record(&span);
                        }
                        cx.set_trace(trace);
                        let outcome = panics::catch(self.handler.handle(&decoded, &mut cx).instrument(span)).await;
                        if !matches!(outcome, Ok(Ok(()))) {
                            metrics.failed.increment(1);
                        }
                        match outcome {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) if e.is_transient() => {
                                // The database, not the message: try again later without counting.
                                metrics.retried.increment(1);
                                return Err(Error::Handler { location, source: e.into_inner() });
                            }
                            Ok(Err(e)) => Some((e.to_string(), e.is_permanent())),
                            Err(panic) => Some((panic, false)),
                        }
                    }
                };
            let Some((reason, permanent)) = failure else {
                parking::remove(&mut tx, key, message.offset).await?;
                self.commit_timed(tx).await?;
                self.start.metrics.processed.increment(1);
                continue;
            };
            tx.rollback().await?;
            self.shared.report(&Error::Handler { location: location.clone(), source: reason.clone().into() });
            let mut tx = pool.begin().await?;
            offsets::hold(&mut tx, key, epoch, self.next).await?;
            if permanent || attempts >= self.retry.max_attempts {
                let letter = Letter { at: &location, raw: &message.raw, error: &reason, attempts };
                dead_letters::write(&mut tx, &letter, self.dead_letter_topic.as_deref()).await?;
                parking::remove(&mut tx, key, message.offset).await?;
                self.commit_timed(tx).await?;
                self.start.metrics.dead_lettered.increment(1);
                self.shared.report(&Error::DeadLettered { location, attempts, reason });
                continue;
            }
            let delay = self.retry.delay(attempts);
            parking::reschedule(&mut tx, key, message.offset, attempts, &reason, delay).await?;
            self.commit_timed(tx).await?;
            self.start.metrics.retried.increment(1);
            if let Some(parked) = &mut self.parked {
                parked.set_due(message_key.clone(), Instant::now() + delay);
            }
            return Ok(());
        }
    }

    fn committed(&mut self, first: i64, new_next: i64, count: usize) {
        tracing::debug!(first, next = new_next, records = count, "batch committed");
        self.next = new_next;
        self.start.metrics.set_position(new_next);
        self.batch.drain(..count);
        self.limit = self.shared.batch.max_records;
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

/// A record, kept raw (for a dead letter or a parked key) and decoded for the handler (with
/// its headers if `reads_headers`).
fn item<H: Handler>(message: &BorrowedMessage<'_>, topic: &str, reads_headers: bool) -> Item<H::Key, H::Payload> {
    let raw = raw(message);
    let headers = if reads_headers { raw.headers.clone() } else { Vec::new() };
    let decoded = match decode::<H>(message, topic.to_owned(), headers) {
        Decoded::Message(message) => Ok(message),
        Decoded::Failed { part, error } => Err((part, error)),
    };
    Item { offset: message.offset(), raw, decoded }
}

/// The span of one message's handling.
fn message_span(key: &PartitionKey, offset: i64, attempt: u32) -> tracing::Span {
    tracing::debug_span!("message", group = %key.group, topic = %key.topic, partition = key.partition, offset,
        attempt, trace_id = tracing::field::Empty, parent_span_id = tracing::field::Empty,
        span_id = tracing::field::Empty)
}

/// The trace context of a message, from its `traceparent` header.
fn trace_of(raw: &Raw) -> Option<TraceContext> {
    TraceContext::from_headers(raw.headers.iter().map(|(name, value)| (name.as_str(), value.as_ref())))
}

/// Sorts an error into what to do about it.
fn classify(error: Error) -> Failure {
    if error.is_retriable() { Failure::Transient(error) } else { Failure::Fatal(error) }
}
