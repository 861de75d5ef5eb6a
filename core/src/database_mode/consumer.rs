//! A Database-mode group's Kafka consumer: the rebalance protocol that claims partitions in
//! PostgreSQL, and the partition workers it starts and stops.
//!
//! The consumer's main queue is polled on a thread of its own, so the rebalance callback may
//! block: on assignment it claims each partition in the database (raising its epoch), seeks
//! to the stored position and gives the partition its own queue and worker; on revocation
//! it lets each worker finish (commit or roll back) its batch before the partition goes.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::api::mode::ModeKind;
use crate::api::settings::StartFrom;
use crate::api::subscription::Subscription;
use crate::engine::backoff::Backoff;
use crate::engine::group::{Group, start_polling};
use crate::engine::shared::Shared;
use crate::error::{Error, Result};
use crate::ops::metrics::handles::{PartitionId, PartitionMetrics};
use crate::store::offsets::{self, Claim, PartitionKey};

/// The consumer type of every group.
pub(crate) type GroupConsumer = BaseConsumer<GroupContext>;

/// What a new partition worker is given.
pub(crate) struct WorkerStart {
    pub(crate) key: PartitionKey,
    pub(crate) claim: Claim,
    pub(crate) queue: rdkafka::consumer::base_consumer::PartitionQueue<GroupContext>,
    pub(crate) notify: Arc<Notify>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) consumer: Arc<GroupConsumer>,
    /// The partition's counters and position (registered for the lag gauge).
    pub(crate) metrics: Arc<PartitionMetrics>,
}

/// Starts the (handler-typed) worker of a partition.
pub(crate) type Spawner = Box<dyn Fn(WorkerStart) -> JoinHandle<()> + Send + Sync>;

struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    partition: PartitionId,
}

/// The rdkafka context of a group's consumer: where rebalances are handled.
pub(crate) struct GroupContext {
    group: String,
    shared: Arc<Shared>,
    spawner: Spawner,
    consumer: OnceLock<Weak<GroupConsumer>>,
    workers: Mutex<HashMap<(String, i32), WorkerHandle>>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::log::forward(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match crate::kafka::refusal::fatal(&error, reason) {
            Some(fatal) => self.shared.fail(fatal),
            None => tracing::warn!(target: "librdkafka", group = %self.group, "{error}: {reason}"),
        }
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(&self, consumer: &GroupConsumer, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl, cooperative),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl, cooperative),
            other => {
                tracing::warn!(group = %self.group, "rebalance error: {other:?}");
                self.stop_all();
                if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
            }
        };
        if let Err(e) = outcome {
            self.shared.report(&Error::from(e));
        }
    }
}

