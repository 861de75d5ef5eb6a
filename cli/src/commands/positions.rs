//! Where a group stands: its positions from PostgreSQL (Database mode) or its committed
//! offsets from Kafka (Kafka mode), with the end of each partition and the lag.

use serde::Serialize;
use sqlx::PgPool;

use crate::args::{Connection, GroupArgs, Mode};
use crate::error::{Context, Error};
use crate::kafka;

/// The store a group's positions are in, once known.
pub(crate) enum Store {
    /// `exactly.offsets`.
    Database(PgPool),
    /// Committed offsets in Kafka.
    Kafka,
}

impl Store {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Store::Database(_) => "database",
            Store::Kafka => "kafka",
        }
    }
}

/// One partition of a group.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PartitionRow {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// The next offset the group processes (`None`: it never stored one).
    pub(crate) position: Option<i64>,
    /// The last stable offset (what a read_committed reader reaches).
    pub(crate) end: Option<i64>,
    /// `end - position`.
    pub(crate) lag: Option<i64>,
    /// The claim epoch (Database mode).
    pub(crate) epoch: Option<i64>,
    /// When the position last moved or was claimed (Database mode).
    pub(crate) updated_at: Option<String>,
}

/// Finds where `group`'s positions are. `Auto` picks PostgreSQL when it has positions of
/// the group, else Kafka when topics and brokers are given.
pub(crate) async fn store(connection: &Connection, group: &GroupArgs) -> Result<Store, Error> {
    let kafka_usable = connection.has_brokers() && !group.topics.is_empty();
    match group.mode {
        Mode::Database => Ok(Store::Database(connection.pool().await?)),
        Mode::Kafka if kafka_usable => Ok(Store::Kafka),
        Mode::Kafka => Err(Error::Usage(
            "a Kafka-mode group's offsets are read per topic: pass --brokers and at least one --topic".into(),
        )),
        Mode::Auto => {
            if connection.database_url.is_some() {
                let pool = connection.pool().await?;
                if has_positions(&pool, &group.group).await? {
                    return Ok(Store::Database(pool));
                }
            }
            if kafka_usable {
                return Ok(Store::Kafka);
            }
            Err(Error::NotFound(format!(
                "group {} has no positions in PostgreSQL{}; for a Kafka-mode group pass --brokers and --topic, \
                 or choose with --mode",
                group.group,
                if connection.database_url.is_some() { "" } else { " (no --database-url given)" }
            )))
        }
    }
}

async fn has_positions(pool: &PgPool, group: &str) -> Result<bool, Error> {
    // A database where exactly never ran has no table: then it has no positions either.
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('exactly.offsets') IS NOT NULL")
        .fetch_one(pool)
        .await
        .context(|| "cannot read the database's tables".to_owned())?;
    if !exists {
        return Ok(false);
    }
    let stored = exactly::offsets::list(pool, group)
        .await
        .context(|| format!("cannot read the positions of group {group} (did `exactly migrate` run?)"))?;
    Ok(!stored.is_empty())
}

/// The group's positions in `store`, for the topics named (all stored ones when none are
/// named, in Database mode), with each partition's end and lag when brokers are given.
pub(crate) async fn rows(
    connection: &Connection,
    group: &GroupArgs,
    store: &Store,
) -> Result<Vec<PartitionRow>, Error> {
    let mut rows = Vec::new();
    match store {
        Store::Database(pool) => {
            let stored = exactly::offsets::list(pool, &group.group)
                .await
                .context(|| format!("cannot read the positions of group {}", group.group))?;
            for position in stored {
                if group.topics.is_empty() || group.topics.contains(&position.topic) {
                    rows.push(PartitionRow {
                        topic: position.topic,
                        partition: position.partition,
                        position: Some(position.next_offset),
                        end: None,
                        lag: None,
                        epoch: Some(position.epoch),
                        updated_at: Some(position.updated_at),
                    });
                }
            }
            // Partitions of the named topics the group never stored a position for.
            if connection.has_brokers() {
                let config = connection.kafka()?;
                for topic in &group.topics {
                    for partition in kafka::partitions(&config, topic)? {
                        if !rows.iter().any(|r| &r.topic == topic && r.partition == partition) {
                            rows.push(empty_row(topic, partition, None));
                        }
                    }
                }
            }
        }
        Store::Kafka => {
            let config = connection.kafka()?;
            for topic in &group.topics {
                let partitions = kafka::partitions(&config, topic)?;
                for (partition, offset) in kafka::committed(&config, &group.group, topic, &partitions)? {
                    rows.push(empty_row(topic, partition, offset));
                }
            }
        }
    }
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    if connection.has_brokers() {
        add_ends(connection, &mut rows)?;
    }
    Ok(rows)
}

fn empty_row(topic: &str, partition: i32, position: Option<i64>) -> PartitionRow {
    PartitionRow { topic: topic.to_owned(), partition, position, end: None, lag: None, epoch: None, updated_at: None }
}

fn add_ends(connection: &Connection, rows: &mut [PartitionRow]) -> Result<(), Error> {
    let config = connection.kafka()?;
    let mut topics: Vec<String> = rows.iter().map(|r| r.topic.clone()).collect();
    topics.dedup();
    for topic in topics {
        let partitions: Vec<i32> = rows.iter().filter(|r| r.topic == topic).map(|r| r.partition).collect();
        for (partition, ends) in kafka::ends(&config, &topic, &partitions)? {
            if let Some(row) = rows.iter_mut().find(|r| r.topic == topic && r.partition == partition) {
                row.end = Some(ends.stable);
                row.lag = row.position.map(|position| (ends.stable - position).max(0));
            }
        }
    }
    Ok(())
}

/// Refuses to change the positions of a group with live members, unless `force`.
pub(crate) fn refuse_if_live(connection: &Connection, group: &str, force: bool) -> Result<(), Error> {
    if force {
        return Ok(());
    }
    if !connection.has_brokers() {
        return Err(Error::Refused(format!(
            "cannot check whether group {group} has live members without Kafka: pass --brokers (or --force)"
        )));
    }
    let (state, members) = kafka::group_state(&connection.kafka()?, group)?;
    if members > 0 {
        return Err(Error::Refused(format!(
            "group {group} has {members} live member(s) (state {state}): stop them first, or pass --force \
             (in Database mode they are then fenced and stop processing the partition until the next rebalance)"
        )));
    }
    Ok(())
}
