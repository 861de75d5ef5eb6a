//! The test bed every scenario shares: one Kafka broker and one PostgreSQL server in
//! containers, input topics filled in advance, and a fresh table per run.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use exactly_integration_tests::produce::{Input, producer, send_all};
use exactly_integration_tests::{Kafka, Postgres, TestDatabase, unique};
use sqlx::{AssertSqlSafe, PgPool};

/// `name` if it is a plain, unquoted SQL name (`[a-z_][a-z0-9_]*`, at most 63 bytes),
/// safe to put into SQL text: the bench's table names are made by `unique` but travel to
/// workers as command-line arguments.
///
/// # Errors
/// When it is anything else.
pub(crate) fn sql_name(name: &str) -> anyhow::Result<&str> {
    let plain = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    anyhow::ensure!(plain, "`{name}` is not a plain SQL name ([a-z_][a-z0-9_]*, at most 63 bytes)");
    Ok(name)
}

/// Fails, before anything starts, when the Docker engine's data directory has less than
/// `needed` bytes free: a broker that runs out of disk mid-run fails its scenario with
/// nothing but "Meta data fetch error: OperationTimedOut". Only checked when the engine is
/// on this machine (its data directory is a local path).
///
/// # Errors
/// When less is free, saying how much is needed and where.
pub(crate) async fn check_free_disk(needed: u64) -> anyhow::Result<()> {
    let docker = exactly_integration_tests::engine::docker().await?;
    let Some(root) = docker.info().await.ok().and_then(|info| info.docker_root_dir) else { return Ok(()) };
    if !std::path::Path::new(&root).is_dir() {
        return Ok(());
    }
    let df = std::process::Command::new("df").args(["-Pk", &root]).output().context("cannot run df")?;
    let text = String::from_utf8_lossy(&df.stdout);
    let free_kib: Option<u64> = text.lines().nth(1).and_then(|line| line.split_whitespace().nth(3)?.parse().ok());
    let Some(free) = free_kib.map(|kib| kib * 1024) else { return Ok(()) };
    let gib = |bytes: u64| bytes as f64 / f64::from(1u32 << 30);
    anyhow::ensure!(
        free >= needed,
        "only {:.1} GiB free under {root} (the Docker engine's data, where the broker writes); this run needs \
         about {:.1} GiB. Free some (old `target/` builds, `docker system prune`) or pass --scale",
        gib(free),
        gib(needed)
    );
    Ok(())
}

/// Reads the CPU time a container has used, from its cgroup, when the engine is on this
/// machine (cgroup v1 `cpuacct`, or v2 under systemd or cgroupfs).
#[derive(Debug)]
pub(crate) struct ContainerCpu {
    /// `cpuacct.usage` (nanoseconds) or `cpu.stat` (its `usage_usec` line).
    file: Option<std::path::PathBuf>,
}

impl ContainerCpu {
    pub(crate) fn of(container_id: Option<String>) -> Self {
        let file = container_id.and_then(|id| {
            [
                format!("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage"),
                format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat"),
                format!("/sys/fs/cgroup/docker/{id}/cpu.stat"),
            ]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|path| path.is_file())
        });
        Self { file }
    }

    /// CPU seconds used so far, when known.
    pub(crate) fn seconds(&self) -> Option<f64> {
        let file = self.file.as_ref()?;
        let text = std::fs::read_to_string(file).ok()?;
        if file.ends_with("cpuacct.usage") {
            return Some(text.trim().parse::<f64>().ok()? / 1e9);
        }
        let micros = text.lines().find_map(|line| line.strip_prefix("usage_usec "))?;
        Some(micros.trim().parse::<f64>().ok()? / 1e6)
    }
}

/// PostgreSQL's `max_wal_size` on the bench's server, in GiB: more than the WAL of the
/// largest backlog written between two timed checkpoints.
pub(crate) const MAX_WAL_GIB: u64 = 16;

/// Kafka and PostgreSQL for one bench run.
#[derive(Debug)]
pub(crate) struct Bed {
    /// The broker's CPU time, for the "broker CPU per msg" figures.
    pub(crate) broker_cpu: ContainerCpu,
    pub(crate) kafka: Kafka,
    /// Kept so that the server lives as long as the bed.
    _postgres: Postgres,
    pub(crate) database: TestDatabase,
    pub(crate) pool: PgPool,
}

