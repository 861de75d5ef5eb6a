//! Database mode: a handler's effects and its partition's position commit in one
//! PostgreSQL transaction.
//!
//! The group's consumer ([`consumer`]) claims each assigned partition in PostgreSQL with a
//! new epoch and starts its worker: a [`sequential`] one that handles the partition's
//! messages one after another, or, with key-level concurrency, a [`keyed`] dispatcher that
//! hands them to [`lane`]s, different keys at once. Every worker ([`partition`]) commits
//! batches ([`batch`]), isolating and retrying what fails ([`failures`]) and, with key
//! parking, retrying parked keys ([`parked`]).

mod batch;
mod consumer;
mod failures;
mod keyed;
mod lane;
mod mirror;
mod parked;
mod partition;
mod sequential;

use std::sync::Arc;

use self::consumer::Spawner;
use self::keyed::KeyedPartition;
use self::sequential::SequentialPartition;
use crate::api::mode::{Database, ModeKind};
use crate::api::subscription::Subscription;
use crate::engine::group::{Group, GroupSpec, StartSettings};
use crate::engine::shared::Shared;
use crate::error::Result;
use crate::pipeline::work::Work;

/// A Database-mode handler, ready to start as its consumer group.
pub(crate) struct DatabaseGroup<H> {
    handler: Arc<H>,
}

impl<H: Work<Mode = Database>> DatabaseGroup<H> {
    pub(crate) fn new(handler: H) -> Self {
        Self { handler: Arc::new(handler) }
    }
}

impl<H: Work<Mode = Database> + 'static> GroupSpec for DatabaseGroup<H> {
    fn subscription(&self) -> Subscription {
        self.handler.subscription()
    }

    fn kind(&self) -> ModeKind {
        ModeKind::Database
    }

    fn batches(&self) -> bool {
        H::BATCHES
    }

    fn start(self: Box<Self>, shared: &Arc<Shared>, settings: &StartSettings) -> Result<Group> {
        let subscription = self.handler.subscription();
        let handler = self.handler;
        let worker_shared = Arc::clone(shared);
        let lanes = subscription.key_concurrency();
        let spawner: Spawner = Box::new(move |start| {
            let shared = Arc::clone(&worker_shared);
            if lanes > 1 {
                worker_shared.handle.spawn(KeyedPartition::new(&handler, shared, start, lanes).run())
            } else {
                worker_shared.handle.spawn(SequentialPartition::new(Arc::clone(&handler), shared, start).run())
            }
        });
        consumer::start(shared, settings.kafka.database_consumer(subscription.group()), &subscription, spawner)
    }
}
