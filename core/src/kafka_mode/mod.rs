//! Kafka mode: consume, transform, produce, with the input offsets committed in the same
//! Kafka transaction as the output (KIP-447).
//!
//! One thread per group polls the consumer and runs the handler message by message
//! ([`poll`], [`handle`]), a batch handler on what was fetched ([`batched`]), or, with key
//! concurrency, different keys of what was fetched at once ([`keyed`]). Two transactional
//! producers per group take turns carrying every
//! partition's output and offsets ([`commit`]): a transaction closes after the commit
//! interval (or `max_records` messages), and also before any partition is revoked
//! ([`rebalance`]). Its records are flushed on the loop's thread (so the next
//! transaction's cannot overtake them); adding its offsets and committing run on a thread
//! of their own while the loop goes on with the next messages on the other producer. The
//! next commit waits until the previous one ended, so transactions commit in order, and a
//! failed commit aborts the transaction after it too. Errors are classified from
//! librdkafka's flags: abortable ones abort and rewind every partition to its last
//! committed offset; fatal ones (a fenced producer) rebuild the producer, then rewind; an
//! indefinite commit outcome rebuilds the producer and re-reads the committed offsets from
//! Kafka before going on. A zombie (its group generation gone) fails at
//! `send_offsets_to_transaction`, so its output is aborted. A record the producer refuses
//! outright (over `message.max.bytes`) fails the message that emitted it, which is
//! dead-lettered like any permanent failure.

mod batched;
mod commit;
mod handle;
mod keyed;
mod poll;
mod rebalance;
mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;

use crate::api::mode::{Kafka, ModeKind};
use crate::api::subscription::Subscription;
use crate::engine::group::{Group, GroupSpec, StartSettings};
use crate::engine::shared::Shared;
use crate::error::Result;
use crate::pipeline::work::Work;

/// A partition: its topic and number.
type Partition = (String, i32);

/// A map keyed by partition, looked up several times per message: with the Fx hash, not
/// SipHash (its keys are the group's own assignment, not input an attacker chooses).
type PartitionMap<V> = HashMap<Partition, V, rustc_hash::FxBuildHasher>;

/// The `transactional.id`s of a group's two producers, from the one configured.
pub(crate) fn transactional_ids(id: &str) -> [String; 2] {
    [id.to_owned(), format!("{id}.2")]
}

/// Settings of one Kafka-mode group.
#[derive(Clone)]
pub(crate) struct KafkaModeSettings {
    /// The two producers' configurations (see [`transactional_ids`]).
    pub(crate) producers: [ClientConfig; 2],
    pub(crate) commit_interval: Duration,
    pub(crate) max_records: usize,
}

impl std::fmt::Debug for KafkaModeSettings {
    /// rdkafka's own `Debug` of a `ClientConfig` hides only five secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaModeSettings")
            .field("producer", &crate::redact::Properties(&self.producers[0].config_map()))
            .field("second_producer", &crate::redact::Properties(&self.producers[1].config_map()))
            .field("commit_interval", &self.commit_interval)
            .field("max_records", &self.max_records)
            .finish()
    }
}

impl KafkaModeSettings {
    /// How long a handler call may run: the producers' `transaction.timeout.ms`
    /// (librdkafka's 60 s unless set). Kafka aborts a transaction open longer than that, so
    /// a call still running then can no longer commit, and waiting on would only hold up
    /// the group's thread, a graceful shutdown and the runtime's drop.
    pub(crate) fn handler_deadline(&self) -> Duration {
        let set = self.producers[0].get("transaction.timeout.ms").and_then(|ms| ms.trim().parse().ok());
        Duration::from_millis(set.unwrap_or(60_000))
    }
}

/// A Kafka-mode handler, ready to start as its consumer group.
pub(crate) struct KafkaGroup<H> {
    handler: Arc<H>,
}

impl<H: Work<Mode = Kafka>> KafkaGroup<H> {
    pub(crate) fn new(handler: H) -> Self {
        Self { handler: Arc::new(handler) }
    }
}

impl<H: Work<Mode = Kafka> + 'static> GroupSpec for KafkaGroup<H> {
    fn subscription(&self) -> Subscription {
        self.handler.subscription()
    }

    fn kind(&self) -> ModeKind {
        ModeKind::Kafka
    }

    fn batches(&self) -> bool {
        H::BATCHES
    }

    fn start(self: Box<Self>, shared: &Arc<Shared>, settings: &StartSettings) -> Result<Group> {
        let subscription = self.handler.subscription();
        let transactional_id = if settings.suffix_transactional_id {
            format!("{}-{}", settings.transactional_id, subscription.group())
        } else {
            settings.transactional_id.clone()
        };
        let mode = KafkaModeSettings {
            producers: transactional_ids(&transactional_id).map(|id| settings.kafka.producer(&id)),
            commit_interval: settings.commit_interval,
            max_records: settings.max_records,
        };
        poll::start(self.handler, shared, settings.kafka.consumer(subscription.group()), &subscription, mode)
    }
}