impl GroupContext {
    fn assign(
        &self,
        consumer: &GroupConsumer,
        tpl: &mut TopicPartitionList,
        cooperative: bool,
    ) -> Result<(), KafkaError> {
        let owner = self.consumer.get().and_then(Weak::upgrade);
        let partitions: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        let mut starts = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let key = PartitionKey { group: self.group.clone(), topic: topic.clone(), partition };
            let Some(claim) = self.claim(consumer, &key) else { continue };
            tpl.set_partition_offset(&topic, partition, Offset::Offset(claim.next_offset))?;
            // Split before assigning: the partition's messages never reach the group queue.
            let queue = owner.as_ref().and_then(|owner| owner.split_partition_queue(&topic, partition));
            match (queue, &owner) {
                (Some(queue), Some(owner)) => starts.push((key, claim, queue, Arc::clone(owner))),
                _ => self.shared.report(&Error::Internal(format!(
                    "cannot open the queue of {}: the partition will not be processed by this instance",
                    key.location(claim.next_offset)
                ))),
            }
        }
        if cooperative {
            consumer.incremental_assign(tpl)?
        } else {
            consumer.assign(tpl)?
        }
        let mut workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, claim, mut queue, owner) in starts {
            tracing::info!(group = %key.group, topic = %key.topic, partition = key.partition,
                next_offset = claim.next_offset, epoch = claim.epoch, "partition claimed");
            let notify = Arc::new(Notify::new());
            let waker = Arc::clone(&notify);
            queue.set_nonempty_callback(move || waker.notify_one());
            let (stop_tx, stop_rx) = watch::channel(false);
            let id = (key.topic.clone(), key.partition);
            let partition =
                PartitionId { group: key.group.clone(), topic: key.topic.clone(), partition: key.partition };
            let metrics = Arc::new(PartitionMetrics::new(ModeKind::Database, partition.clone(), claim.next_offset));
            self.shared.lag.insert(Arc::clone(&metrics));
            let start = WorkerStart { key, claim, queue, notify, stop: stop_rx, consumer: owner, metrics };
            let task = (self.spawner)(start);
            if let Some(previous) = workers.insert(id, WorkerHandle { stop: stop_tx, task, partition }) {
                let _ = previous.stop.send(true);
            }
        }
        self.shared.health.assigned(&self.group);
        Ok(())
    }

    /// Claims a partition, retrying while the database is unreachable; `None` when the
    /// runtime shuts down first.
    fn claim(&self, consumer: &GroupConsumer, key: &PartitionKey) -> Option<Claim> {
        let mut backoff = Backoff::new();
        loop {
            let initial = || -> Result<i64> {
                let (low, high) = consumer.fetch_watermarks(&key.topic, key.partition, Duration::from_secs(10))?;
                Ok(match self.shared.start_from {
                    StartFrom::Earliest => low,
                    StartFrom::Latest => high,
                })
            };
            let claimed = async { offsets::claim(self.shared.pool()?, key, initial).await };
            let deadline = self.shared.transaction_timeout;
            let claimed = self.shared.handle.block_on(tokio::time::timeout(deadline, claimed)).unwrap_or_else(|_| {
                let during = format!("claiming group {} topic {} partition {}", key.group, key.topic, key.partition);
                Err(Error::DatabaseTimedOut { during, location: None, after: deadline })
            });
            match claimed {
                Ok(claim) => return Some(claim),
                Err(e) => {
                    self.shared.report(&e);
                    if self.shared.shutting_down() {
                        return None;
                    }
                    std::thread::sleep(backoff.next_delay());
                }
            }
        }
    }

    fn revoke(&self, consumer: &GroupConsumer, tpl: &TopicPartitionList, cooperative: bool) -> Result<(), KafkaError> {
        let revoked: Vec<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        let handles: Vec<WorkerHandle> = {
            let mut workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            revoked.iter().filter_map(|id| workers.remove(id)).collect()
        };
        self.finish(handles);
        if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
    }

    /// Stops the worker of one partition after its current batch.
    fn halt(&self, topic: &str, partition: i32) {
        let handle = {
            let mut workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            workers.remove(&(topic.to_owned(), partition))
        };
        self.finish(handle.into_iter().collect());
    }

    /// Stops every worker after its current batch; used at shutdown.
    pub(crate) fn stop_all(&self) {
        let handles: Vec<WorkerHandle> = {
            let mut workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            workers.drain().map(|(_, handle)| handle).collect()
        };
        self.finish(handles);
    }

    /// Asks workers to stop and waits until their in-flight batch has committed or rolled back.
    fn finish(&self, handles: Vec<WorkerHandle>) {
        for handle in &handles {
            let _ = handle.stop.send(true);
            self.shared.lag.remove(&handle.partition);
        }
        let grace = self.shared.revoke_grace;
        if !ON_POLL_THREAD.with(Cell::get) {
            // Called from elsewhere (the consumer dropped on a runtime thread): blocking there
            // could stall the runtime; the epoch fences whatever commits late.
            return;
        }
        for handle in handles {
            let finished = self.shared.handle.block_on(tokio::time::timeout(grace, handle.task));
            if finished.is_err() {
                tracing::warn!(group = %self.group, "a partition worker did not finish within {grace:?}; \
                    its commit, if any, is fenced by the next owner's claim");
            }
        }
    }
}

thread_local! {
    /// Set on a group's poll thread (a blocking-pool thread, where `Handle::try_current`
    /// succeeds too): only there may a revocation block until the workers are done.
    static ON_POLL_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Starts a Database-mode group: creates its consumer, subscribes and starts polling.
pub(crate) fn start(
    shared: &Arc<Shared>,
    config: rdkafka::ClientConfig,
    subscription: &Subscription,
    spawner: Spawner,
) -> Result<Group> {
    let group = subscription.group().to_owned();
    let context = GroupContext {
        group: group.clone(),
        shared: Arc::clone(shared),
        spawner,
        consumer: OnceLock::new(),
        workers: Mutex::new(HashMap::new()),
    };
    let consumer: Arc<GroupConsumer> = Arc::new(config.create_with_context(context)?);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    let topics: Vec<&str> = subscription.topics().iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(start_polling(shared, subscription, move |shared, topics| {
        ON_POLL_THREAD.with(|on| on.set(true));
        let outcome = poll(&consumer, shared, topics);
        // Closing the consumer revokes what it still owns: still on this thread.
        drop(consumer);
        ON_POLL_THREAD.with(|on| on.set(false));
        outcome
    }))
}

/// Serves the group queue (rebalances, errors) until shutdown, then leaves the group
/// cleanly. A refused authorization (a missing ACL on the group or one of `topics`) stops
/// the runtime.
fn poll(consumer: &Arc<GroupConsumer>, shared: &Shared, topics: &[String]) -> Result<()> {
    while !shared.shutting_down() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
                // Never expected (queues are split before assignment); if it happens, stop the
                // partition so its position cannot pass the message: the next claim re-reads it.
                shared.report(&Error::Internal(format!(
                    "a message of {} partition {} offset {} reached the group queue; \
                     the partition stops here until it is assigned again",
                    message.topic(),
                    message.partition(),
                    message.offset()
                )));
                consumer.context().halt(message.topic(), message.partition());
            }
            Some(Err(e)) => {
                let group = &consumer.context().group;
                match crate::kafka::refusal::consumer_refusal(consumer, &e, group, topics) {
                    Some(refusal) => shared.fail(refusal),
                    None => tracing::warn!(%group, "consumer: {e}"),
                }
            }
        }
    }
    consumer.context().stop_all();
    consumer.unsubscribe();
    Ok(())
}
