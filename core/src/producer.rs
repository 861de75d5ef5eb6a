//! What the Kafka-mode runtime and the outbox relay share about their transactional producers.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::error::{Error, Result};

/// A transactional producer; its background thread serves delivery reports.
pub(crate) type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// How long a transactional call may take before its outcome counts as unknown.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `send_offsets_to_transaction` may take: it only has to reach the group
/// coordinator, and a failure (abortable) just redoes the transaction.
const SEND_OFFSETS_TIMEOUT: Duration = Duration::from_secs(15);

/// How long past its own timeout a call is waited for before it counts as stuck.
const STUCK_GRACE: Duration = Duration::from_secs(5);

/// Adds `offsets` (with the consumer's group `metadata`) to the open transaction, on a
/// thread of its own: librdkafka's `send_offsets_to_transaction` can block past its
/// timeout, for good, when the group coordinator goes away (confluentinc/librdkafka#5456,
/// #5511). After its 15 s timeout plus a grace period the call counts as stuck
/// ([`Error::KafkaCallStuck`]): the caller must abandon `producer` (the thread keeps it
/// until the call returns, if ever) and fence it with a new one.
pub(crate) fn send_offsets(
    producer: &Arc<TxnProducer>,
    offsets: TopicPartitionList,
    metadata: ConsumerGroupMetadata,
) -> Result<()> {
    let (reply, outcome) = std::sync::mpsc::sync_channel(1);
    let caller = Arc::clone(producer);
    std::thread::Builder::new()
        .name("exactly-send-offsets".into())
        .spawn(move || {
            let _ = reply.send(caller.send_offsets_to_transaction(&offsets, &metadata, SEND_OFFSETS_TIMEOUT));
        })
        .map_err(|e| Error::Config(format!("cannot start a thread for send_offsets_to_transaction: {e}")))?;
    let waited = SEND_OFFSETS_TIMEOUT + STUCK_GRACE;
    match outcome.recv_timeout(waited) {
        Ok(result) => Ok(result?),
        Err(_) => Err(Error::KafkaCallStuck { call: "send_offsets_to_transaction", waited }),
    }
}

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
