//! The dispatcher of a key-concurrent partition: reads the partition, hands its messages
//! to up to N lanes ([`super::lane`]) so that different keys are handled at once and each
//! key's messages one after another, in offset order; and moves the stored position up to
//! the lowest message not yet done.
//!
//! A key belongs to the lane that holds one of its messages until that lane has committed
//! them all; its later messages wait until then, so a key's messages are handled, and
//! commit, in offset order. A message without a key has no order to keep and goes to any
//! lane. Each lane commits its messages' effects with a record that they are done
//! ([`crate::store::completed`]); the stored position passes a message only once every
//! message below it is done, so after a crash or a rebalance the new owner skips exactly
//! the completed messages above the position. Reading pauses while the messages read span
//! [`WINDOW_BATCHES`] batches above the position, which bounds the memory held and the
//! completed offsets stored.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::message::Message as _;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::consumer::{GroupConsumer, GroupContext, WorkerStart};
use super::lane::{Job, Lane};
use super::mirror::{Mirror, consumer_position};
use super::parked::ParkedKeys;
use super::partition::{Item, PartitionWorker, Progress, Report, read_failed};
use crate::api::mode::{Database, ModeKind};
use crate::engine::backoff::until_loaded;
use crate::engine::shared::Shared;
use crate::error::{Error, ErrorClass};
use crate::ops::metrics::handles::KeyedMetrics;
use crate::pipeline::keys::key_hash;
use crate::pipeline::work::Work;
use crate::store::completed;
use crate::store::offsets::{self, PartitionKey};
use crate::store::parking::KeyBytes;

/// How far above the stored position a partition reads, in batches (of the runtime's
/// `max_records`): the most messages it holds, and the most completed offsets it stores.
pub(crate) const WINDOW_BATCHES: usize = 10;

/// How long a parked key being retried is kept from being handed out again; its lane
/// reports when it is due before then.
const RETRYING: Duration = Duration::from_secs(24 * 3600);

/// How often, at most, the stored position is moved up to the lowest message not done
/// while lanes are busy (when they are all idle, at once).
const COMPACT_INTERVAL: Duration = Duration::from_millis(200);

/// A message read and not yet handed to a lane.
struct Pending<K, P> {
    item: Item<K, P>,
    /// A hash of its key (`None`: it has none). Two keys with the same hash are kept in
    /// order as one key: less concurrency, never a broken order.
    key: Option<u64>,
    /// It has waited for its key at least once (counted once).
    waited: bool,
}

/// A lane, as its dispatcher sees it.
struct LaneSlot<K, P> {
    jobs: mpsc::UnboundedSender<Job<K, P>>,
    /// Messages (and parked retries) handed to it and not yet done: 0 when it is idle.
    holding: usize,
}

/// Which lane holds a key, and how many of its messages (or retries of its parked ones).
struct Owner {
    lane: usize,
    messages: usize,
}

/// The dispatcher of one key-concurrent partition, from its claim until it is revoked or
/// the runtime stops.
pub(crate) struct KeyedPartition<H: Work<Mode = Database>> {
    shared: Arc<Shared>,
    key: PartitionKey,
    epoch: i64,
    stop: tokio::sync::watch::Receiver<bool>,
    queue: PartitionQueue<GroupContext>,
    notify: Arc<Notify>,
    consumer: Arc<GroupConsumer>,
    counters: Arc<crate::ops::metrics::handles::PartitionMetrics>,
    metrics: KeyedMetrics,
    reads_headers: bool,
    /// The lanes' workers, until they start.
    lane_workers: Vec<PartitionWorker<H>>,
    lanes: Vec<LaneSlot<H::Key, H::Payload>>,
    tasks: JoinSet<bool>,
    reports: mpsc::UnboundedReceiver<Report>,
    /// The parked keys and when each is due (key parking), or `None`.
    parked: Option<ParkedKeys>,
    /// The largest batch a lane is handed.
    lane_batch: usize,
    /// The most offsets read above the lowest message not done.
    window: i64,
    pending: VecDeque<Pending<H::Key, H::Payload>>,
    owners: HashMap<u64, Owner>,
    /// The key hash of each message handed to a lane and not yet committed.
    handed: HashMap<i64, Option<u64>>,
    /// Messages read and not yet committed.
    outstanding: BTreeSet<i64>,
    /// Messages committed above the lowest message not done.
    completed: BTreeSet<i64>,
    /// Messages found completed at the claim, not yet read again.
    skip: BTreeSet<i64>,
    /// The offset after the last message read (or skipped by the consumer).
    read_to: i64,
    /// The stored position.
    stored: i64,
    /// A move of the stored position failed on the wire: read it before the next.
    stored_unknown: bool,
    compacted_at: Instant,
    mirror: Mirror,
}

