//! An early check that the brokers accept the client, before any client blocks on a
//! refusal (a Kafka-mode producer's `init_transactions` would wait out its timeout).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;

use super::refusal::fatal;
use crate::error::{Error, Result};

/// How long [`check_kafka`] waits for an answer when nothing refuses it.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects with `config` and fetches metadata once, to find out early whether the brokers
/// accept the client: fails with [`Error::KafkaAuthentication`] or [`Error::KafkaTls`] as
/// soon as a broker refuses it. When no broker answers within `timeout` it returns `Ok`
/// (with a warning): brokers that are down for a while are retried as usual.
///
/// Used by [`Relay::start`](crate::outbox::Relay::start) and the `exactly` tool.
#[doc(hidden)]
pub async fn check_kafka(config: &ClientConfig, timeout: Duration) -> Result<()> {
    let mut config = config.clone();
    config.remove("group.id").remove("transactional.id");
    let consumer: BaseConsumer<CheckContext> = config.create_with_context(CheckContext::default())?;
    let outcome = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            // Error events reach the context only while the queue is polled.
            let _ = consumer.poll(Duration::from_millis(100));
            if let Some(error) = consumer.context().take() {
                return Err(error);
            }
            if consumer.fetch_metadata(None, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
        }
        let _ = consumer.poll(Duration::ZERO);
        match consumer.context().take() {
            Some(error) => Err(error),
            None => {
                tracing::warn!("no Kafka broker answered within {timeout:?}; going on (it is retried)");
                Ok(())
            }
        }
    })
    .await;
    outcome.map_err(|e| Error::Panicked { task: "the Kafka check".into(), message: e.to_string() })?
}

/// Records the first error event that [`fatal`] picks.
#[derive(Default)]
struct CheckContext {
    failure: Mutex<Option<Error>>,
}

impl CheckContext {
    fn take(&self) -> Option<Error> {
        self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl ClientContext for CheckContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::log::forward(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match fatal(&error, reason) {
            Some(failure) => {
                let mut slot = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                slot.get_or_insert(failure);
            }
            None => tracing::debug!(target: "librdkafka", "{error}: {reason}"),
        }
    }
}

impl ConsumerContext for CheckContext {}
