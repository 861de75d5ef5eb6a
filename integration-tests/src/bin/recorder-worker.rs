//! A recording process for crash tests: `recorder-worker BROKERS DATABASE_URL TOPIC GROUP`.
//! Records every message (Database mode), refusing payloads that start with `fail-`, with
//! quick retries, until SIGTERM or until it is killed. With `EXACTLY_TEST_KEY_PARKING=1`
//! it parks failing keys. `EXACTLY_TEST_INSTANCE` names its static group member (and its
//! effects' instance column); the default is `recorder-worker`.

use std::time::Duration;

use exactly::{RetryPolicy, Runtime};
use exactly_integration_tests::recorder::Recorder;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, database_url, topic, group] = args.as_slice() else {
        eprintln!("usage: recorder-worker BROKERS DATABASE_URL TOPIC GROUP");
        return std::process::ExitCode::FAILURE;
    };
    let instance = std::env::var("EXACTLY_TEST_INSTANCE").unwrap_or_else(|_| "recorder-worker".to_owned());
    let mut recorder = Recorder::new(topic, group, &instance);
    recorder.key_parking = std::env::var("EXACTLY_TEST_KEY_PARKING").is_ok_and(|v| v == "1");
    let outcome = async {
        Runtime::builder()
            .brokers(brokers)
            .database_url(database_url)
            .kafka_setting("group.instance.id", &instance)
            .kafka_setting("session.timeout.ms", "6000")
            .retry(RetryPolicy::default().max_attempts(3).initial_backoff(Duration::from_millis(10)))
            .on_error(|e| eprintln!("worker error: {e}"))
            .handler(recorder)
            .build()
            .await?
            .run()
            .await
    }
    .await;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recorder-worker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
