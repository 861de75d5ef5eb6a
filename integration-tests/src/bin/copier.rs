//! A copy process for crash tests: `copier BROKERS INPUT OUTPUT GROUP TRANSACTIONAL_ID [INSTANCE_ID]`.
//! Copies INPUT to OUTPUT exactly once (Kafka mode) until SIGTERM, or until it is killed.
//! `COPIER_DELAY_MS` makes each record take that long (to keep transactions open);
//! `COPIER_TRANSACTION_TIMEOUT_MS` sets the producer's `transaction.timeout.ms`.
//! `EXACTLY_TEST_BATCH` (any value but empty) registers the copier as a batch handler,
//! given the messages it has fetched a partition's run at a time; it says so on stderr once
//! a call holds more than one message. `EXACTLY_TEST_KEY_CONCURRENCY=N` handles up to N
//! messages of a partition at once, never two of a key; it says so on stderr once two calls
//! ran at once. `EXACTLY_TEST_GROUP_PROTOCOL=consumer` speaks the consumer group protocol
//! (`support::worker_group_settings`).

use exactly::Runtime;
use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::support::worker_group_settings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Its log lines ("partition assigned", errors) tell a test where the process stands.
    tracing_subscriber::fmt().with_env_filter("warn,exactly=info").with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, input, output, group, transactional_id, rest @ ..] = args.as_slice() else {
        eprintln!("usage: copier BROKERS INPUT OUTPUT GROUP TRANSACTIONAL_ID [INSTANCE_ID]");
        return std::process::ExitCode::FAILURE;
    };
    let mut copier = Copier::new(input, output, group);
    if let Some(delay) = std::env::var("COPIER_DELAY_MS").ok().and_then(|ms| ms.parse().ok()) {
        copier.delay = std::time::Duration::from_millis(delay);
    }
    if let Some(value) = std::env::var("EXACTLY_TEST_KEY_CONCURRENCY").ok().filter(|v| !v.is_empty()) {
        match value.parse::<usize>() {
            Ok(n) if n >= 1 => copier.key_concurrency = n,
            _ => {
                eprintln!("copier: EXACTLY_TEST_KEY_CONCURRENCY must be a number from 1 up, not {value:?}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let mut builder = worker_group_settings(Runtime::builder())
        .brokers(brokers)
        .transactional_id(transactional_id)
        .on_error(|e| eprintln!("copier error: {e}"));
    builder = match std::env::var("EXACTLY_TEST_BATCH") {
        Ok(batch) if !batch.is_empty() => builder.batch_handler(copier),
        _ => builder.handler(copier),
    };
    if let Ok(timeout) = std::env::var("COPIER_TRANSACTION_TIMEOUT_MS") {
        builder = builder.producer_setting("transaction.timeout.ms", timeout);
    }
    if let Some(instance) = rest.first() {
        builder = builder.kafka_setting("group.instance.id", instance);
    }
    let outcome = async { builder.build().await?.run().await }.await;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("copier: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
