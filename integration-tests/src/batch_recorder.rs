//! A batch handler for tests: the batch version of [`Recorder`](crate::recorder::Recorder).
//! It records every message of a batch in `effects` with ONE statement (an `INSERT ...
//! SELECT FROM UNNEST(...)` or a binary `COPY`), inside the batch's transaction, so tests
//! count effects against input exactly as they do for the per-message recorder; and it
//! keeps a log of its calls (which messages each was given, whether it failed), so tests
//! can show that batches of more than one were really handed over and how a failure was
//! isolated.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use exactly::bulk::BinaryCopy;
use exactly::codec::Utf8;
use exactly::{BatchError, BatchHandler, Consumes, Context, Delivery, HandlerError, Message, Subscription};

/// The statement that writes a batch's `effects` rows, all of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
    /// `INSERT INTO effects ... SELECT ... FROM UNNEST($1::text[], ...)`: each column bound
    /// once as an array.
    Unnest,
    /// `COPY effects (...) FROM STDIN (FORMAT binary)`, written with
    /// [`BinaryCopy`]. `COPY` cannot call `txid_current()` per row, so the batch reads it
    /// once and puts it in each row.
    Copy,
}

impl Statement {
    /// `unnest` or `copy` (as `EXACTLY_TEST_BATCH` gives it to the worker processes).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "unnest" => Some(Statement::Unnest),
            "copy" => Some(Statement::Copy),
            _ => None,
        }
    }

    /// How the fault table names it.
    pub fn label(self) -> &'static str {
        match self {
            Statement::Unnest => "UNNEST",
            Statement::Copy => "COPY",
        }
    }
}

/// The binary `COPY` a batch's rows go through (`seq` comes from its default).
const COPY_EFFECTS: &str = "COPY effects (topic, partition, message_offset, key, payload, instance, group_id, txid) \
                            FROM STDIN (FORMAT binary)";

/// One call of the handler, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCall {
    /// The partition of its messages (a batch is one partition's).
    pub partition: i32,
    /// The offsets of the messages it was given, in the order given.
    pub offsets: Vec<i64>,
    /// Whether it returned an error (its effects rolled back).
    pub failed: bool,
}

impl BatchCall {
    /// How many messages it was given.
    pub fn size(&self) -> usize {
        self.offsets.len()
    }
}

/// Every call of a [`BatchRecorder`] in this process, failed ones included: what a test
/// reads to see batch sizes and how a failing message was found.
#[derive(Debug, Default)]
pub struct BatchLog {
    calls: Mutex<Vec<BatchCall>>,
    /// The most messages one call was given.
    largest: AtomicUsize,
}

impl BatchLog {
    /// Notes a call on `messages`; returns the largest call before it.
    fn note(&self, messages: &[&Message<String, String>], failed: bool) -> usize {
        let call = BatchCall {
            partition: messages.first().map_or(-1, |message| message.partition),
            offsets: messages.iter().map(|message| message.offset).collect(),
            failed,
        };
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
        self.largest.fetch_max(messages.len(), Ordering::SeqCst)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<BatchCall> {
        self.calls.lock().map(|calls| calls.clone()).unwrap_or_default()
    }

    /// The most messages one call was given.
    pub fn largest(&self) -> usize {
        self.largest.load(Ordering::SeqCst)
    }

    /// The sizes of the calls that failed, in order.
    pub fn failed_sizes(&self) -> Vec<usize> {
        self.calls().iter().filter(|call| call.failed).map(BatchCall::size).collect()
    }

    /// Whether any call was given the message at `offset` of `partition`.
    pub fn saw(&self, partition: i32, offset: i64) -> bool {
        self.calls().iter().any(|call| call.partition == partition && call.offsets.contains(&offset))
    }
}

/// The recording batch handler (Database mode, UTF-8 keys and payloads).
#[derive(Debug, Clone)]
pub struct BatchRecorder {
    /// Topics consumed.
    pub topics: Vec<String>,
    /// Consumer group.
    pub group: String,
    /// Name of this instance, written with each effect.
    pub instance: String,
    /// How a batch's rows are written.
    pub statement: Statement,
    /// Payloads that fail their batch (payloads starting with `fail-` too).
    pub fail_on: Vec<String>,
    /// Payloads that fail their batch with a permanent error.
    pub permanent_on: Vec<String>,
    /// Whether a failure names the failing message ([`BatchError::at`]); without it the
    /// runtime must bisect the batch to find it.
    pub name_index: bool,
    /// The handler's own retry policy.
    pub retry: Option<exactly::RetryPolicy>,
    /// Asks for key parking (which the runtime refuses for a batch handler).
    pub key_parking: bool,
    /// Prints a line to stderr the first time a call gets more than one message, so a
    /// test reading a worker process's log knows batches were handed over.
    pub announce: bool,
    /// Its calls.
    pub log: Arc<BatchLog>,
}

impl BatchRecorder {
    /// Records every message of `topic` as `group`, each batch with `statement`.
    pub fn new(topic: &str, group: &str, instance: &str, statement: Statement) -> Self {
        Self {
            topics: vec![topic.to_owned()],
            group: group.to_owned(),
            instance: instance.to_owned(),
            statement,
            fail_on: Vec::new(),
            permanent_on: Vec::new(),
            name_index: false,
            retry: None,
            key_parking: false,
            announce: false,
            log: Arc::default(),
        }
    }

