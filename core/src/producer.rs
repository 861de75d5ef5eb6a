//! What the Kafka-mode runtime and the outbox relay share about their transactional producers.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::error::Result;

/// A transactional producer; its background thread serves delivery reports.
pub(crate) type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// How long a transactional call may take before its outcome counts as unknown.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Enqueues `record`, waiting while librdkafka's queue is full (never drops it).
pub(crate) fn send(producer: &TxnProducer, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), again)) => {
                record = again;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// A record with optional key, payload and headers, for `topic`.
pub(crate) fn record<'a>(
    topic: &'a str,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    headers: &[(String, Vec<u8>)],
) -> BaseRecord<'a, [u8], [u8]> {
    let mut record: BaseRecord<'a, [u8], [u8]> = BaseRecord::to(topic);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    if !headers.is_empty() {
        let mut owned = rdkafka::message::OwnedHeaders::new();
        for (name, value) in headers {
            owned = owned.insert(rdkafka::message::Header { key: name, value: Some(value) });
        }
        record = record.headers(owned);
    }
    record
}

/// Creates a transactional producer and initialises it, which fences any earlier
/// incarnation with the same `transactional.id` and aborts (or completes) what it left open.
pub(crate) fn transactional(config: &rdkafka::ClientConfig) -> Result<TxnProducer> {
    let producer: TxnProducer = config.create()?;
    producer.init_transactions(CALL_TIMEOUT)?;
    Ok(producer)
}
