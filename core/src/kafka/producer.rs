//! What the Kafka-mode runtime and the outbox relay share about their transactional producers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

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

/// A transaction's commit (its offsets added, then `commit_transaction`) running on a
/// thread of its own, so the caller can go on handling the next messages meanwhile.
///
/// librdkafka's `send_offsets_to_transaction` can block past its timeout, for good, when
/// the group coordinator goes away (confluentinc/librdkafka#5456, #5511). When the offsets
/// are not added after that call's 15 s timeout plus a grace period, the commit counts as
/// stuck ([`Error::KafkaCallStuck`]): the caller must abandon the producer (the thread
/// keeps it until the call returns, if ever) and fence it with a new one.
pub(crate) struct CommitCall {
    started: Instant,
    offsets_added: Arc<AtomicBool>,
    outcome: mpsc::Receiver<Result<Duration>>,
}

impl CommitCall {
    /// Starts committing `producer`'s open transaction, with `offsets` (and the consumer's
    /// group `metadata`) added to it first when there are any.
    pub(crate) fn start(
        producer: &Arc<TxnProducer>,
        offsets: TopicPartitionList,
        metadata: ConsumerGroupMetadata,
    ) -> Result<Self> {
        let (reply, outcome) = mpsc::sync_channel(1);
        let offsets_added = Arc::new(AtomicBool::new(false));
        let (caller, added) = (Arc::clone(producer), Arc::clone(&offsets_added));
        std::thread::Builder::new()
            .name("exactly-commit".into())
            .spawn(move || {
                let started = Instant::now();
                let result = (|| {
                    if offsets.count() > 0 {
                        caller.send_offsets_to_transaction(&offsets, &metadata, SEND_OFFSETS_TIMEOUT)?;
                        crate::failpoint::hit("kafka.after_send_offsets");
                    }
                    added.store(true, Ordering::Release);
                    crate::failpoint::hit_soon("kafka.during_commit");
                    commit_with_retries(&caller)
                })();
                let _ = reply.send(result.map(|()| started.elapsed()));
            })
            .map_err(|source| Error::Thread { purpose: "commit a Kafka transaction", source })?;
        Ok(Self { started: Instant::now(), offsets_added, outcome })
    }

    /// The outcome once the commit ended (or is stuck), with how long it took; `None` while
    /// it runs. With `block`, waits for it.
    pub(crate) fn outcome(&self, block: bool) -> Option<Result<Duration>> {
        let stuck_at = self.started + SEND_OFFSETS_TIMEOUT + STUCK_GRACE;
        loop {
            let answer = if block {
                self.outcome.recv_timeout(Duration::from_millis(100)).map_err(|e| match e {
                    mpsc::RecvTimeoutError::Timeout => mpsc::TryRecvError::Empty,
                    mpsc::RecvTimeoutError::Disconnected => mpsc::TryRecvError::Disconnected,
                })
            } else {
                self.outcome.try_recv()
            };
            match answer {
                Ok(result) => return Some(result),
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Some(Err(Error::Internal("the commit thread ended without an answer".into())));
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if !self.offsets_added.load(Ordering::Acquire) && Instant::now() >= stuck_at {
                let waited = SEND_OFFSETS_TIMEOUT + STUCK_GRACE;
                return Some(Err(Error::KafkaCallStuck { call: "send_offsets_to_transaction", waited }));
            }
            if !block {
                return None;
            }
        }
    }
}

/// `commit_transaction`, tried again while librdkafka says the error is retriable.
fn commit_with_retries(producer: &TxnProducer) -> Result<()> {
    let mut attempts = 0;
    loop {
        match producer.commit_transaction(CALL_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempts < 3 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until every record `producer` holds is delivered (or failed) and its delivery
/// reported. rdkafka's `flush` polls for delivery reports in steps of up to 100 ms, but a
/// threaded producer's own thread serves them, so each of its flushes took a whole step:
/// a Kafka-mode transaction then closed only every 200 ms at a 100 ms interval.
pub(crate) fn flush(producer: &TxnProducer, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut).into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Enqueues `record`, waiting while librdkafka's queue is full (never drops it). A refused
/// authorization names the record's topic.
pub(crate) fn send(producer: &TxnProducer, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    let topic = record.topic;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), again)) => {
                record = again;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => {
                return Err(super::refusal::naming_topic(Error::from(e), topic));
            }
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
    producer.init_transactions(CALL_TIMEOUT).map_err(|e| {
        super::refusal::naming_transactional_id(Error::from(e), config.get("transactional.id").unwrap_or_default())
    })?;
    Ok(producer)
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use rdkafka::message::Headers as _;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A record to produce carries its key, payload and headers as given, in order.
        #[test]
        fn a_record_carries_what_it_was_given(
            topic in "[a-z._-]{1,12}",
            key in prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
            payload in prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
            // librdkafka hands a header's name back as a C string: a NUL in it would read
            // back cut short, so none is generated.
            headers in prop::collection::vec(("[^\u{0}]{0,8}", prop::collection::vec(any::<u8>(), 0..8)), 0..6),
        ) {
            let record = record(&topic, key.as_deref(), payload.as_deref(), &headers);
            prop_assert_eq!(record.topic, topic.as_str());
            prop_assert_eq!(record.key, key.as_deref());
            prop_assert_eq!(record.payload, payload.as_deref());
            let carried: Vec<(String, Vec<u8>)> = record
                .headers
                .iter()
                .flat_map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())))
                .collect();
            prop_assert_eq!(carried, headers.clone());
            prop_assert_eq!(record.headers.is_some(), !headers.is_empty());
        }
    }
}
