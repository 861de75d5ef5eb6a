//! A Kafka-mode message, from poll to the open transaction: decoded, handed to the
//! handler through the pipeline, its output records sent in the open transaction with its
//! offset; or, when it fails, its partition blocked at it until its retry is due, or it is
//! dead-lettered to the dead-letter topic in the open transaction.

use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use super::Partition;
use super::poll::complete_within;
use super::rebalance::KafkaModeContext;
use super::state::{Blocked, GroupState};
use crate::api::context::Context;
use crate::api::mode::Kafka;
use crate::api::output::Output;
use crate::engine::shared::Shared;
use crate::error::{Error, Location};
use crate::kafka::producer::CALL_TIMEOUT;
use crate::kafka::trace_context::TraceContext;
use crate::pipeline::dead_letter::{self, DeadLettered};
use crate::pipeline::decode::{Decoded, Headers, decode, headers, raw};
use crate::pipeline::invoke::{Call, FailureKind};
use crate::pipeline::work::{Entry, Work};
use crate::store::dead_letters::Letter;

/// How a message failed: the error to report, and how it counts.
pub(super) type Failure = (Error, FailureKind);

/// The failure of a handler call on the message at `location` abandoned at the deadline
/// `after`: a failed try, as an error the handler returned would be, so a message that
/// always stalls its handler is dead-lettered in the end rather than stalling its partition
/// for good.
pub(super) fn timed_out(location: Location, after: std::time::Duration) -> Failure {
    (Error::HandlerTimedOut { location, after }, FailureKind::Counted)
}

impl GroupState {
    /// Handles one message: the handler's output and the message's offset join the open
    /// transaction. A failure blocks the partition at this message until its retry is due;
    /// when the retries are spent (or the failure is permanent) the message goes to the
    /// dead-letter topic in the open transaction, or, without one, keeps being retried.
    pub(super) fn handle<H: Work<Mode = Kafka>>(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        handler: &H,
        message: &BorrowedMessage<'_>,
        shared: &Shared,
        outputs: &mut Vec<Output>,
    ) {
        // Messages come in runs of one partition: its key is made once per run, not per message.
        let mut key = std::mem::take(&mut self.reuse.last_key);
        if key.1 != message.partition() || key.0 != message.topic() {
            key = (message.topic().to_owned(), message.partition());
        }
        self.handle_of(consumer, handler, message, &key, shared, outputs);
        self.reuse.last_key = key;
    }

    /// [`GroupState::handle`] of a message of partition `key`.
    pub(super) fn handle_of<H: Work<Mode = Kafka>>(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        handler: &H,
        message: &BorrowedMessage<'_>,
        key: &Partition,
        shared: &Shared,
        outputs: &mut Vec<Output>,
    ) {
        let offset = message.offset();
        if self.partitions.blocked.contains_key(key) || self.txn.pending.get(key).is_some_and(|next| offset < *next) {
            return; // fetched before the partition was paused or rewound: it comes again
        }
        self.count_consumed(key, offset);
        let failure = match self.run_handler(handler, message, key, shared, outputs) {
            Err(failure) => failure,
            Ok(()) => match self.send_outputs(consumer, shared, key, offset, outputs) {
                Sent::All => return self.handled(key, offset),
                Sent::Refused(failure) => failure,
                Sent::Aborted => return,
            },
        };
        self.failed(consumer, shared, message, key, failure, outputs);
    }

    /// Counts the message at `offset` of `key` as consumed, once per assignment.
    pub(super) fn count_consumed(&mut self, key: &Partition, offset: i64) {
        if let Some(state) = self.partitions.states.get_mut(key)
            && offset > state.consumed_through
        {
            state.consumed_through = offset;
            state.metrics.consumed.increment(1);
        }
    }

