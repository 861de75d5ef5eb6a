//! A worker frozen inside a database transaction does not stall the partitions it loses.
//!
//! The worker is stopped (as by SIGSTOP) at the failpoint between its batch's position
//! update and its `COMMIT`: its transaction is open, idle, and holds the partition's row in
//! `exactly.offsets`, which the next owner's claim must lock. The runtime's transaction
//! timeout is kept by the client, which is frozen; what ends the transaction is the limit
//! the runtime sets on the server for each transaction it opens
//! (`idle_in_transaction_session_timeout`). Without it the other instance's claim waits for
//! as long as the frozen one stays stopped. Once resumed, the frozen worker's `COMMIT`
//! cannot land: the server has rolled its transaction back, and its claim is stale anyway.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use exactly_integration_tests::faults::{FaultRun, check_and_report};
use exactly_integration_tests::support::{signal, spawn_logged, topic_and_database};
use exactly_integration_tests::{Input, produce, unique, wait_until};
use exactly_testkit::{Store, caught_up};
use sqlx::PgPool;

/// The frozen worker's transaction timeout, and so the server's limit on its idle
/// transactions.
const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// How long the instance left may take, from the freeze, to store every position at the
/// end of the input: its partner's 6 s session runs out, the group rebalances, and the
/// server ends the frozen transaction 10 s after it went idle. Without that last bound, no
/// time is enough: the claim waits for the frozen worker.
const TAKEOVER: Duration = Duration::from_secs(60);

const WAIT: Duration = Duration::from_secs(120);

/// The frozen worker's name, in its log file and its database sessions.
const FROZEN: &str = "recorder-a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_between_its_position_update_and_its_commit_does_not_stall_the_partition() -> anyhow::Result<()>
{
    let (kafka, topic, url, pool) = topic_and_database(2).await?;
    exactly::migrate(&pool).await?;
    let group = unique("frozen-commit");
    let inputs: Vec<Input> = (0..2_000).map(|i| Input::to(i % 2, format!("k{i}"), format!("m{i}"))).collect();
    let (early, late) = inputs.split_at(1_000);
    produce(&kafka.client_config(), &topic, early.iter().cloned()).await?;
    let log = |name: &str| std::env::temp_dir().join(format!("{group}-{name}.log"));
    let brokers = kafka.bootstrap_servers();
    let spawn = |instance: &str, failpoint: &[(&str, &str)]| {
        let separator = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{separator}application_name={instance}");
        let mut env =
            vec![("EXACTLY_TEST_INSTANCE", instance), ("EXACTLY_TEST_TRANSACTION_TIMEOUT_MS", TRANSACTION_TIMEOUT_MS)];
        env.extend_from_slice(failpoint);
        spawn_logged(env!("CARGO_BIN_EXE_recorder-worker"), &[&brokers, &url, &topic, &group], &env, &log(instance))
    };
    // Its first batch commits; the second stops the process with its position row locked.
    let stop_at_second_commit = [
        ("EXACTLY_FAILPOINT", "db.before_commit"),
        ("EXACTLY_FAILPOINT_HIT", "2"),
        ("EXACTLY_FAILPOINT_ACTION", "stop"),
    ];
    let mut processes: Vec<Child> = vec![spawn(FROZEN, &stop_at_second_commit)?];
    let outcome = async {
        wait_until(WAIT, &format!("{FROZEN} stopped inside its commit"), || async {
            Ok(read(&log(FROZEN)).contains("failpoint db.before_commit reached: stopping").then_some(()))
        })
        .await?;
        let frozen = Instant::now();
        anyhow::ensure!(
            idle_in_transaction(&pool, FROZEN).await? > 0,
            "{FROZEN} stopped, but no transaction of it is open: the test would show nothing"
        );
        processes.push(spawn("recorder-b", &[])?);
        produce(&kafka.client_config(), &topic, late.iter().cloned()).await?;
        caught_up(kafka, Store::Database(&pool), &group, &topic, TAKEOVER)
            .await
            .map_err(|e| anyhow::anyhow!("with {FROZEN} frozen inside a transaction: {e:#}"))?;
        let took = frozen.elapsed();
        anyhow::ensure!(
            idle_in_transaction(&pool, FROZEN).await? == 0,
            "the partitions moved on, yet a transaction of the frozen {FROZEN} is still open"
        );
        // Resumed, its COMMIT meets a closed session; it must not apply anything again.
        signal(&processes[0], "CONT")?;
        wait_until(WAIT, &format!("{FROZEN} resumed"), || async {
            Ok(read(&log(FROZEN)).contains("failpoint db.before_commit: resumed").then_some(()))
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        anyhow::Ok(took)
    }
    .await;
    for process in &mut processes {
        signal(process, "CONT")?;
        signal(process, "TERM")?;
        process.wait()?;
    }
    let took = outcome.map_err(|e| anyhow::anyhow!("{e:#}\nprocess logs: {}", log("*").display()))?;
    eprintln!("every position at the end {:.1} s after {FROZEN} froze", took.as_secs_f64());
    let run = FaultRun::database(kafka.client_config(), &inputs, &pool, &group, &topic);
    let fault = "SIGSTOP between the position update and COMMIT, held past the transaction timeout";
    check_and_report(fault, "Database", 1, vec![took], &run).await?;
    Ok(())
}

/// How many sessions named `application` sit idle inside a transaction.
async fn idle_in_transaction(pool: &PgPool, application: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE application_name = $1 AND state = 'idle in transaction' AND datname = current_database()",
    )
    .bind(application)
    .fetch_one(pool)
    .await?)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
