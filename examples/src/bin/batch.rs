//! A batch handler: a partition's messages written in one `COPY` and one `UNNEST` upsert.
//!
//! **Guarantee shown:** a batch handler writes each batch with bulk statements (here one
//! binary `COPY` into `readings` and one `INSERT ... SELECT FROM UNNEST(...) ON CONFLICT`
//! into `sensor_totals`), in the PostgreSQL transaction that also moves the partition's
//! stored position past the batch: a crash either keeps the whole batch and its position or
//! neither, so each reading is stored once. A reading the handler rejects (a negative
//! sensor id) is named by its index in the batch: the readings before it commit without
//! it, and it goes to the dead letters alone.
//!
//! Readings are published at a steady pace while the worker process is killed with
//! SIGKILL, five times, each time while readings wait (as the main demo does); a last
//! worker finishes. Then it counts rows per reading (no unique constraint, so a duplicate
//! would show), checks the totals against the rows, and that the one dead letter is the
//! rejected reading. It exits 0 only when all of that holds.
//!
//! Runs against containers, or against `EXACTLY_BROKERS` and `DATABASE_URL`:
//!
//! ```text
//! cargo run -p exactly-examples --bin batch
//! ```

use std::time::{Duration, Instant};

use exactly::bulk::BinaryCopy;
use exactly::{Batch, BatchError, BatchHandler, Consumes as _, Context, HandlerError, Message, Runtime};
use exactly_examples::environment::Environment;
use exactly_examples::failures::FailureLog;
use exactly_testkit::Input;
use exactly_testkit::kill_loop::{Feed, Worker, kill_while_working};
use sqlx::PgPool;

/// One sensor reading.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Reading {
    /// Unique per reading: what the check counts.
    seq: i64,
    sensor: i64,
    value: f64,
}

/// Stores readings a batch at a time and keeps a running total per sensor.
#[derive(Debug, Clone, Copy, exactly::Handler)]
#[exactly(topic = "readings", group = "reading-recorder", payload = Reading, key = String)]
struct RecordReadings;

#[exactly::async_trait]
impl BatchHandler for RecordReadings {
    async fn handle_batch(
        &self,
        messages: &[&Message<String, Reading>],
        cx: &mut Context<'_>,
    ) -> Result<(), BatchError> {
        if let Some(bad) = messages.iter().position(|m| m.payload.sensor < 0) {
            // Named, so the readings before it commit and it alone is dead-lettered.
            let sensor = messages[bad].payload.sensor;
            return Err(BatchError::at(bad, HandlerError::permanent(format!("no sensor has id {sensor}"))));
        }
        let mut copy = BinaryCopy::with_capacity(messages.len() * 32);
        for message in messages {
            let reading = &message.payload;
            copy.row().int8(reading.seq).int8(reading.sensor).float8(reading.value);
        }
        copy.send(cx.db(), "COPY readings (seq, sensor, value) FROM STDIN (FORMAT binary)").await?;
        let sensors: Vec<i64> = messages.iter().map(|m| m.payload.sensor).collect();
        let values: Vec<f64> = messages.iter().map(|m| m.payload.value).collect();
        sqlx::query(
            "INSERT INTO sensor_totals (sensor, readings, total)
             SELECT sensor, count(*), sum(value) FROM UNNEST($1::int8[], $2::float8[]) AS r(sensor, value)
             GROUP BY sensor
             ON CONFLICT (sensor) DO UPDATE
             SET readings = sensor_totals.readings + excluded.readings, total = sensor_totals.total + excluded.total",
        )
        .bind(&sensors)
        .bind(&values)
        .execute(cx.db())
        .await?;
        Ok(())
    }
}

