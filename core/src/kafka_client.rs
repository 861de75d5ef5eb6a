//! Kafka client settings from the environment, and what makes a Kafka client give up at
//! once: a refused login (SASL) or a failed TLS handshake.
//!
//! librdkafka retries every connection failure for ever, a refused password included, so a
//! service with wrong credentials would sit there looking alive. Its error events carry a
//! code and a reason; [`fatal`] picks those that retrying cannot fix, and the runtime stops
//! on them with [`Error::KafkaAuthentication`] or [`Error::KafkaTls`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::{Error, Result};

/// The prefix of environment variables that hold librdkafka settings:
/// `EXACTLY_RDKAFKA_SASL_PASSWORD` is `sasl.password`.
pub const KAFKA_ENV_PREFIX: &str = "EXACTLY_RDKAFKA_";

/// librdkafka settings from the environment: every variable named
/// [`KAFKA_ENV_PREFIX`]`<KEY>`, sorted by key.
///
/// `<KEY>` becomes the setting's name by the rules of Kafka's container images: lower
/// case, `_` is `.`, `__` is `_` and `___` is `-`. So `EXACTLY_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL`
/// sets `security.protocol`, `EXACTLY_RDKAFKA_SASL_MECHANISM=SCRAM-SHA-512` sets
/// `sasl.mechanism`, and `EXACTLY_RDKAFKA_SSL_CA_LOCATION` sets `ssl.ca.location`.
/// Variables whose name or value is not UTF-8 are skipped.
///
/// [`RuntimeBuilder::kafka_settings_from_env`](crate::RuntimeBuilder::kafka_settings_from_env),
/// [`Relay::kafka_settings_from_env`](crate::outbox::Relay::kafka_settings_from_env) and the
/// `exactly` command-line tool read them.
pub fn kafka_settings_from_env() -> Vec<(String, String)> {
    kafka_settings_from(
        std::env::vars_os().filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?))),
    )
}

/// [`kafka_settings_from_env`] over any list of variables.
pub(crate) fn kafka_settings_from(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(KAFKA_ENV_PREFIX)?;
            (!key.is_empty()).then(|| (setting_name(key), value))
        })
        .collect();
    settings.sort();
    settings
}

/// `SASL_PASSWORD` -> `sasl.password`, `___` -> `-`, `__` -> `_`.
fn setting_name(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    let part = |part: &str| part.split("__").map(|word| word.replace('_', ".")).collect::<Vec<_>>().join("_");
    lower.split("___").map(part).collect::<Vec<_>>().join("-")
}

/// Markers of a reason that is about the connection, not the credentials or certificates:
/// librdkafka reports a connection lost during the SASL handshake as an authentication
/// error too.
const TRANSIENT: &[&str] =
    &["Disconnected", "transport failure", "timed out", "Connection refused", "Connection reset"];

/// The error to stop on, when librdkafka's error event `error` (with `reason`) means that
/// retrying cannot help: the broker refused the credentials, or TLS failed (the broker's
/// certificate was not trusted or does not name the host, or the listener does not speak TLS).
pub(crate) fn fatal(error: &KafkaError, reason: &str) -> Option<Error> {
    if TRANSIENT.iter().any(|marker| reason.contains(marker)) {
        return None;
    }
    match error.rdkafka_error_code()? {
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
            Some(Error::KafkaAuthentication { reason: reason.to_owned() })
        }
        RDKafkaErrorCode::SSL => Some(Error::KafkaTls { reason: reason.to_owned() }),
        _ => None,
    }
}

/// What a refused authorization is about, by kind, for a Kafka error that is one.
pub(crate) const A_TOPIC: &str = "a topic";
/// See [`A_TOPIC`].
pub(crate) const THE_GROUP: &str = "the consumer group";
/// See [`A_TOPIC`].
pub(crate) const THE_TRANSACTIONAL_ID: &str = "the transactional id";

/// When `error` is a broker's refusal for lack of an ACL: what kind of resource it was
/// refused ([`A_TOPIC`], [`THE_GROUP`], [`THE_TRANSACTIONAL_ID`] or the cluster).
pub(crate) fn refused_resource(error: &KafkaError) -> Option<&'static str> {
    match error.rdkafka_error_code()? {
        RDKafkaErrorCode::TopicAuthorizationFailed => Some(A_TOPIC),
        RDKafkaErrorCode::GroupAuthorizationFailed => Some(THE_GROUP),
        RDKafkaErrorCode::TransactionalIdAuthorizationFailed => Some(THE_TRANSACTIONAL_ID),
        RDKafkaErrorCode::ClusterAuthorizationFailed => Some("an operation on the cluster"),
        _ => None,
    }
}