    /// Whether the handler refuses `payload`.
    fn refuses(&self, payload: &str) -> bool {
        payload.starts_with("fail-")
            || self.fail_on.iter().any(|refused| refused == payload)
            || self.permanent_on.iter().any(|refused| refused == payload)
    }

    /// Writes the batch's rows, then fails it if it holds a refused payload: the rows
    /// written must roll back with it.
    async fn record(&self, messages: &[&Message<String, String>], cx: &mut Context<'_>) -> Result<(), BatchError> {
        match self.statement {
            Statement::Unnest => self.insert_unnest(messages, cx).await?,
            Statement::Copy => self.copy_in(messages, cx).await?,
        }
        self.refuse(messages)
    }

    /// The error for the first refused message of the batch, if there is one.
    fn refuse(&self, messages: &[&Message<String, String>]) -> Result<(), BatchError> {
        let Some((index, message)) = messages.iter().enumerate().find(|(_, message)| self.refuses(&message.payload))
        else {
            return Ok(());
        };
        let error = if self.permanent_on.contains(&message.payload) {
            HandlerError::permanent(format!("payload {} can never be processed", message.payload))
        } else {
            HandlerError::new(format!("refusing payload {}", message.payload))
        };
        Err(if self.name_index { BatchError::at(index, error) } else { BatchError::new(error) })
    }

    /// All the rows in one `INSERT ... SELECT FROM UNNEST(...)`.
    async fn insert_unnest(
        &self,
        messages: &[&Message<String, String>],
        cx: &mut Context<'_>,
    ) -> Result<(), sqlx::Error> {
        let topics: Vec<String> = messages.iter().map(|message| message.topic.clone()).collect();
        let partitions: Vec<i32> = messages.iter().map(|message| message.partition).collect();
        let offsets: Vec<i64> = messages.iter().map(|message| message.offset).collect();
        let keys: Vec<Option<String>> = messages.iter().map(|message| message.key.clone()).collect();
        let payloads: Vec<String> = messages.iter().map(|message| message.payload.clone()).collect();
        sqlx::query(
            "INSERT INTO effects (topic, partition, message_offset, key, payload, instance, group_id, txid)
             SELECT topic, partition, message_offset, key, payload, $6::text, $7::text, txid_current()
               FROM UNNEST($1::text[], $2::int4[], $3::int8[], $4::text[], $5::text[])
                 AS batch (topic, partition, message_offset, key, payload)",
        )
        .bind(topics)
        .bind(partitions)
        .bind(offsets)
        .bind(keys)
        .bind(payloads)
        .bind(&self.instance)
        .bind(&self.group)
        .execute(cx.db())
        .await?;
        Ok(())
    }

    /// All the rows in one binary `COPY`, the transaction's id read once for them all.
    async fn copy_in(&self, messages: &[&Message<String, String>], cx: &mut Context<'_>) -> Result<(), sqlx::Error> {
        let txid: i64 = sqlx::query_scalar("SELECT txid_current()").fetch_one(cx.db()).await?;
        let mut copy = BinaryCopy::new();
        for message in messages {
            let row = copy.row().text(&message.topic).int4(message.partition).int8(message.offset);
            let row = match &message.key {
                Some(key) => row.text(key),
                None => row.null(),
            };
            row.text(&message.payload).text(&self.instance).text(&self.group).int8(txid);
        }
        copy.send(cx.db(), COPY_EFFECTS).await?;
        Ok(())
    }
}

impl Consumes for BatchRecorder {
    type Key = String;
    type Payload = String;
    type Codec = Utf8;
    type Mode = exactly::mode::Database;

    fn subscription(&self) -> Subscription {
        let mut subscription = Subscription::new(self.topics.clone(), self.group.clone(), Delivery::PointToPoint);
        if let Some(policy) = self.retry {
            subscription = subscription.with_retry(policy);
        }
        if self.key_parking {
            subscription = subscription.with_key_parking();
        }
        subscription
    }
}

#[exactly::async_trait]
impl BatchHandler for BatchRecorder {
    async fn handle_batch(
        &self,
        messages: &[&Message<String, String>],
        cx: &mut Context<'_>,
    ) -> Result<(), BatchError> {
        let outcome = self.record(messages, cx).await;
        let largest_before = self.log.note(messages, outcome.is_err());
        if self.announce && messages.len() > 1 && largest_before <= 1 {
            eprintln!("batch recorder: {} messages in one call ({})", messages.len(), self.statement.label());
        }
        outcome
    }
}
