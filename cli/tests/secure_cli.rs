//! The `exactly` tool against a broker that accepts only SASL over TLS and a PostgreSQL
//! that accepts only TLS (`sslmode=verify-full`): settings from `EXACTLY_RDKAFKA_*`
//! variables and from `-X`, the tool's own admin calls logging in with SCRAM-SHA-512 and
//! PLAIN over TLS, and a wrong password reported at once without being printed.

use std::process::Output;
use std::time::{Duration, Instant};

use exactly_integration_tests::kafka::Credentials;
use exactly_integration_tests::produce::hanging_transaction;
use exactly_integration_tests::recorder::{Recorder, create_effects_table, effect_rows};
use exactly_integration_tests::{Input, Kafka, Postgres, produce, unique, wait_until};
use rdkafka::producer::Producer;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

/// `sasl.password` -> `EXACTLY_RDKAFKA_SASL_PASSWORD` (the inverse of the tool's mapping).
fn env_name(key: &str) -> String {
    format!("EXACTLY_RDKAFKA_{}", key.replace('_', "__").replace('-', "___").replace('.', "_").to_uppercase())
}

/// Runs `exactly` with `args`, the brokers and database in the environment, and `settings`
/// as `EXACTLY_RDKAFKA_*` variables.
fn exactly(kafka: &Kafka, url: &str, settings: &[(String, String)], args: &[&str]) -> anyhow::Result<Output> {
    Ok(std::process::Command::new(env!("CARGO_BIN_EXE_exactly"))
        .args(args)
        .env("EXACTLY_BROKERS", kafka.bootstrap_servers())
        .env("EXACTLY_DATABASE_URL", url)
        .envs(settings.iter().map(|(k, v)| (env_name(k), v.clone())))
        .output()?)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> anyhow::Result<Value> {
    anyhow::ensure!(output.status.success(), "exactly failed: {}", stderr(output));
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn runtime(kafka: &Kafka, user: &Credentials, url: &str) -> anyhow::Result<exactly::RuntimeBuilder> {
    let mut builder = exactly::Runtime::builder()
        .brokers(kafka.bootstrap_servers())
        .database_url(url)
        .revoke_grace(Duration::from_secs(5));
    for (key, value) in kafka.client_settings(user)? {
        builder = builder.kafka_setting(key, value);
    }
    Ok(builder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_reads_positions_and_ends_over_tls_with_settings_from_the_environment() -> anyhow::Result<()> {
    let kafka = Kafka::secure_shared().await?;
    let user = kafka.add_scram_user(&unique("cli")).await?;
    let topic = kafka.unique_topic("cli-lag", 2).await?;
    let database = Postgres::tls_shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    let group = unique("cli-lag");
    let inputs = |n: usize, prefix: &str| -> Vec<Input> {
        (0..n).map(|i| Input::to(i as i32 % 2, format!("k{i}"), format!("{prefix}-{i}"))).collect()
    };
    produce(&kafka.client_config(), &topic, inputs(20, "a")).await?;
    let running = runtime(kafka, &user, &database.url)?.handler(Recorder::new(&topic, &group, "a")).build().await?;
    let shutdown = running.shutdown_handle();
    let task = tokio::spawn(running.run_until(std::future::pending()));
    wait_until(WAIT, "20 effects", || async { Ok((effect_rows(&pool, &group).await? == 20).then_some(())) }).await?;
    shutdown.shutdown();
    task.await??;
    produce(&kafka.client_config(), &topic, inputs(5, "b")).await?;

    let settings = kafka.client_settings(&user)?;
    let lag =
        json(&exactly(kafka, &database.url, &settings, &["--json", "lag", "--group", &group, "--topic", &topic])?)?;
    assert_eq!(lag["mode"], "database", "{lag}");
    assert_eq!(lag["total_lag"], 5, "{lag}");

    // Without the settings the same command cannot reach the brokers.
    let refused = exactly(kafka, &database.url, &[], &["--json", "lag", "--group", &group, "--topic", &topic])?;
    assert!(!refused.status.success(), "lag worked without TLS and a login");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_list_logs_in_with_scram_and_plain_over_tls() -> anyhow::Result<()> {
    let kafka = Kafka::secure_shared().await?;
    let scram = kafka.add_scram_user(&unique("cli")).await?;
    let topic = kafka.unique_topic("cli-txn", 2).await?;
    let database = Postgres::tls_shared().await?.database().await?;

    let transactional_id = unique("cli-hanging");
    let hanging = hanging_transaction(&kafka.client_config(), &transactional_id, &topic, 1)?;

    // SCRAM-SHA-512 from the environment.
    let settings = kafka.client_settings(&scram)?;
    let listing =
        json(&exactly(kafka, &database.url, &settings, &["--json", "transactions", "list", "--topic", &topic])?)?;
    let named = |listing: &Value| {
        listing["transactions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["transactional_id"] == transactional_id.as_str())
    };
    assert!(named(&listing), "SCRAM: the open transaction is not named: {listing}");
    assert_eq!(listing["note"], Value::Null, "{listing}");

    // PLAIN through `-X`.
    let plain = kafka.plain_user()?;
    let mut args = vec!["--json".to_owned(), "transactions".into(), "list".into(), "--topic".into(), topic.clone()];
    for (key, value) in kafka.client_settings(&plain)? {
        args.extend(["-X".to_owned(), format!("{key}={value}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let listing = json(&exactly(kafka, &database.url, &[], &args)?)?;
    assert!(named(&listing), "PLAIN: the open transaction is not named: {listing}");
    hanging.abort_transaction(Duration::from_secs(30))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_once_and_is_not_printed() -> anyhow::Result<()> {
    let kafka = Kafka::secure_shared().await?;
    let user = kafka.add_scram_user(&unique("cli")).await?;
    let topic = kafka.unique_topic("cli-wrong", 1).await?;
    let database = Postgres::tls_shared().await?.database().await?;
    let wrong = "WrongPassword0123456789xyz";
    let settings = kafka.client_settings(&user.with_password(wrong))?;
    let started = Instant::now();
    let output = exactly(kafka, &database.url, &settings, &["lag", "--group", "g", "--topic", &topic])?;
    let took = started.elapsed();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(took < Duration::from_secs(20), "took {took:?}: {message}");
    assert!(message.contains("Authentication failed") && message.contains("SCRAM-SHA-512"), "unclear: {message}");
    assert!(!message.contains(wrong), "the password was printed: {message}");
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    Ok(())
}

/// The tool under the Security chapter's ACLs, granted by its own script
/// (`docs/src/security/kafka-acls.sh`) on a broker that enforces them: the `tool` part lets
/// it read (`lag`, `offsets show` of a Kafka-mode group, `transactions list`) and nothing
/// more; a reset without the `tool-admin` part is refused by the broker and reported as
/// such, and works once it is granted, as does aborting a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_works_under_the_documented_acls_and_needs_each_part() -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let kafka = Kafka::authorizing().await?;
    let user = kafka.add_scram_user(&unique("tool")).await?;
    let principal = format!("User:{}", user.username);
    let topic = kafka.unique_topic("acl-tool", 2).await?;
    let database = Postgres::shared().await?.database().await?;
    produce(&kafka.client_config(), &topic, (0..10).map(|i| Input::to(i % 2, format!("k{i}"), format!("v{i}"))))
        .await?;
    // A Kafka-mode group that has committed 3 of each partition's 5 (as the admin).
    let group = unique("acl-group");
    let committer: BaseConsumer = kafka.client_config().set("group.id", &group).create()?;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topic, 0, Offset::Offset(3))?;
    offsets.add_partition_offset(&topic, 1, Offset::Offset(3))?;
    committer.commit(&offsets, CommitMode::Sync)?;
    // A transaction left open under the service's transactional id (as the admin).
    let transactional_id = unique("acl-tx");
    let _hanging = hanging_transaction(&kafka.client_config(), &transactional_id, &topic, 1)?;

    let vars = [("TOOL_TOPICS", topic.as_str()), ("GROUP", group.as_str()), ("TRANSACTIONAL_ID", &transactional_id)];
    kafka.grant_documented_acls(&principal, &["tool"], &vars).await?;
    let settings = kafka.client_settings(&user)?;
    let tool = |args: &[&str]| exactly(&kafka, &database.url, &settings, args);

    let lag = json(&tool(&["--json", "lag", "--group", &group, "--topic", &topic, "--mode", "kafka"])?)?;
    assert_eq!(lag["mode"], "kafka", "{lag}");
    let shown = json(&tool(&["--json", "offsets", "show", "--group", &group, "--topic", &topic])?)?;
    assert_eq!(shown["mode"], "kafka", "{shown}");
    let positions: Vec<i64> =
        shown["partitions"].as_array().into_iter().flatten().filter_map(|p| p["position"].as_i64()).collect();
    assert_eq!(positions, [3, 3], "{shown}");
    let listing = json(&tool(&["--json", "transactions", "list", "--topic", &topic])?)?;
    let named = listing["transactions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["transactional_id"] == transactional_id.as_str());
    assert!(named, "the open transaction is not named: {listing}");

    // Changing needs the `tool-admin` part.
    let reset = ["--json", "offsets", "reset", "--group", &group, "--topic", &topic, "--to", "earliest"];
    let refused = tool(&reset)?;
    let message = stderr(&refused);
    assert_eq!(refused.status.code(), Some(1), "a reset without Read on the group: {message}");
    assert!(message.to_lowercase().contains("authorization"), "unclear: {message}");
    kafka.grant_documented_acls(&principal, &["tool-admin"], &vars).await?;
    let changed = json(&tool(&reset)?)?;
    assert_eq!(changed["changes"][0]["after"], 0, "{changed}");
    let aborted = tool(&["transactions", "abort", "--transactional-id", &transactional_id])?;
    assert!(aborted.status.success(), "abort: {}", stderr(&aborted));
    Ok(())
}