impl Bed {
    /// Starts both servers and prepares the database (exactly's tables, `bench_positions`).
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let (kafka, postgres) = tokio::try_join!(Kafka::single(), Postgres::dedicated())?;
        let database = postgres.database().await?;
        let pool = database.pool().await?;
        exactly::migrate(&pool).await?;
        // Tuned for bulk ingestion, as its users tune it: with the default 1 GB, S7's
        // backlogs checkpoint every 4 s (PostgreSQL logs "checkpoints are occurring too
        // frequently") and each checkpoint's full-page writes swell the WAL of every system.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER SYSTEM SET max_wal_size = '{MAX_WAL_GIB}GB'")))
            .execute(&pool)
            .await?;
        sqlx::raw_sql("SELECT pg_reload_conf()").execute(&pool).await?;
        sqlx::query(
            "CREATE TABLE bench_positions (group_id TEXT, topic TEXT, partition INTEGER, next_offset BIGINT NOT NULL, \
             PRIMARY KEY (group_id, topic, partition))",
        )
        .execute(&pool)
        .await?;
        let broker_cpu = ContainerCpu::of(kafka.broker(1).container_id());
        Ok(Self { broker_cpu, kafka, _postgres: postgres, database, pool })
    }

    pub(crate) fn brokers(&self) -> String {
        self.kafka.bootstrap_servers()
    }

    /// A new topic of `partitions` partitions holding `count` messages of `size` bytes,
    /// spread evenly (message `i` to partition `i % partitions`).
    pub(crate) async fn filled_topic(&self, partitions: i32, count: u64, size: usize) -> anyhow::Result<String> {
        let topic = self.kafka.unique_topic("bench_in", partitions).await?;
        self.fill(&topic, partitions, 0..count, size).await?;
        Ok(topic)
    }

    /// Appends messages `range` to `topic`.
    pub(crate) async fn fill(
        &self,
        topic: &str,
        partitions: i32,
        range: std::ops::Range<u64>,
        size: usize,
    ) -> anyhow::Result<()> {
        let producer = producer(&self.kafka.client_config())?;
        let mut next = range.start;
        while next < range.end {
            let end = (next + 20_000).min(range.end);
            let slice = (next..end).map(|i| {
                let partition = i32::try_from(i % u64::try_from(partitions).unwrap_or(1)).unwrap_or(0);
                Input::bytes(payload(size)).key(format!("k{i}")).partition(partition)
            });
            send_all(&producer, topic, slice).await.with_context(|| format!("cannot fill {topic}"))?;
            next = end;
        }
        Ok(())
    }

    /// A new topic of `partitions` partitions holding a message of `size` bytes per key of
    /// `keys`, in that order, each with its key's name and in its key's partition (S8's
    /// inputs: see [`crate::keys`]).
    pub(crate) async fn filled_keyed_topic(
        &self,
        partitions: i32,
        keys: &[u32],
        size: usize,
    ) -> anyhow::Result<String> {
        let topic = self.kafka.unique_topic("bench_keyed", partitions).await?;
        let producer = producer(&self.kafka.client_config())?;
        for slice in keys.chunks(20_000) {
            let inputs = slice.iter().map(|&key| {
                Input::bytes(payload(size))
                    .key(crate::keys::name(key))
                    .partition(crate::keys::partition_of(key, partitions))
            });
            send_all(&producer, &topic, inputs).await.with_context(|| format!("cannot fill {topic}"))?;
        }
        Ok(topic)
    }

    /// A new, empty output topic.
    pub(crate) async fn empty_topic(&self, partitions: i32) -> anyhow::Result<String> {
        self.kafka.unique_topic("bench_out", partitions).await
    }

    /// A new, empty table for one run's inserts.
    pub(crate) async fn table(&self) -> anyhow::Result<String> {
        let table = unique("bench_rows");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (partition INTEGER NOT NULL, message_offset BIGINT NOT NULL, payload BYTEA NOT NULL, \
             PRIMARY KEY (partition, message_offset))"
        )))
        .execute(&self.pool)
        .await?;
        Ok(table)
    }

    /// Checks that `table` holds, for each partition, exactly the offsets `0..end` that
    /// `expected` gives it (every input message once, no other), counting distinct
    /// (partition, offset) pairs rather than rows.
    ///
    /// # Errors
    /// When it does not, saying how it differs.
    pub(crate) async fn check_rows(&self, table: &str, expected: &BTreeMap<i32, i64>) -> anyhow::Result<()> {
        let table = sql_name(table)?;
        let found: Vec<(i32, i64, i64, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT partition, count(*), count(DISTINCT message_offset), min(message_offset), max(message_offset) \
             FROM {table} GROUP BY partition ORDER BY partition"
        )))
        .fetch_all(&self.pool)
        .await?;
        let mut problems = Vec::new();
        for (partition, rows, distinct, min, max) in &found {
            match expected.get(partition) {
                Some(&end) if *rows == end && *distinct == end && *min == 0 && *max == end - 1 => {}
                Some(end) => problems.push(format!(
                    "partition {partition}: {rows} rows, {distinct} distinct offsets from {min} to {max}, where \
                     the input has offsets 0 to {}",
                    end - 1
                )),
                None => problems.push(format!("partition {partition}: {rows} rows, not in the input")),
            }
        }
        for (partition, end) in expected {
            if *end > 0 && !found.iter().any(|(p, ..)| p == partition) {
                problems.push(format!("partition {partition}: no rows, where the input has {end}"));
            }
        }
        anyhow::ensure!(problems.is_empty(), "{table} does not hold each input message once: {}", problems.join("; "));
        Ok(())
    }

    /// Each partition's end (high watermark) in `topic`: as every input starts at offset
    /// 0 and holds no transaction markers, the offsets `0..end` are its messages.
    pub(crate) async fn partition_ends(&self, topic: &str, partitions: i32) -> anyhow::Result<BTreeMap<i32, i64>> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = self.kafka.client_config().create()?;
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            (0..partitions)
                .map(|partition| {
                    let (_, high) = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
                    Ok((partition, high))
                })
                .collect()
        })
        .await?
    }

    /// Dead letters group `group` wrote to `exactly.dead_letters` (0 for a system that
    /// writes none: the baselines, Kafka mode).
    pub(crate) async fn dead_letters(&self, group: &str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM exactly.dead_letters WHERE group_id = $1")
            .bind(group)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Drops `table` (runs leave nothing behind that slows the next one).
    pub(crate) async fn drop_table(&self, table: &str) -> anyhow::Result<()> {
        let table = sql_name(table)?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}"))).execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes `topics` (their data no longer needed).
    pub(crate) async fn delete_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = self.kafka.client_config().create()?;
        admin.delete_topics(topics, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))).await?;
        Ok(())
    }
}

