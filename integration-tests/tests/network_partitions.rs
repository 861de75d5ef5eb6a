//! Network partitions: both sides stay up, and nothing passes between them (packets
//! dropped in the container's network namespace, `Node::cut_off`), then the network heals.
//!
//! - PostgreSQL cut off from the workers while batches are in flight, for longer than their
//!   10 s transaction deadline, several times under a steady feed (Database mode).
//! - PostgreSQL cut off just as a worker sends `COMMIT`: the worker stops itself at the
//!   failpoint between its position update and its `COMMIT`, the server is cut off, the
//!   worker resumes and sends `COMMIT` into the void. Its outcome is unknown to the worker;
//!   the server ends the idle transaction (its `idle_in_transaction_session_timeout`) and the
//!   worker must find out, once the network heals, that nothing committed.
//! - The broker cut off from both modes' instances for longer than their 6 s session
//!   timeout, so the group drops them, then back.
//!
//! Each run ends with the shared check: every input's effect once (rows counted, no unique
//! constraint; records read `read_committed`), positions at the end. The broker of a
//! three-broker cluster cut off from its two peers while it leads partitions is in
//! `faults.rs`, with the other broker faults.

use std::process::Child;
use std::time::{Duration, Instant};

use exactly_integration_tests::both_modes::{BothModes, PARTITIONS};
use exactly_integration_tests::faults::{FaultRun, Profile, check_and_report};
use exactly_integration_tests::progress::{SteadyFeed, stored_positions};
use exactly_integration_tests::recorder::create_effects_table;
use exactly_integration_tests::support::{signal, spawn_logged};
use exactly_integration_tests::{Input, Kafka, Postgres, produce, unique, wait_until};
use exactly_testkit::{Store, caught_up};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(240);

/// The workers' transaction deadline, and so the server's limit on their idle transactions.
const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// How long each cut lasts: past the transaction deadline.
const CUT: Duration = Duration::from_secs(15);

const TOPIC_PARTITIONS: i32 = 4;

/// A dedicated server (the cut must not reach other tests), its database with the `effects`
/// table and exactly's, and a topic on the shared broker.
async fn setup(prefix: &str) -> anyhow::Result<(Postgres, String, PgPool, &'static Kafka, String)> {
    let server = Postgres::dedicated().await?;
    let database = server.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    exactly::migrate(&pool).await?;
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic(prefix, TOPIC_PARTITIONS).await?;
    Ok((server, database.url, pool, kafka, topic))
}

fn inputs(count: i32) -> Vec<Input> {
    (0..count).map(|i| Input::to(i % TOPIC_PARTITIONS, format!("k{i}"), format!("m{i}"))).collect()
}

