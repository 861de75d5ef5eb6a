//! PostgreSQL's disk full under the handler's table, then space back.
//!
//! The `effects` table lives in a tablespace on a small volume of its own, which the test
//! fills to the last byte while input arrives; the server's own files, its write-ahead log
//! and exactly's tables stay on a disk with room, as when a data volume fills and the
//! server goes on. Each batch's insert then fails with "No space left on device" (SQLSTATE
//! 53100, disk_full): the runtime must report it, keep every stored position at what was
//! stored (rows counted, no unique constraint), retry without spending the messages' tries
//! (none may be dead-lettered because the disk was full), and finish every message once
//! when the space is back.

use std::time::{Duration, Instant};

use exactly::RetryPolicy;
use exactly_integration_tests::faults::{FaultRun, check_and_report};
use exactly_integration_tests::recorder::{Recorder, create_effects_table};
use exactly_integration_tests::support::{Running, builder};
use exactly_integration_tests::{Input, Kafka, Postgres, produce, unique, wait_until};
use exactly_testkit::postgres::SMALL_DISK;
use exactly_testkit::{Store, caught_up};
use sqlx::PgPool;

/// The small volume: room for the table's first pages, then full.
const SMALL_DISK_BYTES: i64 = 8 * 1024 * 1024;

const PARTITIONS: i32 = 2;

const WAIT: Duration = Duration::from_secs(120);

/// How long the disk stays full once the first write failed: long enough for many retries.
const FULL_FOR: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_every_position_at_what_was_stored_and_everything_completes_once_space_is_back()
-> anyhow::Result<()> {
    let server = Postgres::with_small_disk(SMALL_DISK_BYTES).await?;
    let database = server.database().await?;
    let pool = database.pool().await?;
    let (status, output) = server
        .node()
        .exec(&format!("mkdir -p {SMALL_DISK}/pg && chown postgres:postgres {SMALL_DISK}/pg"), &[])
        .await?;
    anyhow::ensure!(status == 0, "cannot prepare the small volume: {output}");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLESPACE small LOCATION '{SMALL_DISK}/pg'")))
        .execute(&pool)
        .await?;
    create_effects_table(&pool).await?;
    sqlx::query("ALTER TABLE effects SET TABLESPACE small").execute(&pool).await?;
    exactly::migrate(&pool).await?;
    fill(&server).await?;

    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("full", PARTITIONS).await?;
    let group = unique("disk-full");
    let inputs: Vec<Input> = (0..2_000).map(|i| Input::to(i % PARTITIONS, format!("k{i}"), format!("m{i}"))).collect();
    produce(&kafka.client_config(), &topic, inputs.iter().cloned()).await?;
    // Quick tries, few of them: were a full disk counted against a message, its tries
    // would run out within the seconds the disk stays full.
    let retry = RetryPolicy::default().max_attempts(3).initial_backoff(Duration::from_millis(50));
    let running =
        Running::start(kafka, builder(&database.url).retry(retry).handler(Recorder::new(&topic, &group, "a"))).await?;
    let outcome = async {
        wait_until(WAIT, "a write refused for want of space", || async {
            Ok((running.reported.count("No space left on device") > 0).then_some(()))
        })
        .await?;
        let full_since = Instant::now();
        while full_since.elapsed() < FULL_FOR {
            positions_match_rows(&pool, &group, &topic).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let stored_while_full = stored(&pool).await?;
        anyhow::ensure!(
            stored_while_full < inputs.len() as i64,
            "every message was stored with the disk full: the test filled nothing"
        );
        free(&server).await?;
        let freed = Instant::now();
        caught_up(kafka, Store::Database(&pool), &group, &topic, WAIT).await?;
        anyhow::Ok((stored_while_full, freed.elapsed()))
    }
    .await;
    let reported = running.reported.all();
    running.stop().await?;
    let (stored_while_full, recovery) = outcome?;
    let full_errors = reported.iter().filter(|e| e.contains("No space left on device")).count();
    eprintln!(
        "{stored_while_full} of {} messages stored before and while the disk was full; {full_errors} writes refused; \
         caught up {:.1} s after the space was back",
        inputs.len(),
        recovery.as_secs_f64()
    );
    let dead_lettered: i64 = sqlx::query_scalar("SELECT count(*) FROM exactly.dead_letters").fetch_one(&pool).await?;
    anyhow::ensure!(dead_lettered == 0, "{dead_lettered} messages were dead-lettered because the disk was full");
    let run = FaultRun::database(kafka.client_config(), &inputs, &pool, &group, &topic);
    check_and_report(
        "PostgreSQL's disk full under the handler's table, then space back",
        "Database",
        1,
        vec![recovery],
        &run,
    )
    .await?;
    Ok(())
}

/// Fills the small volume to its last byte (`dd` stops at "No space left on device").
async fn fill(server: &Postgres) -> anyhow::Result<()> {
    let (_, output) =
        server.node().exec(&format!("dd if=/dev/zero of={SMALL_DISK}/filler bs=64k; df -k {SMALL_DISK}"), &[]).await?;
    anyhow::ensure!(output.contains("No space left on device"), "the small volume did not fill: {output}");
    Ok(())
}

/// Gives the space back.
async fn free(server: &Postgres) -> anyhow::Result<()> {
    let (status, output) = server.node().exec(&format!("rm {SMALL_DISK}/filler"), &[]).await?;
    anyhow::ensure!(status == 0, "cannot free the small volume: {output}");
    Ok(())
}

/// Checks that each partition's stored position is exactly its count of stored effects: a
/// position past what was stored would skip messages; one short of it would redo them.
async fn positions_match_rows(pool: &PgPool, group: &str, topic: &str) -> anyhow::Result<()> {
    let rows: Vec<(i32, i64, i64)> = sqlx::query_as(
        "SELECT o.partition, o.next_offset, \
                (SELECT count(*) FROM effects e WHERE e.group_id = o.group_id AND e.partition = o.partition) \
         FROM exactly.offsets o WHERE o.group_id = $1 AND o.topic = $2",
    )
    .bind(group)
    .bind(topic)
    .fetch_all(pool)
    .await?;
    for (partition, position, stored) in rows {
        anyhow::ensure!(
            position == stored,
            "partition {partition}: stored position {position}, but {stored} effects stored, with the disk full"
        );
    }
    Ok(())
}

/// Effects stored so far.
async fn stored(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM effects").fetch_one(pool).await?)
}
