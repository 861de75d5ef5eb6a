//! The worker of a partition handled one message after another: reads the partition's
//! queue, gathers batches and hands each to [`super::batch`], which commits its effects and
//! the new position in one PostgreSQL transaction. While a batch commits, the worker reads
//! and decodes the messages that follow it (up to a batch more), so that the database is
//! not kept waiting for the next batch to be gathered.
//!
//! Order is kept because one worker owns a partition and handles its messages one after
//! another; partitions run concurrently, bounded by the runtime's batch permits. With key
//! parking, a failing message and the later messages of its key are parked and retried
//! per key (see [`super::parked`]), so order is kept per key.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::message::Message as _;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use super::consumer::{GroupConsumer, GroupContext, WorkerStart};
use super::mirror::{Mirror, consumer_position};
use super::parked::ParkedKeys;
use super::partition::{Item, PartitionWorker, Progress, read_failed};
use crate::api::mode::Database;
use crate::engine::shared::Shared;
use crate::error::Error;
use crate::ops::metrics::handles::PartitionMetrics;
use crate::pipeline::work::Work;
use crate::store::offsets::{self, Advance, PartitionKey};

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
pub(crate) struct SequentialPartition<H: Work<Mode = Database>> {
    worker: PartitionWorker<H>,
    queue: PartitionQueue<GroupContext>,
    /// Woken when the queue has messages.
    notify: Arc<Notify>,
    consumer: Arc<GroupConsumer>,
    /// Copies the position to Kafka's committed offsets.
    mirror: Mirror,
    /// The messages read while the last batch committed: the next batch's first.
    ahead: Vec<Item<H::Key, H::Payload>>,
}

/// Reads a partition's queue into a batch: what gathering and reading ahead share.
struct QueueReader<'a> {
    queue: &'a PartitionQueue<GroupContext>,
    key: &'a PartitionKey,
    reads_headers: bool,
    counters: &'a PartitionMetrics,
}

impl QueueReader<'_> {
    /// Moves what the queue holds now into `into`, until it holds `max` messages. Records
    /// below `from` were committed already (a seek replays them), and a record at or below
    /// `into`'s last was read already: both are skipped.
    fn drain<H: Work<Mode = Database>>(
        &self,
        into: &mut Vec<Item<H::Key, H::Payload>>,
        max: usize,
        from: i64,
    ) -> Option<Error> {
        while into.len() < max {
            match self.queue.poll(Duration::ZERO) {
                None => return None,
                Some(Ok(message)) => {
                    let offset = message.offset();
                    if offset < from || into.last().is_some_and(|item| offset <= item.offset()) {
                        continue;
                    }
                    into.push(Item::new::<H>(&message, &self.key.topic, self.reads_headers));
                    self.counters.consumed.increment(1);
                }
                Some(Err(error)) => {
                    if let Some(broken) = read_failed(error, || self.key.location(from)) {
                        return Some(broken);
                    }
                }
            }
        }
        None
    }
}

impl<H: Work<Mode = Database>> SequentialPartition<H> {
    pub(crate) fn new(handler: Arc<H>, shared: Arc<Shared>, start: WorkerStart) -> Self {
        let limit = shared.batch.max_records;
        let worker = PartitionWorker::new(handler, shared, &start, Progress::Position, limit);
        let mirror = Mirror::new(start.key.clone());
        let (queue, notify, consumer) = (start.queue, start.notify, start.consumer);
        Self { worker, queue, notify, consumer, mirror, ahead: Vec::new() }
    }

    pub(crate) async fn run(mut self) {
        let key = &self.worker.key;
        let span = tracing::info_span!("partition", group = %key.group, topic = %key.topic,
            partition = key.partition, epoch = self.worker.epoch);
        async move {
            self.work().await;
            self.mirror.copy(&self.consumer, self.worker.next, true);
        }
        .instrument(span)
        .await
    }

    /// Gathers and commits batches until stopped.
    async fn work(&mut self) {
        let worker = &mut self.worker;
        if worker.parked.is_some() && !worker.load_parked().await {
            return;
        }
        loop {
            if !self.worker.retry_parked().await {
                return;
            }
            match self.gather().await {
                Gathered::Stopped => return,
                Gathered::Broken(error) => {
                    self.worker.shared.report(&error);
                    return;
                }
                Gathered::ParkedDue => continue,
                Gathered::Batch => {}
            }
            let (committed, broken) = self.commit_reading_ahead().await;
            if !committed {
                return;
            }
            if let Some(error) = broken {
                self.worker.shared.report(&error);
                return;
            }
            self.mirror.copy(&self.consumer, self.worker.next, false);
            if self.worker.stopping() {
                return;
            }
        }
    }

