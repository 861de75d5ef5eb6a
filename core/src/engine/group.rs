//! The contract between the runtime and a mode: a handler, type-erased so one runtime holds
//! handlers of different types and modes, that starts as a consumer group.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::shared::Shared;
use crate::api::mode::ModeKind;
use crate::api::subscription::Subscription;
use crate::error::Result;
use crate::kafka::properties::KafkaProperties;

/// A handler ready to start as a consumer group of its mode.
pub(crate) trait GroupSpec: Send + Sync {
    /// Its topics, group and options.
    fn subscription(&self) -> Subscription;
    /// Its mode.
    fn kind(&self) -> ModeKind;
    /// Whether its handler takes a batch at once (a batch handler).
    fn batches(&self) -> bool;
    /// Creates the group's consumer and starts consuming.
    fn start(self: Box<Self>, shared: &Arc<Shared>, settings: &StartSettings) -> Result<Group>;
}

/// What a runtime's groups are started with.
#[derive(Debug)]
pub(crate) struct StartSettings {
    pub(crate) kafka: KafkaProperties,
    /// The `transactional.id` given (Kafka mode).
    pub(crate) transactional_id: String,
    /// Whether each Kafka-mode group's id is suffixed with the group (several such groups).
    pub(crate) suffix_transactional_id: bool,
    pub(crate) commit_interval: Duration,
    /// Most records in one Kafka-mode transaction.
    pub(crate) max_records: usize,
    pub(crate) outbox_relay: Option<String>,
    pub(crate) lag_interval: Duration,
}

/// A running group: its name and the thread polling its consumer.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) poller: JoinHandle<Result<()>>,
}

/// Runs `poll` (a group's consumer loop, given the runtime's state and the group's topics)
/// on a thread of tokio's blocking pool; the runtime's liveness watches it.
pub(crate) fn start_polling(
    shared: &Arc<Shared>,
    subscription: &Subscription,
    poll: impl FnOnce(&Shared, &[String]) -> Result<()> + Send + 'static,
) -> Group {
    let name = subscription.group().to_owned();
    let topics = subscription.topics().to_vec();
    let shared = Arc::clone(shared);
    let alive = shared.health.loop_guard(format!("the consumer loop of group {name}"));
    let poller = shared.handle.clone().spawn_blocking(move || {
        let _alive = alive;
        poll(&shared, &topics)
    });
    Group { name, poller }
}
