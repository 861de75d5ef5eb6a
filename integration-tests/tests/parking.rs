//! Key-level parking: a failing message is parked in PostgreSQL with every later message
//! of its key, in the transaction that moves the position past them; the partition's
//! other keys go on; parked messages are retried per key in offset order, and
//! dead-lettered when their retries are spent.

use std::time::Duration;

use exactly::{Batch, RetryPolicy};
use exactly_integration_tests::recorder::{Recorder, create_blocked_keys_table, effect_counts};
use exactly_integration_tests::support::{Running, builder, topic_and_database};
use exactly_integration_tests::{Input, produce, unique, wait_until};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(120);

async fn parked(pool: &PgPool, group: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM exactly.parked WHERE group_id = $1")
        .bind(group)
        .fetch_one(pool)
        .await?)
}

async fn wait_for(pool: &PgPool, group: &str, topic: &str, next: i64, parked_left: i64) -> anyhow::Result<()> {
    wait_until(WAIT, &format!("position {next} with {parked_left} parked"), || async {
        let position = exactly::offsets::position(pool, group, topic, 0).await?;
        Ok((position == Some(next) && parked(pool, group).await? == parked_left).then_some(()))
    })
    .await
}

/// The offsets of `key`'s effects in the order they were applied.
async fn applied_offsets(pool: &PgPool, group: &str, key: &str) -> anyhow::Result<Vec<i64>> {
    Ok(sqlx::query_scalar("SELECT message_offset FROM effects WHERE group_id = $1 AND key = $2 ORDER BY seq")
        .bind(group)
        .bind(key)
        .fetch_all(pool)
        .await?)
}

fn parking_recorder(topic: &str, group: &str, retry: RetryPolicy) -> Recorder {
    let mut recorder = Recorder::new(topic, group, "a");
    recorder.key_parking = true;
    recorder.blocked_keys = true;
    recorder.retry = Some(retry);
    recorder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_waits_in_order_while_the_other_keys_go_on() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    create_blocked_keys_table(&pool).await?;
    sqlx::query("INSERT INTO blocked_keys VALUES ('k3')").execute(&pool).await?;
    let records: Vec<Input> = (0..300).map(|i| Input::to(0, format!("k{}", i % 10), format!("m-{i}"))).collect();
    produce(&kafka.client_config(), &topic, records).await?;
    let group = unique("park");
    // Retries never run out here: the key waits until it is unblocked.
    let retry = RetryPolicy::default()
        .max_attempts(10_000)
        .initial_backoff(Duration::from_millis(50))
        .max_backoff(Duration::from_millis(300));
    let batch = Batch::default().max_records(50).max_wait(Duration::from_millis(100));
    let running =
        Running::start(kafka, builder(&url).batch(batch).handler(parking_recorder(&topic, &group, retry))).await?;
    wait_for(&pool, &group, &topic, 300, 30).await?;
    let (all, distinct) = effect_counts(&pool, &group).await?;
    assert_eq!((all, distinct), (270, 270), "every other key went on, once each");
    assert!(applied_offsets(&pool, &group, "k3").await?.is_empty(), "k3 applied while blocked");
    running.stop().await?;

    // A new instance finds the parked key in the table and keeps it waiting.
    let running =
        Running::start(kafka, builder(&url).batch(batch).handler(parking_recorder(&topic, &group, retry))).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(parked(&pool, &group).await?, 30);
    sqlx::query("DELETE FROM blocked_keys").execute(&pool).await?;
    wait_for(&pool, &group, &topic, 300, 0).await?;
    running.stop().await?;

    assert_eq!(effect_counts(&pool, &group).await?, (300, 300), "a parked message was lost or applied twice");
    let k3 = applied_offsets(&pool, &group, "k3").await?;
    let expected: Vec<i64> = (0..300).filter(|i| i % 10 == 3).collect();
    assert_eq!(k3, expected, "k3's messages applied in offset order, once each");
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM exactly.dead_letters WHERE group_id = $1")
        .bind(&group)
        .fetch_one(&pool)
        .await?;
    assert_eq!(dead, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_message_out_of_retries_is_dead_lettered_and_its_key_resumes() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    create_blocked_keys_table(&pool).await?;
    let records: Vec<Input> = (0..40)
        .map(|i| Input::to(0, format!("k{}", i % 4), if i == 5 { "fail-5".to_owned() } else { format!("m-{i}") }))
        .collect();
    produce(&kafka.client_config(), &topic, records).await?;
    let group = unique("park-dead");
    let retry = RetryPolicy::default().max_attempts(4).initial_backoff(Duration::from_millis(20));
    let running = Running::start(kafka, builder(&url).handler(parking_recorder(&topic, &group, retry))).await?;
    wait_for(&pool, &group, &topic, 40, 0).await?;
    running.stop().await?;

    assert_eq!(effect_counts(&pool, &group).await?, (39, 39));
    let dead: Vec<(i64, i32)> =
        sqlx::query_as("SELECT message_offset, attempts FROM exactly.dead_letters WHERE group_id = $1")
            .bind(&group)
            .fetch_all(&pool)
            .await?;
    assert_eq!(dead, vec![(5, 4)], "dead-lettered once, after the handler's 4 attempts");
    let k1 = applied_offsets(&pool, &group, "k1").await?;
    let expected: Vec<i64> = (0..40).filter(|i| i % 4 == 1 && *i != 5).collect();
    assert_eq!(k1, expected, "k1 resumed after its dead letter, in order");
    Ok(())
}
