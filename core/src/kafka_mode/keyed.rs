//! Kafka mode with key-level concurrency: the messages the consumer has fetched already
//! (up to the batch limit, gathered as for a batch handler) are split per partition, then
//! per key; up to the handler's key concurrency keys of a partition run at once, each
//! key's messages one after another in offset order, and the partitions side by side.
//!
//! Every message's output records are held until the whole window has run, then sent in
//! offset order with their offsets. So nothing is in flight when a transaction commits (a
//! commit, a revocation or a shutdown only happens between windows), and a partition's
//! offset in the transaction never passes a message that is not done: Kafka keeps one
//! offset per partition, with no room for "done above it", so the window is settled below
//! its first failure only.
//!
//! A message that fails stops its key. Once the window has run, its partition's messages
//! below the lowest failure join the transaction; the failure goes the per-message way
//! (its partition waits at it until its retry is due, or it is dead-lettered); and the
//! messages above it are read again, from after it, once it is settled. Their records were
//! never sent, so handling them again emits them once. Other keys' work above a failure is
//! the price of a retry; with failures rare it is small.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::time::Instant;

use futures::StreamExt;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message as _;

use super::Partition;
use super::batched::{Held, by_partition};
use super::handle::{Failure, Sent, pause, timed_out};
use super::poll::complete;
use super::rebalance::KafkaModeContext;
use super::state::{Blocked, GroupState};
use crate::api::context::Context;
use crate::api::message::Message;
use crate::api::mode::Kafka;
use crate::api::output::Output;
use crate::engine::shared::Shared;
use crate::error::Error;
use crate::kafka::trace_context::TraceContext;
use crate::ops::metrics::handles::KeyedMetrics;
use crate::pipeline::decode::{Decoded, decode};
use crate::pipeline::invoke::{Call, FailureKind};
use crate::pipeline::keys::key_hash;
use crate::pipeline::work::{Entry, Work};

/// One message of a window: decoded (or why not), and once it ran, its output records
/// and how it went.
struct Slot<'h, 'c, K, P> {
    held: &'h Held<'c>,
    /// `None` when it could not be decoded (its failure is in `outcome` from the start).
    decoded: Option<Message<K, P>>,
    trace: Option<TraceContext>,
    attempt: u32,
    outputs: Vec<Output>,
    /// `None`: not run, because an earlier message of its key failed.
    outcome: Option<Result<(), Failure>>,
}

/// One partition's messages of a window, in offset order.
struct PartitionWindow<'h, 'c, K, P> {
    key: Partition,
    slots: Vec<Slot<'h, 'c, K, P>>,
}

/// What every call of a window shares.
#[derive(Clone, Copy)]
struct Calls<'a> {
    group: &'a str,
    parent: &'a tracing::Span,
    lanes: usize,
    /// How long one call may run (see [`super::KafkaModeSettings::handler_deadline`]).
    deadline: std::time::Duration,
}

impl GroupState {
    /// Runs the gathered messages with key-level concurrency, then settles each partition
    /// in offset order (see the module's documentation).
    pub(super) fn handle_keyed<H: Work<Mode = Kafka>>(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        handler: &H,
        held: &[Held<'_>],
        shared: &Shared,
    ) {
        let mut windows = self.windows::<H>(held, shared);
        if windows.is_empty() {
            return;
        }
        let parent = self.txn.span(&self.handling.group).clone();
        for window in &windows {
            if let Some(keyed) = self.keyed_metrics(&window.key) {
                keyed.in_flight(window.slots.len());
            }
        }
        let handling = &self.handling;
        let calls = Calls {
            group: &handling.group,
            parent: &parent,
            lanes: handling.key_concurrency,
            deadline: handling.deadline,
        };
        let runs = windows.iter_mut().map(|window| run_partition(handler, calls, window));
        let waits = complete(&shared.handle, futures::future::join_all(runs));
        for (window, waited) in windows.iter().zip(waits) {
            if let Some(keyed) = self.keyed_metrics(&window.key) {
                keyed.key_waits.increment(waited);
            }
        }
        for window in windows {
            if !self.settle(consumer, shared, window) {
                return; // the transaction was aborted: every partition comes again
            }
        }
    }

    /// The gathered messages that may still be handled, per partition, decoded.
    fn windows<'h, 'c, H: Work<Mode = Kafka>>(
        &mut self,
        held: &'h [Held<'c>],
        shared: &Shared,
    ) -> Vec<PartitionWindow<'h, 'c, H::Key, H::Payload>> {
        let mut windows = Vec::new();
        for (key, run) in by_partition(held) {
            let mut slots = Vec::new();
            for one in run {
                if self.current(one, &key) {
                    slots.push(self.slot::<H>(one, &key, shared));
                }
            }
            if !slots.is_empty() {
                windows.push(PartitionWindow { key, slots });
            }
        }
        windows
    }

    /// `held`, of partition `key`, decoded and counted as consumed.
    fn slot<'h, 'c, H: Work<Mode = Kafka>>(
        &mut self,
        held: &'h Held<'c>,
        key: &Partition,
        shared: &Shared,
    ) -> Slot<'h, 'c, H::Key, H::Payload> {
        let offset = held.message.offset();
        self.count_consumed(key, offset);
        let attempt = self.partitions.attempts.get(key).map_or(1, |attempts| attempts.next_try(offset));
        let (given, trace) = self.headers_and_trace(&held.message, shared);
        let (decoded, outcome) = match decode::<H>(&held.message, key.0.clone(), given) {
            Decoded::Message(message) => (Some(message), None),
            Decoded::Failed { part, error } => {
                let location = self.location(key, offset);
                let failure = (Error::Decode { location, part, source: error }, FailureKind::Permanent);
                (None, Some(Err(failure)))
            }
        };
        Slot { held, decoded, trace, attempt, outputs: Vec::new(), outcome }
    }