    /// Decodes the message and hands it to the handler through the pipeline; its output
    /// records are left in `outputs`.
    fn run_handler<H: Work<Mode = Kafka>>(
        &mut self,
        handler: &H,
        message: &BorrowedMessage<'_>,
        key: &Partition,
        shared: &Shared,
        outputs: &mut Vec<Output>,
    ) -> Result<(), Failure> {
        let offset = message.offset();
        let mut topic = std::mem::take(&mut self.reuse.spare_topic);
        if topic != key.0 {
            topic.clone_from(&key.0);
        }
        let (given, trace) = self.headers_and_trace(message, shared);
        let mut decoded = match decode::<H>(message, topic, given) {
            Decoded::Failed { part, error } => {
                let location = self.location(key, offset);
                return Err((Error::Decode { location, part, source: error }, FailureKind::Permanent));
            }
            Decoded::Message(decoded) => decoded,
        };
        outputs.clear();
        let mut cx = Context::for_kafka(outputs);
        let attempt = self.partitions.attempts.get(key).map_or(1, |attempts| attempts.next_try(offset));
        let parent = self.txn.span(&self.handling.group);
        let call = Call {
            group: &self.handling.group,
            topic: &key.0,
            partition: key.1,
            offset,
            attempt,
            parent: Some(parent),
        };
        let entry = [Entry { message: &decoded, call, trace }];
        let ran = complete_within(&shared.handle, self.handling.deadline, handler.run(&entry, &mut cx));
        self.reuse.spare_topic = std::mem::take(&mut decoded.topic);
        let Some(ran) = ran else { return Err(timed_out(self.location(key, offset), self.handling.deadline)) };
        if let Some(failure) = ran.into_outcome().into_error(|| self.location(key, offset)) {
            return Err(failure);
        }
        self.check_outputs(key, offset, outputs)
    }

    /// The headers the handler is given, and the message's trace context: librdkafka
    /// parses the headers only if the handler or the trace context wants them.
    pub(super) fn headers_and_trace(
        &self,
        message: &BorrowedMessage<'_>,
        shared: &Shared,
    ) -> (Headers, Option<TraceContext>) {
        let reads_headers = self.handling.reads_headers;
        if !reads_headers && !shared.trace_context {
            return (Vec::new(), None);
        }
        let given = headers(message);
        let trace = if shared.trace_context {
            TraceContext::from_headers(given.iter().map(|(n, v)| (n.as_str(), v.as_ref())))
        } else {
            None
        };
        (if reads_headers { given } else { Vec::new() }, trace)
    }

    /// Fails a message that emitted to a topic it did not declare, or whose records the
    /// producer refused before (see [`super::state::Partitions::refused`]).
    pub(super) fn check_outputs(&self, key: &Partition, offset: i64, outputs: &[Output]) -> Result<(), Failure> {
        if let Some(topic) = self.undeclared(outputs) {
            let source = format!(
                "emitted to topic `{topic}`, which is not among its declared outputs {:?}",
                self.handling.outputs
            );
            return Err((
                Error::Handler { location: self.location(key, offset), source: source.into() },
                FailureKind::Counted,
            ));
        }
        if let Some((_, reason)) = self.partitions.refused.get(key).filter(|(at, _)| *at == offset) {
            let source = reason.clone().into();
            return Err((Error::Handler { location: self.location(key, offset), source }, FailureKind::Permanent));
        }
        Ok(())
    }

