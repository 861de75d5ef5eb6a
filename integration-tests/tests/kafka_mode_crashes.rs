//! Kafka mode under crashes: a copy process killed with SIGKILL at 20 random points, and a
//! zombie (SIGSTOP past its session timeout, its partitions taken over, then SIGCONT; what
//! it had open aborts, reported as a fenced offset commit or as lost partitions), with keys
//! one at a time and with key-level concurrency. The output, read with read_committed,
//! holds each input exactly once, in order per key.

use std::process::Child;
use std::time::Duration;

use exactly_integration_tests::copy_check::{keyed_inputs, verify_copy};
use exactly_integration_tests::support::{signal, spawn_logged};
use exactly_integration_tests::{Isolation, Kafka, feed, read_to_end, unique, wait_until};
use rand::Rng;

const WAIT: Duration = Duration::from_secs(180);

struct Copy {
    kafka: Kafka,
    input: String,
    output: String,
    group: String,
}

impl Copy {
    async fn new(partitions: i32) -> anyhow::Result<Copy> {
        let kafka = Kafka::single().await?;
        let input = kafka.unique_topic("a", partitions).await?;
        let output = kafka.unique_topic("b", partitions).await?;
        Ok(Copy { kafka, input, output, group: unique("copy") })
    }

    /// A copier process; `log` collects its stderr.
    fn spawn(&self, transactional_id: &str, instance: &str, log: &std::path::Path) -> anyhow::Result<Child> {
        self.spawn_with(transactional_id, instance, log, &[])
    }

    /// A copier process with extra environment (`COPIER_DELAY_MS`, key concurrency).
    fn spawn_with(
        &self,
        transactional_id: &str,
        instance: &str,
        log: &std::path::Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Child> {
        let brokers = self.kafka.bootstrap_servers();
        let args = [brokers.as_str(), &self.input, &self.output, &self.group, transactional_id, instance];
        spawn_logged(env!("CARGO_BIN_EXE_copier"), &args, env, log)
    }

    async fn wait_for_copies(&self, expected: usize) -> anyhow::Result<()> {
        wait_until(WAIT, &format!("{expected} committed copies"), || async {
            let copies = read_to_end(self.kafka.client_config(), &self.output, Isolation::ReadCommitted, WAIT).await?;
            anyhow::ensure!(copies.len() <= expected, "{} copies of {expected} inputs", copies.len());
            Ok((copies.len() == expected).then_some(()))
        })
        .await
    }
}

fn terminate(child: &mut Child) -> anyhow::Result<()> {
    signal(child, "TERM")?;
    child.wait()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copier_killed_twenty_times_copies_each_record_once() -> anyhow::Result<()> {
    let copy = Copy::new(4).await?;
    let inputs = keyed_inputs(5_000, 40);
    let feeder = feed(copy.kafka.client_config(), copy.input.clone(), inputs.clone(), Duration::from_millis(500));
    let log = std::env::temp_dir().join(format!("{}.log", copy.group));
    let transactional_id = unique("copier");
    for _ in 0..20 {
        let mut child = copy.spawn(&transactional_id, "copier-1", &log)?;
        let lifetime = Duration::from_millis(rand::rng().random_range(300..2500));
        tokio::time::sleep(lifetime).await;
        child.kill()?; // SIGKILL, mid-transaction or not
        child.wait()?;
    }
    feeder.await??;
    let mut child = copy.spawn(&transactional_id, "copier-1", &log)?;
    let finished = copy.wait_for_copies(inputs.len()).await;
    terminate(&mut child)?;
    finished.map_err(|e| anyhow::anyhow!("{e:#}\ncopier output in {}", log.display()))?;

    let verdict = verify_copy(&copy.kafka, &copy.output, &inputs).await?;
    assert_eq!(verdict.records, inputs.len(), "{verdict:?}");
    assert_eq!((verdict.duplicates, verdict.missing, verdict.out_of_order), (0, 0, 0), "{verdict:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_resumed_after_its_partitions_moved_cannot_commit() -> anyhow::Result<()> {
    // Each record takes 20 ms, more than input arrives at: a backlog builds up, so a
    // transaction is open whenever A is frozen.
    zombie(&[("COPIER_DELAY_MS", "20")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_concurrent_zombie_resumed_after_its_partitions_moved_cannot_commit() -> anyhow::Result<()> {
    // Up to 8 keys of a partition at once, each record 200 ms: a window is always running,
    // its records held, when A is frozen.
    zombie(&[("COPIER_DELAY_MS", "200"), ("EXACTLY_TEST_KEY_CONCURRENCY", "8")]).await
}

/// Two copiers A and B with `env`; A is frozen past its session timeout while output flows,
/// its partitions move to B, and A is resumed: its late commit must not land.
async fn zombie(env: &[(&str, &str)]) -> anyhow::Result<()> {
    let copy = Copy::new(4).await?;
    let inputs = keyed_inputs(2_000, 40);
    let log_a = std::env::temp_dir().join(format!("{}-a.log", copy.group));
    let log_b = std::env::temp_dir().join(format!("{}-b.log", copy.group));
    let mut a = copy.spawn_with(&unique("tx-a"), "a", &log_a, env)?;
    let mut b = copy.spawn_with(&unique("tx-b"), "b", &log_b, env)?;
    let feeder = feed(copy.kafka.client_config(), copy.input.clone(), inputs.clone(), Duration::from_millis(200));

    // Once A copies (it has partitions and output is flowing), freeze it mid-stream for
    // longer than its 6 s session timeout.
    wait_until(WAIT, "A to own partitions while output flows", || async {
        let assigned = std::fs::read_to_string(&log_a).unwrap_or_default().contains("partition assigned");
        let copies = read_to_end(copy.kafka.client_config(), &copy.output, Isolation::ReadCommitted, WAIT).await?;
        Ok((assigned && copies.len() >= 200).then_some(()))
    })
    .await?;
    signal(&a, "STOP")?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    signal(&a, "CONT")?;

    feeder.await??;
    let finished = copy.wait_for_copies(inputs.len()).await;
    terminate(&mut a)?;
    terminate(&mut b)?;
    finished.map_err(|e| anyhow::anyhow!("{e:#}\nlogs: {} {}", log_a.display(), log_b.display()))?;

    let verdict = verify_copy(&copy.kafka, &copy.output, &inputs).await?;
    assert_eq!(verdict.records, inputs.len(), "{verdict:?}");
    assert_eq!((verdict.duplicates, verdict.missing, verdict.out_of_order), (0, 0, 0), "{verdict:?}");
    // It really was a zombie: its session expired while frozen and it had to rejoin. Which
    // side says so first depends on timing: librdkafka's own session timer ("session timed
    // out"), or the coordinator refusing its heartbeat, after which exactly reports its
    // partitions lost.
    let zombie = std::fs::read_to_string(&log_a)?;
    assert!(
        zombie.contains("session timed out") || zombie.contains("lost its partitions"),
        "A was never fenced out of the group:\n{zombie}"
    );
    Ok(())
}
