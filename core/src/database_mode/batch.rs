//! One attempt at the head of a worker's batch: up to `limit` messages handled in one
//! PostgreSQL transaction, which then records them as done (moves the stored position
//! past them, or records them as completed) and commits.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Postgres, Transaction};
use tokio::time::Instant;

use super::failures::Failure;
use super::partition::{Item, PartitionWorker, Progress};
use crate::api::context::Context;
use crate::api::mode::Database;
use crate::error::{Error, Result};
use crate::kafka::trace_context::TraceContext;
use crate::pipeline::invoke::{Call, FailureKind};
use crate::pipeline::work::{Entry, Ran, Work};
use crate::store::completed;
use crate::store::offsets::{self, Advance};
use crate::store::parking;
use crate::store::record::RawRecord;

/// A transaction of a partition's worker.
pub(super) type Tx = Transaction<'static, Postgres>;

/// What a batch's transaction did, counted once it commits.
#[derive(Debug, Default)]
struct Counts {
    handled: u64,
    parked: u64,
}

impl<H: Work<Mode = Database>> PartitionWorker<H> {
    /// One attempt: up to `limit` messages in one transaction with the new position.
    pub(super) async fn attempt(&mut self) -> std::result::Result<(), Failure> {
        if self.commit_unknown {
            // The last COMMIT failed on the wire: it may have committed. Never redo it.
            self.resolve_unknown_commit().await.map_err(Failure::of)?;
            if self.batch.is_empty() {
                return Ok(());
            }
        }
        if let Some(reason) = self.head_settled() {
            return self.dead_letter(reason).await.map_err(Failure::of);
        }
        let end = self.batch_end();
        let shared = Arc::clone(&self.shared);
        let _permit = shared
            .batch_permits
            .acquire()
            .await
            .map_err(|_| Failure::Fatal(Error::Internal("the runtime's batch permits were closed".into())))?;
        let mut tx = shared.pool().map_err(Failure::Fatal)?.begin().await.map_err(|e| Failure::of(e.into()))?;
        tracing::Span::current().record("records", end);
        let counts = self.handle_batch(&mut tx, end).await?;
        self.commit_batch(tx, end, counts).await
    }

    /// Why the head message goes to the dead letters without being handled, if it does:
    /// it cannot be decoded (nor can it ever be), or it failed for good inside a batch and
    /// the messages before it have committed since.
    fn head_settled(&mut self) -> Option<String> {
        let head = self.batch.first()?;
        let parked = self.parked.as_ref().is_some_and(|parked| parked.contains(&head.raw.key));
        if let Err((part, error)) = &head.decoded
            && !parked
        {
            let reason = format!("cannot decode the {part}: {error}");
            let location = self.key.location(head.offset);
            self.shared.report(&Error::Decode { location, part, source: error.to_string().into() });
            self.attempts.failed(head.offset, true, true, reason.clone());
            return Some(reason);
        }
        self.attempts.permanent_failure(head.offset).map(str::to_owned)
    }

    /// How many messages this attempt takes: up to the limit, and never an undecodable one
    /// (it is dead-lettered on its own once it is at the head), unless its key is parked.
    fn batch_end(&self) -> usize {
        let parked = self.parked.as_ref();
        let undecodable = self
            .batch
            .iter()
            .position(|item| item.decoded.is_err() && !parked.is_some_and(|p| p.contains(&item.raw.key)))
            .unwrap_or(self.batch.len());
        undecodable.min(self.limit).max(1)
    }

    /// Hands the first `end` messages to the handler through `tx`; a message whose key is
    /// parked joins its key's parked messages instead.
    async fn handle_batch(&self, tx: &mut Tx, end: usize) -> std::result::Result<Counts, Failure> {
        let key = &self.key;
        let mut counts = Counts::default();
        // The handler's messages, and where each is in the batch.
        let mut entries = Vec::with_capacity(end);
        let mut places = Vec::with_capacity(end);
        for (index, item) in self.batch[..end].iter().enumerate() {
            if self.parked.as_ref().is_some_and(|parked| parked.contains(&item.raw.key)) {
                parking::park(tx, key, item.offset, &item.raw, 0, None, Duration::ZERO).await.map_err(Failure::of)?;
                counts.parked += 1;
                continue;
            }
            let Ok(message) = &item.decoded else { continue };
            entries.push(Entry { message, call: self.call(item.offset), trace: self.trace(&item.raw) });
            places.push(index);
        }
        if entries.is_empty() {
            return Ok(counts);
        }
        let mut cx = Context::new(tx, &self.outputs);
        let Ran::Failed { at, cause, kind } = self.handler.run(&entries, &mut cx).await else {
            counts.handled += entries.len() as u64;
            return Ok(counts);
        };
        let index = at.map(|at| places[at]);
        let error =
            Error::Handler { location: key.location(self.batch[index.unwrap_or(places[0])].offset), source: cause };
        self.counters.failed.increment(1);
        let permanent = kind == FailureKind::Permanent;
        match (kind, index) {
            (FailureKind::Transient, _) => {
                self.counters.retried.increment(1);
                Err(Failure::Transient(error))
            }
            (_, Some(index)) => Err(Failure::Message { index, error, permanent }),
            (_, None) => Err(Failure::Somewhere { end, error }),
        }
    }

