//! Watching a run move while faults hit it: a steady feed of input, the positions of a group
//! per partition (stored in PostgreSQL, or committed to Kafka), and the wait until every
//! partition has moved past where it stood.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::produce::{producer, send_all};
use crate::{Input, Kafka};

pub use exactly_testkit::positions::{CommittedOffsets, stored_positions};

/// Produces inputs in chunks at a steady pace until [`SteadyFeed::finish`] (or until they
/// run out), so that every partition keeps receiving input while faults are injected.
pub struct SteadyFeed {
    stop: Arc<AtomicBool>,
    task: JoinHandle<anyhow::Result<usize>>,
}

impl std::fmt::Debug for SteadyFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SteadyFeed").field("stopped", &self.stop.load(Ordering::SeqCst)).finish_non_exhaustive()
    }
}

impl SteadyFeed {
    /// Starts producing `inputs` to `topic`, `chunk` records every `pace`.
    pub fn start(config: ClientConfig, topic: String, inputs: Vec<Input>, chunk: usize, pace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let producer = producer(&config)?;
            let mut produced = 0;
            for slice in inputs.chunks(chunk) {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                send_all(&producer, &topic, slice.to_vec()).await?;
                produced += slice.len();
                tokio::time::sleep(pace).await;
            }
            Ok(produced)
        });
        Self { stop, task }
    }

    /// Stops the feed; returns how many inputs (the first ones) were produced.
    pub async fn finish(self) -> anyhow::Result<usize> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await?
    }
}

/// How many completed offsets `group` keeps above its stored positions in `topic`
/// (`exactly.completed`, key-level concurrency): messages handled while one below them was
/// not yet. Compacted into the position as the messages below are done, so none are left
/// once every message is.
pub async fn completed_offsets(pool: &PgPool, group: &str, topic: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM exactly.completed WHERE group_id = $1 AND topic = $2")
        .bind(group)
        .bind(topic)
        .fetch_one(pool)
        .await?)
}

/// How many messages `group` has parked now (`exactly.parked`, key parking): messages of
/// failing keys waiting for their retries.
pub async fn parked_messages(pool: &PgPool, group: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM exactly.parked WHERE group_id = $1")
        .bind(group)
        .fetch_one(pool)
        .await?)
}

/// Waits until every partition's position (from `now`) is past where it stood in `before`,
/// and returns how long that took: with a [`SteadyFeed`] running, the time until the whole
/// group works again.
pub async fn wait_every_partition_moved<N, F>(
    what: &str,
    before: &[i64],
    mut now: N,
    timeout: Duration,
) -> anyhow::Result<Duration>
where
    N: FnMut() -> F,
    F: Future<Output = anyhow::Result<Vec<i64>>>,
{
    let started = Instant::now();
    loop {
        let positions = now().await?;
        let stuck: Vec<usize> =
            before.iter().zip(&positions).enumerate().filter(|(_, (b, n))| n <= b).map(|(p, _)| p).collect();
        if stuck.is_empty() {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "{what}: partitions {stuck:?} did not move within {timeout:?} (positions {positions:?}, before {before:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The state of consumer group `group` (`Stable`, `Empty`, `PreparingRebalance`, ...; `Dead`
/// when it does not exist) and how many members it has, as the group coordinator reports,
/// under either group protocol. `DescribeGroups` (librdkafka's group list) knows only classic
/// groups and says `Dead` of a group of the consumer protocol, so that one is asked about
/// with `ConsumerGroupDescribe` ([`consumer_group_state`](crate::group_describe::consumer_group_state);
/// its states are `Empty`, `Assigning`, `Reconciling` and `Stable`).
pub fn group_state(kafka: &Kafka, group: &str) -> anyhow::Result<(String, usize)> {
    let client: BaseConsumer = kafka.client_config().set("group.id", crate::unique("observer")).create()?;
    let list = client.fetch_group_list(Some(group), Duration::from_secs(10))?;
    let classic =
        list.groups().first().map_or_else(|| ("Dead".to_owned(), 0), |g| (g.state().to_owned(), g.members().len()));
    if classic.1 > 0 || !matches!(classic.0.as_str(), "Dead" | "") {
        return Ok(classic);
    }
    // A look that failed (no coordinator elected yet, say) saw nothing: the waits look again.
    match crate::group_describe::consumer_group_state(kafka, group) {
        Ok(described) => Ok(described.unwrap_or(classic)),
        Err(e) => {
            tracing::debug!(group = %group, "cannot describe the group with ConsumerGroupDescribe: {e:#}");
            Ok(classic)
        }
    }
}

/// Waits until consumer group `group` is `Stable` with exactly `members` members (`Empty`
/// when `members` is 0), under either group protocol: a rebalance after a member joined or
/// left (or was fenced) has completed.
pub async fn wait_group_settled(kafka: &Kafka, group: &str, members: usize, timeout: Duration) -> anyhow::Result<()> {
    let settled = if members == 0 { "Empty" } else { "Stable" };
    let started = Instant::now();
    loop {
        let (state, count) = tokio::task::block_in_place(|| group_state(kafka, group))?;
        if state == settled && count == members {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "group {group} did not settle with {members} members within {timeout:?}: {state}, {count} members"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
