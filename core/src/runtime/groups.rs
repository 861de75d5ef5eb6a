//! Each handler given to the code of its mode, and what a mode refuses of a handler.

use crate::api::batch::BatchHandler;
use crate::api::handler::Handler;
use crate::api::mode::{Database, Kafka, ModeKind, ModeVisitor};
use crate::api::subscription::Subscription;
use crate::database_mode::DatabaseGroup;
use crate::engine::group::GroupSpec;
use crate::error::{Error, Result};
use crate::kafka_mode::KafkaGroup;
use crate::pipeline::work::{PerBatch, PerMessage};

/// Gives each handler to the code of its mode (see [`Mode::visit`](crate::api::mode::Mode::visit)).
pub(super) struct ToGroup;

impl ModeVisitor for ToGroup {
    type Output = Box<dyn GroupSpec>;

    fn database<H: Handler<Mode = Database>>(self, handler: H) -> Self::Output {
        Box::new(DatabaseGroup::new(PerMessage(Box::new(handler))))
    }

    fn kafka<H: Handler<Mode = Kafka>>(self, handler: H) -> Self::Output {
        Box::new(KafkaGroup::new(PerMessage(Box::new(handler))))
    }

    fn database_batch<B: BatchHandler<Mode = Database>>(self, handler: B) -> Self::Output {
        Box::new(DatabaseGroup::new(PerBatch(Box::new(handler))))
    }

    fn kafka_batch<B: BatchHandler<Mode = Kafka>>(self, handler: B) -> Self::Output {
        Box::new(KafkaGroup::new(PerBatch(Box::new(handler))))
    }
}

/// Refuses key-level concurrency where it does not apply, saying why.
pub(super) fn check_key_concurrency(kind: ModeKind, batches: bool, subscription: &Subscription) -> Result<()> {
    let group = subscription.group();
    if kind == ModeKind::Kafka && batches {
        return Err(Error::Config(format!(
            "group {group}: key concurrency does not apply to a Kafka-mode batch handler: it is called once \
             on each partition's fetched messages already, in one transaction; split per key, it would be \
             called on batches of one key (in Database mode, each of its lanes takes a batch of its own)"
        )));
    }
    Ok(())
}
