//! Point-to-point (instances share one group: each message handled by one of them) and
//! publish-subscribe (every group handles every message), each with two runtime instances,
//! under both consumer group protocols.

use std::time::Duration;

use exactly::{Delivery, GroupProtocol};
use exactly_integration_tests::group_describe::ensure_group_protocol;
use exactly_integration_tests::recorder::{Recorder, create_effects_table, effect_counts};
use exactly_integration_tests::support::{Running, builder};
use exactly_integration_tests::{Input, Kafka, Postgres, produce, unique, wait_until};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(120);

async fn by_instance(pool: &PgPool, group: &str) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as("SELECT instance, count(*) FROM effects WHERE group_id = $1 GROUP BY instance ORDER BY instance")
        .bind(group)
        .fetch_all(pool)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_to_point_shares_the_work_and_handles_each_message_once() -> anyhow::Result<()> {
    point_to_point(GroupProtocol::Classic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_to_point_shares_the_work_under_the_consumer_group_protocol() -> anyhow::Result<()> {
    point_to_point(GroupProtocol::Consumer).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_gives_every_group_every_message() -> anyhow::Result<()> {
    publish_subscribe(GroupProtocol::Classic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_gives_every_group_every_message_under_the_consumer_group_protocol() -> anyhow::Result<()> {
    publish_subscribe(GroupProtocol::Consumer).await
}

/// Two instances of one group, speaking `protocol`, share a topic's partitions while
/// messages flow: both get work, and each message is handled once.
async fn point_to_point(protocol: GroupProtocol) -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("p2p", 4).await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let group = unique("p2p");
    let start = |instance: &str| {
        let runtime = builder(&database.url).group_protocol(protocol).handler(Recorder::new(&topic, &group, instance));
        Running::start(kafka, runtime)
    };
    let a = start("a").await?;
    let b = start("b").await?;

    // Keep producing until both instances have work (the group settles as B joins).
    let mut produced = 0_i64;
    let mut round = 0;
    wait_until(WAIT, "both instances to handle messages", || {
        round += 1;
        let batch: Vec<Input> =
            (0..4).flat_map(|p| (0..10).map(move |i| Input::to(p, "k", format!("r{round}-{p}-{i}")))).collect();
        produced += 40;
        let (kafka, topic, pool, group) = (kafka, &topic, &pool, &group);
        async move {
            produce(&kafka.client_config(), topic, batch).await?;
            Ok((by_instance(pool, group).await?.len() == 2).then_some(()))
        }
    })
    .await?;
    wait_until(WAIT, "every message handled", || async {
        Ok((effect_counts(&pool, &group).await?.0 == produced).then_some(()))
    })
    .await?;
    ensure_group_protocol(kafka, &group, protocol, 2)?;
    a.stop().await?;
    b.stop().await?;

    assert_eq!(effect_counts(&pool, &group).await?, (produced, produced), "a message was handled twice");
    let shares = by_instance(&pool, &group).await?;
    assert!(shares.iter().all(|(_, n)| *n > 0), "one instance did nothing: {shares:?}");
    Ok(())
}

/// Two groups, speaking `protocol`, each handle every message of a topic once.
async fn publish_subscribe(protocol: GroupProtocol) -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("pubsub", 3).await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let records: Vec<Input> =
        (0..3).flat_map(|p| (0..50).map(move |i| Input::to(p, "k", format!("e-{p}-{i}")))).collect();
    produce(&kafka.client_config(), &topic, records).await?;

    let (billing, audit) = (unique("billing"), unique("audit"));
    let subscriber = |group: &str, instance: &str| {
        let mut recorder = Recorder::new(&topic, group, instance);
        recorder.delivery = Delivery::PublishSubscribe;
        recorder
    };
    let start = |group: &str, instance: &str| {
        Running::start(kafka, builder(&database.url).group_protocol(protocol).handler(subscriber(group, instance)))
    };
    let x = start(&billing, "x").await?;
    let y = start(&audit, "y").await?;
    for group in [&billing, &audit] {
        wait_until(WAIT, "each subscriber to handle all 150", || async {
            Ok((effect_counts(&pool, group).await?.0 == 150).then_some(()))
        })
        .await?;
    }
    for group in [&billing, &audit] {
        ensure_group_protocol(kafka, group, protocol, 1)?;
    }
    x.stop().await?;
    y.stop().await?;
    assert_eq!(effect_counts(&pool, &billing).await?, (150, 150));
    assert_eq!(effect_counts(&pool, &audit).await?, (150, 150));
    Ok(())
}
