//! The core runtime against real Kafka and PostgreSQL: positions stored with effects and
//! used on assignment, the start policy, batching, order, the concurrency bound, refused
//! settings, and bad input that stops a partition without skipping anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use exactly::{Batch, Error, RetryPolicy, Runtime, StartFrom};
use exactly_integration_tests::progress::wait_group_settled;
use exactly_integration_tests::recorder::{Hold, Recorder, effect_counts};
use exactly_integration_tests::support::{Running, assert_refused, builder, topic_and_database};
use exactly_integration_tests::{Input, produce, unique, wait_until};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(90);

/// partition, offset, payload, attempts, error
type DeadLetter = (i32, i64, Option<Vec<u8>>, i32, String);

fn inputs(partitions: i32, per_partition: usize, prefix: &str) -> Vec<Input> {
    (0..partitions)
        .flat_map(|p| (0..per_partition).map(move |i| Input::to(p, format!("k{}", i % 7), format!("{prefix}-{p}-{i}"))))
        .collect()
}

async fn wait_for_effects(pool: &PgPool, group: &str, expected: i64) -> anyhow::Result<()> {
    wait_until(WAIT, &format!("{expected} effects"), || async {
        let (total, _) = effect_counts(pool, group).await?;
        anyhow::ensure!(total <= expected, "more effects than messages: {total} > {expected}");
        Ok((total == expected).then_some(()))
    })
    .await
}