    /// Records the first `end` messages as done in `tx` and commits it.
    async fn commit_batch(&mut self, mut tx: Tx, end: usize, counts: Counts) -> std::result::Result<(), Failure> {
        match self.record_done(&mut tx, end).await.map_err(Failure::of)? {
            Advance::Advanced => {
                crate::failpoint::hit("db.before_commit");
                if let Err(e) = self.commit_timed(tx).await {
                    self.commit_unknown = true;
                    return Err(Failure::Transient(e.into()));
                }
                crate::failpoint::hit("db.after_commit");
            }
            Advance::AlreadyCommitted => tx.rollback().await.map_err(|e| Failure::of(e.into()))?,
        }
        self.counters.processed.increment(counts.handled);
        self.counters.parked.increment(counts.parked);
        #[allow(clippy::cast_precision_loss)] // a batch holds far fewer than 2^52 messages
        self.metrics.batch_size.record(end as f64);
        self.committed(end);
        Ok(())
    }

    /// Records in `tx` that the first `end` messages of the batch are done: moves the
    /// stored position past them, or records them as completed (a lane). Last in the
    /// transaction, so a zombie's row lock never blocks the partition's new owner for long;
    /// a stale epoch fails here and the whole transaction rolls back.
    pub(super) async fn record_done(&self, tx: &mut Tx, end: usize) -> Result<Advance> {
        match &self.progress {
            Progress::Position => {
                let new_next = self.batch[end - 1].offset() + 1;
                offsets::advance(tx, &self.key, self.epoch, self.next, new_next).await
            }
            Progress::Lane { .. } => {
                let done: Vec<i64> = self.batch[..end].iter().map(Item::offset).collect();
                completed::record(tx, &self.key, self.epoch, &done).await?;
                Ok(Advance::Advanced)
            }
        }
    }

    /// Which message a call is for, and which try at it.
    pub(super) fn call(&self, offset: i64) -> Call<'_> {
        let key = &self.key;
        Call {
            group: &key.group,
            topic: &key.topic,
            partition: key.partition,
            offset,
            attempt: self.attempts.next_try(offset),
            parent: None,
        }
    }

    /// The trace context of a message, from its `traceparent` header, when trace context
    /// is on.
    pub(super) fn trace(&self, raw: &RawRecord) -> Option<TraceContext> {
        if !self.shared.trace_context {
            return None;
        }
        TraceContext::from_headers(raw.headers.iter().map(|(name, value)| (name.as_str(), value.as_ref())))
    }

    /// COMMITs `tx`, timing it for the commit latency histogram.
    pub(super) async fn commit_timed(&self, tx: Tx) -> std::result::Result<(), sqlx::Error> {
        let started = Instant::now();
        tx.commit().await?;
        self.metrics.commit.record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The span of one attempt at the head of the batch (its record count is filled in).
    pub(super) fn batch_span(&self) -> tracing::Span {
        let key = &self.key;
        let offset = self.batch.first().map_or(self.next, |item| item.offset());
        tracing::info_span!("batch", mode = "database", group = %key.group, topic = %key.topic,
            partition = key.partition, offset, records = tracing::field::Empty,
            attempt = self.attempts.next_try(offset))
    }

    /// After a COMMIT whose outcome is unknown: finds out whether it happened (from the
    /// stored position, or a lane's completed offsets) and, if it did, takes its messages
    /// off the batch.
    async fn resolve_unknown_commit(&mut self) -> Result<()> {
        let pool = self.shared.pool()?;
        if self.parked.is_some() {
            // It may have parked a key.
            self.parked = Some(super::parked::ParkedKeys::load(pool, &self.key).await?);
        }
        let count = match &self.progress {
            Progress::Position => {
                let key = &self.key;
                match offsets::position(pool, &key.group, &key.topic, key.partition).await? {
                    Some(stored) if stored > self.next => {
                        // Past the last message, if it also moved past control records.
                        self.next = stored;
                        self.counters.set_position(stored);
                        self.batch.iter().take_while(|item| item.offset() < stored).count()
                    }
                    _ => 0,
                }
            }
            Progress::Lane { .. } => {
                let offsets: Vec<i64> = self.batch.iter().map(Item::offset).collect();
                let recorded = completed::recorded(pool, &self.key, &offsets).await?;
                self.batch.iter().take_while(|item| recorded.contains(&item.offset())).count()
            }
        };
        self.commit_unknown = false;
        if count > 0 {
            // It committed: its messages count as processed (parked ones too, a rare miscount).
            self.counters.processed.increment(u64::try_from(count).unwrap_or(0));
            self.committed(count);
        }
        Ok(())
    }
}
