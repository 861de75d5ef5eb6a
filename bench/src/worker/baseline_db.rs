//! Hand-written database-side baselines in one loop: what a team writes first with rdkafka
//! and sqlx alone. Their versions with a task per partition are in `per_partition`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};

use super::{WorkerSpec, insert_sql};

/// Who commits a consumer's offsets to Kafka, and which.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Commits {
    /// The program commits offsets itself.
    Explicit,
    /// librdkafka commits every `spec.commit_interval_ms` the offsets the program stored
    /// (`store_offsets`) once their messages were written: rdkafka's at-least-once recipe,
    /// which costs the broker one commit per interval rather than one per batch.
    Stored,
    /// librdkafka stores each offset as its message is returned and commits it every
    /// `spec.commit_interval_ms`.
    Automatic,
}

/// A consumer of `spec.input` in `spec.group`, its offsets committed as `commits` says.
///
/// It fetches again 20 ms after its prefetch queue was full, as exactly's consumers do, so
/// that every system is compared on the same client tuning: at librdkafka's default
/// (1000 ms) a consumer that drains its queue within a second waits on an empty one.
pub(super) fn subscribed(spec: &WorkerSpec, commits: Commits) -> anyhow::Result<StreamConsumer> {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", &spec.brokers)
        .set("fetch.queue.backoff.ms", "20")
        .set("group.id", &spec.group)
        .set("enable.auto.commit", (commits != Commits::Explicit).to_string())
        .set("enable.auto.offset.store", (commits == Commits::Automatic).to_string())
        .set("auto.commit.interval.ms", spec.commit_interval_ms.to_string())
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", spec.session_timeout_ms.to_string());
    if let Some(instance) = &spec.instance {
        config.set("group.instance.id", instance);
    }
    let consumer: StreamConsumer = config.create().context("cannot create the consumer")?;
    consumer.subscribe(&[&spec.input]).context("cannot subscribe")?;
    Ok(consumer)
}

async fn pool(spec: &WorkerSpec) -> anyhow::Result<PgPool> {
    PgPoolOptions::new().max_connections(1).connect(&spec.database_url).await.context("cannot connect to PostgreSQL")
}

/// Runs `insert` (from [`insert_sql`]) for one message inside `tx`.
async fn insert_row(
    tx: &mut sqlx::PgConnection,
    insert: &str,
    partition: i32,
    offset: i64,
    payload: Option<&[u8]>,
) -> anyhow::Result<()> {
    sqlx::query(AssertSqlSafe(insert))
        .bind(partition)
        .bind(offset)
        .bind(payload.unwrap_or_default())
        .execute(tx)
        .await?;
    Ok(())
}

/// Batches of up to `spec.batch` messages (waiting at most `spec.batch_wait_ms` after the
/// first), inserted in one transaction; after the commit, the offsets are stored for
/// librdkafka's next commit ([`Commits::Stored`]). A crash between the two redoes the
/// batch: at-least-once.
pub(super) async fn batched_inserts(spec: &WorkerSpec) -> anyhow::Result<()> {
    let consumer = subscribed(spec, Commits::Stored)?;
    let pool = pool(spec).await?;
    let insert = insert_sql(&spec.table)?;
    let wait = Duration::from_millis(spec.batch_wait_ms);
    let mut batch = Vec::with_capacity(spec.batch);
    loop {
        batch.push(consumer.recv().await?);
        let deadline = tokio::time::Instant::now() + wait;
        while batch.len() < spec.batch {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(message) => batch.push(message?),
                Err(_) => break,
            }
        }
        let mut tx = pool.begin().await?;
        let mut next = BTreeMap::new();
        for message in &batch {
            insert_row(&mut tx, &insert, message.partition(), message.offset(), message.payload()).await?;
            next.insert(message.partition(), message.offset() + 1);
        }
        tx.commit().await?;
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets.add_partition_offset(&spec.input, partition, Offset::Offset(offset))?;
        }
        consumer.store_offsets(&offsets)?;
        batch.clear();
    }
}

/// One transaction per message: the insert and an upsert of the partition's next offset
/// into `bench_positions`. (Reading those positions back on assignment is not on the
/// measured path: every run starts a new group from the earliest offset.)
pub(super) async fn plain_loop(spec: &WorkerSpec) -> anyhow::Result<()> {
    let consumer = subscribed(spec, Commits::Explicit)?;
    let pool = pool(spec).await?;
    let insert = insert_sql(&spec.table)?;
    loop {
        let message = consumer.recv().await?;
        let mut tx = pool.begin().await?;
        insert_row(&mut tx, &insert, message.partition(), message.offset(), message.payload()).await?;
        sqlx::query(
            "INSERT INTO bench_positions (group_id, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
        )
        .bind(&spec.group)
        .bind(message.topic())
        .bind(message.partition())
        .bind(message.offset() + 1)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
}
