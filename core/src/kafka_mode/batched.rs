//! Kafka mode for a batch handler: the messages the consumer has fetched already (up to
//! the batch limit, without waiting for more) are gathered, then handed to the handler one
//! partition's run at a time; their output records and offsets join the open transaction
//! together. When a run fails, or emits what its messages cannot, each of its messages goes
//! the per-message way ([`super::handle`]) in a batch of one, which finds the one at fault.
//!
//! Gathering polls the consumer several times, and a poll can run a rebalance callback:
//! a partition revoked, assigned again, or rewound meanwhile is delivered again from where
//! it now starts, so its messages gathered before are dropped, never handled out of place.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};

use super::Partition;
use super::poll::complete_within;
use super::rebalance::KafkaModeContext;
use super::state::GroupState;
use crate::api::context::Context;
use crate::api::mode::Kafka;
use crate::api::output::Output;
use crate::engine::shared::Shared;
use crate::pipeline::decode::{Decoded, decode};
use crate::pipeline::invoke::Call;
use crate::pipeline::work::{Entry, Ran, Work};

/// The decoded messages of a stretch of one partition's gathered messages.
type DecodedStretch<H> = Vec<
    crate::api::message::Message<
        <H as crate::api::handler::Consumes>::Key,
        <H as crate::api::handler::Consumes>::Payload,
    >,
>;

/// A message gathered for a batch handler, with the assignment of its partition and the
/// rewind count when it was polled.
pub(super) struct Held<'c> {
    pub(super) message: BorrowedMessage<'c>,
    assignment: u64,
    rewinds: u64,
}

/// What gathering polled: the messages, and the error that stopped it, if one did.
pub(super) struct Gathered<'c> {
    pub(super) held: Vec<Held<'c>>,
    pub(super) error: Option<KafkaError>,
}

/// The gathered messages split per partition, each partition's in the order polled (its
/// offset order), the partitions in the order their first message came.
pub(super) fn by_partition<'h, 'c>(held: &'h [Held<'c>]) -> Vec<(Partition, Vec<&'h Held<'c>>)> {
    let mut runs: Vec<(Partition, Vec<&Held<'_>>)> = Vec::new();
    for one in held {
        let (topic, partition) = (one.message.topic(), one.message.partition());
        match runs.iter_mut().find(|(key, _)| key.1 == partition && key.0 == topic) {
            Some((_, run)) => run.push(one),
            None => runs.push(((topic.to_owned(), partition), vec![one])),
        }
    }
    runs
}

/// Takes `first` and what the consumer has fetched already, up to `limit` messages.
pub(super) fn gather<'c>(
    consumer: &'c BaseConsumer<KafkaModeContext>,
    first: BorrowedMessage<'c>,
    limit: usize,
) -> Gathered<'c> {
    let mut gathered = Gathered { held: Vec::with_capacity(limit.min(1024)), error: None };
    let mut next = Some(first);
    while let Some(message) = next.take() {
        gathered.held.push(consumer.context().lock().hold(message));
        if gathered.held.len() >= limit {
            break;
        }
        match consumer.poll(Duration::ZERO) {
            Some(Ok(message)) => next = Some(message),
            Some(Err(error)) => gathered.error = Some(error),
            None => {}
        }
    }
    gathered
}

