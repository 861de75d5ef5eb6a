//! Rebalances and shutdowns while messages flow: instances join and leave (1, 2, 3, 2, 1)
//! under cooperative-sticky and eager assignment and under the consumer group protocol's
//! broker-side assignment; every in-flight batch commits or rolls back whole, so effects and
//! positions agree and every message is applied exactly once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use exactly::Batch;
use exactly_integration_tests::group_describe::ensure_group_protocol;
use exactly_integration_tests::recorder::{Hold, Recorder, create_effects_table, effect_counts};
use exactly_integration_tests::support::{Assignment, Running, builder};
use exactly_integration_tests::{Input, Kafka, Postgres, produce, unique, wait_until};
use sqlx::PgPool;
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(180);
const PARTITIONS: i32 = 6;
const PER_ROUND: i64 = 60;

async fn churn(assignment: Assignment) -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("churn", PARTITIONS).await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let group = unique("churn");
    let start = |instance: &str| {
        let runtime = assignment
            .apply(builder(&database.url))
            .batch(Batch::default().max_records(20))
            .handler(Recorder::new(&topic, &group, instance));
        Running::start(kafka, runtime)
    };

    let feed = async |round: i64| -> anyhow::Result<()> {
        let records: Vec<Input> = (0..PER_ROUND)
            .map(|i| Input::to((i % i64::from(PARTITIONS)) as i32, format!("k{i}"), format!("r{round}-{i}")))
            .collect();
        produce(&kafka.client_config(), &topic, records).await
    };

    let a = start("a").await?;
    feed(0).await?;
    let b = start("b").await?;
    feed(1).await?;
    let c = start("c").await?;
    feed(2).await?;
    b.stop().await?; // graceful leave while messages are in flight
    feed(3).await?;
    let d = start("d").await?;
    feed(4).await?;
    c.stop().await?;
    feed(5).await?;
    d.stop().await?;
    feed(6).await?;
    let expected = 7 * PER_ROUND;
    wait_until(WAIT, "every message applied", || async {
        let (total, _) = effect_counts(&pool, &group).await?;
        anyhow::ensure!(total <= expected, "more effects than messages: {total}");
        Ok((total == expected).then_some(()))
    })
    .await?;
    ensure_group_protocol(kafka, &group, assignment.protocol(), 1)?;
    a.stop().await?;

    assert_eq!(effect_counts(&pool, &group).await?, (expected, expected), "applied twice");
    check_positions_match_effects(&pool, &group, &topic).await
}

/// Every partition's stored position is exactly one past its last applied offset.
async fn check_positions_match_effects(pool: &PgPool, group: &str, topic: &str) -> anyhow::Result<()> {
    for partition in 0..PARTITIONS {
        let applied: (i64, Option<i64>) =
            sqlx::query_as("SELECT count(*), max(message_offset) FROM effects WHERE group_id = $1 AND partition = $2")
                .bind(group)
                .bind(partition)
                .fetch_one(pool)
                .await?;
        let position = exactly::offsets::position(pool, group, topic, partition).await?;
        assert_eq!(position, applied.1.map(|last| last + 1), "partition {partition}: position vs effects");
        assert_eq!(Some(applied.0), position, "partition {partition}: a batch was applied in part");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_churn_applies_each_message_once() -> anyhow::Result<()> {
    churn(Assignment::Classic("cooperative-sticky")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_range_churn_applies_each_message_once() -> anyhow::Result<()> {
    churn(Assignment::Classic("range")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_protocol_churn_applies_each_message_once() -> anyhow::Result<()> {
    churn(Assignment::Broker).await
}

/// A revocation waits for the partition's in-flight batch (up to `revoke_grace`): the batch
/// commits where it started, and the next owner starts after it; nothing is fenced or redone.
/// A holds a message in each of two partitions when B joins; eager assignment revokes both,
/// the consumer group protocol's broker one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_waits_for_the_batch_in_flight() -> anyhow::Result<()> {
    revocation_waits(Assignment::Classic("range")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_waits_for_the_batch_in_flight_under_the_consumer_group_protocol() -> anyhow::Result<()> {
    revocation_waits(Assignment::Broker).await
}

async fn revocation_waits(assignment: Assignment) -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("revoke", 2).await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let records = (0..2).flat_map(|p| (0..10).map(move |i| Input::to(p, "k", format!("p{p}-m-{i}"))));
    produce(&kafka.client_config(), &topic, records).await?;
    let group = unique("revoke");
    let hold = Arc::new(Hold {
        payloads: vec!["p0-m-3".into(), "p1-m-3".into()],
        gate: Semaphore::new(0),
        waiting: Default::default(),
    });
    let mut held = Recorder::new(&topic, &group, "a");
    held.hold = Some(Arc::clone(&hold));
    let start = |recorder: Recorder| {
        let runtime = assignment
            .apply(builder(&database.url))
            .batch(Batch::single())
            .revoke_grace(Duration::from_secs(120))
            .handler(recorder);
        Running::start(kafka, runtime)
    };
    let a = start(held).await?;
    wait_until(WAIT, "A to hold both messages", || async {
        Ok((hold.waiting.load(Ordering::SeqCst) == 2).then_some(()))
    })
    .await?;
    let b = start(Recorder::new(&topic, &group, "b")).await?;
    // Were the revocation not waiting, the group would settle and a partition be claimed
    // anew while its message is held; give it the time to (A's commit would then be fenced).
    let _ = exactly_integration_tests::progress::wait_group_settled(kafka, &group, 2, Duration::from_secs(10)).await;
    hold.gate.add_permits(2);
    wait_until(WAIT, "every message applied", || async {
        Ok((effect_counts(&pool, &group).await?.1 == 20).then_some(()))
    })
    .await?;
    ensure_group_protocol(kafka, &group, assignment.protocol(), 2)?;
    let reported_by_a = a.reported.clone();
    a.stop().await?;
    b.stop().await?;
    let held_by: Vec<String> = sqlx::query_scalar(
        "SELECT instance FROM effects WHERE group_id = $1 AND payload LIKE '%-m-3' ORDER BY payload",
    )
    .bind(&group)
    .fetch_all(&pool)
    .await?;
    assert_eq!(held_by, ["a", "a"], "a held message was not committed by the instance that held it");
    assert_eq!(reported_by_a.count("fenced"), 0, "A was fenced: {:?}", reported_by_a.all());
    assert_eq!(effect_counts(&pool, &group).await?, (20, 20));
    let by_b: i64 = sqlx::query_scalar("SELECT count(*) FROM effects WHERE group_id = $1 AND instance = 'b'")
        .bind(&group)
        .fetch_one(&pool)
        .await?;
    assert!(by_b > 0, "B never got a partition: no revocation happened");
    Ok(())
}
