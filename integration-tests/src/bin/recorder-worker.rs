//! A recording process for crash tests: `recorder-worker BROKERS DATABASE_URL TOPIC GROUP`.
//! Records every message (Database mode), refusing payloads that start with `fail-`, with
//! quick retries, until SIGTERM or until it is killed. With `EXACTLY_TEST_KEY_PARKING=1`
//! it parks failing keys. `EXACTLY_TEST_INSTANCE` names its static group member (and its
//! effects' instance column); the default is `recorder-worker`. With
//! `EXACTLY_TEST_BATCH=unnest` or `copy` it registers the batch recorder instead, writing
//! each batch with that statement (and saying so on stderr once a batch holds more than one
//! message). For the per-message recorder: `EXACTLY_TEST_KEY_CONCURRENCY=N` handles up to N
//! messages of a partition at once, never two of a key (`Subscription::with_key_concurrency`;
//! 1, the default, is one at a time); `EXACTLY_TEST_LOCK_ON=P1,P2,...` makes the handler wait,
//! inside its transaction, for the advisory lock `recorder::BATCH_LOCK` on those payloads, so
//! a test holding the lock keeps their transactions open. `EXACTLY_TEST_GROUP_PROTOCOL=consumer`
//! speaks the consumer group protocol (`support::worker_group_settings`);
//! `EXACTLY_TEST_TRANSACTION_TIMEOUT_MS=N` sets `database_transaction_timeout` (60 s by default).

use std::time::Duration;

use exactly::{RetryPolicy, Runtime, RuntimeBuilder};
use exactly_integration_tests::batch_recorder::{BatchRecorder, Statement};
use exactly_integration_tests::recorder::Recorder;
use exactly_integration_tests::support::worker_group_settings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, database_url, topic, group] = args.as_slice() else {
        eprintln!("usage: recorder-worker BROKERS DATABASE_URL TOPIC GROUP");
        return std::process::ExitCode::FAILURE;
    };
    let instance = std::env::var("EXACTLY_TEST_INSTANCE").unwrap_or_else(|_| "recorder-worker".to_owned());
    let key_parking = std::env::var("EXACTLY_TEST_KEY_PARKING").is_ok_and(|v| v == "1");
    let key_concurrency = match std::env::var("EXACTLY_TEST_KEY_CONCURRENCY").ok().filter(|v| !v.is_empty()) {
        None => 1,
        Some(value) => match value.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                eprintln!("recorder-worker: EXACTLY_TEST_KEY_CONCURRENCY must be a number from 1 up, not {value:?}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let lock_on: Vec<String> = std::env::var("EXACTLY_TEST_LOCK_ON")
        .unwrap_or_default()
        .split(',')
        .filter(|payload| !payload.is_empty())
        .map(str::to_owned)
        .collect();
    let transaction_timeout = match std::env::var("EXACTLY_TEST_TRANSACTION_TIMEOUT_MS").ok().filter(|v| !v.is_empty())
    {
        None => Duration::from_secs(60),
        Some(value) => match value.parse::<u64>() {
            Ok(millis) => Duration::from_millis(millis),
            Err(_) => {
                eprintln!("recorder-worker: EXACTLY_TEST_TRANSACTION_TIMEOUT_MS must be a number, not {value:?}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let builder = worker_group_settings(Runtime::builder())
        .database_transaction_timeout(transaction_timeout)
        .brokers(brokers)
        .database_url(database_url)
        .kafka_setting("group.instance.id", &instance)
        .retry(RetryPolicy::default().max_attempts(3).initial_backoff(Duration::from_millis(10)))
        .on_error(|e| eprintln!("worker error: {e}"));
    let builder = match std::env::var("EXACTLY_TEST_BATCH").ok().filter(|v| !v.is_empty()) {
        None => {
            let mut recorder = Recorder::new(topic, group, &instance);
            recorder.key_parking = key_parking;
            recorder.key_concurrency = key_concurrency;
            recorder.lock_on = lock_on;
            builder.handler(recorder)
        }
        Some(name) => match batch_recorder(&name, topic, group, &instance, key_parking) {
            Some(recorder) => builder.batch_handler(recorder),
            None => {
                eprintln!("recorder-worker: EXACTLY_TEST_BATCH must be `unnest` or `copy`, not {name:?}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    run(builder).await
}

/// The batch recorder `EXACTLY_TEST_BATCH` names (`unnest` or `copy`), if it names one.
fn batch_recorder(name: &str, topic: &str, group: &str, instance: &str, key_parking: bool) -> Option<BatchRecorder> {
    let mut recorder = BatchRecorder::new(topic, group, instance, Statement::parse(name)?);
    recorder.key_parking = key_parking;
    recorder.announce = true;
    Some(recorder)
}

/// Builds and runs the runtime until SIGTERM; its error ends the process with a failure.
async fn run(builder: RuntimeBuilder) -> std::process::ExitCode {
    match async { builder.build().await?.run().await }.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recorder-worker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
