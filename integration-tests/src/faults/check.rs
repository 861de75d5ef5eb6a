//! The check applied after every fault run, in one place: each input has exactly one effect,
//! effects keep their order (per partition, or per key where keys are handled concurrently),
//! the run's positions reached the end of its input (with no completed offsets left above
//! them), and no transaction is left open on its topics. [`check_and_report`] applies it
//! and prints the run's row of the fault table.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::PgPool;

use super::row::Row;
use super::watermarks::{high_watermarks, wait_for_stable_end};
use crate::progress::completed_offsets;
use crate::{Input, Isolation, read_to_end};

/// How long positions and last stable offsets may take to reach the end once the work is
/// done: markers are written after a commit returns, and a coordinator aborts what a killed
/// producer left open only after its transaction timeout.
const SETTLE: Duration = Duration::from_secs(70);

/// Where a run's effects are.
#[derive(Debug, Clone, Copy)]
pub enum Effects<'a> {
    /// Database mode: the `effects` rows `group` wrote. The table has no unique constraint,
    /// so a message applied twice is two rows. Order: offsets grow per partition.
    Rows {
        /// The run's database.
        pool: &'a PgPool,
        /// The group whose rows count.
        group: &'a str,
    },
    /// Database mode with key-level concurrency: the `effects` rows `group` wrote, counted
    /// as in `Rows`, whose payloads are `key:seq`
    /// ([`keyed_inputs`](crate::copy_check::keyed_inputs)). Order: `seq` grows per key in
    /// the order the rows were inserted (the keys of a partition commit in any order).
    KeyedRows {
        /// The run's database.
        pool: &'a PgPool,
        /// The group whose rows count.
        group: &'a str,
    },
    /// Kafka mode and the outbox: the records of `topic`, read with `read_committed`.
    /// Payloads are `key:seq` ([`keyed_inputs`](crate::copy_check::keyed_inputs)); order:
    /// `seq` grows per key.
    Records {
        /// The output topic.
        topic: &'a str,
    },
}

/// Where a run keeps how far through its input it is, to be found at the end.
#[derive(Debug, Clone, Copy)]
pub enum Positions<'a> {
    /// Database mode: the positions `group` stored in PostgreSQL for `topic`.
    Stored {
        /// The run's database.
        pool: &'a PgPool,
        /// The consumer group.
        group: &'a str,
        /// The input topic.
        topic: &'a str,
    },
    /// Database mode with key-level concurrency: the positions `group` stored for `topic`,
    /// as in `Stored`, and no completed offsets left above them (`exactly.completed`): once
    /// every message is handled, they are all compacted into the positions.
    KeyConcurrent {
        /// The run's database.
        pool: &'a PgPool,
        /// The consumer group.
        group: &'a str,
        /// The input topic.
        topic: &'a str,
    },
    /// Kafka mode: the offsets `group` committed to Kafka for `topic`.
    Committed {
        /// The consumer group.
        group: &'a str,
        /// The input topic.
        topic: &'a str,
    },
    /// The outbox relay, which has no input topic: every enqueued record published and
    /// deleted from `exactly.outbox`.
    OutboxDrained {
        /// The database the outbox is in.
        pool: &'a PgPool,
    },
    /// Kept nowhere the test can read back; says why (the mock cluster keeps no offsets
    /// committed in transactions).
    NotKept(&'static str),
}

/// A finished fault run, as the check sees it.
#[derive(Debug)]
pub struct FaultRun<'a> {
    /// Reaches the Kafka the run used (a real broker or the mock cluster).
    pub kafka: ClientConfig,
    /// The input: each payload must have exactly one effect.
    pub inputs: &'a [Input],
    /// Where the effects are.
    pub effects: Effects<'a>,
    /// Where the positions are.
    pub positions: Positions<'a>,
}

/// What the check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Effects found (rows or records), duplicates included.
    pub applied: usize,
    /// Effects beyond the first of their input.
    pub duplicates: usize,
    /// Effects of no input.
    pub unexpected: usize,
    /// Inputs with no effect.
    pub missing: usize,
    /// Effects that came after a later one of their partition (rows) or key (records and
    /// keyed rows).
    pub out_of_order: usize,
    /// Partitions whose position is not at the end of the input, described.
    pub positions_behind: Vec<String>,
    /// Topics whose last stable offset stayed behind their high watermark, described.
    pub open_transactions: Vec<String>,
}

impl Verdict {
    /// Everything wrong, in words; empty when the run was exactly once.
    pub fn problems(&self) -> Vec<String> {
        let counts = [
            (self.duplicates, "duplicate effects"),
            (self.unexpected, "effects of no input"),
            (self.missing, "inputs with no effect"),
            (self.out_of_order, "effects out of order"),
        ];
        let mut problems: Vec<String> =
            counts.iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("{n} {what}")).collect();
        problems.extend(self.positions_behind.iter().map(|p| format!("position behind: {p}")));
        problems.extend(self.open_transactions.iter().map(|t| format!("transaction left open: {t}")));
        problems
    }
}