impl GroupState {
    /// `message` with what its partition is now.
    fn hold<'c>(&self, message: BorrowedMessage<'c>) -> Held<'c> {
        let key = (message.topic().to_owned(), message.partition());
        let assignment = self.partitions.states.get(&key).map_or(0, |state| state.assignment);
        Held { message, assignment, rewinds: self.partitions.rewinds }
    }

    /// Whether `held` may still be handled: its partition is assigned as it was when it was
    /// polled, nothing was rewound since, and it is not stopped at an earlier failure.
    pub(super) fn current(&self, held: &Held<'_>, key: &Partition) -> bool {
        held.rewinds == self.partitions.rewinds
            && self.partitions.states.get(key).is_some_and(|state| state.assignment == held.assignment)
            && !self.partitions.blocked.contains_key(key)
            && self.txn.pending.get(key).is_none_or(|next| held.message.offset() >= *next)
    }

    /// Hands the gathered messages to the batch handler, one partition's run at a time.
    pub(super) fn handle_gathered<H: Work<Mode = Kafka>>(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        handler: &H,
        held: &[Held<'_>],
        shared: &Shared,
        outputs: &mut Vec<Output>,
    ) {
        for (key, run) in by_partition(held) {
            self.handle_run(consumer, handler, &key, &run, shared, outputs);
        }
    }

    /// One partition's gathered messages: the longest decodable stretch in one call, a
    /// message that cannot be decoded the per-message way (to the dead letters), and so on.
    fn handle_run<H: Work<Mode = Kafka>>(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        handler: &H,
        key: &Partition,
        run: &[&Held<'_>],
        shared: &Shared,
        outputs: &mut Vec<Output>,
    ) {
        let mut rest = run;
        while !rest.is_empty() {
            let current: Vec<&Held<'_>> = rest.iter().copied().filter(|held| self.current(held, key)).collect();
            if current.is_empty() {
                return;
            }
            let decoded = self.decode_stretch::<H>(&current, key);
            let taken = decoded.len();
            if taken == 0 {
                // The first cannot be decoded: it fails (and is dead-lettered) on its own.
                self.handle_of(consumer, handler, &current[0].message, key, shared, outputs);
            } else if !self.handle_stretch(consumer, handler, &current[..taken], &decoded, key, shared, outputs) {
                for held in &current[..taken] {
                    if self.current(held, key) {
                        self.handle_of(consumer, handler, &held.message, key, shared, outputs);
                    }
                }
            }
            let handled_through = current[taken.max(1) - 1].message.offset();
            rest = &rest[rest.iter().take_while(|held| held.message.offset() <= handled_through).count()..];
        }
    }

    /// Decodes `current` up to the first message that cannot be decoded: the decoded
    /// messages are the first that many of `current` (none: the first cannot be decoded).
    fn decode_stretch<H: Work<Mode = Kafka>>(&self, current: &[&Held<'_>], key: &Partition) -> DecodedStretch<H> {
        let mut decoded = Vec::with_capacity(current.len());
        for held in current {
            let headers =
                if self.handling.reads_headers { crate::pipeline::decode::headers(&held.message) } else { Vec::new() };
            match decode::<H>(&held.message, key.0.clone(), headers) {
                Decoded::Message(message) => decoded.push(message),
                Decoded::Failed { .. } => break,
            }
        }
        decoded
    }

    /// Calls the handler once on a stretch of decoded messages and, when it succeeds and
    /// emits only what it may, sends its records and adds its offsets to the open
    /// transaction. `false` when the stretch must go message by message instead (nothing of
    /// it joined the transaction).
    #[allow(clippy::too_many_arguments)] // the loop's context and the stretch
    fn handle_stretch<H: Work<Mode = Kafka>>(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        handler: &H,
        held: &[&Held<'_>],
        decoded: &[crate::api::message::Message<H::Key, H::Payload>],
        key: &Partition,
        shared: &Shared,
        outputs: &mut Vec<Output>,
    ) -> bool {
        if held.len() == 1
            || held
                .iter()
                .any(|one| self.partitions.refused.get(key).is_some_and(|(at, _)| *at == one.message.offset()))
        {
            return false;
        }
        for one in held {
            self.count_consumed(key, one.message.offset());
        }
        let first = held[0].message.offset();
        let attempt = self.partitions.attempts.get(key).map_or(1, |attempts| attempts.next_try(first));
        let parent = self.txn.span(&self.handling.group).clone();
        let call = Call {
            group: &self.handling.group,
            topic: &key.0,
            partition: key.1,
            offset: first,
            attempt,
            parent: Some(&parent),
        };
        let entries: Vec<Entry<'_, H::Key, H::Payload>> = decoded
            .iter()
            .map(|message| Entry { message, call: Call { offset: message.offset, ..call }, trace: None })
            .collect();
        outputs.clear();
        let mut cx = Context::for_kafka(outputs);
        // A batch that fails or runs past the deadline is tried message by message, which
        // finds and reports the message at fault.
        let ran = complete_within(&shared.handle, self.handling.deadline, handler.run(&entries, &mut cx));
        if !matches!(ran, Some(Ran::Handled)) || self.undeclared(outputs).is_some() {
            return false;
        }
        let last = held[held.len() - 1].message.offset();
        match self.send_outputs(consumer, shared, key, last, outputs) {
            super::handle::Sent::All => {
                for one in held {
                    self.handled(key, one.message.offset());
                }
                true
            }
            // Refused before any of its records joined: find the message at fault alone.
            super::handle::Sent::Refused(_) => false,
            // Aborted and rewound: its messages come again.
            super::handle::Sent::Aborted => true,
        }
    }
}
