//! The worker of a partition handled one message after another: reads the partition's
//! queue, gathers batches and hands each to [`super::batch`], which commits its effects and
//! the new position in one PostgreSQL transaction.
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
use crate::pipeline::work::Work;
use crate::store::offsets::{self, Advance};

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
}

impl<H: Work<Mode = Database>> SequentialPartition<H> {
    pub(crate) fn new(handler: Arc<H>, shared: Arc<Shared>, start: WorkerStart) -> Self {
        let limit = shared.batch.max_records;
        let worker = PartitionWorker::new(handler, shared, &start, Progress::Position, limit);
        let mirror = Mirror::new(start.key.clone());
        Self { worker, queue: start.queue, notify: start.notify, consumer: start.consumer, mirror }
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
            if !self.worker.commit_with_retries().await {
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
        while worker.batch.len() < max {
            match self.queue.poll(Duration::ZERO) {
                None => return None,
                Some(Ok(message)) => {
                    // Records below the position were committed already (a seek replays them).
                    if message.offset() < worker.next
                        || worker.batch.last().is_some_and(|i| message.offset() <= i.offset())
                    {
                        continue;
                    }
                    let item = Item::new::<H>(&message, &worker.key.topic, worker.reads_headers);
                    worker.batch.push(item);
                    worker.counters.consumed.increment(1);
                }
                Some(Err(error)) => {
                    if let Some(broken) = read_failed(error, || worker.key.location(worker.next)) {
                        return Some(broken);
                    }
                }
            }
        }
        None
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
