//! Fault 12 of the fault suite, in a test binary of its own (so no other test's threads or
//! sockets are counted): runtimes started, fenced and stopped over and over in one process
//! leave no producer, thread, file descriptor or database connection behind.

use std::time::Duration;

use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::faults::{FaultRun, Profile, check_and_report};
use exactly_integration_tests::recorder::{Recorder, create_effects_table};
use exactly_integration_tests::support::{Running, builder};
use exactly_integration_tests::{Input, Kafka, Postgres, produce, unique, wait_until};
use rdkafka::producer::{BaseProducer, Producer};

const WAIT: Duration = Duration::from_secs(120);

fn count_entries(dir: &str) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(dir)?.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_and_restart_cycles_leak_nothing() -> anyhow::Result<()> {
    let profile = Profile::current();
    let cycles = profile.pick(8, 50);
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("leak-in", 2).await?, kafka.unique_topic("leak-out", 2).await?);
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let name = database.url.rsplit('/').next().unwrap_or_default().to_owned();
    let (copy_group, record_group, transactional_id) = (unique("leak-copy"), unique("leak-record"), unique("leak-tx"));
    let connections = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .fetch_one(&pool)
            .await?;
        anyhow::Ok(n)
    };
    let (mut baseline, mut last) = (None, None);
    let mut recovery = Vec::new();
    // Payloads `k{i}:{seq}`, seq growing per key across cycles, so the check sees key order.
    let cycle_inputs = |cycle: usize, phase: usize, count: i32| -> Vec<Input> {
        (0..count).map(|i| Input::to(i % 2, format!("k{i}"), format!("k{i}:{}", 2 * cycle + phase))).collect()
    };
    let mut inputs = Vec::new();
    for cycle in 1..=cycles {
        let runtime = builder(&database.url)
            .transactional_id(&transactional_id)
            .handler(Copier::new(&input, &output, &copy_group))
            .handler(Recorder::new(&input, &record_group, "a"));
        let running = Running::start(kafka, runtime).await?;
        let records = cycle_inputs(cycle, 0, 50);
        inputs.extend(records.iter().cloned());
        produce(&kafka.client_config(), &input, records).await?;
        // Every earlier cycle recorded 60 records (50, then 10 after the fence).
        let target = 60 * (cycle as i64 - 1) + 50;
        let rows = || async {
            let n: i64 = exactly_integration_tests::recorder::effect_rows(&pool, &record_group).await?;
            anyhow::Ok(n)
        };
        wait_until(WAIT, "the cycle's records recorded", || async { Ok((rows().await? >= target).then_some(())) })
            .await?;
        // Fence the copier's producer: another one takes its transactional id.
        let fenced = std::time::Instant::now();
        let fencer: BaseProducer = kafka.client_config().set("transactional.id", &transactional_id).create()?;
        fencer.init_transactions(Duration::from_secs(30))?;
        drop(fencer);
        let more = cycle_inputs(cycle, 1, 10);
        inputs.extend(more.iter().cloned());
        produce(&kafka.client_config(), &input, more).await?;
        let target = target + 10;
        let copies = || async {
            let copies = exactly_integration_tests::committed_records(kafka.client_config(), &output).await?;
            anyhow::Ok(copies.len() as i64)
        };
        wait_until(WAIT, "copying again after the fence", || async {
            Ok((copies().await? >= target && rows().await? >= target).then_some(()))
        })
        .await?;
        recovery.push(fenced.elapsed());
        running.stop().await?;
        // Closing is asynchronous on the server side: give it a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = (count_entries("/proc/self/task")?, count_entries("/proc/self/fd")?, connections().await?);
        if cycle == 3 {
            baseline = Some(now);
        }
        if cycle == cycles {
            last = Some(now);
        }
    }
    let (Some((threads, fds, conns)), Some(now)) = (baseline, last) else {
        anyhow::bail!("fewer than 3 cycles ran");
    };
    let report = format!(
        "after {cycles} cycles: threads {} (cycle 3: {threads}), fds {} (cycle 3: {fds}), connections {} (cycle 3: {conns})",
        now.0, now.1, now.2
    );
    let fault = format!("fence-and-restart cycles in one process ({report})");
    let record = FaultRun::database(kafka.client_config(), &inputs, &pool, &record_group, &input);
    check_and_report(fault.as_str(), "Database", cycles, recovery.clone(), &record).await?;
    let copy = FaultRun::kafka_mode(kafka.client_config(), &inputs, &input, &output, &copy_group);
    check_and_report(fault, "Kafka", cycles, recovery, &copy).await?;
    assert!(now.0 <= threads + 4, "threads leak: {report}");
    assert!(now.1 <= fds + 8, "file descriptors leak: {report}");
    assert!(now.2 <= conns, "database connections leak: {report}");
    Ok(())
}
