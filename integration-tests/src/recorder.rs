//! A handler for tests: records every message it handles in `effects`, inside the batch's
//! transaction, so tests can count effects against input.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use exactly::codec::Utf8;
use exactly::{Consumes, Context, Delivery, Handler, HandlerError, Message, Subscription};

use crate::in_flight::{CallsInFlight, Counted};
use sqlx::PgPool;
use tokio::sync::Semaphore;

/// Creates the `effects` table (no unique constraint: duplicates must be countable).
pub async fn create_effects_table(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS effects (
            seq BIGSERIAL PRIMARY KEY,
            topic TEXT NOT NULL,
            partition INTEGER NOT NULL,
            message_offset BIGINT NOT NULL,
            key TEXT,
            payload TEXT NOT NULL,
            instance TEXT NOT NULL,
            group_id TEXT NOT NULL,
            txid BIGINT NOT NULL
        )",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Creates `blocked_keys`: while a key is in it, a [`Recorder`] with `blocked_keys` set
/// fails that key's messages.
pub async fn create_blocked_keys_table(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CREATE TABLE IF NOT EXISTS blocked_keys (key TEXT PRIMARY KEY)").execute(pool).await?;
    Ok(())
}

/// How many `effects` rows a group wrote (duplicates included).
pub async fn effect_rows(pool: &PgPool, group: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM effects WHERE group_id = $1").bind(group).fetch_one(pool).await?)
}

/// Counts of `effects` for a group: all rows, and distinct (topic, partition, offset).
pub async fn effect_counts(pool: &PgPool, group: &str) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*), count(DISTINCT (topic, partition, message_offset)) FROM effects WHERE group_id = $1",
    )
    .bind(group)
    .fetch_one(pool)
    .await?)
}

/// The offsets of `key`'s `effects` rows for `group`, in the order they were inserted.
pub async fn applied_offsets(pool: &PgPool, group: &str, key: &str) -> anyhow::Result<Vec<i64>> {
    Ok(sqlx::query_scalar("SELECT message_offset FROM effects WHERE group_id = $1 AND key = $2 ORDER BY seq")
        .bind(group)
        .bind(key)
        .fetch_all(pool)
        .await?)
}

/// The advisory lock a test holds to keep a batch open: a [`Recorder`] waits for it, inside
/// its batch's transaction, on the payloads in [`Recorder::lock_on`].
pub const BATCH_LOCK: i64 = 22_003;

/// How many database sessions wait for [`BATCH_LOCK`] now: batches held open.
pub async fn batches_waiting_for_the_lock(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid::bigint = $1 AND NOT granted",
    )
    .bind(BATCH_LOCK)
    .fetch_one(pool)
    .await?)
}

/// Blocks the handler on chosen payloads until released.
#[derive(Debug)]
pub struct Hold {
    /// Payloads that wait.
    pub payloads: Vec<String>,
    /// Released with `add_permits`.
    pub gate: Semaphore,
    /// How many handler calls are waiting at the gate now.
    pub waiting: AtomicUsize,
}

/// The recording handler.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Topics consumed.
    pub topics: Vec<String>,
    /// Consumer group.
    pub group: String,
    /// Delivery mode.
    pub delivery: Delivery,
    /// Name of this instance, written with each effect.
    pub instance: String,
    /// Payloads on which the handler returns an error (payloads starting with `fail-` too).
    pub fail_on: Vec<String>,
    /// Payloads on which the handler returns a permanent error.
    pub permanent_on: Vec<String>,
    /// Payloads on which the handler panics.
    pub panic_on: Vec<String>,
    /// Optional gate for chosen payloads.
    pub hold: Option<Arc<Hold>>,
    /// Handler calls in progress now, the most seen at once, and overlaps of a key.
    pub calls: Arc<CallsInFlight>,
    /// If set, each message is also emitted (key and payload) to this topic via the outbox.
    pub emit_to: Option<String>,
    /// Fail the messages of keys listed in the `blocked_keys` table.
    pub blocked_keys: bool,
    /// The handler's own retry policy.
    pub retry: Option<exactly::RetryPolicy>,
    /// Park failing keys.
    pub key_parking: bool,
    /// Where dead letters go, if to Kafka.
    pub dead_letter_topic: Option<String>,
    /// Payloads on which PostgreSQL itself raises a transient error, a few times.
    pub transient: Option<Arc<TransientErrors>>,
    /// Payloads on which the handler waits for [`BATCH_LOCK`] inside its transaction, so a
    /// test holding the lock keeps the batch open (across a database restart, say).
    pub lock_on: Vec<String>,
    /// Messages of one partition handled at once, never two of a key (1: one at a time).
    pub key_concurrency: usize,
    /// Time each handler call spends before recording, inside its transaction.
    pub delay: Duration,
}