    /// Settles one partition's window in offset order: each message that ran joins the
    /// transaction with its records, up to the first failure, which goes the per-message
    /// way; the messages above it are read again. `false` when the transaction was aborted.
    fn settle<K, P>(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        shared: &Shared,
        window: PartitionWindow<'_, '_, K, P>,
    ) -> bool {
        let key = window.key;
        if let Some(keyed) = self.keyed_metrics(&key) {
            keyed.in_flight(0);
        }
        for mut slot in window.slots {
            let offset = slot.held.message.offset();
            let failure = match slot.outcome.take() {
                // Not run: an earlier message of its key failed and was settled first, so
                // this cannot be reached; were it, the message is read again, not skipped.
                None => {
                    self.read_again(consumer, key, offset);
                    return true;
                }
                Some(Err(failure)) => failure,
                Some(Ok(())) => match self.check_outputs(&key, offset, &slot.outputs) {
                    Err(failure) => failure,
                    Ok(()) => match self.send_outputs(consumer, shared, &key, offset, &slot.outputs) {
                        Sent::All => {
                            self.handled(&key, offset);
                            continue;
                        }
                        Sent::Refused(failure) => failure,
                        Sent::Aborted => return false,
                    },
                },
            };
            let rewinds = self.partitions.rewinds;
            self.failed(consumer, shared, &slot.held.message, &key, failure, &mut slot.outputs);
            if self.partitions.rewinds != rewinds {
                return false;
            }
            if !self.partitions.blocked.contains_key(&key) {
                // Dead-lettered: what ran above it is dropped, and read again after it.
                self.read_again(consumer, key, offset + 1);
            }
            return true;
        }
        true
    }

    /// The key-concurrency metrics of partition `key`, while it is assigned.
    fn keyed_metrics(&self, key: &Partition) -> Option<&KeyedMetrics> {
        self.partitions.states.get(key).and_then(|state| state.keyed.as_ref())
    }

    /// Pauses partition `key` and has it sought back to `offset` at once (by
    /// [`GroupState::retry_due`]): messages fetched above it are dropped until then.
    fn read_again(&mut self, consumer: &BaseConsumer<KafkaModeContext>, key: Partition, offset: i64) {
        pause(consumer, &key);
        self.partitions.blocked.insert(key, Blocked { offset, retry_at: Instant::now() });
    }
}

/// Runs one partition's window: its keys, up to `calls.lanes` at once, each key's messages
/// in offset order. Returns how many messages waited for an earlier one of their key.
async fn run_partition<H: Work<Mode = Kafka>>(
    handler: &H,
    calls: Calls<'_>,
    window: &mut PartitionWindow<'_, '_, H::Key, H::Payload>,
) -> u64 {
    let PartitionWindow { key: (topic, partition), slots } = window;
    let messages = slots.len();
    let mut keys: Vec<Vec<&mut Slot<'_, '_, H::Key, H::Payload>>> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    for slot in slots.iter_mut() {
        match key_hash(slot.held.message.key(), false) {
            // A message without a key has no order to keep: it runs on its own.
            None => keys.push(vec![slot]),
            Some(hash) => match index.entry(hash) {
                MapEntry::Occupied(at) => keys[*at.get()].push(slot),
                MapEntry::Vacant(at) => {
                    at.insert(keys.len());
                    keys.push(vec![slot]);
                }
            },
        }
    }
    let waited = (messages - keys.len()) as u64;
    let (topic, partition) = (topic.as_str(), *partition);
    futures::stream::iter(keys.into_iter().map(|slots| run_key(handler, calls, topic, partition, slots)))
        .buffer_unordered(calls.lanes)
        .for_each(|()| async {})
        .await;
    waited
}

/// Runs one key's messages of a window in offset order, stopping at the first that fails.
async fn run_key<H: Work<Mode = Kafka>>(
    handler: &H,
    calls: Calls<'_>,
    topic: &str,
    partition: i32,
    slots: Vec<&mut Slot<'_, '_, H::Key, H::Payload>>,
) {
    for slot in slots {
        let Some(message) = &slot.decoded else { return };
        let offset = slot.held.message.offset();
        let call =
            Call { group: calls.group, topic, partition, offset, attempt: slot.attempt, parent: Some(calls.parent) };
        let entry = [Entry { message, call, trace: slot.trace.take() }];
        let mut cx = Context::for_kafka(&mut slot.outputs);
        // Each call has its own deadline (the window's would cut short a key whose
        // messages each take most of it).
        let Ok(ran) = tokio::time::timeout(calls.deadline, handler.run(&entry, &mut cx)).await else {
            slot.outcome = Some(Err(timed_out(call.location(), calls.deadline)));
            return;
        };
        match ran.into_outcome().into_error(|| call.location()) {
            Some(failure) => {
                slot.outcome = Some(Err(failure));
                return;
            }
            None => slot.outcome = Some(Ok(())),
        }
    }
}
