//! The processes measured: exactly's two modes and the hand-written baselines, each run as
//! a child process (`exactly-bench worker SPEC`) so that its peak memory is its own.
//!
//! A worker runs until it is stopped, except [`System::PostgresOnly`], which has no input
//! and reports its own timing on a `RESULT` line.

mod baseline_db;
mod baseline_kafka;
mod delivered;
mod exactly_db;
mod exactly_kafka;
mod key_parallel;
mod per_partition;
mod postgres_only;
mod rows;

use serde::{Deserialize, Serialize};

pub(crate) use rows::Statement;

/// What a worker process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum System {
    /// exactly, Database mode: one insert per message, batches in one transaction with the
    /// stored position.
    ExactlyDatabase,
    /// exactly, Database mode, with a batch handler: each batch written with the statement,
    /// in one transaction with the stored position.
    ExactlyBatch(Statement),
    /// exactly, Kafka mode: copies every record in Kafka transactions with the offsets.
    ExactlyKafka,
    /// Hand-written rdkafka consumer, one loop: batches of per-row inserts, one at a time,
    /// then the offsets stored for librdkafka's periodic commit (at-least-once).
    BatchedInserts,
    /// Hand-written rdkafka consumer with a task per partition and `concurrency`
    /// connections: batches written with the statement, then the offset stored for
    /// librdkafka's periodic commit (at-least-once).
    PerPartition(Statement),
    /// Hand-written rdkafka consumer that only reads (offsets auto-committed).
    ConsumeOnly,
    /// Rows written with the statement on `concurrency` connections, with no Kafka at all.
    PostgresOnly(Statement),
    /// Hand-written loop: per message, one transaction with the insert and an offset upsert.
    PlainLoop,
    /// The same loop, one per partition, on `concurrency` connections.
    PlainLoopPerPartition,
    /// Hand-written idempotent at-least-once consume-produce: copies, and commits the
    /// offsets of delivered records without stopping.
    IdempotentCopy,
    /// exactly, Database mode, with a handler that waits `handler_delay_us` (its I/O) and
    /// then inserts one row; `key_concurrency` messages of a partition in flight (1:
    /// sequential).
    ExactlyIoBound,
    /// Hand-written at-least-once key-parallel consumer (Parallel Consumer's design): up to
    /// `key_concurrency` messages of a partition in flight, never two of one key, each
    /// waiting `handler_delay_us` then inserting in autocommit; the lowest offset not done
    /// committed to Kafka every `commit_interval_ms`.
    KeyParallel,
}

impl System {
    /// How the system is named in the report.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::ExactlyDatabase => "exactly, Database mode",
            Self::ExactlyBatch(Statement::PerRow) => "exactly, Database mode, batch handler, per-row `INSERT`",
            Self::ExactlyBatch(Statement::Unnest) => {
                "exactly, Database mode, batch handler, `INSERT … UNNEST` per batch"
            }
            Self::ExactlyBatch(Statement::Copy) => {
                "exactly, Database mode, batch handler, `COPY` per batch (`bulk::BinaryCopy`)"
            }
            Self::ExactlyKafka => "exactly, Kafka mode",
            Self::BatchedInserts => "rdkafka + sqlx, at-least-once, one loop, per-row `INSERT`",
            Self::PerPartition(Statement::PerRow) => {
                "rdkafka + sqlx, at-least-once, task per partition, per-row `INSERT`"
            }
            Self::PerPartition(Statement::Unnest) => {
                "rdkafka + sqlx, at-least-once, task per partition, `INSERT … UNNEST` per batch"
            }
            Self::PerPartition(Statement::Copy) => {
                "rdkafka + sqlx, at-least-once, task per partition, `COPY` per batch"
            }
            Self::ConsumeOnly => "rdkafka, consume only",
            Self::PostgresOnly(Statement::PerRow) => "PostgreSQL alone (no Kafka), per-row `INSERT`",
            Self::PostgresOnly(Statement::Unnest) => "PostgreSQL alone (no Kafka), `INSERT … UNNEST` per batch",
            Self::PostgresOnly(Statement::Copy) => "PostgreSQL alone (no Kafka), `COPY` per batch",
            Self::PlainLoop => "rdkafka + sqlx loop, offset upsert, one loop",
            Self::PlainLoopPerPartition => "rdkafka + sqlx loop, offset upsert, loop per partition",
            Self::IdempotentCopy => "rdkafka idempotent copy, at-least-once",
            Self::ExactlyIoBound => "exactly, Database mode, handler waiting 1 ms then inserting",
            Self::KeyParallel => "rdkafka + sqlx, at-least-once, key-parallel (Parallel Consumer's design)",
        }
    }

    /// Whether it writes rows into the run's table.
    pub(crate) fn writes_rows(self) -> bool {
        matches!(
            self,
            Self::ExactlyDatabase
                | Self::ExactlyBatch(_)
                | Self::BatchedInserts
                | Self::PerPartition(_)
                | Self::PostgresOnly(_)
                | Self::PlainLoop
                | Self::PlainLoopPerPartition
                | Self::ExactlyIoBound
                | Self::KeyParallel
        )
    }
}

