//! Hand-written Kafka-to-PostgreSQL baselines with one task per partition: what a team
//! writes with rdkafka and sqlx when one loop is too slow. One consumer reads; each
//! partition's messages go to a task of their own, which writes them in order on a pool of
//! `spec.concurrency` connections, so that up to that many batches are in flight at once,
//! as in exactly (`max_concurrent_batches`).
//!
//! Two kinds:
//! - **at-least-once** ([`at_least_once`]): batches of up to `spec.batch` messages written
//!   in one transaction with a [`Statement`] shape, then the partition's next offset stored
//!   for librdkafka to commit with the others every `spec.commit_interval_ms` (rdkafka's
//!   at-least-once recipe: a commit per batch would cap the program at the broker's rate of
//!   offset commits). A crash between the two writes the batch again.
//! - **offset upsert** ([`plain_loops`]): per message, one transaction holding the insert
//!   and an upsert of the partition's next offset into `bench_positions`, as the plain loop
//!   does, one loop per partition.
//!
//! The bench's groups have one member and never rebalance, so a partition's task lives as
//! long as the process; a production version would also end a task when its partition is
//! revoked. A partition whose queue is full holds the reader back (back-pressure), and so
//! the other partitions too; with partitions loaded evenly, as here, the queues drain at
//! the same pace.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::WorkerSpec;
use super::baseline_db::{Commits, subscribed};
use super::rows::{Row, RowWriter, Statement};

/// Messages queued per partition task: a few batches, so the reader runs ahead of the
/// writes without holding a whole backlog.
const QUEUE: usize = 2_000;

/// What a partition task does with a batch once its rows are written.
#[derive(Clone)]
enum Positions {
    /// Stores the partition's next offset for librdkafka's next commit, after the
    /// transaction.
    Kafka { consumer: Arc<StreamConsumer>, topic: String },
    /// Upserts it into `bench_positions`, inside the transaction.
    Upserted { group: String, topic: String },
}

/// Writes one partition's batches.
#[derive(Clone)]
struct PartitionWriter {
    pool: PgPool,
    rows: RowWriter,
    positions: Positions,
    batch: usize,
    wait: Duration,
}

/// At-least-once, one task per partition, batches written with `statement`.
pub(super) async fn at_least_once(spec: &WorkerSpec, statement: Statement) -> anyhow::Result<()> {
    let consumer = Arc::new(subscribed(spec, Commits::Stored)?);
    let positions = Positions::Kafka { consumer: Arc::clone(&consumer), topic: spec.input.clone() };
    let writer = PartitionWriter {
        pool: pool(spec).await?,
        rows: RowWriter::new(&spec.table, statement)?,
        positions,
        batch: spec.batch,
        wait: Duration::from_millis(spec.batch_wait_ms),
    };
    dispatch(&consumer, &writer).await
}

/// One message per transaction with its offset upserted, one loop per partition.
pub(super) async fn plain_loops(spec: &WorkerSpec) -> anyhow::Result<()> {
    let consumer = subscribed(spec, Commits::Explicit)?;
    let writer = PartitionWriter {
        pool: pool(spec).await?,
        rows: RowWriter::new(&spec.table, Statement::PerRow)?,
        positions: Positions::Upserted { group: spec.group.clone(), topic: spec.input.clone() },
        batch: 1,
        wait: Duration::ZERO,
    };
    dispatch(&consumer, &writer).await
}

async fn pool(spec: &WorkerSpec) -> anyhow::Result<PgPool> {
    let connections = u32::try_from(spec.concurrency.max(1))?;
    PgPoolOptions::new()
        .max_connections(connections)
        .connect(&spec.database_url)
        .await
        .context("cannot connect to PostgreSQL")
}

/// Reads every message and hands it to its partition's task, started on its first message.
/// Ends with the error of the first task that fails.
async fn dispatch(consumer: &StreamConsumer, writer: &PartitionWriter) -> anyhow::Result<()> {
    let mut tasks: HashMap<i32, (mpsc::Sender<Row>, JoinHandle<anyhow::Result<()>>)> = HashMap::new();
    loop {
        let message = consumer.recv().await?;
        let row = Row {
            partition: message.partition(),
            offset: message.offset(),
            payload: message.payload().unwrap_or_default().to_vec(),
        };
        let (queue, _) = tasks.entry(row.partition).or_insert_with(|| {
            let (queue, rows) = mpsc::channel(QUEUE);
            (queue, tokio::spawn(writer.clone().run(rows)))
        });
        if queue.send(row).await.is_err() {
            // The task dropped its queue: it failed, and says why.
            let (_, task) = tasks.remove(&message.partition()).context("a partition task vanished")?;
            task.await??;
            anyhow::bail!("partition {}'s task ended", message.partition());
        }
    }
}

impl PartitionWriter {
    /// Gathers batches from `rows` (up to `batch`, waiting at most `wait` after the first)
    /// and writes each.
    async fn run(self, mut rows: mpsc::Receiver<Row>) -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(self.batch);
        while let Some(first) = rows.recv().await {
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.wait;
            while batch.len() < self.batch {
                match tokio::time::timeout_at(deadline, rows.recv()).await {
                    Ok(Some(row)) => batch.push(row),
                    Ok(None) | Err(_) => break,
                }
            }
            self.write(&batch).await?;
            batch.clear();
        }
        Ok(())
    }

    /// Writes one batch of one partition and makes its position durable.
    async fn write(&self, batch: &[Row]) -> anyhow::Result<()> {
        let Some(last) = batch.last() else { return Ok(()) };
        let (partition, next) = (last.partition, last.offset + 1);
        let mut tx = self.pool.begin().await?;
        self.rows.write(&mut tx, batch).await?;
        if let Positions::Upserted { group, topic } = &self.positions {
            sqlx::query(
                "INSERT INTO bench_positions (group_id, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
            )
            .bind(group)
            .bind(topic)
            .bind(partition)
            .bind(next)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if let Positions::Kafka { consumer, topic } = &self.positions {
            let mut offsets = TopicPartitionList::with_capacity(1);
            offsets.add_partition_offset(topic, partition, Offset::Offset(next))?;
            consumer.store_offsets(&offsets)?;
        }
        Ok(())
    }
}