impl<H: Work<Mode = Database> + 'static> KeyedPartition<H> {
    /// The dispatcher of the partition `start` claimed, with `lanes` lanes.
    pub(crate) fn new(handler: &Arc<H>, shared: Arc<Shared>, start: WorkerStart, lanes: usize) -> Self {
        let max_records = shared.batch.max_records;
        let lane_batch = max_records.div_ceil(lanes).max(1);
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let mut lane_workers = Vec::with_capacity(lanes);
        for lane in 0..lanes {
            let progress = Progress::Lane { lane, reports: reports_tx.clone() };
            lane_workers.push(PartitionWorker::new(
                Arc::clone(handler),
                Arc::clone(&shared),
                &start,
                progress,
                lane_batch,
            ));
        }
        let next = start.claim.next_offset;
        Self {
            metrics: KeyedMetrics::new(ModeKind::Database, &start.metrics.id),
            reads_headers: handler.subscription().reads_headers(),
            key: start.key.clone(),
            epoch: start.claim.epoch,
            stop: start.stop,
            queue: start.queue,
            notify: start.notify,
            consumer: start.consumer,
            counters: start.metrics,
            mirror: Mirror::new(start.key),
            shared,
            lane_workers,
            lanes: Vec::with_capacity(lanes),
            tasks: JoinSet::new(),
            reports,
            parked: handler.subscription().key_parking().then(ParkedKeys::default),
            lane_batch,
            window: i64::try_from(max_records.saturating_mul(WINDOW_BATCHES)).unwrap_or(i64::MAX),
            pending: VecDeque::new(),
            owners: HashMap::new(),
            handed: HashMap::new(),
            outstanding: BTreeSet::new(),
            completed: BTreeSet::new(),
            skip: BTreeSet::new(),
            read_to: next,
            stored: next,
            stored_unknown: false,
            compacted_at: Instant::now(),
        }
    }

    pub(crate) async fn run(mut self) {
        let span = tracing::info_span!("partition", group = %self.key.group, topic = %self.key.topic,
            partition = self.key.partition, epoch = self.epoch, lanes = self.lane_workers.len());
        async move {
            if self.load_state().await {
                self.start_lanes();
                self.dispatch().await;
            }
            self.finish().await;
        }
        .instrument(span)
        .await
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() || self.shared.shutting_down()
    }

    /// Reads the messages completed above the stored position before this claim, and the
    /// parked keys, retrying while the database is away. Returns `false` when the
    /// partition must stop.
    async fn load_state(&mut self) -> bool {
        let this = &*self;
        let limit = this.shared.transaction_timeout;
        let load = || async move {
            let loading = async {
                let pool = this.shared.pool()?;
                let completed = completed::load(pool, &this.key, this.stored).await?;
                let parked = match this.parked {
                    Some(_) => Some(ParkedKeys::load(pool, &this.key).await?),
                    None => None,
                };
                Ok::<_, Error>((completed, parked))
            };
            tokio::time::timeout(limit, loading).await.unwrap_or_else(|_| {
                let during = "loading the completed offsets and parked keys".to_owned();
                Err(Error::DatabaseTimedOut { during, location: Some(this.key.location(this.stored)), after: limit })
            })
        };
        let Some((completed, parked)) = until_loaded(&this.shared, || this.stopping(), load).await else {
            return false;
        };
        self.skip = completed.into_iter().collect();
        self.parked = parked;
        true
    }

    fn start_lanes(&mut self) {
        for (index, worker) in std::mem::take(&mut self.lane_workers).into_iter().enumerate() {
            let (jobs, receiver) = mpsc::unbounded_channel();
            self.lanes.push(LaneSlot { jobs, holding: 0 });
            let lane = Lane { index, worker, jobs: receiver };
            self.tasks.spawn_on(lane.run().in_current_span(), &self.shared.handle);
        }
    }

    /// Reads, hands out and records what committed until stopped, or until a lane ends
    /// (fenced, or failed for good).
    async fn dispatch(&mut self) {
        loop {
            if let Some(broken) = self.read() {
                self.shared.report(&broken);
                return;
            }
            self.hand_out_retries();
            self.hand_out();
            if !self.compact_if_due().await || self.stopping() {
                return;
            }
            let notified = self.notify.notified();
            let mut stop = self.stop.clone();
            // A parked key due already but not handed out waits for a lane: its end wakes this.
            let parked_due = self.parked.as_ref().and_then(ParkedKeys::next_due).filter(|due| *due > Instant::now());
            let wake = [self.compaction_due(), self.mirror.due(self.stored), parked_due].into_iter().flatten().min();
            let sleep = tokio::time::sleep_until(wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)));
            tokio::select! {
                () = notified => {}
                _ = stop.changed() => {}
                Some(report) = self.reports.recv() => self.on_report(report),
                ended = self.tasks.join_next() => {
                    if !self.stopping() {
                        let normally = matches!(ended, Some(Ok(true)));
                        tracing::warn!(normally, "a lane of the partition ended: the partition stops here until \
                            it is assigned again");
                        return;
                    }
                }
                () = sleep => self.mirror.copy(&self.consumer, self.stored, false),
            }
            while let Ok(report) = self.reports.try_recv() {
                self.on_report(report);
            }
        }
    }

    /// Lets the lanes finish (commit or roll back) what they hold, records what committed,
    /// and moves the stored position up to the lowest message not done.
    async fn finish(&mut self) {
        if !self.stopping() {
            // The partition broke (a lane was fenced or failed for good): what the other
            // lanes hold is left to the next owner, as a sequential worker leaves its batch.
            self.tasks.abort_all();
        }
        // Closing the channels ends each lane after its batch.
        self.lanes.clear();
        while self.tasks.join_next().await.is_some() {}
        while let Ok(report) = self.reports.try_recv() {
            self.on_report(report);
        }
        self.compact().await;
        self.mirror.copy(&self.consumer, self.stored, true);
    }

    /// Takes what the partition queue holds now, while the window allows.
    fn read(&mut self) -> Option<Error> {
        while self.read_to - self.low() < self.window {
            match self.queue.poll(Duration::ZERO) {
                None => return None,
                Some(Ok(message)) => {
                    let offset = message.offset();
                    // Below what was read: a seek replays it.
                    if offset < self.read_to {
                        continue;
                    }
                    self.read_to = offset + 1;
                    if completed_before(&mut self.skip, offset) {
                        continue;
                    }
                    let item = Item::new::<H>(&message, &self.key.topic, self.reads_headers);
                    self.counters.consumed.increment(1);
                    self.outstanding.insert(offset);
                    let key = key_hash(item.raw.key.as_deref(), self.parked.is_some());
                    self.pending.push_back(Pending { item, key, waited: false });
                }
                Some(Err(error)) => {
                    if let Some(broken) = read_failed(error, || self.key.location(self.low())) {
                        return Some(broken);
                    }
                }
            }
        }
        None
    }

    /// The lowest message not done: the first outstanding, or what comes after the last
    /// read when none is.
    fn low(&self) -> i64 {
        self.outstanding.first().copied().unwrap_or(self.read_to)
    }

    /// Hands pending messages to the idle lanes, oldest first, each lane up to a batch:
    /// a message whose key a busy lane holds waits for it.
    fn hand_out(&mut self) {
        let idle: Vec<usize> = (0..self.lanes.len()).filter(|lane| self.lanes[*lane].holding == 0).collect();
        if idle.is_empty() || self.pending.is_empty() {
            return;
        }
        let mut batches: Vec<Vec<Item<H::Key, H::Payload>>> = idle.iter().map(|_| Vec::new()).collect();
        // Messages of free keys go round the idle lanes, so that a few messages run at once
        // rather than one after another in one lane's batch.
        let mut turn = 0;
        let mut waiting = VecDeque::with_capacity(self.pending.len());
        while let Some(mut pending) = self.pending.pop_front() {
            let target = match pending.key.and_then(|key| self.owners.get(&key)) {
                None => next_open(&batches, &mut turn, self.lane_batch),
                Some(owner) => idle.iter().position(|lane| *lane == owner.lane),
            };
            match target {
                Some(slot) if batches[slot].len() < self.lane_batch => {
                    let lane = idle[slot];
                    if let Some(key) = pending.key {
                        self.owners.entry(key).or_insert(Owner { lane, messages: 0 }).messages += 1;
                    }
                    self.handed.insert(pending.item.offset(), pending.key);
                    batches[slot].push(pending.item);
                }
                None if pending.key.is_none_or(|key| !self.owners.contains_key(&key)) => {
                    // Every idle lane is full: the rest waits for the next round.
                    waiting.push_back(pending);
                    waiting.append(&mut self.pending);
                    break;
                }
                _ => {
                    if !pending.waited {
                        pending.waited = true;
                        self.metrics.key_waits.increment(1);
                    }
                    waiting.push_back(pending);
                }
            }
        }
        self.pending = waiting;
        for (slot, items) in batches.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let parked = self.parked_among(&items);
            let lane = &mut self.lanes[idle[slot]];
            lane.holding = items.len();
            // A closed channel is a lane that ended: the dispatcher sees it end and stops.
            let _ = lane.jobs.send(Job::Batch { items, parked });
        }
        self.update_gauges();
    }

    /// The parked keys among the keys of `items`: their messages are parked, not handled.
    fn parked_among(&self, items: &[Item<H::Key, H::Payload>]) -> Vec<KeyBytes> {
        let Some(parked) = self.parked.as_ref().filter(|parked| !parked.is_empty()) else { return Vec::new() };
        let mut keys: Vec<KeyBytes> =
            items.iter().filter(|item| parked.contains(&item.raw.key)).map(|item| item.raw.key.clone()).collect();
        keys.dedup();
        keys
    }

    /// Hands each parked key that is due, and that no lane holds, to an idle lane, which
    /// retries its parked messages oldest first; the key is its until the retry ends.
    fn hand_out_retries(&mut self) {
        let Some(parked) = &self.parked else { return };
        for key in parked.due_now() {
            let hash = key_hash(key.as_deref(), true);
            if hash.is_some_and(|hash| self.owners.contains_key(&hash)) {
                continue;
            }
            let Some(lane) = (0..self.lanes.len()).find(|lane| self.lanes[*lane].holding == 0) else { return };
            if let Some(hash) = hash {
                self.owners.insert(hash, Owner { lane, messages: 1 });
            }
            self.lanes[lane].holding = 1;
            if let Some(parked) = &mut self.parked {
                // Not due again until its retry reports.
                parked.set_due(key.clone(), Instant::now() + RETRYING);
            }
            let _ = self.lanes[lane].jobs.send(Job::RetryParked(key));
        }
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Done { lane, offsets } => self.committed(lane, offsets),
            Report::Parked { key, due } => {
                if let Some(parked) = &mut self.parked {
                    parked.set_due(key, due);
                }
            }
            Report::Retried { lane, key, due } => {
                self.release(lane, key_hash(key.as_deref(), true));
                if let Some(parked) = &mut self.parked {
                    match due {
                        Some(due) => parked.set_due(key, due),
                        None => parked.release(&key),
                    }
                }
            }
        }
    }

    /// Lane `lane` committed `offsets`: their keys are released once the lane holds none
    /// of their messages.
    fn committed(&mut self, lane: usize, offsets: Vec<i64>) {
        for offset in &offsets {
            self.outstanding.remove(offset);
            self.completed.insert(*offset);
            let key = self.handed.remove(offset).flatten();
            self.release(lane, key);
        }
        let low = self.low();
        self.completed = self.completed.split_off(&low);
        self.update_gauges();
    }

    /// Lane `lane` is done with one thing it held (a message, or a parked key's retry), of
    /// the key with hash `key`.
    fn release(&mut self, lane: usize, key: Option<u64>) {
        if let Some(slot) = self.lanes.get_mut(lane) {
            slot.holding = slot.holding.saturating_sub(1);
        }
        let Some(key) = key else { return };
        if let Some(owner) = self.owners.get_mut(&key) {
            owner.messages = owner.messages.saturating_sub(1);
            if owner.messages == 0 {
                self.owners.remove(&key);
            }
        }
    }

    fn update_gauges(&self) {
        self.metrics.in_flight(self.handed.len());
        self.metrics.completed_above_position(self.completed.len() + self.skip.len());
    }

    /// When the stored position is due to move, if it lags the lowest message not done.
    fn compaction_due(&self) -> Option<Instant> {
        if self.stored_unknown {
            // The last move failed: try again after the interval.
            return Some(self.compacted_at + COMPACT_INTERVAL);
        }
        if self.low() <= self.stored {
            return None;
        }
        let all_idle = self.lanes.iter().all(|lane| lane.holding == 0);
        Some(if all_idle { Instant::now() } else { self.compacted_at + COMPACT_INTERVAL })
    }

    /// Moves the stored position if due. Returns `false` when the partition must stop
    /// (fenced).
    async fn compact_if_due(&mut self) -> bool {
        if self.idle() {
            // Past records the consumer skipped without delivering them (transaction
            // markers, aborted records): safe, as in a sequential partition.
            if let Some(position) = consumer_position(&self.consumer, &self.key).filter(|p| *p > self.read_to) {
                self.read_to = position;
            }
        }
        if self.compaction_due().is_some_and(|due| due <= Instant::now()) {
            return self.compact().await;
        }
        true
    }

    /// Nothing read is waiting or in a lane.
    fn idle(&self) -> bool {
        self.outstanding.is_empty() && self.skip.is_empty()
    }

    /// Moves the stored position up to the lowest message not done, deleting the completed
    /// offsets it passes. A failure is retried after [`COMPACT_INTERVAL`]; returns `false`
    /// when it cannot be (fenced: the partition has a new owner).
    async fn compact(&mut self) -> bool {
        self.compacted_at = Instant::now();
        let low = self.low();
        let limit = self.shared.transaction_timeout;
        let outcome = async {
            let pool = self.shared.pool()?;
            if self.stored_unknown {
                let key = &self.key;
                let stored = offsets::position(pool, &key.group, &key.topic, key.partition).await?;
                self.stored = stored.unwrap_or(self.stored);
                self.stored_unknown = false;
            }
            if low > self.stored {
                completed::compact(pool, &self.key, self.epoch, self.stored, low).await?;
            }
            Ok::<(), Error>(())
        };
        match tokio::time::timeout(limit, outcome).await {
            Ok(Ok(())) => {
                if low > self.stored {
                    tracing::debug!(from = self.stored, to = low, "position moved");
                    self.stored = low;
                    self.counters.set_position(low);
                    self.mirror.copy(&self.consumer, low, false);
                }
            }
            Ok(Err(error)) => {
                self.shared.report(&error);
                self.stored_unknown = true;
                return error.class() != ErrorClass::Fatal;
            }
            Err(_) => {
                tracing::debug!("moving the position timed out; it is read again before the next move");
                self.stored_unknown = true;
            }
        }
        true
    }
}

/// The next of `batches` (from `turn` round) with room for another message, if any.
fn next_open<T>(batches: &[Vec<T>], turn: &mut usize, limit: usize) -> Option<usize> {
    for _ in 0..batches.len() {
        let slot = *turn % batches.len();
        *turn += 1;
        if batches[slot].len() < limit {
            return Some(slot);
        }
    }
    None
}

/// Whether the message at `offset` is among `skip`, the messages found completed at the
/// claim (it is not handled again). Forgets those below it, which will not be read again.
fn completed_before(skip: &mut BTreeSet<i64>, offset: i64) -> bool {
    if skip.is_empty() {
        return false;
    }
    let found = skip.remove(&offset);
    *skip = skip.split_off(&offset);
    found
}
