//! The hand-written at-least-once key-parallel consumer S8 measures exactly against:
//! Confluent Parallel Consumer's design, in Rust with rdkafka and sqlx, as a competent
//! engineer writes it.
//!
//! One consumer reads. Each partition's messages queue per key; up to
//! `spec.key_concurrency` messages of a partition are in flight at once, never two of one
//! key, so a key's messages are handled in offset order and the partition's other keys
//! go on beside them. Each message runs in a task of its own: it waits
//! `spec.handler_delay_us` (the handler's I/O), then inserts its row through the pool in
//! autocommit (one statement, its own short transaction), holding a connection for the
//! insert only. Every `spec.commit_interval_ms` the consumer commits to Kafka, per
//! partition, the lowest offset not yet done: everything below it is done, so a restart
//! redoes at most the messages at and above it (at-least-once; Parallel Consumer also
//! encodes the done offsets above it in the commit's metadata, which only saves some of
//! that redoing and is left out).
//!
//! The pool has `spec.concurrency + 2` connections, as exactly's has
//! `max_concurrent_batches + 2`. Reading pauses while [`MAX_BUFFERED`] messages are read
//! and not done, as Parallel Consumer bounds the records it loads, so that a hot key
//! cannot pull the whole backlog into memory behind it.
//!
//! The bench's groups have one member and never rebalance, so a partition's lanes live as
//! long as the process; a production version would also drop a revoked partition's lanes
//! and wait for its tasks.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::WorkerSpec;
use super::baseline_db::{Commits, subscribed};
use super::rows::{Row, RowWriter, Statement};

/// Most messages read and not yet done, over all partitions, before reading pauses: far
/// more than the most in flight S8 asks for (8 partitions × 256), so that the lanes have
/// other keys to start while a busy key waits.
const MAX_BUFFERED: usize = 20_000;

/// A message read and not yet done: its row, and the key that orders it.
#[derive(Debug)]
struct Job {
    /// The record's key (a record without one counts as the empty key).
    key: Vec<u8>,
    row: Row,
}

/// What a finished task hands back: which message, of which key, is done.
#[derive(Debug)]
struct Done {
    partition: i32,
    offset: i64,
    key: Vec<u8>,
}

/// What a task does with one message, shared by every task.
#[derive(Debug)]
struct Work {
    pool: PgPool,
    rows: RowWriter,
    /// The handler's I/O: how long it waits before it writes.
    wait: Duration,
}

impl Work {
    /// Waits, then inserts the message's row in autocommit: the connection is taken for
    /// the insert only, never held across the wait.
    async fn handle(self: Arc<Self>, job: Job) -> anyhow::Result<Done> {
        tokio::time::sleep(self.wait).await;
        let mut connection = self.pool.acquire().await?;
        self.rows.write(&mut connection, std::slice::from_ref(&job.row)).await?;
        Ok(Done { partition: job.row.partition, offset: job.row.offset, key: job.key })
    }
}

/// One key's messages in a partition.
#[derive(Debug, Default)]
struct KeyLane {
    /// Its messages not started yet, in offset order.
    waiting: VecDeque<Row>,
    /// Whether one of its messages is in flight (never more than one).
    in_flight: bool,
}

/// One partition's messages between the reader and the commit.
#[derive(Debug)]
struct PartitionLanes {
    /// Every key with a message in flight or waiting, and its lane.
    lanes: HashMap<Vec<u8>, KeyLane>,
    /// Keys with a message waiting and none in flight, in the order they became so: the
    /// next ones to start. A key with a lane and nothing in flight is always in here.
    ready: VecDeque<Vec<u8>>,
    /// Messages of the partition in flight.
    in_flight: usize,
    /// Offsets read and not yet done; the lowest is where the partition's commit stands.
    not_done: BTreeSet<i64>,
    /// The offset after the last one read: the commit's position when nothing is pending.
    read_to: i64,
    /// The position last committed.
    committed: i64,
}

