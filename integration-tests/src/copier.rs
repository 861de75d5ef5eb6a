//! A Kafka-mode handler for tests: copies every record of one topic to another, key,
//! payload and all, in the Kafka transaction that commits the input offsets. It is both a
//! per-message [`Handler`] and a [`BatchHandler`] (one output record per input either way),
//! so the same tests run with either kind.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use exactly::codec::Bytes;
use exactly::mode::Kafka;
use exactly::{
    BatchError, BatchHandler, Consumes, Context, Delivery, Handler, HandlerError, Message, Output, Subscription,
};

use crate::in_flight::CallsInFlight;

/// Copies `input` to `output` as consumer group `group`.
#[derive(Debug, Clone)]
pub struct Copier {
    /// Topic read.
    pub input: String,
    /// Topic written.
    pub output: String,
    /// Consumer group.
    pub group: String,
    /// Payloads the handler refuses (to test failures).
    pub fail_on: Vec<Vec<u8>>,
    /// Payloads on which the handler panics.
    pub panic_on: Vec<Vec<u8>>,
    /// Time spent on each record (to keep a transaction open in tests).
    pub delay: std::time::Duration,
    /// Stall once, for this long, on this payload (to outlive a transaction timeout).
    pub stall_once: Option<(Vec<u8>, std::time::Duration, std::sync::Arc<std::sync::atomic::AtomicBool>)>,
    /// Payloads on which the handler never returns (to test the call's deadline).
    pub hang_on: Vec<Vec<u8>>,
    /// How many calls began to hang on one of `hang_on`.
    pub hung: Arc<AtomicUsize>,
    /// The handler's own retry policy.
    pub retry: Option<exactly::RetryPolicy>,
    /// Where spent messages go.
    pub dead_letter_topic: Option<String>,
    /// The most messages one batch call was given (as a batch handler). The first call
    /// with more than one prints a line to stderr, so a test reading a copier process's
    /// log knows batches were handed over.
    pub largest_batch: Arc<AtomicUsize>,
    /// Messages of one partition handled at once, never two of a key (1: one at a time).
    pub key_concurrency: usize,
    /// Handler calls in progress now, the most seen at once, and overlaps of a key (as a
    /// per-message handler). The first time two calls run at once it prints a line to
    /// stderr, so a test reading a copier process's log knows keys ran concurrently.
    pub calls: Arc<CallsInFlight>,
}

impl Copier {
    /// A copier with no failures.
    pub fn new(input: &str, output: &str, group: &str) -> Self {
        Self {
            input: input.into(),
            output: output.into(),
            group: group.into(),
            fail_on: Vec::new(),
            panic_on: Vec::new(),
            delay: std::time::Duration::ZERO,
            stall_once: None,
            hang_on: Vec::new(),
            hung: Arc::default(),
            retry: None,
            dead_letter_topic: None,
            largest_batch: Arc::default(),
            key_concurrency: 1,
            calls: Arc::default(),
        }
    }

    /// The output record for `message`: its key and payload, to the output topic.
    fn copy_of(&self, message: &Message<Vec<u8>, Vec<u8>>) -> Output {
        let mut record = Output::to(&self.output).payload(message.payload.clone());
        if let Some(key) = &message.key {
            record = record.key(key.clone());
        }
        record
    }
}

impl Consumes for Copier {
    type Key = Vec<u8>;
    type Payload = Vec<u8>;
    type Codec = Bytes;
    type Mode = Kafka;

    fn subscription(&self) -> Subscription {
        let mut subscription = Subscription::new([self.input.clone()], self.group.clone(), Delivery::PointToPoint)
            .with_outputs([self.output.clone()]);
        if let Some(policy) = self.retry {
            subscription = subscription.with_retry(policy);
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
impl Handler for Copier {
    async fn handle(
        &self,
        message: &Message<Vec<u8>, Vec<u8>>,
        cx: &mut Context<'_, Kafka>,
    ) -> Result<(), HandlerError> {
        let before = self.calls.most();
        let _call = self.calls.enter(message.key.as_deref());
        if before == 1 && self.calls.most() > 1 {
            eprintln!("copier: {} calls at once", self.calls.most());
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        assert!(!self.panic_on.contains(&message.payload), "cannot stand this payload");
        if let Some((payload, stall, done)) = &self.stall_once
            && *payload == message.payload
            && !done.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tokio::time::sleep(*stall).await;
        }
        if self.hang_on.contains(&message.payload) {
            self.hung.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        if self.fail_on.contains(&message.payload) {
            return Err("refusing this payload".into());
        }
        cx.emit(self.copy_of(message));
        Ok(())
    }
}

/// As a batch handler: the delay is spent once for the whole batch (per record), a refused
/// payload fails the batch naming its message, and each message gives one output record.
#[exactly::async_trait]
impl BatchHandler for Copier {
    async fn handle_batch(
        &self,
        messages: &[&Message<Vec<u8>, Vec<u8>>],
        cx: &mut Context<'_, Kafka>,
    ) -> Result<(), BatchError> {
        if !self.delay.is_zero() {
            let records = u32::try_from(messages.len()).unwrap_or(u32::MAX);
            tokio::time::sleep(self.delay.saturating_mul(records)).await;
        }
        if messages.len() > 1 && self.largest_batch.fetch_max(messages.len(), Ordering::SeqCst) <= 1 {
            eprintln!("batch copier: {} messages in one call", messages.len());
        }
        for (index, message) in messages.iter().enumerate() {
            assert!(!self.panic_on.contains(&message.payload), "cannot stand this payload");
            if self.fail_on.contains(&message.payload) {
                return Err(BatchError::at(index, "refusing this payload"));
            }
        }
        for message in messages {
            cx.emit(self.copy_of(message));
        }
        Ok(())
    }
}