/// A message payload of `size` bytes (at least 16): the time it was made, in microseconds
/// since the Unix epoch, as 16 ASCII digits, then filler.
pub(crate) fn payload(size: usize) -> Vec<u8> {
    let mut bytes = format!("{:016}", now_micros()).into_bytes();
    bytes.resize(size.max(16), b'x');
    bytes
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A payload of `size` bytes (at least 32) for a latency run: the time it was made, in
/// microseconds since the Unix epoch, then its sequence number `seq`, each as 16 ASCII
/// digits, then filler. The sequence number lets the run account for every message sent.
pub(crate) fn stamped_payload(seq: u64, size: usize) -> Vec<u8> {
    let mut bytes = format!("{:016}{seq:016}", now_micros()).into_bytes();
    bytes.resize(size.max(32), b'x');
    bytes
}

/// The send time and sequence number at the start of a [`stamped_payload`], if it has them.
pub(crate) fn stamp(payload: &[u8]) -> Option<(u64, u64)> {
    let digits =
        |range: std::ops::Range<usize>| -> Option<u64> { std::str::from_utf8(payload.get(range)?).ok()?.parse().ok() };
    Some((digits(0..16)?, digits(16..32)?))
}

#[cfg(test)]
mod tests {
    use super::{stamp, stamped_payload};

    #[test]
    fn a_stamped_payload_gives_back_its_sequence_number() {
        let payload = stamped_payload(42, 1024);
        assert_eq!(payload.len(), 1024);
        let (sent, seq) = stamp(&payload).expect("a stamp");
        assert_eq!(seq, 42);
        assert!(sent > 0);
        assert_eq!(stamp(b"0000000000000001"), None, "too short for a sequence number");
    }
}