    /// The first emitted topic that is not declared, when outputs are declared.
    pub(super) fn undeclared<'o>(&self, outputs: &'o [Output]) -> Option<&'o str> {
        let declared = &self.handling.outputs;
        if declared.is_empty() {
            return None;
        }
        outputs.iter().map(|o| o.topic.as_str()).find(|topic| !declared.iter().any(|d| d == topic))
    }

    /// Sends the message's output records in the open transaction.
    pub(super) fn send_outputs(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        shared: &Shared,
        key: &Partition,
        offset: i64,
        outputs: &[Output],
    ) -> Sent {
        match self.produce(outputs) {
            Ok(()) => Sent::All,
            Err((sent, error)) if refused_outright(&error) => {
                let reason = format!("Kafka cannot take a record it emitted: {error}");
                if sent == 0 {
                    // Nothing of this message joined the transaction: it fails here.
                    let location = self.location(key, offset);
                    return Sent::Refused((Error::Handler { location, source: reason.into() }, FailureKind::Permanent));
                }
                // Its records before the refused one did: they are aborted with the
                // transaction, and the message fails when it comes again.
                shared.report(&error);
                self.partitions.refused.insert(key.clone(), (offset, reason));
                self.abort(consumer, shared, true);
                Sent::Aborted
            }
            Err((_, error)) => {
                shared.report(&error);
                self.abort(consumer, shared, true);
                Sent::Aborted
            }
        }
    }

    /// The message at `offset` of `key` was handled and its records sent: its offset joins
    /// the open transaction.
    pub(super) fn handled(&mut self, key: &Partition, offset: i64) {
        crate::failpoint::hit("kafka.after_produce");
        if let Some(state) = self.partitions.states.get_mut(key) {
            state.processed += 1;
        }
        match self.txn.pending.get_mut(key) {
            Some(next) => *next = offset + 1,
            None => {
                self.txn.pending.insert(key.clone(), offset + 1);
            }
        }
        self.txn.records += 1;
    }

    /// The message failed: it is counted, then dead-lettered when its tries are spent and
    /// there is a dead-letter topic; else its partition waits at it for its retry.
    pub(super) fn failed(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        shared: &Shared,
        message: &BorrowedMessage<'_>,
        key: &Partition,
        (error, kind): Failure,
        outputs: &mut Vec<Output>,
    ) {
        let offset = message.offset();
        shared.report(&error);
        if !matches!(error, Error::Decode { .. })
            && let Some(state) = self.partitions.states.get(key)
        {
            state.metrics.failed.increment(1);
        }
        let permanent = kind == FailureKind::Permanent;
        let attempts = self.partitions.attempts.entry(key.clone()).or_default();
        let failures = attempts.failed(offset, kind != FailureKind::Transient, permanent, error.to_string());
        let spent = kind != FailureKind::Transient && self.handling.retry.spent(failures, permanent);
        match self.handling.dead_letter_topic.clone() {
            Some(topic) if spent => self.dead_letter(consumer, shared, message, key, &topic, failures, error, outputs),
            _ => {
                if let Some(state) = self.partitions.states.get(key) {
                    state.metrics.retried.increment(1);
                }
                self.block(consumer, key.clone(), offset, failures.max(1));
            }
        }
    }

    /// Sends the message to the dead-letter `topic` in the open transaction, with its
    /// offset.
    #[allow(clippy::too_many_arguments)] // the loop's context, the message, and why it failed
    fn dead_letter(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        shared: &Shared,
        message: &BorrowedMessage<'_>,
        key: &Partition,
        topic: &str,
        attempts: u32,
        error: Error,
        outputs: &mut Vec<Output>,
    ) {
        let offset = message.offset();
        let (location, reason) = (self.location(key, offset), error.to_string());
        let letter = Letter { at: &location, raw: &raw(message), error: &reason, attempts };
        *outputs = vec![dead_letter::record(topic, &letter)];
        if let Err((_, error)) = self.produce(outputs) {
            shared.report(&error);
            self.abort(consumer, shared, true);
            return;
        }
        shared.dead_lettered(&DeadLettered { location, attempts, reason });
        if let Some(state) = self.partitions.states.get_mut(key) {
            state.dead_lettered += 1;
        }
        self.txn.pending.insert(key.clone(), offset + 1);
        self.txn.records += 1;
    }

    /// Stops a partition at `offset`, after `failures` failures, until its retry is due.
    fn block(&mut self, consumer: &BaseConsumer<KafkaModeContext>, key: Partition, offset: i64, failures: u32) {
        pause(consumer, &key);
        let retry_at = Instant::now() + self.handling.retry.delay(failures);
        self.partitions.blocked.insert(key, Blocked { offset, retry_at });
    }

    /// Seeks blocked partitions whose retry is due back to their failed message, and
    /// resumes them.
    pub(super) fn retry_due(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared) {
        if self.partitions.blocked.is_empty() {
            return;
        }
        let now = Instant::now();
        let due: Vec<(Partition, i64)> = self
            .partitions
            .blocked
            .iter()
            .filter(|(_, b)| b.retry_at <= now)
            .map(|(key, b)| (key.clone(), b.offset))
            .collect();
        for ((topic, partition), offset) in due {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            let seek = consumer.seek(&topic, partition, Offset::Offset(offset), CALL_TIMEOUT);
            match seek.and_then(|()| consumer.resume(&tpl)) {
                Ok(()) => {
                    self.partitions.blocked.remove(&(topic, partition));
                }
                Err(e) => shared.report(&Error::from(e)),
            }
        }
    }
}

/// Stops fetching partition `key` (a pause that fails leaves messages to come that the
/// loop drops, as it drops any message of a blocked partition).
pub(super) fn pause(consumer: &BaseConsumer<KafkaModeContext>, (topic, partition): &Partition) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, *partition);
    let _ = consumer.pause(&tpl);
}

/// What became of a handled message's output records.
pub(super) enum Sent {
    /// All joined the open transaction.
    All,
    /// The producer refused one for what it is, before any of the message's joined: the
    /// message fails.
    Refused(Failure),
    /// The open transaction was aborted (the message comes again).
    Aborted,
}

/// Whether the producer refused a record for what it is, so that sending it again cannot
/// succeed: larger than `message.max.bytes`. librdkafka checks that before the record
/// joins the transaction, which the refusal leaves as it was.
fn refused_outright(error: &Error) -> bool {
    matches!(error, Error::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)))
}