    /// Fills the worker's batch up to the batch size or its deadline.
    async fn gather(&mut self) -> Gathered {
        let max = self.worker.shared.batch.max_records;
        let mut deadline: Option<Instant> = None;
        loop {
            if let Some(broken) = self.drain(max) {
                return Gathered::Broken(broken);
            }
            let worker = &self.worker;
            if worker.batch.len() >= max {
                return Gathered::Batch;
            }
            if !worker.batch.is_empty() && deadline.is_none() {
                deadline = Some(Instant::now() + worker.shared.batch.max_wait);
            }
            if worker.stopping() {
                return if worker.batch.is_empty() { Gathered::Stopped } else { Gathered::Batch };
            }
            if worker.batch.is_empty() {
                self.skip_control_records().await;
            }
            let notified = self.notify.notified();
            let mut stop = self.worker.stop.clone();
            let parked_due = self.worker.parked.as_ref().and_then(ParkedKeys::next_due);
            let mirror_due = self.mirror.due(self.worker.next);
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
                        self.mirror.copy(&self.consumer, self.worker.next, false);
                        let now = Instant::now();
                        if deadline.is_some_and(|d| d <= now) || parked_due.is_some_and(|p| p <= now) {
                            let empty = self.worker.batch.is_empty();
                            return if empty { Gathered::ParkedDue } else { Gathered::Batch };
                        }
                    }
                },
            }
        }
    }

    /// Takes what the partition queue holds now, up to `max` in the batch.
    fn drain(&mut self, max: usize) -> Option<Error> {
        let worker = &mut self.worker;
        let reader = QueueReader {
            queue: &self.queue,
            key: &worker.key,
            reads_headers: worker.reads_headers,
            counters: &worker.counters,
        };
        reader.drain::<H>(&mut worker.batch, max, worker.next)
    }

    /// Commits the gathered batch (see [`PartitionWorker::commit_with_retries`]) while
    /// reading the messages that follow it into `ahead`, up to a batch of them; once it has
    /// committed, they begin the next batch. Returns whether the worker goes on, and the
    /// error that broke the partition's queue while reading ahead, if one did.
    async fn commit_reading_ahead(&mut self) -> (bool, Option<Error>) {
        let Self { worker, queue, notify, ahead, .. } = self;
        let (key, counters) = (worker.key.clone(), Arc::clone(&worker.counters));
        let reader = QueueReader { queue, key: &key, reads_headers: worker.reads_headers, counters: &counters };
        let from = worker.batch.last().map_or(worker.next, |item| item.offset() + 1);
        let max = worker.shared.batch.max_records;
        let mut broken = None;
        let reading = async {
            loop {
                if broken.is_none() {
                    broken = reader.drain::<H>(ahead, max, from);
                }
                notify.notified().await;
            }
        };
        let committed = tokio::select! {
            biased;
            committed = worker.commit_with_retries() => committed,
            never = reading => match never {},
        };
        // A committed batch leaves the worker's empty, and its position past the batch.
        let next = worker.next;
        worker.batch.extend(ahead.drain(..).filter(|item| item.offset() >= next));
        (committed, broken)
    }

    /// Moves the stored position past records the consumer skipped without delivering them
    /// (transaction markers, records of aborted transactions), so a partition whose log
    /// ends with a marker is seen at its end. Safe: the consumer's position only passes a
    /// deliverable record once it was delivered to this worker. Called only when idle.
    async fn skip_control_records(&mut self) {
        let Some(position) = consumer_position(&self.consumer, &self.worker.key) else { return };
        let worker = &mut self.worker;
        if position <= worker.next {
            return;
        }
        let outcome = async {
            let mut tx = worker.shared.begin().await?;
            match offsets::advance(&mut tx, &worker.key, worker.epoch, worker.next, position).await? {
                Advance::Advanced => tx.commit().await?,
                Advance::AlreadyCommitted => tx.rollback().await?,
            }
            Ok::<(), Error>(())
        };
        let outcome = tokio::time::timeout(worker.shared.transaction_timeout, outcome)
            .await
            .unwrap_or_else(|_| Err(worker.timed_out("moving past control records")));
        match outcome {
            Ok(()) => {
                tracing::debug!(from = worker.next, to = position, "position moved past records not delivered");
                worker.next = position;
                worker.counters.set_position(position);
                self.mirror.copy(&self.consumer, position, false);
            }
            Err(error) => {
                // Harmless: the position stays where the last message left it, or the COMMIT
                // happened after all; the next attempt first finds out which.
                tracing::debug!("moving past control records failed: {error}");
                worker.commit_unknown = true;
            }
        }
    }
}