const READINGS: i64 = 20_000;
/// The reading the handler rejects.
const REJECTED: i64 = 7_777;
const CRASHES: usize = 5;
const PARTITIONS: i32 = 4;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        return worker(arg(2), arg(3), FailureLog::at(arg(4))).await;
    }
    let environment = Environment::start().await?;
    environment.create_topic("readings", PARTITIONS).await?;
    let pool = PgPool::connect(&environment.database_url).await?;
    create_tables(&pool).await?;
    let failures = FailureLog::fresh(std::env::temp_dir().join("exactly-batch-handler-failures.log"))?;

    let feed = Feed::start(&environment.brokers, "readings", readings()?, CRASHES)?;
    let log = std::env::temp_dir().join("exactly-batch-worker.log");
    std::fs::File::create(&log)?;
    let failure_log = failures.path().display().to_string();
    let spawn = || Worker::spawn(&["worker", &environment.brokers, &environment.database_url, &failure_log], &[], &log);
    let stored = || async { Ok(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM readings").fetch_one(&pool).await?) };
    kill_while_working(CRASHES, READINGS - 1, "readings stored", &spawn, stored, &feed).await?;
    feed.finish().await?;

    let mut last = spawn()?;
    let deadline = Instant::now() + Duration::from_secs(180);
    while stored().await? < READINGS - 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A moment more, for a duplicate to show if there were one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    last.stop()?;
    check(&pool, &failures).await
}

/// The readings, keyed by sensor; one has a sensor id the handler rejects.
fn readings() -> anyhow::Result<Vec<Input>> {
    (0..READINGS)
        .map(|seq| {
            let sensor = if seq == REJECTED { -1 } else { seq % 50 };
            let reading = Reading { seq, sensor, value: (seq % 100) as f64 / 10.0 };
            Ok(Input::json(&reading)?.key(sensor.to_string()))
        })
        .collect()
}

async fn create_tables(pool: &PgPool) -> anyhow::Result<()> {
    // No unique constraint on `seq`: a reading stored twice must be countable.
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS readings (seq BIGINT NOT NULL, sensor BIGINT NOT NULL, value FLOAT8 NOT NULL)",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS sensor_totals (sensor BIGINT PRIMARY KEY, readings BIGINT NOT NULL, total FLOAT8 NOT NULL)",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Prints what was stored and fails unless each reading but the rejected one is there once,
/// the totals agree with the rows, and the one dead letter is the rejected reading.
async fn check(pool: &PgPool, failures: &FailureLog) -> anyhow::Result<()> {
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT seq) FROM readings").fetch_one(pool).await?;
    let counted: Option<i64> =
        sqlx::query_scalar("SELECT sum(readings)::int8 FROM sensor_totals").fetch_one(pool).await?;
    let dead = exactly::dead_letters::list(pool, RecordReadings.subscription().group()).await?;
    let dead_offsets: Vec<String> =
        dead.iter().map(|letter| format!("{}@{}", letter.partition, letter.offset)).collect();
    let rejected_is_dead = dead.len() == 1
        && dead[0]
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_slice::<Reading>(p).ok())
            .is_some_and(|r| r.seq == REJECTED);
    println!("readings published: {READINGS}");
    println!("rows written: {rows}");
    println!("duplicates: {}", rows - distinct);
    println!("missing: {}", READINGS - 1 - distinct);
    println!("readings in the totals: {}", counted.unwrap_or(0));
    println!("dead letters: {} ({})", dead.len(), dead_offsets.join(", "));
    println!("handler failures reported: {}", failures.count()?);
    anyhow::ensure!(rows == READINGS - 1 && distinct == rows, "a reading was lost or stored twice");
    anyhow::ensure!(counted == Some(rows), "the totals disagree with the rows: a batch half applied");
    anyhow::ensure!(rejected_is_dead, "the one dead letter should be reading {REJECTED}: {dead_offsets:?}");
    println!("BATCH: each reading stored once in bulk, the rejected one dead-lettered, despite {CRASHES} SIGKILLs");
    Ok(())
}

/// The worker process: stores readings until SIGTERM (or SIGKILL), writing every failure it
/// reports to `failures`.
async fn worker(brokers: String, database_url: String, failures: FailureLog) -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn,exactly=info").init();
    failures
        .watch(Runtime::builder())
        .brokers(brokers)
        .database_url(database_url)
        // Static membership: a restarted worker takes over at once (see the main demo).
        .kafka_setting("group.instance.id", "reading-recorder-worker")
        .kafka_setting("session.timeout.ms", "10000")
        .batch(Batch::default().max_records(2_000))
        .batch_handler(RecordReadings)
        .build()
        .await?
        .run()
        .await?;
    Ok(())
}