/// One effect, with where it stands in the order it must keep.
struct Applied {
    payload: Vec<u8>,
    /// The partition (rows) or key (records) whose order it belongs to.
    stream: String,
    /// Its place in that stream: the offset (rows) or `seq` (records).
    place: i64,
}

impl<'a> FaultRun<'a> {
    /// A Database-mode run over `topic`: `group`'s `effects` rows and stored positions.
    pub fn database(
        kafka: ClientConfig,
        inputs: &'a [Input],
        pool: &'a PgPool,
        group: &'a str,
        topic: &'a str,
    ) -> Self {
        Self {
            kafka,
            inputs,
            effects: Effects::Rows { pool, group },
            positions: Positions::Stored { pool, group, topic },
        }
    }

    /// A Database-mode run over `topic` with key-level concurrency: `group`'s `effects` rows
    /// in order per key (payloads `key:seq`), and its stored positions, with no completed
    /// offsets left above them.
    pub fn key_concurrent(
        kafka: ClientConfig,
        inputs: &'a [Input],
        pool: &'a PgPool,
        group: &'a str,
        topic: &'a str,
    ) -> Self {
        Self {
            kafka,
            inputs,
            effects: Effects::KeyedRows { pool, group },
            positions: Positions::KeyConcurrent { pool, group, topic },
        }
    }

    /// A Kafka-mode run from `input` to `output`: the output read with `read_committed`, and
    /// `group`'s committed offsets on the input.
    pub fn kafka_mode(
        kafka: ClientConfig,
        inputs: &'a [Input],
        input: &'a str,
        output: &'a str,
        group: &'a str,
    ) -> Self {
        Self {
            kafka,
            inputs,
            effects: Effects::Records { topic: output },
            positions: Positions::Committed { group, topic: input },
        }
    }

    /// Applies the check. Positions and last stable offsets are given a while (`SETTLE`) to reach the end.
    pub async fn check(&self) -> anyhow::Result<Verdict> {
        self.check_within(SETTLE).await
    }

    /// Applies the check, giving positions and last stable offsets `settle` to reach the
    /// end (tests of the check itself use a short one).
    pub async fn check_within(&self, settle: Duration) -> anyhow::Result<Verdict> {
        let applied = self.applied().await?;
        let mut verdict = count(&applied, self.inputs);
        verdict.positions_behind = self.positions_behind(settle).await?;
        verdict.open_transactions = self.open_transactions(settle).await;
        Ok(verdict)
    }

