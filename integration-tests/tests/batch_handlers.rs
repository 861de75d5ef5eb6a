//! Batch handlers (issue 23) keep the guarantee per-message handlers keep, against a real
//! broker and a real PostgreSQL: each input's effect exactly once under SIGKILLs and
//! failpoints (Database mode with a binary `COPY`, Kafka mode), under group churn and a
//! frozen zombie; a failing message inside a batch is found (by bisection, or where the
//! handler names it), retried alone and dead-lettered while the rest commit once; an
//! undecodable message never reaches the handler; key parking is refused; a batch
//! handler's dead letter is re-driven once. Every test also shows that batches of more than
//! one message were really handed over, so none of it passes on batches of one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use exactly::dead_letters::redrive_batch;
use exactly::{Batch, RetryPolicy};
use exactly_integration_tests::batch_recorder::{BatchCall, BatchLog, BatchRecorder, Statement};
use exactly_integration_tests::both_modes::{BothModes, PARTITIONS};
use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::copy_check::keyed_inputs;
use exactly_integration_tests::faults::{
    CopierKillLoop, FaultRun, KAFKA_FAILPOINTS, Profile, check_and_report, feed_by_lives, kill_loop, kill_plan,
};
use exactly_integration_tests::recorder::{Recorder, effect_counts, effect_rows};
use exactly_integration_tests::support::{Reported, Running, builder, signal, spawn_logged, topic_and_database};
use exactly_integration_tests::{Input, Kafka, produce, unique, wait_until};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(240);

/// Records per slice of input (as `feed_by_lives` sends them).
const SLICE: usize = 100;

/// Slices of input each worker life of the Database-mode kill loop adds.
const SLICES_PER_LIFE: usize = 6;

/// `count` values over `partitions` partitions, as the fault suite makes them.
fn values(count: usize, partitions: i32) -> Vec<Input> {
    (0..count).map(|i| Input::to(i as i32 % partitions, format!("k{}", i % 97), format!("v-{i}"))).collect()
}

