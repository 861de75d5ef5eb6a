//! A Kafka-mode group's rebalances: where each assigned partition starts (its offset
//! committed in Kafka's transactions, read with `require_stable`), and the open transaction
//! closed before partitions go: committed if they are still ours, aborted if they were lost.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::Partition;
use super::state::{GroupState, PartitionState};
use crate::api::mode::ModeKind;
use crate::api::settings::StartFrom;
use crate::engine::backoff::Backoff;
use crate::engine::shared::Shared;
use crate::error::Error;
use crate::kafka::producer::CALL_TIMEOUT;
use crate::ops::metrics::handles::{KeyedMetrics, PartitionId, PartitionMetrics};

/// The rdkafka context of a Kafka-mode group's consumer: where rebalances are handled, and
/// the group's state, behind a lock that only the polling thread takes.
pub(crate) struct KafkaModeContext {
    pub(super) shared: Arc<Shared>,
    pub(super) state: Mutex<GroupState>,
}

impl ClientContext for KafkaModeContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::log::forward(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match crate::kafka::refusal::fatal(&error, reason) {
            Some(fatal) => self.shared.fail(fatal),
            None => tracing::warn!(target: "librdkafka", "{error}: {reason}"),
        }
    }
}

impl ConsumerContext for KafkaModeContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let mut state = self.lock();
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                state.assign(consumer, tpl, &self.shared, cooperative)
            }
            _ => {
                // Close the open transaction first: commit it if the partitions are still
                // ours, abort it if they were lost (another instance owns them already).
                if consumer.assignment_lost() {
                    if state.txn.opened.is_some() || state.committing.is_some() {
                        self.shared.report(&Error::AssignmentLost { group: state.handling.group.clone() });
                    }
                    state.abort(consumer, &self.shared, false);
                } else {
                    state.commit(consumer, &self.shared);
                }
                for element in tpl.elements() {
                    let key = (element.topic().to_owned(), element.partition());
                    if let Some(revoked) = state.partitions.remove(&key) {
                        self.shared.lag.remove(&revoked.metrics.id);
                    }
                }
                if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
            }
        };
        if let Err(e) = outcome {
            self.shared.report(&Error::from(e));
        }
    }
}

impl KafkaModeContext {
    /// The group's state (the lock is only ever taken on the polling thread).
    pub(super) fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl GroupState {
    pub(super) fn assign(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        tpl: &mut TopicPartitionList,
        shared: &Shared,
        cooperative: bool,
    ) -> std::result::Result<(), KafkaError> {
        // Where each partition starts. A transient failure (a leader election, a coordinator
        // moving) is retried: giving up here would leave the partitions unassigned.
        let mut backoff = Backoff::new();
        let starts = loop {
            match self.starts(consumer, tpl, shared) {
                Ok(starts) => break starts,
                Err(error) if shared.shutting_down() => return Err(error),
                Err(error) => {
                    shared.report(&Error::from(error));
                    std::thread::sleep(backoff.next_delay());
                }
            }
        };
        for ((topic, partition), next) in starts {
            tpl.set_partition_offset(&topic, partition, Offset::Offset(next))?;
            tracing::info!(group = %self.handling.group, %topic, partition, next_offset = next, "partition assigned");
            let id = PartitionId { group: self.handling.group.clone(), topic: topic.clone(), partition };
            let keyed = (self.handling.key_concurrency > 1).then(|| KeyedMetrics::new(ModeKind::Kafka, &id));
            let metrics = Arc::new(PartitionMetrics::new(ModeKind::Kafka, id, next));
            shared.lag.insert(Arc::clone(&metrics));
            self.partitions.assignments += 1;
            let assignment = self.partitions.assignments;
            let state = PartitionState {
                metrics,
                consumed_through: next - 1,
                processed: 0,
                dead_lettered: 0,
                assignment,
                keyed,
            };
            self.partitions.states.insert((topic.clone(), partition), state);
            self.partitions.committed.insert((topic, partition), next);
        }
        if cooperative {
            consumer.incremental_assign(tpl)?
        } else {
            consumer.assign(tpl)?
        }
        shared.health.assigned(&self.handling.group);
        Ok(())
    }

    /// The committed offset of each partition of `tpl`, or where the start policy says for
    /// a partition without one. Committed offsets are read with require_stable
    /// (read_committed), so an offset commit still inside a pending transaction is waited
    /// for, never read half-way.
    fn starts(
        &self,
        consumer: &BaseConsumer<KafkaModeContext>,
        tpl: &TopicPartitionList,
        shared: &Shared,
    ) -> std::result::Result<Vec<(Partition, i64)>, KafkaError> {
        let committed = consumer.committed_offsets(tpl.clone(), CALL_TIMEOUT)?;
        let mut starts = Vec::new();
        for element in committed.elements() {
            let (topic, partition) = (element.topic().to_owned(), element.partition());
            let next = match element.offset() {
                Offset::Offset(next) => next,
                _ => {
                    let (low, high) = consumer.fetch_watermarks(&topic, partition, CALL_TIMEOUT)?;
                    if shared.start_from == StartFrom::Earliest { low } else { high }
                }
            };
            starts.push(((topic, partition), next));
        }
        Ok(starts)
    }
}
