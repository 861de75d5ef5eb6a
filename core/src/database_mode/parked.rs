//! Key parking in a Database-mode partition: which keys wait and when each is due for its
//! next try (in memory; the messages themselves are in `exactly.parked`), and the retries
//! of a due key's parked messages, oldest first, each in a transaction that also removes
//! it from the table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;

use super::batch::Tx;
use super::partition::PartitionWorker;
use crate::api::context::Context;
use crate::api::mode::Database;
use crate::engine::backoff::until_loaded;
use crate::error::{Error, ErrorClass, Result};
use crate::pipeline::dead_letter::{self, DeadLettered};
use crate::pipeline::decode::{Coordinates, Decoded, decode_kept};
use crate::pipeline::invoke::{Call, FailureKind};
use crate::pipeline::work::{Entry, Work};
use crate::store::dead_letters::Letter;
use crate::store::offsets::{self, PartitionKey};
use crate::store::parking::{self, KeyBytes, ParkedMessage};

/// The parked keys of one partition and when each is due for its next try.
#[derive(Debug, Default)]
pub(crate) struct ParkedKeys {
    due: HashMap<KeyBytes, Instant>,
}

impl ParkedKeys {
    pub(crate) fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    pub(crate) fn contains(&self, key: &KeyBytes) -> bool {
        !self.due.is_empty() && self.due.contains_key(key)
    }

    pub(crate) fn set_due(&mut self, key: KeyBytes, at: Instant) {
        self.due.insert(key, at);
    }

    pub(crate) fn release(&mut self, key: &KeyBytes) {
        self.due.remove(key);
    }

    /// These keys, due now: a lane's view of the keys parked among its batch's.
    pub(crate) fn of(keys: impl IntoIterator<Item = KeyBytes>) -> Self {
        let now = Instant::now();
        Self { due: keys.into_iter().map(|key| (key, now)).collect() }
    }

    /// When `key` is due, if it is parked.
    pub(crate) fn due(&self, key: &KeyBytes) -> Option<Instant> {
        self.due.get(key).copied()
    }

    /// The earliest moment a key is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// The keys due now, earliest first.
    pub(crate) fn due_now(&self) -> Vec<KeyBytes> {
        let now = Instant::now();
        let mut due: Vec<(&KeyBytes, &Instant)> = self.due.iter().filter(|(_, at)| **at <= now).collect();
        due.sort_by_key(|(_, at)| **at);
        due.into_iter().map(|(key, _)| key.clone()).collect()
    }

    /// Reads the partition's parked keys, each due when its oldest message is.
    pub(crate) async fn load(pool: &PgPool, key: &PartitionKey) -> Result<Self> {
        let now = Instant::now();
        let due = parking::due_keys(pool, key).await?;
        Ok(Self { due: due.into_iter().map(|(message_key, wait)| (message_key, now + wait)).collect() })
    }
}

impl<H: Work<Mode = Database>> PartitionWorker<H> {
    /// Reads the partition's parked keys at start, retrying while the database is away.
    /// Returns `false` when the worker must end.
    pub(super) async fn load_parked(&mut self) -> bool {
        let this = &*self;
        let limit = this.shared.transaction_timeout;
        let load = || async move {
            let loading = ParkedKeys::load(this.shared.pool()?, &this.key);
            tokio::time::timeout(limit, loading)
                .await
                .unwrap_or_else(|_| Err(this.timed_out("loading the parked keys")))
        };
        let Some(parked) = until_loaded(&this.shared, || this.stopping(), load).await else { return false };
        self.parked = Some(parked);
        true
    }

    /// Retries every parked key that is due. Returns `false` when the worker must end.
    pub(super) async fn retry_parked(&mut self) -> bool {
        let due = match &self.parked {
            Some(parked) if !parked.is_empty() => parked.due_now(),
            _ => return true,
        };
        for message_key in due {
            if self.stopping() {
                return false;
            }
            let retrying = tokio::time::timeout(self.shared.transaction_timeout, self.retry_parked_key(&message_key));
            let outcome = retrying.await.unwrap_or_else(|_| Err(self.abandoned("retrying a parked key")));
            if let Err(error) = outcome {
                self.shared.report(&error);
                if error.class() == ErrorClass::Fatal {
                    return false;
                }
                if let Some(parked) = &mut self.parked {
                    parked.set_due(message_key, Instant::now() + Duration::from_secs(1));
                }
            }
        }
        true
    }