async fn positions(pool: &PgPool, group: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<Option<i64>>> {
    let mut out = Vec::new();
    for partition in 0..partitions {
        out.push(exactly::offsets::position(pool, group, topic, partition).await?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_applied_once_in_order_and_its_position_stored() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(3).await?;
    produce(&kafka.client_config(), &topic, inputs(3, 100, "m")).await?;
    let group = unique("g");

    let running = Running::start(kafka, builder(&url).handler(Recorder::new(&topic, &group, "a"))).await?;
    wait_for_effects(&pool, &group, 300).await?;
    running.stop().await?;

    assert_eq!(effect_counts(&pool, &group).await?, (300, 300));
    assert_eq!(positions(&pool, &group, &topic, 3).await?, vec![Some(100); 3]);

    // Kafka's committed offsets hold a copy, for lag tools.
    let observer: BaseConsumer = kafka.client_config().set("group.id", &group).create()?;
    let mut wanted = TopicPartitionList::new();
    for partition in 0..3 {
        wanted.add_partition(&topic, partition);
    }
    let committed = observer.committed_offsets(wanted, Duration::from_secs(10))?;
    let copies: Vec<Offset> = committed.elements().iter().map(|e| e.offset()).collect();
    assert_eq!(copies, vec![Offset::Offset(100); 3], "Kafka's copy of the positions");
    let rows: Vec<(i32, i64)> =
        sqlx::query_as("SELECT partition, message_offset FROM effects WHERE group_id = $1 ORDER BY seq")
            .bind(&group)
            .fetch_all(&pool)
            .await?;
    let mut last: HashMap<i32, i64> = HashMap::new();
    for (partition, offset) in rows {
        if let Some(previous) = last.insert(partition, offset) {
            assert_eq!(offset, previous + 1, "partition {partition}: offset {offset} applied after {previous}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignment_starts_from_postgres_not_from_kafka_committed_offsets() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(2).await?;
    let group = unique("g");
    produce(&kafka.client_config(), &topic, inputs(2, 40, "first")).await?;
    let running = Running::start(kafka, builder(&url).handler(Recorder::new(&topic, &group, "a"))).await?;
    wait_for_effects(&pool, &group, 80).await?;
    running.stop().await?;

    // Rewind Kafka's committed offsets of the group to 0: a runtime trusting Kafka would redo all.
    let rewinder: BaseConsumer = kafka.client_config().set("group.id", &group).create()?;
    let mut rewind = TopicPartitionList::new();
    for partition in 0..2 {
        rewind.add_partition_offset(&topic, partition, Offset::Offset(0))?;
    }
    rewinder.commit(&rewind, CommitMode::Sync)?;
    drop(rewinder);

    produce(&kafka.client_config(), &topic, inputs(2, 15, "second")).await?;
    let running = Running::start(kafka, builder(&url).handler(Recorder::new(&topic, &group, "b"))).await?;
    wait_for_effects(&pool, &group, 110).await?;
    running.stop().await?;
    assert_eq!(effect_counts(&pool, &group).await?, (110, 110), "messages were applied twice");
    assert_eq!(positions(&pool, &group, &topic, 2).await?, vec![Some(55); 2]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_without_a_position_starts_where_the_policy_says() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    produce(&kafka.client_config(), &topic, inputs(1, 50, "before")).await?;

    let latest = unique("latest");
    let running =
        Running::start(kafka, builder(&url).start_from(StartFrom::Latest).handler(Recorder::new(&topic, &latest, "a")))
            .await?;
    wait_until(WAIT, "the partition to be claimed", || async {
        Ok(exactly::offsets::position(&pool, &latest, &topic, 0).await?)
    })
    .await?;
    produce(&kafka.client_config(), &topic, inputs(1, 20, "after")).await?;
    wait_for_effects(&pool, &latest, 20).await?;
    running.stop().await?;
    let older: i64 = sqlx::query_scalar("SELECT count(*) FROM effects WHERE group_id = $1 AND payload LIKE 'before-%'")
        .bind(&latest)
        .fetch_one(&pool)
        .await?;
    assert_eq!(older, 0, "start_from(Latest) applied messages older than the first claim");

    let earliest = unique("earliest");
    let running = Running::start(kafka, builder(&url).handler(Recorder::new(&topic, &earliest, "b"))).await?;
    wait_for_effects(&pool, &earliest, 70).await?;
    running.stop().await?;
    assert_eq!(effect_counts(&pool, &earliest).await?, (70, 70));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_hold_many_messages_or_exactly_one_when_asked() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    produce(&kafka.client_config(), &topic, inputs(1, 400, "m")).await?;

    let batched = unique("batched");
    let batch = Batch::default().max_records(50).max_wait(Duration::from_millis(200));
    let running =
        Running::start(kafka, builder(&url).batch(batch).handler(Recorder::new(&topic, &batched, "a"))).await?;
    wait_for_effects(&pool, &batched, 400).await?;
    running.stop().await?;
    let (transactions, largest): (i64, i64) = sqlx::query_as(
        "SELECT count(*), max(n) FROM (SELECT count(*) AS n FROM effects WHERE group_id = $1 GROUP BY txid) t",
    )
    .bind(&batched)
    .fetch_one(&pool)
    .await?;
    assert!(largest <= 50, "a transaction held {largest} messages, over max_records 50");
    assert!(largest > 1 && transactions < 400, "no batching: {transactions} transactions for 400 messages");

    let single = unique("single");
    let running =
        Running::start(kafka, builder(&url).batch(Batch::single()).handler(Recorder::new(&topic, &single, "b")))
            .await?;
    wait_for_effects(&pool, &single, 400).await?;
    running.stop().await?;
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT txid) FROM effects WHERE group_id = $1")
        .bind(&single)
        .fetch_one(&pool)
        .await?;
    assert_eq!(transactions, 400, "Batch::single() must commit each message in its own transaction");
    Ok(())
}

/// Each Database-mode worker copies its position to Kafka's committed offsets, for lag
/// tools. One OffsetCommit per transaction, with one message per transaction, queued
/// thousands of requests ahead of the heartbeats on the coordinator's connection until the
/// session expired and the group rebalanced (benchmark S2 found it: a 49 s stall). The copy
/// is now made at most once a second per partition, and once more when the worker stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_per_transaction_keeps_the_group_session() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(8).await?;
    produce(&kafka.client_config(), &topic, inputs(8, 1000, "m")).await?;
    let group = unique("single-session");
    let builder = builder(&url)
        .batch(Batch::single())
        .kafka_setting("session.timeout.ms", "6000")
        .handler(Recorder::new(&topic, &group, "a"));
    let running = Running::start(kafka, builder).await?;
    wait_until(Duration::from_secs(300), "8000 effects", || async {
        Ok((effect_counts(&pool, &group).await?.0 == 8000).then_some(()))
    })
    .await?;
    let reported = running.reported.all();
    running.stop().await?;
    assert_eq!(effect_counts(&pool, &group).await?, (8000, 8000));
    let claimed_again: Vec<(i32, i64)> =
        sqlx::query_as("SELECT partition, epoch FROM exactly.offsets WHERE group_id = $1 AND epoch > 1")
            .bind(&group)
            .fetch_all(&pool)
            .await?;
    assert!(
        claimed_again.is_empty(),
        "partitions were claimed again, so the group rebalanced (session lost): {claimed_again:?}; reported: {reported:?}"
    );
    // The copy in Kafka still arrives: the last position of every partition.
    let observer: BaseConsumer = kafka.client_config().set("group.id", &group).create()?;
    let mut wanted = TopicPartitionList::new();
    for partition in 0..8 {
        wanted.add_partition(&topic, partition);
    }
    wait_until(WAIT, "Kafka's copy of the last positions", || {
        let committed = observer.committed_offsets(wanted.clone(), Duration::from_secs(10));
        async move {
            let offsets: Vec<Offset> = committed?.elements().iter().map(|e| e.offset()).collect();
            Ok((offsets == vec![Offset::Offset(1000); 8]).then_some(()))
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_run_concurrently_within_the_bound() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(4).await?;
    produce(&kafka.client_config(), &topic, inputs(4, 60, "m")).await?;
    for bound in [1, 3] {
        let group = unique("bound");
        // The first message of every partition holds its batch open inside its transaction
        // until released: `bound` of them held at once is concurrency observed, not timed.
        let firsts: Vec<String> = (0..4).map(|p| format!("m-{p}-0")).collect();
        let hold = Arc::new(Hold { payloads: firsts, gate: Semaphore::new(0), waiting: Default::default() });
        let mut recorder = Recorder::new(&topic, &group, "a");
        recorder.hold = Some(Arc::clone(&hold));
        let probe = recorder.clone();
        let batch = Batch::default().max_records(5);
        // Held batches must not be abandoned at the default 60 s deadline while they wait.
        let patient = builder(&url).database_transaction_timeout(Duration::from_secs(600));
        let running =
            Running::start(kafka, patient.batch(batch).max_concurrent_batches(bound).handler(recorder)).await?;
        wait_until(WAIT, &format!("{bound} batches held inside their transactions at once"), || async {
            Ok((hold.waiting.load(Ordering::SeqCst) >= bound).then_some(()))
        })
        .await?;
        hold.gate.add_permits(4);
        wait_for_effects(&pool, &group, 240).await?;
        running.stop().await?;
        assert_eq!(probe.max_in_flight(), bound, "bound {bound}: not reached, or exceeded");
        assert_eq!(effect_counts(&pool, &group).await?, (240, 240));
    }
    Ok(())
}

#[tokio::test]
async fn settings_that_break_the_guarantee_are_refused_with_a_reason() {
    for (key, value, reason) in [
        ("enable.auto.commit", "true", "auto-commit"),
        ("enable.auto.offset.store", "true", "never automatically"),
        ("isolation.level", "read_uncommitted", "may still abort"),
        ("auto.offset.reset", "earliest", "silently skip or replay"),
        ("group.id", "mine", "subscription"),
    ] {
        let outcome = Runtime::builder()
            .brokers("127.0.0.1:1")
            .database_url("postgres://nobody@127.0.0.1:1/none")
            .kafka_setting(key, value)
            .handler(Recorder::new("t", "g", "a"))
            .build()
            .await;
        assert_refused(outcome, key, value, reason);
    }
    let twice = Runtime::builder()
        .brokers("127.0.0.1:1")
        .database_url("postgres://nobody@127.0.0.1:1/none")
        .handler(Recorder::new("t", "same", "a"))
        .handler(Recorder::new("u", "same", "b"))
        .build()
        .await;
    assert!(matches!(twice, Err(Error::Config(ref m)) if m.contains("same")), "{twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_reported_with_its_location_and_dead_lettered_never_skipped() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(3).await?;
    let mut records = Vec::new();
    for i in 0..10 {
        // Partition 0: offset 5 is not UTF-8. Partition 1: the handler refuses offset 3.
        let p0: Vec<u8> = if i == 5 { vec![0xff, 0xfe, 0xfd] } else { format!("p0-{i}").into_bytes() };
        records.push(Input::to(0, "k", p0));
        records.push(Input::to(1, "k", if i == 3 { "poison".to_owned() } else { format!("p1-{i}") }));
        records.push(Input::to(2, "k", format!("p2-{i}")));
    }
    produce(&kafka.client_config(), &topic, records).await?;
    let group = unique("bad");
    let mut recorder = Recorder::new(&topic, &group, "a");
    recorder.fail_on = vec!["poison".into()];
    let retry = RetryPolicy::default().max_attempts(4).initial_backoff(Duration::from_millis(20));
    let running = Running::start(kafka, builder(&url).batch(Batch::single()).retry(retry).handler(recorder)).await?;
    wait_until(WAIT, "every partition past its bad message", || async {
        Ok((positions(&pool, &group, &topic, 3).await? == vec![Some(10); 3]).then_some(()))
    })
    .await?;
    let reported = running.reported.clone();
    running.stop().await?;

    let all = reported.all();
    assert!(
        all.iter()
            .any(|e| e.contains("cannot decode the payload")
                && e.contains(&format!("topic {topic} partition 0 offset 5"))),
        "decode failure not reported with its location: {all:?}"
    );
    let attempts = all.iter().filter(|e| e.starts_with("handler failed") && e.contains("partition 1 offset 3")).count();
    assert_eq!(attempts, 4, "4 attempts, each reported: {all:?}");
    assert_eq!(effect_counts(&pool, &group).await?, (28, 28), "everything else applied once");
    let dead: Vec<DeadLetter> = sqlx::query_as(
        "SELECT partition, message_offset, payload, attempts, error FROM exactly.dead_letters WHERE group_id = $1 ORDER BY partition",
    )
    .bind(&group)
    .fetch_all(&pool)
    .await?;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!((dead[0].0, dead[0].1, dead[0].2.as_deref(), dead[0].3), (0, 5, Some(&[0xff, 0xfe, 0xfd][..]), 1));
    assert!(dead[0].4.contains("cannot decode the payload"), "{dead:?}");
    assert_eq!((dead[1].0, dead[1].1, dead[1].2.as_deref(), dead[1].3), (1, 3, Some(&b"poison"[..]), 4));
    assert!(dead[1].4.contains("refusing payload poison"), "{dead:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_run_future_stops_the_consumers() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(2).await?;
    exactly::migrate(&pool).await?;
    let output = kafka.unique_topic("out", 2).await?;
    let (record_group, copy_group) = (unique("dropped-record"), unique("dropped-copy"));
    let relay_locks = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
            .fetch_one(&pool)
            .await?;
        anyhow::Ok(n)
    };
    let runtime = builder(&url)
        .brokers(kafka.bootstrap_servers())
        .transactional_id(unique("dropped-tx"))
        .outbox_relay(unique("dropped-relay"))
        .handler(Recorder::new(&topic, &record_group, "a"))
        .handler(exactly_integration_tests::copier::Copier::new(&topic, &output, &copy_group));
    // A tokio runtime of its own, shut down in the background at the end: were the
    // consumers left running, the test's own runtime would wait for them forever.
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let task = tokio.spawn(async move { runtime.build().await?.run_until(std::future::pending()).await });
    let outcome = async {
        for group in [&record_group, &copy_group] {
            wait_group_settled(kafka, group, 1, WAIT).await?;
        }
        wait_until(WAIT, "the outbox relay to take its lock", || async {
            Ok((relay_locks().await? == 1).then_some(()))
        })
        .await?;
        // Nobody calls shutdown: the future is dropped. Its consumers (on threads of their
        // own) must stop and leave their groups rather than run on unowned.
        task.abort();
        for group in [&record_group, &copy_group] {
            wait_group_settled(kafka, group, 0, WAIT).await?;
        }
        wait_until(WAIT, "the outbox relay to let go of its lock", || async {
            Ok((relay_locks().await? == 0).then_some(()))
        })
        .await?;
        anyhow::Ok(())
    }
    .await;
    tokio.shutdown_background();
    outcome
}
