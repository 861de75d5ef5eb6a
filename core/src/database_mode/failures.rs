//! What a partition's worker does when an attempt at its batch fails: a failure of the
//! database is retried after a backoff until it passes; a failure of one message is
//! isolated (the messages before it commit first, then it is tried alone), retried as the
//! retry policy says, parked with its key, or moved to the dead letters in the
//! transaction that moves the position past it. A batch handler's failure that names no
//! message is isolated by halving the batch until the failing message is alone.

use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::batch::Tx;
use super::partition::{PartitionWorker, Report};
use crate::api::mode::Database;
use crate::engine::backoff::Backoff;
use crate::error::{Error, ErrorClass, Result};
use crate::pipeline::dead_letter::{self, DeadLettered};
use crate::pipeline::work::Work;
use crate::store::dead_letters::Letter;
use crate::store::offsets::Advance;
use crate::store::parking;

/// How an attempt at the head of the batch failed.
pub(super) enum Failure {
    /// Infrastructure (database, connection): try the same again after a backoff.
    Transient(Error),
    /// The partition cannot go on here (fenced, misconfigured).
    Fatal(Error),
    /// The message at `index` of the attempt failed.
    Message { index: usize, error: Error, permanent: bool },
    /// One of the attempt's first `end` messages (at least two) failed, which one is not
    /// known (a batch handler that named none).
    Somewhere { end: usize, error: Error },
}

impl Failure {
    /// A failure of the infrastructure, sorted by what can be done about it.
    pub(super) fn of(error: Error) -> Self {
        if error.is_retriable() { Failure::Transient(error) } else { Failure::Fatal(error) }
    }
}

/// What the worker does after a failed attempt.
enum Next {
    /// Attempt again at once (with a smaller batch, or after settling the head).
    Now,
    /// Attempt again after this delay.
    After(Duration),
    /// Attempt again after the infrastructure backoff.
    Backoff,
    /// The worker must end.
    End,
}

impl<H: Work<Mode = Database>> PartitionWorker<H> {
    /// Commits the gathered batch, message failures isolated and retried as the retry policy
    /// says, infrastructure failures retried until they pass. Returns `false` when the
    /// worker must end (fenced, stopped, or a permanent failure of the partition).
    pub(super) async fn commit_with_retries(&mut self) -> bool {
        let mut infrastructure = Backoff::new();
        while !self.batch.is_empty() {
            let span = self.batch_span();
            let attempt = tokio::time::timeout(self.shared.transaction_timeout, self.attempt().instrument(span));
            let outcome = attempt.await.unwrap_or_else(|_| Err(Failure::Transient(self.abandoned("the batch"))));
            let next = match outcome {
                Ok(()) => {
                    infrastructure = Backoff::new();
                    Next::Now
                }
                Err(Failure::Fatal(error)) => {
                    self.shared.report(&error);
                    Next::End
                }
                Err(Failure::Transient(error)) => {
                    self.shared.report(&error);
                    Next::Backoff
                }
                Err(Failure::Message { index, error, permanent }) => {
                    self.shared.report(&error);
                    self.suspects = None;
                    self.message_failed(index, &error, permanent).await
                }
                Err(Failure::Somewhere { end, error }) => {
                    self.shared.report(&error);
                    self.bisect(end)
                }
            };
            let delay = match next {
                Next::Now => continue,
                Next::After(delay) => delay,
                Next::Backoff => infrastructure.next_delay(),
                Next::End => return false,
            };
            if !self.pause(delay).await {
                return false;
            }
        }
        true
    }

    /// The message at `index` of the attempt failed with `error`: commit the messages
    /// before it first; then settle it for good (dead letter), try it alone now, park it
    /// (its key waits, the other keys go on), or retry it after the policy's backoff.
    async fn message_failed(&mut self, index: usize, error: &Error, permanent: bool) -> Next {
        let offset = self.batch[index].offset();
        // Only a failure of the message tried on its own counts as an attempt: in a batch,
        // a neighbour's effects may have caused it.
        let alone = index == 0 && (self.limit == 1 || self.batch.len() == 1);
        let failures = self.attempts.failed(offset, alone, permanent, error.to_string());
        if index > 0 {
            return self.shrink_batch(index);
        }
        let limit = self.shared.transaction_timeout;
        let settled = if self.retry.spent(failures, permanent) {
            let settling = tokio::time::timeout(limit, self.dead_letter(error.to_string())).await;
            settling.unwrap_or_else(|_| Err(self.abandoned("dead-lettering the message")))
        } else if self.limit > 1 {
            // Alone it may pass (its failure may come from a neighbour).
            return self.shrink_batch(1);
        } else if self.parked.is_some() {
            let settling = tokio::time::timeout(limit, self.park_head(failures, error.to_string())).await;
            settling.unwrap_or_else(|_| Err(self.abandoned("parking the message")))
        } else {
            self.counters.retried.increment(1);
            return Next::After(self.retry.delay(failures));
        };
        match settled {
            Ok(()) => Next::Now,
            Err(error) => {
                self.shared.report(&error);
                if error.class() == ErrorClass::Fatal { Next::End } else { Next::Backoff }
            }
        }
    }