    /// Handles the parked messages of `message_key` oldest first, each in a transaction that
    /// also removes it, until one fails (rescheduled, or dead-lettered when out of retries)
    /// or none is left (the key is free again).
    async fn retry_parked_key(&mut self, message_key: &KeyBytes) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let (key, epoch) = (&self.key.clone(), self.epoch);
        loop {
            let _permit = shared
                .batch_permits
                .acquire()
                .await
                .map_err(|_| Error::Internal("the runtime's batch permits were closed".into()))?;
            let mut tx = shared.begin().await?;
            offsets::hold(&mut tx, key, epoch, self.next).await?;
            let Some(message) = parking::oldest(&mut tx, key, message_key).await? else {
                tx.rollback().await?;
                if let Some(parked) = &mut self.parked {
                    parked.release(message_key);
                }
                return Ok(());
            };
            let attempts = message.attempts + 1;
            let Some(failure) = self.handle_parked(&mut tx, &message, attempts).await? else {
                parking::remove(&mut tx, key, message.offset).await?;
                self.commit_timed(tx).await?;
                self.counters.processed.increment(1);
                continue;
            };
            tx.rollback().await?;
            if !self.settle_parked(message_key, &message, attempts, failure).await? {
                return Ok(());
            }
        }
    }

    /// Hands a parked message to the handler through `tx`: `None` when it was handled, or
    /// why it failed and whether for good. A transient database failure is an `Err`: the
    /// key is tried again later without counting.
    async fn handle_parked(
        &self,
        tx: &mut Tx,
        message: &ParkedMessage,
        attempts: u32,
    ) -> Result<Option<(String, bool)>> {
        let key = &self.key;
        let at =
            Coordinates { topic: key.topic.clone(), partition: key.partition, offset: message.offset, timestamp: None };
        let headers = if self.reads_headers { message.raw.headers.clone() } else { Vec::new() };
        let decoded = match decode_kept::<H>(&message.raw, headers, at) {
            Decoded::Failed { part, error } => {
                let reason = format!("cannot decode the {part}: {error}");
                self.shared.report(&Error::Decode { location: key.location(message.offset), part, source: error });
                return Ok(Some((reason, true)));
            }
            Decoded::Message(decoded) => decoded,
        };
        let mut cx = Context::new(tx, &self.outputs);
        let call = Call { attempt: attempts, ..self.call(message.offset) };
        let entry = Entry { message: &decoded, call, trace: self.trace(&message.raw) };
        let outcome = self.handler.run(std::slice::from_ref(&entry), &mut cx).await.into_outcome();
        let Some((error, kind)) = outcome.into_error(|| key.location(message.offset)) else { return Ok(None) };
        self.counters.failed.increment(1);
        if kind == FailureKind::Transient {
            // The database, not the message: try again later without counting.
            self.counters.retried.increment(1);
            return Err(error);
        }
        self.shared.report(&error);
        Ok(Some((error.to_string(), kind == FailureKind::Permanent)))
    }

    /// A parked message failed its `attempts`-th try: dead-letter it when its tries are
    /// spent (`true`: go on with the key's next message), else reschedule it (`false`).
    async fn settle_parked(
        &mut self,
        message_key: &KeyBytes,
        message: &ParkedMessage,
        attempts: u32,
        (reason, permanent): (String, bool),
    ) -> Result<bool> {
        let key = &self.key;
        let mut tx = self.shared.begin().await?;
        offsets::hold(&mut tx, key, self.epoch, self.next).await?;
        if self.retry.spent(attempts, permanent) {
            let location = key.location(message.offset);
            let letter = Letter { at: &location, raw: &message.raw, error: &reason, attempts };
            dead_letter::write(&mut tx, &letter, self.dead_letter_topic.as_deref()).await?;
            parking::remove(&mut tx, key, message.offset).await?;
            self.commit_timed(tx).await?;
            self.counters.dead_lettered.increment(1);
            self.shared.dead_lettered(&DeadLettered { location, attempts, reason });
            return Ok(true);
        }
        let delay = self.retry.delay(attempts);
        parking::reschedule(&mut tx, key, message.offset, attempts, &reason, delay).await?;
        self.commit_timed(tx).await?;
        self.counters.retried.increment(1);
        if let Some(parked) = &mut self.parked {
            parked.set_due(message_key.clone(), Instant::now() + delay);
        }
        Ok(false)
    }
}
