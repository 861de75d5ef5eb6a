//! The transactional outbox: a Database-mode handler writes effects and emits records in
//! one PostgreSQL transaction; the relay publishes each record to Kafka exactly once, in
//! per-key order, even when it is killed at random points.

use std::process::Child;
use std::time::Duration;

use exactly_integration_tests::copy_check::{keyed_inputs, verify_copy};
use exactly_integration_tests::faults::{Effects, FaultRun, Positions, check_and_report, high_watermarks};
use exactly_integration_tests::recorder::{Recorder, create_effects_table, effect_counts};
use exactly_integration_tests::support::{Running, builder, signal, spawn_logged};
use exactly_integration_tests::{
    Input, Isolation, Kafka, Postgres, TestDatabase, produce, read_to_end, unique, wait_until,
};
use rand::Rng;

const WAIT: Duration = Duration::from_secs(180);

async fn wait_for_records(kafka: &Kafka, topic: &str, expected: usize) -> anyhow::Result<()> {
    wait_until(WAIT, &format!("{expected} records on {topic}"), || async {
        let records = read_to_end(kafka.client_config(), topic, Isolation::ReadCommitted, WAIT).await?;
        anyhow::ensure!(records.len() <= expected, "{} records for {expected} outbox rows", records.len());
        Ok((records.len() == expected).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_and_emitted_records_each_land_exactly_once() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("in", 3).await?, kafka.unique_topic("out", 3).await?);
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let inputs = keyed_inputs(600, 15);
    produce(&kafka.client_config(), &input, inputs.clone()).await?;

    let group = unique("outbox");
    let mut recorder = Recorder::new(&input, &group, "a");
    recorder.emit_to = Some(output.clone());
    let running = Running::start(kafka, builder(&database.url).outbox_relay(unique("relay")).handler(recorder)).await?;
    wait_for_records(kafka, &output, 600).await?;
    wait_until(WAIT, "the outbox to be emptied", || async {
        Ok((exactly::outbox::backlog(&pool).await? == 0).then_some(()))
    })
    .await?;
    running.stop().await?;

    assert_eq!(effect_counts(&pool, &group).await?, (600, 600));
    let verdict = verify_copy(kafka, &output, &inputs).await?;
    verdict.assert_exactly_once(600);
    Ok(())
}

fn spawn_relay(kafka: &Kafka, url: &str, name: &str, positions: &str, log: &std::path::Path) -> anyhow::Result<Child> {
    spawn_relay_with(kafka, url, name, positions, log, &[])
}

fn spawn_relay_with(
    kafka: &Kafka,
    url: &str,
    name: &str,
    positions: &str,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Child> {
    spawn_logged(env!("CARGO_BIN_EXE_relay"), &[&kafka.bootstrap_servers(), url, name, positions], env, log)
}

/// The relay leading now: the application name of the session holding a relay's lock.
async fn relay_leader(pool: &sqlx::PgPool) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT activity.application_name::text FROM pg_locks locks \
         JOIN pg_stat_activity activity ON activity.pid = locks.pid \
         WHERE locks.locktype = 'advisory' AND locks.granted AND activity.datname = current_database()",
    )
    .fetch_optional(pool)
    .await?)
}

/// How long a frozen leader keeps the lead in the test below.
const LEADER_TIMEOUT_MS: &str = "5000";

/// Two relay processes; the one leading is frozen with SIGSTOP while writers fill the
/// outbox. The server ends its silent session after the leader timeout, which frees the
/// lock, and the other relay leads and publishes the rest while the first stays frozen;
/// resumed, the first is fenced. Without that bound the outbox would wait for the frozen
/// leader (or, were its host lost, for TCP to give up on it, hours later).
/// What a relay test starts from: an output topic of its own, a positions topic for the
/// relay, and a database of its own with exactly's tables.
struct RelayBed {
    kafka: &'static Kafka,
    output: String,
    positions: String,
    database: TestDatabase,
    pool: sqlx::PgPool,
}

impl RelayBed {
    /// With an output topic of `partitions` partitions.
    async fn new(partitions: i32) -> anyhow::Result<Self> {
        let kafka = Kafka::shared().await?;
        let output = kafka.unique_topic("out", partitions).await?;
        let positions = kafka.unique_topic("positions", 1).await?;
        let database = Postgres::shared().await?.database().await?;
        let pool = database.pool().await?;
        exactly::migrate(&pool).await?;
        Ok(Self { kafka, output, positions, database, pool })
    }
}