/// The refusal a consumer of `group` subscribed to `topics` got from `poll`, when `error`
/// is one, naming the group or the topics it may not read (asked of the brokers: a
/// consumer's error does not say which topic).
pub(crate) fn consumer_refusal<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    error: &KafkaError,
    group: &str,
    topics: &[String],
) -> Option<Error> {
    refused_resource(error)?;
    let refusal = Error::from(error.clone()).naming(THE_GROUP, || format!("group `{group}`"));
    Some(refusal.naming(A_TOPIC, || {
        let refused: Vec<String> = topics
            .iter()
            .filter(|topic| {
                consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).is_ok_and(|metadata| {
                    metadata.topics().iter().any(|t| {
                        t.error()
                            .is_some_and(|e| RDKafkaErrorCode::from(e) == RDKafkaErrorCode::TopicAuthorizationFailed)
                    })
                })
            })
            .map(|topic| format!("`{topic}`"))
            .collect();
        match refused.as_slice() {
            [] => format!("one of the topics {}", topics.join(", ")),
            [one] => format!("topic {one}"),
            many => format!("topics {}", many.join(", ")),
        }
    }))
}

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
    outcome.map_err(|e| Error::Config(format!("the Kafka check panicked: {e}")))?
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
        crate::runtime::log_librdkafka(level, fac, log_message);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn environment_variables_map_to_librdkafka_settings() {
        let settings = kafka_settings_from(vars(&[
            ("EXACTLY_RDKAFKA_SASL_PASSWORD", "s3cret=="),
            ("EXACTLY_RDKAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("EXACTLY_RDKAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("EXACTLY_RDKAFKA_SSL_CA_LOCATION", "/etc/ca.pem"),
            ("EXACTLY_RDKAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "https"),
            ("EXACTLY_RDKAFKA_SOME__UNDERSCORED___DASHED", "x"),
            ("EXACTLY_RDKAFKA_", "no key"),
            ("EXACTLY_KAFKA_IMAGE", "not a setting"),
            ("EXACTLY_DATABASE_URL", "not a setting"),
            ("SASL_PASSWORD", "not a setting"),
        ]));
        assert_eq!(
            settings,
            vars(&[
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.password", "s3cret=="),
                ("security.protocol", "SASL_SSL"),
                ("some_underscored-dashed", "x"),
                ("ssl.ca.location", "/etc/ca.pem"),
                ("ssl.endpoint.identification.algorithm", "https"),
            ])
        );
    }

    #[test]
    fn refused_logins_and_failed_tls_are_fatal_lost_connections_are_not() {
        let auth = KafkaError::Global(RDKafkaErrorCode::Authentication);
        let refused = "sasl_ssl://127.0.0.1:9092/bootstrap: SASL authentication error: Authentication failed during \
                       authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512";
        assert!(matches!(fatal(&auth, refused), Some(Error::KafkaAuthentication { .. })));
        assert!(
            fatal(&auth, "SASL SCRAM-SHA-512 mechanism handshake failed: Local: Broker transport failure").is_none()
        );
        let tls = KafkaError::Global(RDKafkaErrorCode::SSL);
        let untrusted = "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed";
        assert!(matches!(fatal(&tls, untrusted), Some(Error::KafkaTls { .. })));
        assert!(fatal(&KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure), "Disconnected").is_none());
        assert!(fatal(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "1/1 brokers are down").is_none());
        let error = Error::KafkaAuthentication { reason: refused.into() };
        assert_eq!(error.class(), crate::ErrorClass::Fatal);
        assert!(error.to_string().contains("SCRAM-SHA-512"));
    }

    #[test]
    fn authorization_failures_become_fatal_errors_naming_what_was_refused() {
        let group = Error::from(KafkaError::MessageConsumption(RDKafkaErrorCode::GroupAuthorizationFailed));
        assert!(matches!(&group, Error::KafkaAuthorization { resource, .. } if resource == THE_GROUP), "{group:?}");
        assert_eq!(group.class(), crate::ErrorClass::Fatal);
        assert!(group.refused_access().is_some());
        let named = group.naming(THE_GROUP, || "group `orders`".into());
        assert!(named.to_string().starts_with("kafka refused group `orders` to this client's principal"), "{named}");
        // Only the kind it is about is replaced.
        let topic = Error::from(KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed));
        let topic = topic.naming(THE_GROUP, || "group `orders`".into());
        assert!(matches!(&topic, Error::KafkaAuthorization { resource, .. } if resource == A_TOPIC), "{topic:?}");
        let id = Error::from(KafkaError::Global(RDKafkaErrorCode::TransactionalIdAuthorizationFailed));
        assert!(matches!(&id, Error::KafkaAuthorization { resource, .. } if resource == THE_TRANSACTIONAL_ID));
        // Anything else stays a Kafka error, and does not stop the runtime.
        let lost = Error::from(KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure));
        assert!(matches!(lost, Error::Kafka(_)), "{lost:?}");
        assert!(lost.refused_access().is_none());
    }
}
