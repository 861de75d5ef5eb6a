//! What makes a Kafka client give up at once: a refused login (SASL), a failed TLS
//! handshake, a missing ACL, or a consumer librdkafka gave up on.
//!
//! librdkafka retries every connection failure for ever, a refused password included, so a
//! service with wrong credentials would sit there looking alive. Its error events carry a
//! code and a reason; [`fatal`] picks those that retrying cannot fix, and the runtime stops
//! on them with [`Error::KafkaAuthentication`] or [`Error::KafkaTls`].
//!
//! A consumer's fatal error comes out of its `poll` instead, and only says "fatal": the
//! client keeps the cause. Such a consumer never fetches or heartbeats again, and a poll loop
//! that only logged it would leave its group's partitions with no one, looking alive. So
//! [`consumer_refusal`] turns it into [`Error::KafkaConsumerFailed`], with the cause and what
//! to do, and the runtime stops on it. The case this is for is static membership under the
//! consumer group protocol: an instance restarted after a crash, with the `group.instance.id`
//! of its predecessor, is refused (UNRELEASED_INSTANCE_ID) until the broker's session timeout
//! removes the predecessor. exactly does not refuse `group.instance.id` with that protocol,
//! since a clean restart, and a restart after the session timeout, work; nor does it rebuild
//! the consumer and retry by itself, which would hide two running instances given one id. It
//! stops, saying why: nothing committed is lost, and a supervisor's restart after the session
//! timeout carries on.

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
/// consumer's error does not say which topic); or [`Error::KafkaConsumerFailed`] when
/// librdkafka gave up on the consumer.
pub(crate) fn consumer_refusal<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    error: &KafkaError,
    group: &str,
    topics: &[String],
) -> Option<Error> {
    if let Some(failed) = consumer_failed(consumer, error, group) {
        return Some(failed);
    }
    KafkaResource::refused_by(error)?;
    let refusal = Error::from(error.clone()).naming(|refused| match refused {
        KafkaResource::Group(None) => Some(KafkaResource::Group(Some(group.to_owned()))),
        KafkaResource::Topic(None) => Some(refused_topics(consumer, topics)),
        _ => None,
    });
    Some(refusal)
}

/// What a consumer of `group` stops on when `error`, from its `poll`, is librdkafka's fatal
/// error: the cause is read from the client (the error itself only says "fatal"). A group
/// the broker refuses to this client's principal is [`Error::KafkaAuthorization`], as it is
/// under the classic protocol.
fn consumer_failed<C: ConsumerContext>(consumer: &BaseConsumer<C>, error: &KafkaError, group: &str) -> Option<Error> {
    let fatal = matches!(error, KafkaError::MessageConsumptionFatal(_))
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal);
    if !fatal {
        return None;
    }
    let (code, reason) =
        consumer.client().fatal_error().unwrap_or_else(|| (RDKafkaErrorCode::Fatal, error.to_string()));
    if code == RDKafkaErrorCode::GroupAuthorizationFailed {
        return Some(Error::KafkaAuthorization { resource: KafkaResource::Group(Some(group.to_owned())), reason });
    }
    Some(Error::KafkaConsumerFailed { group: group.to_owned(), reason, remedy: remedy(code) })
}

/// What to do about a consumer's fatal error with `code` (the ones librdkafka 2.12 raises
/// for a group consumer, and a last resort).
fn remedy(code: RDKafkaErrorCode) -> &'static str {
    match code {
        RDKafkaErrorCode::UnreleasedInstanceId => {
            "a member with this consumer's `group.instance.id` is still in the group: under the consumer group \
             protocol a crashed instance stays a member until the broker's session timeout \
             (`group.consumer.session.timeout.ms`, 45 s by default) removes it, and an instance restarted with its \
             id is refused until then; start it again after that, and give each running instance an id of its own"
        }
        RDKafkaErrorCode::FencedInstanceId => {
            "another consumer joined the group with the same `group.instance.id` and took this one's place: give \
             each running instance an id of its own"
        }
        RDKafkaErrorCode::UnsupportedAssignor => {
            "the brokers do not offer the assignor `group.remote.assignor` names (they offer those in their \
             `group.consumer.assignors`, `uniform` and `range` by default)"
        }
        RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::UnsupportedFeature => {
            "the brokers do not speak the consumer group protocol (it needs Apache Kafka 4.0 or later, with \
             `consumer` in `group.coordinator.rebalance.protocols`): use `GroupProtocol::Classic`"
        }
        RDKafkaErrorCode::GroupMaxSizeReached => {
            "the group has as many members as the brokers allow (`group.consumer.max.size`, or `group.max.size` \
             under the classic protocol): run fewer instances, or raise the limit"
        }
        _ => "restart the instance: nothing committed is lost, and what was not committed is done again",
    }
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

    #[test]
    fn a_consumer_librdkafka_gave_up_on_stops_the_runtime_saying_what_to_do() -> Result<(), KafkaError> {
        // Made without a group, it joins none: dropping it waits on no broker.
        let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", "localhost:1").create()?;
        let fatal = KafkaError::MessageConsumption(RDKafkaErrorCode::Fatal);
        let failed = consumer_refusal(&consumer, &fatal, "orders", &[]);
        assert!(matches!(&failed, Some(Error::KafkaConsumerFailed { group, .. }) if group == "orders"), "{failed:?}");
        assert_eq!(failed.map(|e| e.class()), Some(crate::ErrorClass::Fatal));
        let also_fatal = KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::Fatal);
        assert!(consumer_refusal(&consumer, &also_fatal, "orders", &[]).is_some());
        let transient = KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(consumer_refusal(&consumer, &transient, "orders", &[]).is_none(), "only logged");

        let restarted = Error::KafkaConsumerFailed {
            group: "orders".into(),
            reason: "ConsumerGroupHeartbeat fatal error: Broker: Unreleased instance id".into(),
            remedy: remedy(RDKafkaErrorCode::UnreleasedInstanceId),
        };
        let said = restarted.to_string();
        assert!(said.starts_with("the consumer of group orders cannot go on: ConsumerGroupHeartbeat"), "{said}");
        assert!(said.contains("`group.consumer.session.timeout.ms`"), "{said}");
        assert!(remedy(RDKafkaErrorCode::FencedInstanceId).contains("`group.instance.id`"));
        assert!(remedy(RDKafkaErrorCode::UnsupportedVersion).contains("GroupProtocol::Classic"));
        Ok(())
    }
}