impl PartitionLanes {
    /// A partition whose first message read is at `offset` (its committed position).
    fn starting_at(offset: i64) -> Self {
        Self {
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            in_flight: 0,
            not_done: BTreeSet::new(),
            read_to: offset,
            committed: offset,
        }
    }

    /// Queues a message behind its key's others.
    fn accept(&mut self, job: Job) {
        self.not_done.insert(job.row.offset);
        self.read_to = job.row.offset + 1;
        if let Some(lane) = self.lanes.get_mut(&job.key) {
            // In flight: it is made ready again when that one is done; if not, it is ready.
            lane.waiting.push_back(job.row);
            return;
        }
        self.lanes.insert(job.key.clone(), KeyLane { waiting: VecDeque::from([job.row]), in_flight: false });
        self.ready.push_back(job.key);
    }

    /// Adds to `started` the next message of each ready key, while fewer than `limit` of the
    /// partition's messages are in flight.
    fn start(&mut self, limit: usize, started: &mut Vec<Job>) {
        while self.in_flight < limit {
            let Some(key) = self.ready.pop_front() else { return };
            let Some(lane) = self.lanes.get_mut(&key) else { continue };
            let Some(row) = lane.waiting.pop_front() else { continue };
            lane.in_flight = true;
            self.in_flight += 1;
            started.push(Job { key, row });
        }
    }

    /// Marks a message done: its key may start its next one, and the position may move.
    fn finish(&mut self, done: Done) {
        self.not_done.remove(&done.offset);
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(lane) = self.lanes.get_mut(&done.key) else { return };
        lane.in_flight = false;
        if lane.waiting.is_empty() {
            self.lanes.remove(&done.key);
        } else {
            self.ready.push_back(done.key);
        }
    }

    /// The position to commit: the lowest offset not done, or the one after the last read.
    fn position(&self) -> i64 {
        self.not_done.first().copied().unwrap_or(self.read_to)
    }
}

/// Every partition's lanes, and how many messages they hold.
#[derive(Debug)]
struct Dispatcher {
    partitions: HashMap<i32, PartitionLanes>,
    /// Messages of one partition in flight at once, at most.
    limit: usize,
    /// Messages read and not yet done, over all partitions.
    buffered: usize,
}

impl Dispatcher {
    fn new(limit: usize) -> Self {
        Self { partitions: HashMap::new(), limit: limit.max(1), buffered: 0 }
    }

    /// Whether there is room to read more.
    fn reading(&self) -> bool {
        self.buffered < MAX_BUFFERED
    }

    /// Takes a message just read; adds to `started` what may start now.
    fn accept(&mut self, job: Job, started: &mut Vec<Job>) {
        let (partition, offset) = (job.row.partition, job.row.offset);
        let lanes = self.partitions.entry(partition).or_insert_with(|| PartitionLanes::starting_at(offset));
        lanes.accept(job);
        lanes.start(self.limit, started);
        self.buffered += 1;
    }

    /// Takes a message done; adds to `started` what may start now.
    fn finish(&mut self, done: Done, started: &mut Vec<Job>) {
        self.buffered = self.buffered.saturating_sub(1);
        let Some(lanes) = self.partitions.get_mut(&done.partition) else { return };
        lanes.finish(done);
        lanes.start(self.limit, started);
    }

    /// The positions of `topic`'s partitions that moved since their last commit (none:
    /// nothing to commit), noted as committed.
    fn positions_to_commit(&mut self, topic: &str) -> anyhow::Result<Option<TopicPartitionList>> {
        let mut offsets = TopicPartitionList::new();
        for (&partition, lanes) in &mut self.partitions {
            let position = lanes.position();
            if position > lanes.committed {
                offsets.add_partition_offset(topic, partition, Offset::Offset(position))?;
                lanes.committed = position;
            }
        }
        Ok((offsets.count() > 0).then_some(offsets))
    }
}