/// The consumer group protocol a worker's group speaks: classic (exactly's default) in
/// every scenario but S9, which measures both. exactly's own [`exactly::GroupProtocol`] is
/// not serialisable, so the spec carries this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) enum GroupProtocol {
    /// JoinGroup and SyncGroup; exactly assigns with `cooperative-sticky`.
    #[default]
    Classic,
    /// KIP-848: the broker assigns, always incrementally, and owns the session timeout.
    Consumer,
}

impl GroupProtocol {
    /// Both protocols, in the order S9 first runs them.
    pub(crate) const BOTH: [Self; 2] = [Self::Classic, Self::Consumer];

    /// How the report names it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Consumer => "consumer",
        }
    }
}

impl From<GroupProtocol> for exactly::GroupProtocol {
    fn from(protocol: GroupProtocol) -> Self {
        match protocol {
            GroupProtocol::Classic => Self::Classic,
            GroupProtocol::Consumer => Self::Consumer,
        }
    }
}

/// Everything a worker needs, passed as one JSON argument. Its `Debug` hides the database
/// URL's password.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    pub(crate) system: System,
    pub(crate) brokers: String,
    pub(crate) database_url: String,
    pub(crate) input: String,
    /// Output topic (Kafka-side systems).
    pub(crate) output: String,
    /// Table the inserts go to (database-side systems).
    pub(crate) table: String,
    pub(crate) group: String,
    /// Messages per database transaction (at most).
    pub(crate) batch: usize,
    /// How long a batch waits for more after its first message.
    pub(crate) batch_wait_ms: u64,
    /// Kafka mode and the idempotent copy: how often they commit.
    pub(crate) commit_interval_ms: u64,
    /// exactly: batches in flight at once (`max_concurrent_batches`).
    pub(crate) concurrency: usize,
    /// Messages of one partition in flight at once, never two of one key: exactly's key
    /// concurrency, the key-parallel baseline's bound (1: one at a time).
    pub(crate) key_concurrency: usize,
    /// `group.instance.id` (static membership), if any.
    pub(crate) instance: Option<String>,
    /// `session.timeout.ms`, under the classic protocol only (under the consumer protocol the
    /// broker owns it, and exactly refuses it).
    pub(crate) session_timeout_ms: u32,
    /// `heartbeat.interval.ms` under the classic protocol, if set (S9 gives classic members
    /// the broker's consumer-protocol heartbeat; librdkafka's default elsewhere).
    #[serde(default)]
    pub(crate) heartbeat_interval_ms: Option<u32>,
    /// The group protocol of exactly's workers (the hand-written baselines speak classic).
    #[serde(default)]
    pub(crate) group_protocol: GroupProtocol,
    /// The handlers wait this long per message (0: not at all): S8's 1 ms of I/O, in exactly
    /// and the key-parallel baseline; the smoke profile slows recovery runs with it so that
    /// a small backlog lasts.
    pub(crate) handler_delay_us: u64,
    /// PostgreSQL alone: how many rows, of how many bytes.
    pub(crate) rows: u64,
    pub(crate) row_bytes: usize,
}

impl std::fmt::Debug for WorkerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSpec")
            .field("system", &self.system)
            .field("brokers", &self.brokers)
            .field("database_url", &exactly::redact::redact_url(&self.database_url))
            .field("input", &self.input)
            .field("output", &self.output)
            .field("table", &self.table)
            .field("group", &self.group)
            .field("batch", &self.batch)
            .field("batch_wait_ms", &self.batch_wait_ms)
            .field("commit_interval_ms", &self.commit_interval_ms)
            .field("concurrency", &self.concurrency)
            .field("key_concurrency", &self.key_concurrency)
            .field("instance", &self.instance)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("group_protocol", &self.group_protocol)
            .field("handler_delay_us", &self.handler_delay_us)
            .field("rows", &self.rows)
            .field("row_bytes", &self.row_bytes)
            .finish()
    }
}

