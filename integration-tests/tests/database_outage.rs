//! PostgreSQL killed and restarted, or falling silent, while the runtime processes:
//! batches fail and are reported, nothing is skipped, and once the database answers again
//! every message is applied exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use exactly_integration_tests::faults::{FaultRun, check_and_report};
use exactly_integration_tests::pg_proxy::PgProxy;
use exactly_integration_tests::recorder::{Hold, Recorder, create_effects_table, effect_counts};
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

/// The database falls silent in the middle of a batch, as when its server or the network
/// goes away without closing the connection (a failover, a host that lost power): the
/// batch's connection is never answered again. The partition gives the batch up after the
/// transaction deadline, redoes it on a new connection, and goes on; every message is
/// applied once. Without the deadline the partition would wait on that connection for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_falls_silent_mid_batch_is_given_up_at_the_deadline_and_nothing_is_lost() -> anyhow::Result<()>
{
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("silent", 2).await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let proxy = PgProxy::in_front_of(&database.url).await?;
    let group = unique("silent");
    let payload = |batch: &str, p: i32, i: i32| {
        if (batch, p, i) == ("a", 0, 50) { "held".to_owned() } else { format!("{batch}-{p}-{i}") }
    };
    let inputs = |batch: &'static str| -> Vec<Input> {
        (0..2).flat_map(|p| (0..100).map(move |i| Input::to(p, "k", payload(batch, p, i)))).collect()
    };
    produce(&kafka.client_config(), &topic, inputs("a")).await?;
    // The handler stops at `held`, inside its batch's transaction, until the gate opens.
    let hold = Arc::new(Hold {
        payloads: vec!["held".to_owned()],
        gate: tokio::sync::Semaphore::new(0),
        waiting: AtomicUsize::new(0),
    });
    let mut recorder = Recorder::new(&topic, &group, "a");
    recorder.hold = Some(Arc::clone(&hold));
    let runtime =
        builder(&proxy.url(&database.url)?).database_transaction_timeout(Duration::from_secs(5)).handler(recorder);
    let running = Running::start(kafka, runtime).await?;
    wait_until(WAIT, "the handler to hold `held` inside its transaction", || async {
        Ok((hold.waiting.load(Ordering::SeqCst) > 0).then_some(()))
    })
    .await?;

    proxy.silence_open_connections();
    let silenced = std::time::Instant::now();
    hold.gate.add_permits(1_000);
    produce(&kafka.client_config(), &topic, inputs("b")).await?;
    let reported = running.reported.clone();
    // Recovery: from the silence until the batch it caught is committed, on a new connection.
    let held_batch_done = wait_until(WAIT, "the held batch committed", || async {
        let held: i64 =
            sqlx::query_scalar("SELECT count(*) FROM effects WHERE payload = 'held'").fetch_one(&pool).await?;
        Ok((held > 0).then_some(silenced.elapsed()))
    })
    .await;
    let applied = wait_until(WAIT, "all 400 messages applied", || async {
        Ok((effect_counts(&pool, &group).await?.0 == 400).then_some(()))
    })
    .await;
    let recovery = held_batch_done.and_then(|recovery| applied.map(|()| recovery));
    let recovery = recovery.map_err(|e| anyhow::anyhow!("{e:#}; the runtime reported: {:?}", reported.all()))?;
    tokio::time::timeout(Duration::from_secs(60), running.stop())
        .await
        .map_err(|_| anyhow::anyhow!("the runtime did not stop within 60 s"))??;

    assert!(
        reported.count("did not finish within 5s") > 0,
        "the stuck batch was not reported as past its deadline: {:?}",
        reported.all()
    );
    // Fault 14 of the fault suite: the shared check, and its row.
    let all: Vec<Input> = [inputs("a"), inputs("b")].concat();
    let run = FaultRun::database(kafka.client_config(), &all, &pool, &group, &topic);
    let fault = "a batch's database connection falls silent mid-transaction";
    check_and_report(fault, "Database", 1, vec![recovery], &run).await?;
    Ok(())
}
