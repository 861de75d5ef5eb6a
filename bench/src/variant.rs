//! A system as one row of the report runs it: which system, with which settings.

use crate::streams;
use crate::worker::{Statement, System};

/// A system as one table row runs it.
#[derive(Debug, Clone)]
pub(crate) struct Variant {
    pub(crate) label: String,
    pub(crate) subject: Subject,
    pub(crate) batch: usize,
    /// How long a batch waits for more after its first message, in milliseconds.
    pub(crate) batch_wait_ms: u64,
    pub(crate) concurrency: usize,
    pub(crate) commit_interval_ms: u64,
    /// Messages of one partition in flight at once, never two of one key (S8): exactly's
    /// `Subscription::with_key_concurrency`, the key-parallel baseline's bound; 1 elsewhere.
    pub(crate) key_concurrency: usize,
    /// How long the handler waits per message before it writes, in microseconds: S8's 1 ms
    /// of I/O; 0 elsewhere.
    pub(crate) handler_delay_us: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What a variant runs: a worker process, or the Kafka Streams program.
pub(crate) enum Subject {
    Worker(System),
    KafkaStreams,
}

/// Messages per batch (at most), for every system that batches.
pub(crate) const DEFAULT_BATCH: usize = 500;
/// How long a batch waits for more after its first message.
pub(crate) const BATCH_WAIT_MS: u64 = 50;
/// Batches in flight at once: exactly's default `max_concurrent_batches`, and the
/// connections of the task-per-partition baselines.
pub(crate) const DEFAULT_CONCURRENCY: usize = 8;
/// How often the Kafka-side systems commit.
pub(crate) const COMMIT_MS: u64 = 100;

impl Variant {
    pub(crate) fn of(system: System) -> Self {
        let concurrency = match system {
            System::BatchedInserts | System::PlainLoop | System::PostgresOnly(_) => 1,
            _ => DEFAULT_CONCURRENCY,
        };
        let batch = match system {
            System::PlainLoop | System::PlainLoopPerPartition => 1,
            _ => DEFAULT_BATCH,
        };
        Self {
            label: system.label().to_owned(),
            subject: Subject::Worker(system),
            batch,
            batch_wait_ms: BATCH_WAIT_MS,
            concurrency,
            commit_interval_ms: COMMIT_MS,
            key_concurrency: 1,
            handler_delay_us: 0,
        }
    }

    /// Kafka Streams with `threads` stream threads.
    pub(crate) fn streams(threads: usize) -> Self {
        let plural = if threads == 1 { "" } else { "s" };
        Self {
            label: format!("Kafka Streams, exactly_once_v2, {threads} stream thread{plural}"),
            subject: Subject::KafkaStreams,
            concurrency: threads,
            ..Self::of(System::ExactlyKafka)
        }
    }

    /// PostgreSQL alone with `statement` on `connections` connections.
    pub(crate) fn postgres(statement: Statement, connections: usize) -> Self {
        Self { concurrency: connections, ..Self::of(System::PostgresOnly(statement)) }
    }

    pub(crate) fn labelled(mut self, label: &str) -> Self {
        self.label = label.to_owned();
        self
    }

    pub(crate) fn settings(&self) -> String {
        let batch = if self.batch == 1 {
            "1 per transaction".to_owned()
        } else {
            format!("batch ≤ {} / {} ms", self.batch, self.batch_wait_ms)
        };
        let connections =
            if self.concurrency == 1 { "1 connection".to_owned() } else { format!("{} connections", self.concurrency) };
        match self.subject {
            Subject::Worker(
                System::ExactlyDatabase | System::ExactlyBatch(_) | System::BatchedInserts | System::PlainLoop,
            ) => format!("{batch}, {} in flight", self.concurrency),
            Subject::Worker(System::PerPartition(_)) => format!("{batch}, {connections}"),
            Subject::Worker(System::PlainLoopPerPartition) => format!("1 per transaction, {connections}"),
            Subject::Worker(System::PostgresOnly(_)) => format!("batch {}, {connections}", self.batch),
            Subject::Worker(System::ConsumeOnly) => "auto-commit".to_owned(),
            Subject::Worker(System::ExactlyIoBound) => format!(
                "key concurrency {}, {batch}, max_concurrent_batches {} (pool {})",
                self.key_concurrency,
                self.concurrency,
                self.concurrency + 2
            ),
            Subject::Worker(System::KeyParallel) => format!(
                "≤ {} in flight per partition, pool {}, commit every {} ms",
                self.key_concurrency,
                self.concurrency + 2,
                self.commit_interval_ms
            ),
            Subject::Worker(System::ExactlyKafka | System::IdempotentCopy) => {
                format!("commit every {} ms", self.commit_interval_ms)
            }
            Subject::KafkaStreams => format!(
                "commit every {} ms, batch.size {} KB, linger.ms {}",
                self.commit_interval_ms,
                streams::BATCH_SIZE / 1024,
                streams::LINGER_MS
            ),
        }
    }
}