/// Runs the consumer until it is stopped, or until a message fails (it ends with that
/// error: the bench reports a run that fails).
pub(super) async fn run(spec: &WorkerSpec) -> anyhow::Result<()> {
    let consumer = subscribed(spec, Commits::Explicit)?;
    let rows = RowWriter::new(&spec.table, Statement::PerRow)?;
    let work = Arc::new(Work { pool: pool(spec).await?, rows, wait: Duration::from_micros(spec.handler_delay_us) });
    let mut dispatcher = Dispatcher::new(spec.key_concurrency);
    let mut tasks: JoinSet<anyhow::Result<Done>> = JoinSet::new();
    let mut commits = tokio::time::interval(Duration::from_millis(spec.commit_interval_ms.max(1)));
    commits.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut started = Vec::new();
    loop {
        tokio::select! {
            read = consumer.recv(), if dispatcher.reading() => dispatcher.accept(job_of(&read?), &mut started),
            // An empty set answers `None` at once: the branch then sits this round out.
            Some(joined) = tasks.join_next() => dispatcher.finish(joined??, &mut started),
            _ = commits.tick() => commit(&consumer, &spec.input, &mut dispatcher)?,
        }
        for job in started.drain(..) {
            tasks.spawn(Arc::clone(&work).handle(job));
        }
    }
}

/// The pool the tasks insert through: as large as exactly's (`max_concurrent_batches + 2`).
async fn pool(spec: &WorkerSpec) -> anyhow::Result<PgPool> {
    let connections = u32::try_from(spec.concurrency + 2)?;
    PgPoolOptions::new()
        .max_connections(connections)
        .connect(&spec.database_url)
        .await
        .context("cannot connect to PostgreSQL")
}

/// A message read, as the job it becomes.
fn job_of(message: &BorrowedMessage<'_>) -> Job {
    Job { key: message.key().unwrap_or_default().to_vec(), row: Row::of(message) }
}

/// Commits, asynchronously, the positions that moved since the last commit.
fn commit(consumer: &StreamConsumer, topic: &str, dispatcher: &mut Dispatcher) -> anyhow::Result<()> {
    if let Some(offsets) = dispatcher.positions_to_commit(topic)? {
        consumer.commit(&offsets, CommitMode::Async)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Done, Job, PartitionLanes};
    use crate::worker::rows::Row;

    fn job(key: &str, offset: i64) -> Job {
        Job { key: key.as_bytes().to_vec(), row: Row { partition: 0, offset, payload: Vec::new() } }
    }

    fn done(started: &Job) -> Done {
        Done { partition: 0, offset: started.row.offset, key: started.key.clone() }
    }

    fn offsets(started: &[Job]) -> Vec<i64> {
        started.iter().map(|job| job.row.offset).collect()
    }

    #[test]
    fn never_two_of_one_key_and_never_more_than_the_limit_in_flight() {
        let mut lanes = PartitionLanes::starting_at(0);
        let mut started = Vec::new();
        for (offset, key) in ["a", "a", "b", "c", "d"].into_iter().enumerate() {
            lanes.accept(job(key, i64::try_from(offset).unwrap_or_default()));
        }
        lanes.start(2, &mut started);
        assert_eq!(offsets(&started), [0, 2], "a's second waits for its first; the limit stops d");
        let first = started.remove(0);
        lanes.finish(done(&first));
        lanes.start(2, &mut started);
        assert_eq!(offsets(&started), [2, 3], "c was ready before a's second");
    }

    #[test]
    fn the_position_is_the_lowest_offset_not_done() {
        let mut lanes = PartitionLanes::starting_at(10);
        let mut started = Vec::new();
        for (offset, key) in [(10, "a"), (11, "b"), (12, "c")] {
            lanes.accept(job(key, offset));
        }
        lanes.start(3, &mut started);
        assert_eq!(lanes.position(), 10);
        lanes.finish(done(&started[1]));
        lanes.finish(done(&started[2]));
        assert_eq!(lanes.position(), 10, "11 and 12 are done, 10 is not");
        lanes.finish(done(&started[0]));
        assert_eq!(lanes.position(), 13, "all done: after the last read");
    }
}
