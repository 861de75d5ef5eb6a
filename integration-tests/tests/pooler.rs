//! exactly behind PgBouncer (Debian's 1.18, in a container in front of a server of its own).
//!
//! In session mode a client keeps one server session for as long as it is connected, and
//! exactly works as it does on a direct connection: worker processes killed with SIGKILL at
//! random points and at the commit failpoints apply each message once. In transaction mode
//! a client's server session may change after every transaction; the runtime finds that out
//! when it is built and refuses it, saying why and what to configure instead. So does
//! statement mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use exactly::{Error, Runtime};
use exactly_integration_tests::faults::{FaultRun, Profile, check_and_report, feed_by_lives, kill_loop, kill_plan};
use exactly_integration_tests::progress::stored_positions;
use exactly_integration_tests::recorder::{Recorder, create_effects_table};
use exactly_integration_tests::support::spawn_logged;
use exactly_integration_tests::{Input, Kafka, unique};
use exactly_testkit::{PgBouncer, PoolMode};

const WAIT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_in_session_mode_workers_killed_at_random_points_apply_each_message_once() -> anyhow::Result<()>
{
    let profile = Profile::current();
    let partitions = 4;
    let pooler = PgBouncer::start(PoolMode::Session).await?;
    let database = pooler.postgres().database().await?;
    let direct = database.pool().await?;
    create_effects_table(&direct).await?;
    exactly::migrate(&direct).await?;
    let url = pooler.url(&database);
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("pooled", partitions).await?;
    let plan = kill_plan(profile.pick(8, 30), &["db.before_commit", "db.after_commit"], profile.pick(1, 5));
    let count = profile.pick(4_000, 20_000);
    let inputs: Vec<Input> = (0..count).map(|i| Input::to(i % partitions, format!("k{i}"), format!("m{i}"))).collect();
    let lives = Arc::new(AtomicUsize::new(0));
    let feeder =
        feed_by_lives(kafka.client_config(), topic.clone(), inputs.clone(), plan.len() + 1, Arc::clone(&lives), None);
    let group = unique("pooled");
    let log = std::env::temp_dir().join(format!("{group}.log"));
    let brokers = kafka.bootstrap_servers();
    let spawn = |env: &[(&str, &str)]| {
        lives.fetch_add(1, Ordering::SeqCst);
        spawn_logged(env!("CARGO_BIN_EXE_recorder-worker"), &[&brokers, &url, &topic, &group], env, &log)
    };
    let progress = || async {
        let positions = stored_positions(&direct, &group, &topic, partitions).await?;
        Ok(positions.iter().sum::<i64>() as u64)
    };
    let outcome = kill_loop(&plan, &log, spawn, progress, count as u64, WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\nworker output in {}", log.display()))?;
    feeder.await??;
    let fault =
        format!("behind PgBouncer (session mode): SIGKILL at random points and failpoints ({})", outcome.fired_text());
    let run = FaultRun::database(kafka.client_config(), &inputs, &direct, &group, &topic);
    check_and_report(fault, "Database", outcome.kills, outcome.recovery.clone(), &run).await?;
    outcome.ensure_enough_landed(&plan)?;
    // The workers' sessions went through the pooler, not around it.
    let worker_log = std::fs::read_to_string(&log)?;
    anyhow::ensure!(
        !worker_log.contains("do not keep their session"),
        "a worker refused session pooling:\n{worker_log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_in_transaction_mode_the_runtime_is_refused_when_built() -> anyhow::Result<()> {
    refused_behind(PoolMode::Transaction).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_in_statement_mode_the_runtime_is_refused_when_built() -> anyhow::Result<()> {
    refused_behind(PoolMode::Statement).await
}

/// Builds a Database-mode runtime behind PgBouncer in `mode`: it must be refused, saying
/// why and what to do, before it creates anything.
async fn refused_behind(mode: PoolMode) -> anyhow::Result<()> {
    let pooler = PgBouncer::start(mode).await?;
    let database = pooler.postgres().database().await?;
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("pooled", 1).await?;
    let built = Runtime::builder()
        .brokers(kafka.bootstrap_servers())
        .database_url(pooler.url(&database))
        .handler(Recorder::new(&topic, &unique("pooled"), "a"))
        .build()
        .await;
    let error = match built {
        Ok(_) => anyhow::bail!("a runtime was built behind PgBouncer in {mode:?} mode"),
        Err(error) => error,
    };
    let text = error.to_string();
    anyhow::ensure!(matches!(error, Error::SessionNotKept { .. }), "refused, but not for the pooler: {text}");
    for needed in ["between transactions", "pool_mode = session", "advisory lock"] {
        anyhow::ensure!(text.contains(needed), "the refusal does not say {needed:?}: {text}");
    }
    eprintln!("refused in {mode:?} mode: {text}");
    // Nothing was created: the check comes before the migrations.
    let direct = database.pool().await?;
    let schema: Option<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = 'exactly'")
        .fetch_optional(&direct)
        .await?;
    anyhow::ensure!(schema.is_none(), "the refused runtime created exactly's tables");
    Ok(())
}
