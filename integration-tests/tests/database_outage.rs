//! PostgreSQL killed and restarted while the runtime processes: batches fail and are
//! reported, nothing is skipped, and once the database is back every message is applied
//! exactly once.

use std::time::Duration;

use exactly_integration_tests::recorder::{Recorder, create_effects_table, effect_counts};
use exactly_integration_tests::support::{Running, builder};
use exactly_integration_tests::{Input, Kafka, Postgres, produce, unique, wait_until};

const WAIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_loses_nothing_and_doubles_nothing() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("outage", 3).await?;
    let server = Postgres::dedicated().await?;
    let database = server.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let group = unique("outage");
    let first: Vec<Input> =
        (0..3).flat_map(|p| (0..100).map(move |i| Input::to(p, "k", format!("a-{p}-{i}")))).collect();
    produce(&kafka.client_config(), &topic, first).await?;

    let running = Running::start(kafka, builder(&database.url).handler(Recorder::new(&topic, &group, "a"))).await?;
    wait_until(WAIT, "some progress", || async { Ok((effect_counts(&pool, &group).await?.0 >= 30).then_some(())) })
        .await?;
    server.node().kill().await?;
    let second: Vec<Input> =
        (0..3).flat_map(|p| (0..100).map(move |i| Input::to(p, "k", format!("b-{p}-{i}")))).collect();
    produce(&kafka.client_config(), &topic, second).await?;
    let reported = running.reported.clone();
    wait_until(WAIT, "the outage to be reported", || async { Ok((reported.count("database") > 0).then_some(())) })
        .await?;
    server.node().start_again().await?;
    server.wait_ready(Duration::from_secs(60)).await?;

    wait_until(WAIT, "all 600 messages applied", || async {
        Ok((effect_counts(&pool, &group).await?.0 == 600).then_some(()))
    })
    .await?;
    running.stop().await?;
    assert_eq!(effect_counts(&pool, &group).await?, (600, 600));
    Ok(())
}
