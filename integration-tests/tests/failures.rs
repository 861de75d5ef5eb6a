//! Failure handling in Database mode: a bad message inside a batch is isolated (the good
//! ones commit once), panics are caught and reported, permanent errors skip the retries,
//! serialization failures and deadlocks are retried without counting as attempts; every
//! failed message lands in the dead letters in the transaction that moves past it.

use std::time::Duration;

use exactly::{Batch, RetryPolicy};
use exactly_integration_tests::recorder::{Recorder, TransientErrors, effect_counts};
use exactly_integration_tests::support::{Running, builder, topic_and_database};
use exactly_integration_tests::{Input, Isolation, produce, read_to_end, unique, wait_until};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(120);

async fn dead_letters(pool: &PgPool, group: &str) -> anyhow::Result<Vec<(i64, i32, String)>> {
    Ok(sqlx::query_as(
        "SELECT message_offset, attempts, error FROM exactly.dead_letters WHERE group_id = $1 ORDER BY message_offset",
    )
    .bind(group)
    .fetch_all(pool)
    .await?)
}

async fn wait_for_position(pool: &PgPool, group: &str, topic: &str, next: i64) -> anyhow::Result<()> {
    wait_until(WAIT, &format!("position {next}"), || async {
        Ok((exactly::offsets::position(pool, group, topic, 0).await? == Some(next)).then_some(()))
    })
    .await
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy::default().max_attempts(3).initial_backoff(Duration::from_millis(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_message_in_a_batch_is_isolated_and_the_good_ones_commit_once() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    let records: Vec<Input> =
        (0..200).map(|i| Input::to(0, "k", if i == 77 { "poison".to_owned() } else { format!("m-{i}") })).collect();
    produce(&kafka.client_config(), &topic, records).await?;
    let group = unique("isolate");
    let mut recorder = Recorder::new(&topic, &group, "a");
    recorder.fail_on = vec!["poison".into()];
    let batch = Batch::default().max_records(50).max_wait(Duration::from_millis(200));
    let running = Running::start(kafka, builder(&url).batch(batch).retry(quick_retries()).handler(recorder)).await?;
    wait_for_position(&pool, &group, &topic, 200).await?;
    running.stop().await?;

    assert_eq!(effect_counts(&pool, &group).await?, (199, 199), "a good message was lost or applied twice");
    let dead = dead_letters(&pool, &group).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].0, dead[0].1), (77, 3), "{dead:?}");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM effects WHERE group_id = $1 AND message_offset > 77")
        .bind(&group)
        .fetch_one(&pool)
        .await?;
    assert_eq!(after, 122, "the partition goes on past the dead letter");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_and_deadlocks_are_retried_without_counting_as_attempts() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    let records: Vec<Input> = (0..40).map(|i| Input::to(0, "k", format!("m-{i}"))).collect();
    produce(&kafka.client_config(), &topic, records).await?;
    let group = unique("transient");
    let transient = std::sync::Arc::new(TransientErrors {
        payloads: vec![("m-5".into(), "40001"), ("m-20".into(), "40P01")],
        times: 4,
        ..TransientErrors::default()
    });
    let mut recorder = Recorder::new(&topic, &group, "a");
    recorder.transient = Some(transient.clone());
    // One attempt only: a failure that counted as an attempt would be dead-lettered at once.
    let retry = RetryPolicy::default().max_attempts(1).initial_backoff(Duration::from_millis(20));
    let batch = Batch::default().max_records(10).max_wait(Duration::from_millis(200));
    let running = Running::start(kafka, builder(&url).batch(batch).retry(retry).handler(recorder)).await?;
    wait_for_position(&pool, &group, &topic, 40).await?;
    let reported = running.reported.clone();
    running.stop().await?;

    assert_eq!(effect_counts(&pool, &group).await?, (40, 40), "every message applied once, the retried ones too");
    assert_eq!(dead_letters(&pool, &group).await?, vec![], "a transient error is never a dead letter");
    for payload in ["m-5", "m-20"] {
        assert_eq!(transient.calls(payload), 5, "{payload}: four transient failures, then success");
    }
    let simulated = reported.all().into_iter().filter(|e| e.contains("simulated")).count();
    assert_eq!(simulated, 8, "each transient failure reported once: {:?}", reported.all());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_caught_reported_and_the_runtime_goes_on() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    let records: Vec<Input> =
        (0..30).map(|i| Input::to(0, "k", if i == 10 { "panic".to_owned() } else { format!("m-{i}") })).collect();
    produce(&kafka.client_config(), &topic, records).await?;
    let group = unique("panic");
    let mut recorder = Recorder::new(&topic, &group, "a");
    recorder.panic_on = vec!["panic".into()];
    let running = Running::start(kafka, builder(&url).retry(quick_retries()).handler(recorder)).await?;
    wait_for_position(&pool, &group, &topic, 30).await?;
    let reported = running.reported.clone();
    running.stop().await?;

    assert_eq!(effect_counts(&pool, &group).await?, (29, 29));
    let panics =
        reported.all().into_iter().filter(|e| e.starts_with("handler failed") && e.contains("panicked")).count();
    // Each of its 3 attempts alone panicked and was reported (and maybe tries in a batch before).
    assert!(panics >= 3, "each attempt's panic reported: {:?}", reported.all());
    assert!(
        reported.all().iter().any(|e| e.contains("partition 0 offset 10")
            && e.contains("cannot stand payload panic")
            && e.contains("panicked at integration-tests/src/recorder.rs:")),
        "the report says where it panicked: {:?}",
        reported.all()
    );
    let dead = dead_letters(&pool, &group).await?;
    assert_eq!((dead.len(), dead[0].0, dead[0].1), (1, 10, 3), "{dead:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_goes_to_the_dead_letters_without_retries() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    let records: Vec<Input> =
        (0..20).map(|i| Input::to(0, "k", if i == 4 { "invalid".to_owned() } else { format!("m-{i}") })).collect();
    produce(&kafka.client_config(), &topic, records).await?;
    let group = unique("permanent");
    let mut recorder = Recorder::new(&topic, &group, "a");
    recorder.permanent_on = vec!["invalid".into()];
    let running = Running::start(kafka, builder(&url).retry(quick_retries()).handler(recorder)).await?;
    wait_for_position(&pool, &group, &topic, 20).await?;
    running.stop().await?;
    assert_eq!(effect_counts(&pool, &group).await?, (19, 19));
    let dead = dead_letters(&pool, &group).await?;
    assert_eq!((dead.len(), dead[0].0, dead[0].1), (1, 4, 1), "{dead:?}");
    assert!(dead[0].2.contains("can never be processed"), "{dead:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_redriven_exactly_once() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    let records: Vec<Input> = (0..10)
        .map(|i| Input::to(0, "k", if i % 3 == 0 { format!("invalid-{i}") } else { format!("m-{i}") }))
        .collect();
    produce(&kafka.client_config(), &topic, records).await?;
    let group = unique("redrive");
    let mut strict = Recorder::new(&topic, &group, "a");
    strict.permanent_on = (0..10).filter(|i| i % 3 == 0).map(|i| format!("invalid-{i}")).collect();
    let running = Running::start(kafka, builder(&url).retry(quick_retries()).handler(strict)).await?;
    wait_for_position(&pool, &group, &topic, 10).await?;
    running.stop().await?;
    let letters = exactly::dead_letters::list(&pool, &group).await?;
    assert_eq!(letters.iter().map(|l| l.offset).collect::<Vec<_>>(), vec![0, 3, 6, 9]);
    assert_eq!(effect_counts(&pool, &group).await?, (6, 6));

    // The rule is fixed; two operators re-drive the same letters at the same moment.
    let fixed = Recorder::new(&topic, &group, "redrive");
    let ids: Vec<i64> = letters.iter().map(|l| l.id).collect();
    let (first, second) = tokio::join!(
        exactly::dead_letters::redrive(&pool, &fixed, &ids),
        exactly::dead_letters::redrive(&pool, &fixed, &ids)
    );
    let (first, second) = (first?, second?);
    assert_eq!(first.handled.len() + second.handled.len(), 4, "{first:?} {second:?}");
    assert_eq!(first.gone.len() + second.gone.len(), 4, "{first:?} {second:?}");
    assert_eq!(effect_counts(&pool, &group).await?, (10, 10), "a re-driven letter was applied twice");
    assert!(exactly::dead_letters::list(&pool, &group).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_go_to_a_kafka_topic_through_the_outbox_with_the_handlers_retry_policy() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    let dead = kafka.unique_topic("dlt", 1).await?;
    let records: Vec<Input> =
        (0..20).map(|i| Input::to(0, "k", if i == 6 { "poison".to_owned() } else { format!("m-{i}") })).collect();
    produce(&kafka.client_config(), &topic, records).await?;
    let group = unique("dlt");
    let mut recorder = Recorder::new(&topic, &group, "a");
    recorder.fail_on = vec!["poison".into()];
    recorder.dead_letter_topic = Some(dead.clone());
    // The handler's policy (2 attempts) wins over the runtime's (10).
    recorder.retry = Some(quick_retries().max_attempts(2));
    let runtime = builder(&url).retry(quick_retries().max_attempts(10)).outbox_relay(unique("relay"));
    let running = Running::start(kafka, runtime.handler(recorder)).await?;
    wait_for_position(&pool, &group, &topic, 20).await?;
    let letters = wait_until(WAIT, "the dead letter on its topic", || async {
        let letters = read_to_end(kafka.client_config(), &dead, Isolation::ReadCommitted, WAIT).await?;
        Ok((!letters.is_empty()).then_some(letters))
    })
    .await?;
    running.stop().await?;

    assert_eq!(effect_counts(&pool, &group).await?, (19, 19));
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].payload.as_deref(), Some(&b"poison"[..]));
    assert_eq!(letters[0].header("exactly.attempts").as_deref(), Some("2"), "{letters:?}");
    assert_eq!(letters[0].header("exactly.offset").as_deref(), Some("6"));
    assert_eq!(letters[0].header("exactly.group").as_deref(), Some(group.as_str()));
    assert!(dead_letters(&pool, &group).await?.is_empty(), "not in the table as well");
    Ok(())
}
