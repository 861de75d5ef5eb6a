//! The transactions of a Kafka-mode group: records and offsets added to the open one, its
//! commit on a thread of its own while the loop goes on with the other producer, and what a
//! failed or unknown commit, an abort and a rewind do.

use std::collections::BTreeMap;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use super::Partition;
use super::rebalance::KafkaModeContext;
use super::state::{Committing, GroupState, end_span};
use crate::api::output::Output;
use crate::engine::backoff::Backoff;
use crate::engine::shared::Shared;
use crate::error::{Error, Result};
use crate::kafka::producer::{CALL_TIMEOUT, CommitCall, flush, record, send};

impl GroupState {
    /// Adds `outputs` to the open transaction, opening it. On a failure, how many of them
    /// were sent before it.
    pub(super) fn produce(&mut self, outputs: &[Output]) -> std::result::Result<(), (usize, Error)> {
        self.txn.opened.get_or_insert_with(Instant::now);
        if !self.txn.begun {
            self.producers.get(self.producers.current).and_then(|p| Ok(p.begin_transaction()?)).map_err(|e| (0, e))?;
            self.txn.begun = true;
        }
        let producer = self.producers.get(self.producers.current).map_err(|e| (0, e))?;
        for (sent, output) in outputs.iter().enumerate() {
            send(producer, record(&output.topic, output.key.as_deref(), output.payload.as_deref(), &output.headers))
                .map_err(|e| (sent, e))?;
        }
        Ok(())
    }

    /// Whether the open transaction should close at `now`.
    pub(super) fn due_at(&self, now: Instant) -> bool {
        self.txn.opened.is_some_and(|opened| {
            now.saturating_duration_since(opened) >= self.producers.settings.commit_interval
                || self.txn.records >= self.producers.settings.max_records
        })
    }

    /// Commits the open transaction and waits for the outcome (before a revocation, at
    /// shutdown), after the one still committing.
    pub(super) fn commit(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared) {
        self.start_commit(consumer, shared);
        self.settle_committing(consumer, shared, true);
    }

    /// Commits the open transaction, with the offsets of what it handled, and switches to
    /// the other producer. Its records are flushed here, so the next transaction's cannot
    /// overtake them; adding the offsets and `commit_transaction` run on a thread of their
    /// own while the loop goes on with the next messages. The previous commit (of the other
    /// producer), if still running, is waited for first.
    pub(super) fn start_commit(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared) {
        if self.committing.is_some() {
            let waiting = Instant::now();
            self.settle_committing(consumer, shared, true);
            tracing::debug!(group = %self.handling.group, waited = ?waiting.elapsed(), "waited for the previous commit");
        }
        if self.txn.opened.is_none() {
            return; // nothing handled, or dropped with the previous transaction
        }
        let span = self.txn.span.clone().unwrap_or_else(tracing::Span::none);
        let call = span.in_scope(|| -> Result<CommitCall> {
            flush(self.producers.get(self.producers.current)?, CALL_TIMEOUT)?;
            let mut offsets = TopicPartitionList::new();
            for ((topic, partition), next) in &self.txn.pending {
                offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
            }
            let metadata = consumer
                .group_metadata()
                .ok_or_else(|| Error::Internal("a group's consumer has no group metadata".into()))?;
            CommitCall::start(self.producers.get(self.producers.current)?, offsets, metadata)
        });
        match call {
            Ok(call) => {
                let counts = self.take_counts();
                self.committing = Some(Committing {
                    call,
                    slot: self.producers.current,
                    pending: std::mem::take(&mut self.txn.pending),
                    records: std::mem::take(&mut self.txn.records),
                    counts,
                    span: self.txn.span.take(),
                });
                self.txn.opened = None;
                self.txn.begun = false;
                self.producers.current = 1 - self.producers.current;
            }
            Err(error) => {
                shared.report(&error);
                self.abort(consumer, shared, true);
            }
        }
    }

    /// Ends the commit running on its own thread if it has ended (with `block`, once it
    /// has), and counts what it committed. On a failure the open transaction, which may
    /// hold records handled after it, is aborted too, and every partition goes back to its
    /// last committed offset.
    pub(super) fn settle_committing(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        shared: &Shared,
        block: bool,
    ) {
        let Some(outcome) = self.committing.as_ref().and_then(|committing| committing.call.outcome(block)) else {
            return;
        };
        let Some(committing) = self.committing.take() else { return };
        match outcome {
            Ok(took) => {
                tracing::debug!(group = %self.handling.group, ?took, records = committing.records, "transaction committed");
                self.partitions.committed.extend(committing.pending);
                self.counted_committed(&committing.counts, committing.records, took);
                end_span(committing.span, "committed", committing.records);
            }
            Err(error) => {
                shared.report(&error);
                end_span(committing.span, "failed", committing.records);
                self.failed_commit(consumer, shared, committing.slot, &error);
            }
        }
    }