impl WorkerSpec {
    /// exactly's consumer settings of group membership: the session timeout and heartbeat
    /// interval under the classic protocol only (exactly refuses them under the consumer
    /// protocol, whose broker owns them), and `group.instance.id` when static.
    pub(crate) fn membership_settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = Vec::new();
        if self.group_protocol == GroupProtocol::Classic {
            settings.push(("session.timeout.ms", self.session_timeout_ms.to_string()));
            if let Some(heartbeat) = self.heartbeat_interval_ms {
                settings.push(("heartbeat.interval.ms", heartbeat.to_string()));
            }
        }
        if let Some(instance) = &self.instance {
            settings.push(("group.instance.id", instance.clone()));
        }
        settings
    }
}

/// Runs the worker `spec` describes until it is stopped (or, PostgreSQL alone, done).
pub(crate) async fn run(spec: WorkerSpec) -> anyhow::Result<()> {
    match spec.system {
        System::ExactlyDatabase => exactly_db::run(&spec, None).await,
        System::ExactlyBatch(statement) => exactly_db::run(&spec, Some(statement)).await,
        System::ExactlyKafka => exactly_kafka::run(&spec).await,
        System::BatchedInserts => baseline_db::batched_inserts(&spec).await,
        System::PerPartition(statement) => per_partition::at_least_once(&spec, statement).await,
        System::PlainLoop => baseline_db::plain_loop(&spec).await,
        System::PlainLoopPerPartition => per_partition::plain_loops(&spec).await,
        System::PostgresOnly(statement) => postgres_only::run(&spec, statement).await,
        System::ConsumeOnly => baseline_kafka::consume_only(&spec).await,
        System::IdempotentCopy => baseline_kafka::idempotent_copy(&spec).await,
        System::ExactlyIoBound => exactly_db::run(&spec, None).await,
        System::KeyParallel => key_parallel::run(&spec).await,
    }
}

/// The statement every database-side system runs once per message.
///
/// # Errors
/// When `table` is not a plain SQL name (it arrives in a command-line argument).
pub(crate) fn insert_sql(table: &str) -> anyhow::Result<String> {
    let table = crate::bed::sql_name(table)?;
    Ok(format!("INSERT INTO {table} (partition, message_offset, payload) VALUES ($1, $2, $3)"))
}

#[cfg(test)]
mod tests {
    use super::{GroupProtocol, System, WorkerSpec};

    /// A Database-mode spec with the bench's usual settings.
    fn spec() -> WorkerSpec {
        WorkerSpec {
            system: System::ExactlyDatabase,
            brokers: "127.0.0.1:9092".into(),
            database_url: "postgres://bench:s3cret-pw@127.0.0.1:5432/bench".into(),
            input: "in".into(),
            output: String::new(),
            table: "t".into(),
            group: "g".into(),
            batch: 500,
            batch_wait_ms: 50,
            commit_interval_ms: 100,
            concurrency: 8,
            key_concurrency: 1,
            instance: None,
            session_timeout_ms: 10_000,
            heartbeat_interval_ms: None,
            group_protocol: GroupProtocol::Classic,
            handler_delay_us: 0,
            rows: 0,
            row_bytes: 0,
        }
    }

    #[test]
    fn debug_hides_the_database_password() {
        let spec = spec();
        let shown = format!("{spec:?} {spec:#?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("postgres://bench:[redacted]@127.0.0.1:5432/bench"), "{shown}");
    }

    #[test]
    fn the_consumer_protocol_leaves_the_session_settings_to_the_broker() {
        let classic = WorkerSpec { heartbeat_interval_ms: Some(1_000), ..spec() };
        let names = |spec: &WorkerSpec| spec.membership_settings().into_iter().map(|(key, _)| key).collect::<Vec<_>>();
        assert_eq!(names(&classic), ["session.timeout.ms", "heartbeat.interval.ms"]);
        let consumer = WorkerSpec { group_protocol: GroupProtocol::Consumer, ..classic };
        assert!(names(&consumer).is_empty(), "{:?}", names(&consumer));
        let fixed = WorkerSpec { instance: Some("i".into()), ..consumer };
        assert_eq!(names(&fixed), ["group.instance.id"]);
    }
}