/// Makes PostgreSQL raise a real error with a chosen SQLSTATE (such as `40001`,
/// serialization failure, or `40P01`, deadlock detected) inside the handler's transaction,
/// the first `times` times a payload is handled.
#[derive(Debug, Default)]
pub struct TransientErrors {
    /// Payload and the SQLSTATE raised for it.
    pub payloads: Vec<(String, &'static str)>,
    /// How many times each payload fails before it goes through.
    pub times: usize,
    /// Handler calls seen per payload.
    pub calls: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl TransientErrors {
    /// How many times the handler was called with `payload`.
    pub fn calls(&self, payload: &str) -> usize {
        self.calls.lock().map(|calls| calls.get(payload).copied().unwrap_or(0)).unwrap_or(0)
    }
}

impl Recorder {
    /// Records every message of `topic` as `group`.
    pub fn new(topic: &str, group: &str, instance: &str) -> Self {
        Self {
            topics: vec![topic.to_owned()],
            group: group.to_owned(),
            delivery: Delivery::PointToPoint,
            instance: instance.to_owned(),
            fail_on: Vec::new(),
            permanent_on: Vec::new(),
            panic_on: Vec::new(),
            hold: None,
            calls: Arc::default(),
            emit_to: None,
            blocked_keys: false,
            retry: None,
            key_parking: false,
            dead_letter_topic: None,
            transient: None,
            lock_on: Vec::new(),
            key_concurrency: 1,
            delay: Duration::ZERO,
        }
    }

    /// The most handler calls seen in progress at once.
    pub fn max_in_flight(&self) -> usize {
        self.calls.most()
    }
}

impl Consumes for Recorder {
    type Key = String;
    type Payload = String;
    type Codec = Utf8;
    type Mode = exactly::mode::Database;

    fn subscription(&self) -> Subscription {
        let mut subscription = Subscription::new(self.topics.clone(), self.group.clone(), self.delivery);
        if let Some(policy) = self.retry {
            subscription = subscription.with_retry(policy);
        }
        if self.key_parking {
            subscription = subscription.with_key_parking();
        }
        if let Some(topic) = &self.dead_letter_topic {
            subscription = subscription.with_dead_letter_topic(topic.clone());
        }
        if self.key_concurrency > 1 {
            subscription = subscription.with_key_concurrency(self.key_concurrency);
        }
        subscription
    }
}

#[exactly::async_trait]
impl Handler for Recorder {
    async fn handle(&self, message: &Message<String, String>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        let _call = self.calls.enter(message.key.as_ref().map(String::as_bytes));
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.record(message, cx).await
    }
}

impl Recorder {
    async fn record(&self, message: &Message<String, String>, cx: &mut Context<'_>) -> Result<(), HandlerError> {
        sqlx::query(
            "INSERT INTO effects (topic, partition, message_offset, key, payload, instance, group_id, txid)
             VALUES ($1, $2, $3, $4, $5, $6, $7, txid_current())",
        )
        .bind(&message.topic)
        .bind(message.partition)
        .bind(message.offset)
        .bind(&message.key)
        .bind(&message.payload)
        .bind(&self.instance)
        .bind(&self.group)
        .execute(cx.db())
        .await?;
        if let Some(hold) = &self.hold
            && hold.payloads.contains(&message.payload)
        {
            let _waiting = Counted::enter(&hold.waiting);
            drop(hold.gate.acquire().await);
        }
        if self.lock_on.contains(&message.payload) {
            sqlx::query("SELECT pg_advisory_xact_lock_shared($1)").bind(BATCH_LOCK).execute(cx.db()).await?;
        }
        if let Some(transient) = &self.transient
            && let Some((_, sqlstate)) = transient.payloads.iter().find(|(payload, _)| *payload == message.payload)
        {
            let call = {
                let mut calls = transient.calls.lock().map_err(|_| "poisoned")?;
                let call = calls.entry(message.payload.clone()).or_default();
                *call += 1;
                *call
            };
            if call <= transient.times {
                // A real server error, with its SQLSTATE, as sqlx reports it.
                let raise = format!("DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '{sqlstate}'; END $$");
                sqlx::query(sqlx::AssertSqlSafe(raise)).execute(cx.db()).await?;
            }
        }
        if self.blocked_keys {
            let blocked: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM blocked_keys WHERE key = $1)")
                .bind(&message.key)
                .fetch_one(cx.db())
                .await?;
            if blocked {
                return Err(format!("key {:?} is blocked", message.key).into());
            }
        }
        if self.fail_on.contains(&message.payload) || message.payload.starts_with("fail-") {
            return Err(format!("refusing payload {}", message.payload).into());
        }
        if self.permanent_on.contains(&message.payload) {
            return Err(HandlerError::permanent(format!("payload {} can never be processed", message.payload)));
        }
        assert!(!self.panic_on.contains(&message.payload), "cannot stand payload {}", message.payload);
        if let Some(topic) = &self.emit_to {
            let mut record = exactly::Output::to(topic).payload(message.payload.clone());
            if let Some(key) = &message.key {
                record = record.key(key.clone());
            }
            cx.emit(record).await?;
        }
        Ok(())
    }
}