    /// One of the first `end` messages failed: the next attempt takes the first half of
    /// them, and the attempts after it stay within the `end` until the failing message is
    /// alone or all of them have committed (see [`PartitionWorker::committed`]).
    fn bisect(&mut self, end: usize) -> Next {
        self.suspects = Some(end);
        self.shrink_batch(end.div_ceil(2))
    }

    /// The next attempt takes the first `limit` messages only, at once.
    fn shrink_batch(&mut self, limit: usize) -> Next {
        self.counters.retried.increment(1);
        self.limit = limit;
        Next::Now
    }

    /// Waits `delay` before the next attempt; `false` when the worker is asked to stop
    /// meanwhile.
    async fn pause(&self, delay: Duration) -> bool {
        if self.stopping() {
            return false;
        }
        let mut stop = self.stop.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            _ = stop.changed() => false,
        }
    }

    /// Moves the head message to the dead letters, in the transaction that moves the
    /// position past it.
    pub(super) async fn dead_letter(&mut self, reason: String) -> Result<()> {
        let Some(item) = self.batch.first() else { return Ok(()) };
        let offset = item.offset();
        let attempts = self.attempts.failures(offset).max(1);
        let location = self.key.location(offset);
        let mut tx = self.shared.begin().await?;
        let letter = Letter { at: &location, raw: &item.raw, error: &reason, attempts };
        dead_letter::write(&mut tx, &letter, self.dead_letter_topic.as_deref()).await?;
        self.commit_single(tx).await?;
        self.counters.dead_lettered.increment(1);
        self.shared.dead_lettered(&DeadLettered { location, attempts, reason });
        self.committed(1);
        Ok(())
    }

    /// Parks the head message, after `failures` failures, in the transaction that moves
    /// the position past it; its key's later messages will follow it into the table.
    async fn park_head(&mut self, failures: u32, reason: String) -> Result<()> {
        let Some(item) = self.batch.first() else { return Ok(()) };
        let offset = item.offset();
        let delay = self.retry.delay(failures);
        let mut tx = self.shared.begin().await?;
        parking::park(&mut tx, &self.key, offset, &item.raw, failures, Some(&reason), delay).await?;
        let message_key = item.raw.key.clone();
        self.commit_single(tx).await?;
        self.counters.parked.increment(1);
        tracing::info!(offset, attempts = failures, retry_in = ?delay, "message parked; its key waits, the others go on");
        let due = Instant::now() + delay;
        if let Some(parked) = &mut self.parked {
            parked.set_due(message_key.clone(), due);
        }
        // Before its `Done`, so the dispatcher parks the key's next messages too.
        self.report(Report::Parked { key: message_key, due });
        self.committed(1);
        Ok(())
    }

    /// Commits `tx` after recording the head message as done in it; an error on the wire
    /// leaves the outcome unknown, resolved before the next attempt.
    async fn commit_single(&mut self, mut tx: Tx) -> Result<()> {
        match self.record_done(&mut tx, 1).await? {
            Advance::Advanced => {
                if let Err(e) = self.commit_timed(tx).await {
                    self.commit_unknown = true;
                    return Err(e.into());
                }
            }
            Advance::AlreadyCommitted => tx.rollback().await?,
        }
        Ok(())
    }

    /// [`Error::DatabaseTimedOut`] for `during`, at the head of the batch.
    pub(super) fn timed_out(&self, during: &'static str) -> Error {
        let offset = self.batch.first().map_or(self.next, |item| item.offset());
        let location = Some(self.key.location(offset));
        Error::DatabaseTimedOut { during: during.to_owned(), location, after: self.shared.transaction_timeout }
    }

    /// Work on the database ran past the deadline and was dropped where it waited: its
    /// transaction rolls back once its connection goes, unless the deadline struck during
    /// `COMMIT`, so the stored position is read before the next attempt.
    pub(super) fn abandoned(&mut self, during: &'static str) -> Error {
        self.commit_unknown = true;
        self.timed_out(during)
    }
}