/// Waits until the outbox has no record left to publish.
async fn outbox_emptied(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    wait_until(WAIT, "the outbox emptied", || async { Ok((exactly::outbox::backlog(pool).await? == 0).then_some(())) })
        .await
}

/// The fault suite's shared check of one relay fault: each of `inputs` published to
/// `output` once, in key order, and the outbox drained; and the fault's row, with the
/// time it took to recover.
async fn check_published_once(
    kafka: &Kafka,
    pool: &sqlx::PgPool,
    output: &str,
    inputs: &[Input],
    fault: &str,
    recovery: Duration,
) -> anyhow::Result<()> {
    let run = FaultRun {
        kafka: kafka.client_config(),
        inputs,
        effects: Effects::Records { topic: output },
        positions: Positions::OutboxDrained { pool },
    };
    check_and_report(fault, "outbox", 1, vec![recovery], &run).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_frozen_while_it_leads_hands_the_lead_over_and_each_record_is_published_once() -> anyhow::Result<()> {
    let RelayBed { kafka, output, positions, database, pool } = RelayBed::new(2).await?;
    let name = unique("relay");
    let log = |instance: &str| std::env::temp_dir().join(format!("{name}-{instance}.log"));
    let env = [("EXACTLY_TEST_RELAY_LEADER_TIMEOUT_MS", LEADER_TIMEOUT_MS)];
    let spawn = |instance: &str| {
        let url = format!("{}?application_name={instance}", database.url);
        spawn_relay_with(kafka, &url, &name, &positions, &log(instance), &env)
    };
    let mut relays = vec![spawn("relay-a")?, spawn("relay-b")?];
    let inputs = keyed_inputs(400, 10);
    let outcome = async {
        enqueue_all(&pool, &output, &inputs[..200]).await?;
        wait_for_records(kafka, &output, 200).await?;
        let leader = wait_until(WAIT, "a relay leading", || relay_leader(&pool)).await?;
        let frozen = usize::from(leader == "relay-b");
        signal(&relays[frozen], "STOP")?;
        let since = std::time::Instant::now();
        enqueue_all(&pool, &output, &inputs[200..]).await?;
        wait_for_records(kafka, &output, 400).await?;
        let took = since.elapsed();
        let now = relay_leader(&pool).await?;
        anyhow::ensure!(now.as_deref() != Some(leader.as_str()), "{leader}, frozen, still holds the lock");
        signal(&relays[frozen], "CONT")?;
        // Resumed, it finds its session ended and its producer fenced; it must publish nothing again.
        tokio::time::sleep(Duration::from_secs(5)).await;
        outbox_emptied(&pool).await?;
        anyhow::Ok(took)
    }
    .await;
    for relay in &mut relays {
        signal(relay, "CONT")?;
        signal(relay, "INT")?;
        relay.wait()?;
    }
    let took = outcome.map_err(|e| anyhow::anyhow!("{e:#}\nrelay output in {}", log("*").display()))?;
    let fault = "the leading relay frozen (SIGSTOP), its lock held past the 5 s leader timeout";
    check_published_once(kafka, &pool, &output, &inputs, fault, took).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_twenty_times_publishes_each_record_once_in_key_order() -> anyhow::Result<()> {
    let RelayBed { kafka, output, positions, database, pool } = RelayBed::new(4).await?;

    // Writers keep filling the outbox while the relay is killed again and again: each
    // transaction enqueues a few records, two writers at once (so commits interleave).
    let inputs = keyed_inputs(4_000, 40);
    let writers: Vec<_> = [0, 1]
        .into_iter()
        .map(|writer| {
            let (pool, output) = (pool.clone(), output.clone());
            // Writer 0 owns even keys, writer 1 odd ones: per-key order is each writer's order.
            let mine: Vec<_> = inputs
                .iter()
                .filter(|i| i.key.as_ref().is_some_and(|k| (k.last().copied().unwrap_or(0) % 2) as usize == writer))
                .cloned()
                .collect();
            tokio::spawn(async move {
                for chunk in mine.chunks(7) {
                    let mut tx = pool.begin().await?;
                    for input in chunk {
                        let record = exactly::Output::to(&output)
                            .key(input.key.clone().unwrap_or_default())
                            .payload(input.payload.clone());
                        exactly::outbox::enqueue(&mut tx, &record).await?;
                    }
                    tx.commit().await?;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                anyhow::Ok(())
            })
        })
        .collect();

    let name = unique("relay");
    let log = std::env::temp_dir().join(format!("{name}.log"));
    for _ in 0..20 {
        let mut child = spawn_relay(kafka, &database.url, &name, &positions, &log)?;
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(300..2000))).await;
        child.kill()?; // SIGKILL, maybe mid-transaction
        child.wait()?;
    }
    for writer in writers {
        writer.await??;
    }
    let mut child = spawn_relay(kafka, &database.url, &name, &positions, &log)?;
    let finished = wait_for_records(kafka, &output, inputs.len()).await;
    signal(&child, "INT")?;
    child.wait()?;
    finished.map_err(|e| anyhow::anyhow!("{e:#}\nrelay output in {}", log.display()))?;

    let verdict = verify_copy(kafka, &output, &inputs).await?;
    verdict.assert_exactly_once(4_000);
    Ok(())
}

/// Enqueues one outbox record per input, to `topic`, a few per transaction.
async fn enqueue_all(pool: &sqlx::PgPool, topic: &str, inputs: &[Input]) -> anyhow::Result<()> {
    for chunk in inputs.chunks(5) {
        let mut tx = pool.begin().await?;
        for input in chunk {
            let record =
                exactly::Output::to(topic).key(input.key.clone().unwrap_or_default()).payload(input.payload.clone());
            exactly::outbox::enqueue(&mut tx, &record).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// The relay's database connection falls silent mid-run, as when its server goes away
/// without closing it (a failover, a host that lost power): it is never answered again.
/// The relay gives it up after its deadline, reconnects, and publishes the rest, each
/// record once. Without the deadline it would wait on that connection for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_database_connection_falls_silent_reconnects_and_publishes_the_rest() -> anyhow::Result<()> {
    let RelayBed { kafka, output, positions, database, pool } = RelayBed::new(2).await?;
    let proxy = exactly_integration_tests::pg_proxy::PgProxy::in_front_of(&database.url).await?;
    let relay_pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(10))
        .connect(&proxy.url(&database.url)?)
        .await?;
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = std::sync::Arc::clone(&errors);
    let relay = exactly::outbox::Relay::new(unique("relay"), kafka.bootstrap_servers(), relay_pool)
        .positions_topic(&positions)
        .on_error(move |error| seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(error.to_string()))
        .start()
        .await?;

    let inputs = keyed_inputs(200, 10);
    enqueue_all(&pool, &output, &inputs[..100]).await?;
    wait_for_records(kafka, &output, 100).await?;
    // Published so far, as offsets (records and transaction markers), to see it move.
    let published = || -> anyhow::Result<i64> {
        Ok(high_watermarks(kafka.client_config(), &output, "read_committed")?.iter().map(|(_, end)| end).sum())
    };
    let before = published()?;
    proxy.silence_open_connections();
    let silenced = std::time::Instant::now();
    enqueue_all(&pool, &output, &inputs[100..]).await?;
    // Recovery: from the silence until the relay publishes again.
    let moved = wait_until(WAIT, "the relay publishing again", || async {
        Ok((published()? > before).then_some(silenced.elapsed()))
    })
    .await;
    let finished = wait_for_records(kafka, &output, 200).await;
    let drained = outbox_emptied(&pool).await;
    // A relay stuck on its connection would not stop either.
    let stopped = tokio::time::timeout(Duration::from_secs(60), relay.stop()).await;
    let errors = errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let recovery = moved.map_err(|e| anyhow::anyhow!("{e:#}; the relay reported: {errors:?}"))?;
    finished.and(drained).map_err(|e| anyhow::anyhow!("{e:#}; the relay reported: {errors:?}"))?;
    stopped.map_err(|_| anyhow::anyhow!("the relay did not stop within 60 s"))??;

    assert!(
        errors.iter().any(|e| e.contains("did not answer within")),
        "the relay went on without noticing its silent connection; it reported: {errors:?}"
    );
    // Fault 13 of the fault suite: the shared check, and its row.
    let fault = "the relay's database connection falls silent (never answered, no reset)";
    check_published_once(kafka, &pool, &output, &inputs, fault, recovery).await
}
