//! What makes a Kafka client give up at once: a refused login (SASL), a failed TLS
//! handshake, or a missing ACL.
//!
//! librdkafka retries every connection failure for ever, a refused password included, so a
//! service with wrong credentials would sit there looking alive. Its error events carry a
//! code and a reason; [`fatal`] picks those that retrying cannot fix, and the runtime stops
//! on them with [`Error::KafkaAuthentication`] or [`Error::KafkaTls`].

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::{Error, KafkaResource};

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

/// The refusal a consumer of `group` subscribed to `topics` got from `poll`, when `error`
/// is one, naming the group or the topics it may not read (asked of the brokers: a
/// consumer's error does not say which topic).
pub(crate) fn consumer_refusal<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    error: &KafkaError,
    group: &str,
    topics: &[String],
) -> Option<Error> {
    KafkaResource::refused_by(error)?;
    let refusal = Error::from(error.clone()).naming(|refused| match refused {
        KafkaResource::Group(None) => Some(KafkaResource::Group(Some(group.to_owned()))),
        KafkaResource::Topic(None) => Some(refused_topics(consumer, topics)),
        _ => None,
    });
    Some(refusal)
}

/// Which of `topics` the brokers refuse this client (a consumer's error does not say).
fn refused_topics<C: ConsumerContext>(consumer: &BaseConsumer<C>, topics: &[String]) -> KafkaResource {
    let refused: Vec<String> = topics
        .iter()
        .filter(|topic| {
            consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).is_ok_and(|metadata| {
                metadata.topics().iter().any(|t| {
                    t.error().is_some_and(|e| RDKafkaErrorCode::from(e) == RDKafkaErrorCode::TopicAuthorizationFailed)
                })
            })
        })
        .cloned()
        .collect();
    match <[String; 1]>::try_from(refused) {
        Ok([one]) => KafkaResource::Topic(Some(one)),
        Err(refused) if refused.is_empty() => KafkaResource::OneOfTopics(topics.to_vec()),
        Err(many) => KafkaResource::Topics(many),
    }
}

/// The same error, naming `topic` when a broker refused writing to a topic.
pub(crate) fn naming_topic(error: Error, topic: &str) -> Error {
    error.naming(|refused| {
        matches!(refused, KafkaResource::Topic(None)).then(|| KafkaResource::Topic(Some(topic.to_owned())))
    })
}

/// The same error, naming `id` when a broker refused the transactional id.
pub(crate) fn naming_transactional_id(error: Error, id: &str) -> Error {
    error.naming(|refused| {
        matches!(refused, KafkaResource::TransactionalId(None))
            .then(|| KafkaResource::TransactionalId(Some(id.to_owned())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(&group, Error::KafkaAuthorization { resource: KafkaResource::Group(None), .. }), "{group:?}");
        assert_eq!(group.class(), crate::ErrorClass::Fatal);
        assert!(group.refused_access().is_some());
        let named = group.naming(|_| Some(KafkaResource::Group(Some("orders".into()))));
        assert!(named.to_string().starts_with("kafka refused group `orders` to this client's principal"), "{named}");
        // Only the kind it is about is named.
        let topic = Error::from(KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed));
        let topic = naming_transactional_id(topic, "tx");
        assert!(matches!(&topic, Error::KafkaAuthorization { resource: KafkaResource::Topic(None), .. }), "{topic:?}");
        let topic = naming_topic(topic, "orders");
        assert!(topic.to_string().starts_with("kafka refused topic `orders` to"), "{topic}");
        let id = Error::from(KafkaError::Global(RDKafkaErrorCode::TransactionalIdAuthorizationFailed));
        assert!(matches!(&id, Error::KafkaAuthorization { resource: KafkaResource::TransactionalId(None), .. }));
        // Anything else stays a Kafka error, and does not stop the runtime.
        let lost = Error::from(KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure));
        assert!(matches!(lost, Error::Kafka(_)), "{lost:?}");
        assert!(lost.refused_access().is_none());
    }
}