/// Starts a `recorder-worker` named `instance` with the test's transaction deadline.
fn recorder(
    (kafka, url, topic, group): (&Kafka, &str, &str, &str),
    instance: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<Child> {
    let log = std::env::temp_dir().join(format!("{group}-{instance}.log"));
    let mut env =
        vec![("EXACTLY_TEST_INSTANCE", instance), ("EXACTLY_TEST_TRANSACTION_TIMEOUT_MS", TRANSACTION_TIMEOUT_MS)];
    env.extend_from_slice(extra);
    spawn_logged(env!("CARGO_BIN_EXE_recorder-worker"), &[&kafka.bootstrap_servers(), url, topic, group], &env, &log)
}

/// Messages stored as done so far, over every partition (the stored positions' sum). With
/// the server cut off it cannot be read: the caller reads it only when the network is whole.
async fn stored(pool: &PgPool, group: &str, topic: &str) -> anyhow::Result<i64> {
    Ok(stored_positions(pool, group, topic, TOPIC_PARTITIONS).await?.iter().sum())
}

/// Waits until more than `before` messages are stored; returns how long that took from `since`.
async fn moved_past(pool: &PgPool, group: &str, topic: &str, before: i64, since: Instant) -> anyhow::Result<Duration> {
    wait_until(WAIT, "the stored positions moving after the network healed", || async {
        Ok((stored(pool, group, topic).await? > before).then_some(()))
    })
    .await?;
    Ok(since.elapsed())
}

fn stop_all(processes: &mut [Child]) -> anyhow::Result<()> {
    for process in processes {
        signal(process, "CONT")?;
        signal(process, "TERM")?;
        process.wait()?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_off_while_batches_are_in_flight_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let rounds = Profile::current().pick(2, 6);
    let (server, url, pool, kafka, topic) = setup("pg-cut").await?;
    let group = unique("pg-cut");
    let names = (kafka, url.as_str(), topic.as_str(), group.as_str());
    let inputs = inputs(100_000);
    let feed = SteadyFeed::start(kafka.client_config(), topic.clone(), inputs.clone(), 40, Duration::from_millis(100));
    let mut processes = vec![recorder(names, "recorder-a", &[])?, recorder(names, "recorder-b", &[])?];
    let outcome = async {
        moved_past(&pool, &group, &topic, 0, Instant::now()).await?;
        let mut recovery = Vec::new();
        for round in 0..rounds {
            server.node().cut_off().await?;
            tokio::time::sleep(CUT).await;
            server.node().heal().await?;
            let healed = Instant::now();
            // What was stored before the cut (read once the network is whole: a batch whose
            // COMMIT reached the server just before the cut counts as before).
            let at_heal = stored(&pool, &group, &topic).await?;
            recovery.push(moved_past(&pool, &group, &topic, at_heal, healed).await?);
            eprintln!("round {round}: moving again {:.1} s after the network healed", recovery[round].as_secs_f64());
        }
        let produced = feed.finish().await?;
        caught_up(kafka, Store::Database(&pool), &group, &topic, WAIT).await?;
        anyhow::Ok((produced, recovery))
    }
    .await;
    stop_all(&mut processes)?;
    let (produced, recovery) = outcome.map_err(|e| {
        anyhow::anyhow!("{e:#}\nprocess logs: {}", std::env::temp_dir().join(format!("{group}-*.log")).display())
    })?;
    let logs: String = ["recorder-a", "recorder-b"]
        .iter()
        .map(|name| {
            std::fs::read_to_string(std::env::temp_dir().join(format!("{group}-{name}.log"))).unwrap_or_default()
        })
        .collect();
    anyhow::ensure!(logs.contains("did not finish within"), "no worker's database work ever met the cut");
    let run = FaultRun::database(kafka.client_config(), &inputs[..produced], &pool, &group, &topic);
    let fault = "PostgreSQL cut off (packets dropped) for 15 s, past the 10 s transaction deadline, batches in flight";
    check_and_report(fault, "Database", rounds, recovery, &run).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_off_during_commit_leaves_an_unknown_outcome_resolved_once() -> anyhow::Result<()> {
    let (server, url, pool, kafka, topic) = setup("pg-commit-cut").await?;
    let group = unique("pg-commit-cut");
    let names = (kafka, url.as_str(), topic.as_str(), group.as_str());
    let inputs = inputs(2_000);
    let (early, late) = inputs.split_at(1_000);
    produce(&kafka.client_config(), &topic, early.iter().cloned()).await?;
    let log = std::env::temp_dir().join(format!("{group}-recorder-a.log"));
    let stop_at_commit = [
        ("EXACTLY_FAILPOINT", "db.before_commit"),
        ("EXACTLY_FAILPOINT_HIT", "2"),
        ("EXACTLY_FAILPOINT_ACTION", "stop"),
    ];
    let mut processes = vec![recorder(names, "recorder-a", &stop_at_commit)?];
    let outcome = async {
        wait_until(WAIT, "the worker stopped before its COMMIT", || async {
            Ok(std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("db.before_commit reached: stopping")
                .then_some(()))
        })
        .await?;
        let before = stored(&pool, &group, &topic).await?;
        server.node().cut_off().await?;
        // Resumed, it sends COMMIT into the cut network.
        signal(&processes[0], "CONT")?;
        tokio::time::sleep(CUT).await;
        server.node().heal().await?;
        let healed = Instant::now();
        produce(&kafka.client_config(), &topic, late.iter().cloned()).await?;
        let took = moved_past(&pool, &group, &topic, before, healed).await?;
        caught_up(kafka, Store::Database(&pool), &group, &topic, WAIT).await?;
        anyhow::Ok(took)
    }
    .await;
    stop_all(&mut processes)?;
    let took = outcome.map_err(|e| anyhow::anyhow!("{e:#}\nprocess log: {}", log.display()))?;
    let worker = std::fs::read_to_string(&log)?;
    anyhow::ensure!(worker.contains("db.before_commit: resumed"), "the worker never resumed into the cut:\n{worker}");
    anyhow::ensure!(worker.contains("did not finish within"), "the worker's COMMIT never met the cut:\n{worker}");
    let run = FaultRun::database(kafka.client_config(), &inputs, &pool, &group, &topic);
    let fault = "PostgreSQL cut off as COMMIT is sent, for 15 s (outcome unknown to the worker)";
    check_and_report(fault, "Database", 1, vec![took], &run).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_cut_off_from_both_modes_past_their_session_timeout_loses_and_doubles_nothing() -> anyhow::Result<()>
{
    let rounds = Profile::current().pick(1, 3);
    // A broker of this test's own: the cut must not reach the tests on the shared one.
    static BROKER: tokio::sync::OnceCell<Kafka> = tokio::sync::OnceCell::const_new();
    let kafka = BROKER.get_or_try_init(Kafka::single).await?;
    let run = BothModes::on(kafka).await?;
    let brokers = kafka.bootstrap_servers();
    let log = |name: &str| std::env::temp_dir().join(format!("{}-{name}.log", run.record_group));
    let mut processes = vec![
        spawn_logged(
            env!("CARGO_BIN_EXE_recorder-worker"),
            &[&brokers, &run.url, &run.input, &run.record_group],
            &[("EXACTLY_TEST_INSTANCE", "recorder-a")],
            &log("recorder-a"),
        )?,
        spawn_logged(
            env!("CARGO_BIN_EXE_copier"),
            &[&brokers, &run.input, &run.output, &run.copy_group, &format!("{}-a", run.copy_group), "copier-a"],
            &[],
            &log("copier-a"),
        )?,
    ];
    let (inputs, feed) = run.feed();
    let outcome = async {
        run.settled(1).await?;
        let at_zero = (vec![0; PARTITIONS as usize], vec![0; PARTITIONS as usize]);
        run.wait_both_moved("the processes starting", &at_zero).await?;
        let mut recovery = (Vec::new(), Vec::new());
        for round in 0..rounds {
            kafka.broker(1).cut_off().await?;
            // Past the 6 s session timeout: the coordinator drops both members.
            tokio::time::sleep(Duration::from_secs(15)).await;
            kafka.broker(1).heal().await?;
            let healed = Instant::now();
            run.recover(&format!("round {round}: after the network healed"), healed, 1, &mut recovery).await?;
        }
        let produced = feed.finish().await?;
        run.check(
            "the broker cut off from the instances for 15 s, past the 6 s session timeout",
            rounds,
            &inputs[..produced],
            recovery,
        )
        .await
    }
    .await;
    stop_all(&mut processes)?;
    outcome.map_err(|e| anyhow::anyhow!("{e:#}\nprocess logs: {}", log("*").display()))?;
    let copier = std::fs::read_to_string(log("copier-a"))?;
    anyhow::ensure!(copier.contains("session timed out"), "the copier's session never timed out: the cut did not hold");
    Ok(())
}
