//! Zombie fencing: an instance that lost a partition while inside a batch (its handler stalled
//! past the rebalance) cannot commit that batch when it wakes up; the new owner's work is the
//! only one applied. Under both consumer group protocols.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use exactly::{Batch, GroupProtocol};
use exactly_integration_tests::group_describe::ensure_group_protocol;
use exactly_integration_tests::recorder::{Hold, Recorder, create_effects_table, effect_counts};
use exactly_integration_tests::support::{Running, builder};
use exactly_integration_tests::{Input, Kafka, Postgres, produce, unique, wait_until};
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_cannot_commit_after_its_partition_moved() -> anyhow::Result<()> {
    zombie_is_fenced(GroupProtocol::Classic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_cannot_commit_after_its_partition_moved_under_the_consumer_group_protocol() -> anyhow::Result<()> {
    zombie_is_fenced(GroupProtocol::Consumer).await
}

async fn zombie_is_fenced(protocol: GroupProtocol) -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("fence", 2).await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let mut records = Vec::new();
    for partition in 0..2 {
        records.push(Input::to(partition, "k", format!("hold-{partition}")));
        records.extend((1..6).map(|i| Input::to(partition, "k", format!("m-{partition}-{i}"))));
    }
    produce(&kafka.client_config(), &topic, records).await?;
    let group = unique("fence");

    // A stalls inside the first batch of each partition, its transactions open.
    let hold = Arc::new(Hold {
        payloads: vec!["hold-0".into(), "hold-1".into()],
        gate: Semaphore::new(0),
        waiting: Default::default(),
    });
    let mut zombie = Recorder::new(&topic, &group, "a");
    zombie.hold = Some(Arc::clone(&hold));
    let quick =
        |url: &str| builder(url).group_protocol(protocol).batch(Batch::single()).revoke_grace(Duration::from_secs(1));
    let a = Running::start(kafka, quick(&database.url).handler(zombie)).await?;
    wait_until(WAIT, "A to stall on both partitions", || async {
        Ok((hold.waiting.load(Ordering::SeqCst) == 2).then_some(()))
    })
    .await?;

    // B joins: one partition moves to B, which claims it and processes all of it.
    let b = Running::start(kafka, quick(&database.url).handler(Recorder::new(&topic, &group, "b"))).await?;
    wait_until(WAIT, "B to process the partition it took over", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM effects WHERE instance = 'b'").fetch_one(&pool).await?;
        Ok((n == 6).then_some(()))
    })
    .await?;

    ensure_group_protocol(kafka, &group, protocol, 2)?;

    // A wakes up: its batch on the moved partition must fail the position check and roll back.
    hold.gate.add_permits(2);
    wait_until(WAIT, "all 12 messages applied", || async {
        Ok((effect_counts(&pool, &group).await?.0 == 12).then_some(()))
    })
    .await?;
    let fenced = a.reported.count("fenced");
    b.stop().await?;
    a.stop().await?;

    assert_eq!(effect_counts(&pool, &group).await?, (12, 12), "a message was applied twice or lost");
    assert!(fenced >= 1, "A's stale commit was not reported as fenced");
    let moved: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM effects WHERE payload LIKE 'hold-%' AND instance = 'b'")
            .fetch_all(&pool)
            .await?;
    assert_eq!(moved.len(), 1, "exactly one held message is applied by the new owner: {moved:?}");
    Ok(())
}