/// The most `effects` rows one transaction of `group` wrote. A worker that runs only the
/// batch recorder writes one transaction's rows in one call, so more than one means a call
/// was given more than one message.
async fn largest_transaction(pool: &PgPool, group: &str) -> anyhow::Result<i64> {
    let largest: Option<i64> = sqlx::query_scalar(
        "SELECT max(written)
           FROM (SELECT count(*) AS written FROM effects WHERE group_id = $1 GROUP BY txid) AS per_txid",
    )
    .bind(group)
    .fetch_one(pool)
    .await?;
    Ok(largest.unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_batch_handler_killed_at_twenty_random_points_and_failpoints() -> anyhow::Result<()> {
    let profile = Profile::current();
    let partitions = 4;
    let (kafka, topic, url, pool) = topic_and_database(partitions).await?;
    exactly::migrate(&pool).await?;
    // At least 20 random kills in either profile (the issue asks for 20 or more).
    let random_kills = profile.pick(20, 60);
    let plan = kill_plan(random_kills, &["db.before_commit", "db.after_commit"], profile.pick(1, 10));
    let count = (plan.len() + 1) * SLICES_PER_LIFE * SLICE;
    let inputs = values(count, partitions);
    let lives = Arc::new(AtomicUsize::new(0));
    let feeder =
        feed_by_lives(kafka.client_config(), topic.clone(), inputs.clone(), plan.len() + 1, Arc::clone(&lives), None);

    let group = unique("batch-faults-db");
    let log = std::env::temp_dir().join(format!("{group}.log"));
    let brokers = kafka.bootstrap_servers();
    let spawn = |env: &[(&str, &str)]| {
        lives.fetch_add(1, Ordering::SeqCst);
        let mut env = env.to_vec();
        env.push(("EXACTLY_TEST_BATCH", "copy"));
        spawn_logged(env!("CARGO_BIN_EXE_recorder-worker"), &[&brokers, &url, &topic, &group], &env, &log)
    };
    let progress = || async {
        let rows: i64 = effect_rows(&pool, &group).await?;
        Ok(rows as u64)
    };
    let outcome = kill_loop(&plan, &log, spawn, progress, count as u64, WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\nworker output in {}", log.display()))?;
    feeder.await??;

    let fault = format!("batch handler (COPY), SIGKILL at random points and failpoints ({})", outcome.fired_text());
    let run = FaultRun::database(kafka.client_config(), &inputs, &pool, &group, &topic);
    check_and_report(fault, "Database", outcome.kills, outcome.recovery.clone(), &run).await?;
    outcome.ensure_enough_landed(&plan)?;
    let random_landed = outcome.kills - outcome.fired;
    anyhow::ensure!(random_landed >= 20, "only {random_landed} random SIGKILLs landed; the issue asks for 20 or more");
    let worker_output = std::fs::read_to_string(&log)?;
    assert!(worker_output.contains("batch recorder:"), "the workers never handed a batch of more than one over");
    assert!(largest_transaction(&pool, &group).await? > 1, "no transaction held more than one message's rows");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_copier_killed_at_random_points_and_failpoints() -> anyhow::Result<()> {
    let profile = Profile::current();
    let inputs = keyed_inputs(profile.pick(4_000, 40_000), 40);
    let run = CopierKillLoop {
        copier: env!("CARGO_BIN_EXE_copier"),
        inputs: &inputs,
        partitions: 4,
        plan: kill_plan(profile.pick(5, 50), &KAFKA_FAILPOINTS, profile.pick(1, 10)),
        env: &[("EXACTLY_TEST_BATCH", "1")],
        instance: Some("copier-1"),
    };
    let finished = run
        .run(|outcome| format!("batch handler, SIGKILL at random points and failpoints ({})", outcome.fired_text()))
        .await?;
    assert!(finished.log.contains("batch copier:"), "the copiers never handed a batch of more than one over");
    Ok(())
}

/// Fault 3 with batch handlers: instances (each a batch recorder and a batch copier) go 1,
/// 2, 3, 2, 1, `rounds` times, with `strategy` assignment, while input flows.
async fn batch_churn(strategy: &str, label: &str) -> anyhow::Result<()> {
    let rounds = Profile::current().pick(1, 5);
    let run = BothModes::new().await?;
    let transactional_id = unique("batch-group-tx");
    let (recorded, copied) = (Arc::new(BatchLog::default()), Arc::new(AtomicUsize::new(0)));
    let start = |instance: String| {
        let mut recorder = BatchRecorder::new(&run.input, &run.record_group, &instance, Statement::Unnest);
        recorder.log = Arc::clone(&recorded);
        let mut copier = Copier::new(&run.input, &run.output, &run.copy_group);
        copier.largest_batch = Arc::clone(&copied);
        let runtime = builder(&run.url)
            .kafka_setting("partition.assignment.strategy", strategy)
            .transactional_id(format!("{transactional_id}-{instance}"))
            .batch_handler(copier)
            .batch_handler(recorder);
        Running::start(run.kafka, runtime)
    };
    let fault = format!("batch handlers (UNNEST), group churn 1→3→1, {label} assignment");
    run.churn_and_check(&fault, rounds, start, async || Ok(())).await?;
    assert!(recorded.largest() > 1, "the recorders were never given more than one message at once");
    assert!(copied.load(Ordering::SeqCst) > 1, "the copiers were never given more than one message at once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_handlers_under_group_churn_with_eager_assignment() -> anyhow::Result<()> {
    batch_churn("range", "eager (range)").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_handlers_under_group_churn_with_cooperative_assignment() -> anyhow::Result<()> {
    batch_churn("cooperative-sticky", "cooperative").await
}

/// Fault 4 with batch handlers: two processes per mode, each a batch handler; one of each
/// is frozen with SIGSTOP for twice its 6 s session timeout, then resumed, `rounds` times.
/// The resumed zombies must not commit anything for the partitions they lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_handler_frozen_past_its_session_timeout_comes_back_as_a_zombie() -> anyhow::Result<()> {
    let rounds = Profile::current().pick(1, 4);
    let run = BothModes::new().await?;
    let brokers = run.kafka.bootstrap_servers();
    let log = |name: &str| std::env::temp_dir().join(format!("{}-{name}.log", run.record_group));
    let recorder = |instance: &str| {
        spawn_logged(
            env!("CARGO_BIN_EXE_recorder-worker"),
            &[&brokers, &run.url, &run.input, &run.record_group],
            &[("EXACTLY_TEST_INSTANCE", instance), ("EXACTLY_TEST_BATCH", "unnest")],
            &log(instance),
        )
    };
    let copier = |instance: &str| {
        spawn_logged(
            env!("CARGO_BIN_EXE_copier"),
            &[&brokers, &run.input, &run.output, &run.copy_group, &format!("{}-{instance}", run.copy_group), instance],
            &[("COPIER_DELAY_MS", "2"), ("EXACTLY_TEST_BATCH", "1")],
            &log(instance),
        )
    };
    let (inputs, feed) = run.feed();
    let mut processes =
        vec![recorder("recorder-a")?, recorder("recorder-b")?, copier("copier-a")?, copier("copier-b")?];
    let outcome = async {
        // Both of each pair in the group first: a process frozen before it joined would
        // never time out of it.
        run.settled(2).await?;
        let at_zero = (vec![0; PARTITIONS as usize], vec![0; PARTITIONS as usize]);
        run.wait_both_moved("the processes starting", &at_zero).await?;
        let mut recovery = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which process of each pair freezes.
            let (recorder, copier) = if round % 2 == 0 { (0, 2) } else { (1, 3) };
            signal(&processes[recorder], "STOP")?;
            signal(&processes[copier], "STOP")?;
            let frozen = std::time::Instant::now();
            run.recover(&format!("round {round}: taking over from the frozen"), frozen, 1, &mut recovery).await?;
            tokio::time::sleep(Duration::from_secs(12).saturating_sub(frozen.elapsed())).await;
            signal(&processes[recorder], "CONT")?;
            signal(&processes[copier], "CONT")?;
            let resumed = std::time::Instant::now();
            let mut ignored = (Vec::new(), Vec::new());
            run.recover(&format!("round {round}: after the zombies resumed"), resumed, 2, &mut ignored).await?;
        }
        let produced = feed.finish().await?;
        let fault = "batch handlers (UNNEST), SIGSTOP past the session timeout, then SIGCONT";
        run.check(fault, rounds, &inputs[..produced], recovery).await
    }
    .await;
    for process in &mut processes {
        signal(process, "CONT")?;
        signal(process, "TERM")?;
        process.wait()?;
    }
    outcome.map_err(|e| anyhow::anyhow!("{e:#}\nprocess logs: {}", log("*").display()))?;
    let read = |name: &str| std::fs::read_to_string(log(name)).unwrap_or_default();
    let (copiers, recorders) = (read("copier-a") + &read("copier-b"), read("recorder-a") + &read("recorder-b"));
    assert!(copiers.contains("session timed out"), "no copier was ever fenced out of the group");
    assert!(copiers.contains("batch copier:"), "no copier was given more than one message at once");
    assert!(recorders.contains("batch recorder:"), "no recorder was given more than one message at once");
    Ok(())
}

/// Where the poison is among the messages of the poison tests, and how many there are.
const POISON: i64 = 1_234;
const MESSAGES: i64 = 2_000;

/// Tries of a failing message before it is dead-lettered, in the poison tests.
const ATTEMPTS: u32 = 2;

/// Failed calls a batch of 500 can take to bisect down to one message: one per size from
/// 500 down to 2 (500, 250, 125, 63, 32, 16, 8, 4, 2), that is ceil(log2(500)).
const HALVINGS_OF_500: usize = 9;

/// Runs `recorder` alone (batches of up to 500, gathered for up to a second) until the
/// stored position of partition 0 of `topic` reaches `end`; returns what it reported.
async fn run_to_the_end(
    kafka: &Kafka,
    url: &str,
    pool: &PgPool,
    topic: &str,
    recorder: BatchRecorder,
    end: i64,
) -> anyhow::Result<Reported> {
    let group = recorder.group.clone();
    let batch = Batch::default().max_records(500).max_wait(Duration::from_secs(1));
    let running = Running::start(kafka, builder(url).batch(batch).batch_handler(recorder)).await?;
    let reported = running.reported.clone();
    let at_end = wait_until(WAIT, &format!("the position at {end}"), || async {
        Ok((exactly::offsets::position(pool, &group, topic, 0).await? == Some(end)).then_some(()))
    })
    .await;
    running.stop().await?;
    at_end.map_err(|e| anyhow::anyhow!("{e:#}\nreported: {:?}", reported.all()))?;
    Ok(reported)
}

/// 2 000 messages on one partition, the one at [`POISON`] refused every time, recorded
/// with `COPY` by a batch recorder that names the failing message (`name_index`) or not.
/// Checks what both ways must give: the rest once each, in order, the poison alone in the
/// dead letters after its tries, each try counted only when it was alone. Returns the
/// sizes of the calls that failed, in order.
async fn poison_in_a_batch(name_index: bool) -> anyhow::Result<Vec<usize>> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    let payload = |i: i64| if i == POISON { format!("fail-{i}") } else { format!("m-{i}") };
    let inputs: Vec<Input> = (0..MESSAGES).map(|i| Input::to(0, format!("k{}", i % 10), payload(i))).collect();
    produce(&kafka.client_config(), &topic, inputs.clone()).await?;
    let group = unique("batch-poison");
    let mut recorder = BatchRecorder::new(&topic, &group, "a", Statement::Copy);
    recorder.name_index = name_index;
    recorder.retry = Some(RetryPolicy::default().max_attempts(ATTEMPTS).initial_backoff(Duration::from_millis(10)));
    let log = Arc::clone(&recorder.log);
    let reported = run_to_the_end(kafka, &url, &pool, &topic, recorder, MESSAGES).await?;

    let rest: Vec<Input> = inputs.into_iter().filter(|input| !input.payload.starts_with(b"fail-")).collect();
    let verdict = FaultRun::database(kafka.client_config(), &rest, &pool, &group, &topic).check().await?;
    assert!(verdict.problems().is_empty(), "the rest, once each and in order: {:?}", verdict.problems());
    assert_eq!(effect_counts(&pool, &group).await?, (MESSAGES - 1, MESSAGES - 1), "effects lost or doubled");
    let dead: Vec<(i64, i32)> =
        sqlx::query_as("SELECT message_offset, attempts FROM exactly.dead_letters WHERE group_id = $1")
            .bind(&group)
            .fetch_all(&pool)
            .await?;
    assert_eq!(dead, vec![(POISON, ATTEMPTS as i32)], "the poison alone, dead-lettered once after its tries");
    assert_eq!(reported.count("dead-lettered"), 1, "{:?}", reported.all());

    let calls = log.calls();
    let failed_alone: Vec<&BatchCall> = calls.iter().filter(|call| call.failed && call.size() == 1).collect();
    assert!(failed_alone.iter().all(|call| call.offsets == [POISON]), "another message failed alone: {failed_alone:?}");
    assert_eq!(failed_alone.len(), ATTEMPTS as usize, "its tries are its failures alone, and only those");
    assert!(log.largest() > 1, "no batch of more than one was handed over");
    // One message at a time after the failure would take hundreds of calls.
    assert!(calls.len() <= 60, "{} calls for 2 000 messages in batches of 500", calls.len());
    let single = calls.iter().filter(|call| call.size() == 1).count();
    assert!(single <= 6, "{single} calls on one message: the batch went one by one");
    Ok(log.failed_sizes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_in_a_batch_is_found_by_bisection_and_dead_lettered_alone() -> anyhow::Result<()> {
    let failed = poison_in_a_batch(false).await?;
    let in_batches: Vec<usize> = failed.iter().copied().filter(|size| *size > 1).collect();
    assert!(
        (2..=HALVINGS_OF_500).contains(&in_batches.len()),
        "failed calls on more than one message: {failed:?} (bisection takes 2 to {HALVINGS_OF_500})"
    );
    assert!(
        in_batches.windows(2).all(|pair| pair[1] <= pair[0].div_ceil(2)),
        "each failed batch must be at most half the one before: {failed:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_named_by_the_batch_handler_is_isolated_without_bisection() -> anyhow::Result<()> {
    let failed = poison_in_a_batch(true).await?;
    // Named where its batch met it, then (if others followed it) once more at the head of
    // the rest: never halved.
    let in_batches = failed.iter().filter(|size| **size > 1).count();
    assert!((1..=2).contains(&in_batches), "failed calls on more than one message: {failed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_never_reaches_the_batch_handler() -> anyhow::Result<()> {
    const COUNT: i64 = 300;
    const UNDECODABLE: i64 = 150;
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    let not_utf8 = vec![0xc3, 0x28];
    let inputs: Vec<Input> = (0..COUNT)
        .map(|i| Input::to(0, "k", if i == UNDECODABLE { not_utf8.clone() } else { format!("m-{i}").into_bytes() }))
        .collect();
    produce(&kafka.client_config(), &topic, inputs.clone()).await?;
    let group = unique("batch-undecodable");
    let recorder = BatchRecorder::new(&topic, &group, "a", Statement::Unnest);
    let log = Arc::clone(&recorder.log);
    let reported = run_to_the_end(kafka, &url, &pool, &topic, recorder, COUNT).await?;

    let rest: Vec<Input> = inputs.into_iter().filter(|input| input.payload != not_utf8).collect();
    let verdict = FaultRun::database(kafka.client_config(), &rest, &pool, &group, &topic).check().await?;
    assert!(verdict.problems().is_empty(), "the rest, once each and in order: {:?}", verdict.problems());
    assert_eq!(effect_counts(&pool, &group).await?, (COUNT - 1, COUNT - 1), "effects lost or doubled");
    let dead: Vec<(i64, String)> =
        sqlx::query_as("SELECT message_offset, error FROM exactly.dead_letters WHERE group_id = $1")
            .bind(&group)
            .fetch_all(&pool)
            .await?;
    assert!(
        matches!(dead.as_slice(), [(UNDECODABLE, error)] if error.starts_with("cannot decode")),
        "the undecodable message alone, dead-lettered as such: {dead:?}"
    );
    assert_eq!(reported.count("dead-lettered"), 1, "{:?}", reported.all());
    assert!(!log.saw(0, UNDECODABLE), "the batch handler was given the undecodable message");
    assert!(log.failed_sizes().is_empty(), "a batch failed: the message was not kept out of it");
    let across = log.calls().into_iter().filter(|call| {
        call.offsets.first().is_some_and(|first| *first < UNDECODABLE)
            && call.offsets.last().is_some_and(|last| *last > UNDECODABLE)
    });
    assert_eq!(across.count(), 0, "a batch reached past the undecodable message");
    assert!(log.largest() > 1, "no batch of more than one was handed over");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_parking_for_a_batch_handler_is_refused_when_the_runtime_is_built() -> anyhow::Result<()> {
    let (kafka, topic, url, _pool) = topic_and_database(1).await?;
    let group = unique("batch-parking");
    let built =
        |handler: BatchRecorder| builder(&url).brokers(kafka.bootstrap_servers()).batch_handler(handler).build();
    let mut parking = BatchRecorder::new(&topic, &group, "a", Statement::Unnest);
    parking.key_parking = true;
    match built(parking).await {
        Err(exactly::Error::Config(message)) => {
            assert!(message.contains("key parking does not apply to a batch handler"), "unclear refusal: {message}")
        }
        other => panic!("key parking with a batch handler was not refused as a configuration error: {other:?}"),
    }
    // The same batch handler without key parking, and a per-message handler with it, build.
    drop(built(BatchRecorder::new(&topic, &group, "a", Statement::Unnest)).await?);
    let mut per_message = Recorder::new(&topic, &group, "a");
    per_message.key_parking = true;
    drop(builder(&url).brokers(kafka.bootstrap_servers()).handler(per_message).build().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_handlers_dead_letter_is_redriven_exactly_once() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    produce(&kafka.client_config(), &topic, (0..20).map(|i| Input::to(0, "k", format!("m-{i}")))).await?;
    let group = unique("batch-redrive");
    let mut refusing = BatchRecorder::new(&topic, &group, "a", Statement::Copy);
    refusing.permanent_on = vec!["m-7".to_owned()];
    run_to_the_end(kafka, &url, &pool, &topic, refusing, 20).await?;
    assert_eq!(effect_counts(&pool, &group).await?, (19, 19), "all but m-7, once each");
    let dead: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, message_offset FROM exactly.dead_letters WHERE group_id = $1")
            .bind(&group)
            .fetch_all(&pool)
            .await?;
    let [(id, 7)] = dead.as_slice() else { anyhow::bail!("expected m-7 alone in the dead letters: {dead:?}") };
    let ids = [*id];

    // Fixed now, and re-driven twice at once: one re-drive handles it, the other finds it gone.
    let fixed = BatchRecorder::new(&topic, &group, "redrive", Statement::Copy);
    let (first, second) = tokio::join!(redrive_batch(&pool, &fixed, &ids), redrive_batch(&pool, &fixed, &ids));
    let (first, second) = (first?, second?);
    assert_eq!((first.handled.len() + second.handled.len(), first.gone.len() + second.gone.len()), (1, 1));
    assert!(first.failed.is_empty() && second.failed.is_empty(), "{first:?} {second:?}");
    assert_eq!(
        fixed.log.calls(),
        vec![BatchCall { partition: 0, offsets: vec![7], failed: false }],
        "handed to the batch handler once, as a batch of one"
    );
    assert_eq!(redrive_batch(&pool, &fixed, &ids).await?.gone, ids.to_vec(), "re-driven again: gone");
    assert_eq!(effect_counts(&pool, &group).await?, (20, 20), "every message once, m-7 included");
    let redriven: Vec<(i64, String)> =
        sqlx::query_as("SELECT message_offset, instance FROM effects WHERE group_id = $1 AND payload = 'm-7'")
            .bind(&group)
            .fetch_all(&pool)
            .await?;
    assert_eq!(redriven, vec![(7, "redrive".to_owned())], "m-7's effect, once, by the re-drive");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM exactly.dead_letters WHERE group_id = $1")
        .bind(&group)
        .fetch_one(&pool)
        .await?;
    assert_eq!(left, 0, "the dead letter was deleted with the re-drive");
    Ok(())
}