    /// The commit of `slot`'s transaction failed; that transaction is still open, and so is
    /// the current one, with what was handled since. Abortable: both are aborted, then every
    /// partition rewinds. Fatal: the producer is rebuilt, then rewind. Indefinite (the
    /// commit may or may not have happened): a new producer fences the old one, and its
    /// initialisation waits until the coordinator completed or aborted what the old one
    /// left; only then do the committed offsets (read with require_stable) say where each
    /// partition stands. Going on from the offsets remembered here could redo a transaction
    /// that committed.
    fn failed_commit(
        &mut self,
        consumer: &BaseConsumer<KafkaModeContext>,
        shared: &Shared,
        slot: usize,
        error: &Error,
    ) {
        let indefinite = matches!(error, Error::KafkaCallStuck { .. })
            || matches!(error, Error::Kafka(KafkaError::Transaction(e)) if !e.is_fatal() && !e.txn_requires_abort());
        if !indefinite {
            self.producers.abort(slot, &self.handling.group);
            self.abort(consumer, shared, true);
            return;
        }
        self.producers.slots[slot] = None;
        self.abort(consumer, shared, false);
        let mut backoff = Backoff::new();
        loop {
            match self.producers.get(slot).map(|_| ()).and_then(|()| self.reload_committed(consumer)) {
                Ok(()) => {
                    self.note_positions();
                    break;
                }
                Err(e) => shared.report(&e),
            }
            if shared.shutting_down() {
                break;
            }
            std::thread::sleep(backoff.next_delay());
        }
        self.rewind(consumer, shared);
    }

    /// Aborts the open transaction (rebuilding the producer when it is fenced or broken)
    /// and drops what it handled; if `rewind`, puts every partition back at its last
    /// committed offset. A commit still running is waited for first.
    pub(super) fn abort(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared, rewind: bool) {
        if self.committing.is_some() {
            // Its failure aborts (and rewinds) by itself; its success leaves ours to abort.
            self.settle_committing(consumer, shared, true);
        }
        if std::mem::take(&mut self.txn.begun) {
            self.producers.abort(self.producers.current, &self.handling.group);
        }
        self.txn.opened = None;
        self.forget_pending_counts();
        self.end_span("aborted", self.txn.records);
        self.txn.pending.clear();
        self.txn.records = 0;
        if rewind {
            self.rewind(consumer, shared);
        }
    }

    fn reload_committed(&mut self, consumer: &BaseConsumer<KafkaModeContext>) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in self.partitions.committed.keys() {
            tpl.add_partition(topic, *partition);
        }
        for element in consumer.committed_offsets(tpl, CALL_TIMEOUT)?.elements() {
            if let Offset::Offset(next) = element.offset() {
                self.partitions.committed.insert((element.topic().to_owned(), element.partition()), next);
            }
        }
        Ok(())
    }

    /// When idle, with no transaction open: commits, in a transaction of its own, the
    /// offsets of partitions whose consumer position passed records never delivered
    /// (transaction markers, records of aborted transactions), so a partition whose log
    /// ends with a marker is seen at its end. Every record delivered before was handled and
    /// committed (or its partition is blocked, and left alone).
    pub(super) fn skip_control_records(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared) {
        if self.txn.opened.is_some() || self.committing.is_some() {
            return;
        }
        let Ok(positions) = consumer.position() else { return };
        let mut ahead = BTreeMap::new();
        for element in positions.elements() {
            let key = (element.topic().to_owned(), element.partition());
            if let Offset::Offset(position) = element.offset()
                && !self.partitions.blocked.contains_key(&key)
                && self.partitions.committed.get(&key).is_some_and(|committed| position > *committed)
            {
                ahead.insert(key, position);
            }
        }
        if ahead.is_empty() {
            return;
        }
        if let Err((_, error)) = self.produce(&[]) {
            shared.report(&error);
            self.abort(consumer, shared, true);
            return;
        }
        self.txn.pending = ahead;
        self.commit(consumer, shared);
    }

    /// Seeks every partition to its last committed offset and resumes the blocked ones.
    pub(super) fn rewind(&mut self, consumer: &BaseConsumer<KafkaModeContext>, shared: &Shared) {
        self.partitions.rewinds += 1;
        let blocked: Vec<Partition> = self.partitions.blocked.drain().map(|(key, _)| key).collect();
        for ((topic, partition), next) in &self.partitions.committed {
            if let Err(e) = consumer.seek(topic, *partition, Offset::Offset(*next), CALL_TIMEOUT) {
                shared.report(&Error::from(e));
            }
        }
        let mut resume = TopicPartitionList::new();
        for (topic, partition) in &blocked {
            resume.add_partition(topic, *partition);
        }
        if resume.count() > 0
            && let Err(e) = consumer.resume(&resume)
        {
            shared.report(&Error::from(e));
        }
    }
}