    async fn applied(&self) -> anyhow::Result<Vec<Applied>> {
        match self.effects {
            Effects::Rows { pool, group } => {
                let rows: Vec<(i32, i64, String)> = sqlx::query_as(
                    "SELECT partition, message_offset, payload FROM effects WHERE group_id = $1 ORDER BY seq",
                )
                .bind(group)
                .fetch_all(pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(partition, offset, payload)| Applied {
                        payload: payload.into_bytes(),
                        stream: format!("partition {partition}"),
                        place: offset,
                    })
                    .collect())
            }
            Effects::KeyedRows { pool, group } => {
                let payloads: Vec<String> =
                    sqlx::query_scalar("SELECT payload FROM effects WHERE group_id = $1 ORDER BY seq")
                        .bind(group)
                        .fetch_all(pool)
                        .await?;
                payloads.into_iter().map(|payload| keyed(payload.into_bytes())).collect()
            }
            Effects::Records { topic } => {
                let records = read_to_end(self.kafka.clone(), topic, Isolation::ReadCommitted, SETTLE).await?;
                records.into_iter().map(|r| keyed(r.payload.unwrap_or_default())).collect()
            }
        }
    }

    /// The partitions whose position is not at the end, once `settle` has passed (or at
    /// once when all are at the end).
    async fn positions_behind(&self, settle: Duration) -> anyhow::Result<Vec<String>> {
        let started = Instant::now();
        loop {
            let behind = self.positions_behind_now().await?;
            if behind.is_empty() || started.elapsed() > settle {
                return Ok(behind);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn positions_behind_now(&self) -> anyhow::Result<Vec<String>> {
        let mut behind = Vec::new();
        match self.positions {
            Positions::Stored { pool, group, topic } | Positions::KeyConcurrent { pool, group, topic } => {
                for (partition, end) in high_watermarks(self.kafka.clone(), topic, "read_uncommitted")? {
                    let stored = exactly::offsets::position(pool, group, topic, partition).await?;
                    if stored != Some(end) {
                        behind.push(format!("{topic}/{partition} stored {stored:?}, end {end}"));
                    }
                }
                if matches!(self.positions, Positions::KeyConcurrent { .. }) {
                    let left = completed_offsets(pool, group, topic).await?;
                    if left > 0 {
                        behind.push(format!("{topic}: {left} completed offsets never compacted into the positions"));
                    }
                }
            }
            Positions::Committed { group, topic } => {
                let committed = committed_offsets(&self.kafka, group, topic)?;
                for (partition, end) in high_watermarks(self.kafka.clone(), topic, "read_uncommitted")? {
                    let offset = committed.get(&partition).copied();
                    if offset != Some(end) {
                        behind.push(format!("{topic}/{partition} committed {offset:?}, end {end}"));
                    }
                }
            }
            Positions::OutboxDrained { pool } => {
                let backlog = exactly::outbox::backlog(pool).await?;
                if backlog > 0 {
                    behind.push(format!("{backlog} records still in the outbox"));
                }
            }
            Positions::NotKept(_) => {}
        }
        Ok(behind)
    }

    /// The topics the run wrote or read whose last stable offset stays behind the high
    /// watermark past `settle`.
    async fn open_transactions(&self, settle: Duration) -> Vec<String> {
        let mut topics = Vec::new();
        if let Effects::Records { topic } = self.effects {
            topics.push(topic);
        }
        if let Positions::Stored { topic, .. }
        | Positions::KeyConcurrent { topic, .. }
        | Positions::Committed { topic, .. } = self.positions
        {
            topics.push(topic);
        }
        let mut open = Vec::new();
        for topic in topics {
            if let Err(e) = wait_for_stable_end(&self.kafka, topic, settle).await {
                open.push(format!("{e:#}"));
            }
        }
        open
    }
}

/// A record's payload as an effect: `key:seq`, ordered by `seq` per key.
fn keyed(payload: Vec<u8>) -> anyhow::Result<Applied> {
    let text = String::from_utf8_lossy(&payload).into_owned();
    let parsed = text.split_once(':').and_then(|(key, seq)| Some((key.to_owned(), seq.parse::<i64>().ok()?)));
    let Some((stream, place)) = parsed else {
        anyhow::bail!("record {text:?} is not `key:seq`: its order cannot be checked");
    };
    Ok(Applied { payload, stream, place })
}

/// Counts `applied` against `inputs`: duplicates, effects of no input, inputs missing, and
/// effects out of order.
fn count(applied: &[Applied], inputs: &[Input]) -> Verdict {
    let expected: HashMap<&[u8], ()> = inputs.iter().map(|i| (i.payload.as_slice(), ())).collect();
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    let mut last: HashMap<&str, i64> = HashMap::new();
    let mut verdict = Verdict { applied: applied.len(), ..Verdict::default() };
    for effect in applied {
        *seen.entry(effect.payload.as_slice()).or_default() += 1;
        if !expected.contains_key(effect.payload.as_slice()) {
            verdict.unexpected += 1;
        }
        if last.insert(effect.stream.as_str(), effect.place).is_some_and(|previous| previous >= effect.place) {
            verdict.out_of_order += 1;
        }
    }
    verdict.duplicates = seen.values().map(|n| n - 1).sum();
    verdict.missing = inputs.iter().filter(|i| !seen.contains_key(i.payload.as_slice())).count();
    verdict
}

/// The offsets `group` committed for every partition of `topic`, read without joining it.
fn committed_offsets(kafka: &ClientConfig, group: &str, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    // read_uncommitted: the last offsets committed, not waiting out a pending transaction
    // (which the last-stable-offset check reports).
    let consumer: BaseConsumer =
        kafka.clone().set("group.id", group).set("isolation.level", "read_uncommitted").create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut partitions = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        partitions.add_partition(topic, partition.id());
    }
    let committed = consumer.committed_offsets(partitions, Duration::from_secs(10))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(next) => Some((e.partition(), next)),
            _ => None,
        })
        .collect())
}

/// Checks a finished fault run, prints its row of the fault table (also when the check
/// fails), and fails on anything lost, doubled, out of order, left behind or left open.
pub async fn check_and_report(
    fault: impl Into<String>,
    mode: &'static str,
    iterations: usize,
    recovery: Vec<Duration>,
    run: &FaultRun<'_>,
) -> anyhow::Result<Verdict> {
    let fault = fault.into();
    let verdict = run.check().await?;
    let row = Row {
        fault: fault.clone(),
        mode,
        iterations,
        messages: run.inputs.len(),
        duplicates: verdict.duplicates + verdict.unexpected,
        missing: verdict.missing,
        recovery,
    };
    row.report();
    let problems = verdict.problems();
    anyhow::ensure!(problems.is_empty(), "{fault} ({mode}): {}", problems.join("; "));
    Ok(verdict)
}
