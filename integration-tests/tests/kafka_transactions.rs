//! Kafka's transactions, as exactly relies on them: committed records are visible to
//! `read_committed` readers, aborted ones only to `read_uncommitted` readers, and a second
//! producer with the same `transactional.id` fences the first.

use std::time::Duration;

use exactly_integration_tests::{Isolation, Kafka, read_to_end, unique};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

const TIMEOUT: Duration = Duration::from_secs(60);

fn transactional_producer(
    kafka: &Kafka,
    transactional_id: &str,
) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    let producer: ThreadedProducer<DefaultProducerContext> = kafka
        .client_config()
        .set("transactional.id", transactional_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    producer.init_transactions(TIMEOUT)?;
    Ok(producer)
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<()> {
    for i in 0..count {
        let key = format!("{prefix}-{i}");
        let record = BaseRecord::to(topic).key(&key).payload(&key);
        producer.send(record).map_err(|(e, _)| e)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_sees_committed_records_only() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("txn", 3).await?;
    let (committed, aborted) = (120, 45);

    let producer = transactional_producer(kafka, &unique("txn"))?;
    producer.begin_transaction()?;
    send(&producer, &topic, "committed", committed)?;
    producer.commit_transaction(TIMEOUT)?;
    producer.begin_transaction()?;
    send(&producer, &topic, "aborted", aborted)?;
    producer.flush(TIMEOUT)?; // the aborted records really reach the log before the abort
    producer.abort_transaction(TIMEOUT)?;

    let seen_committed = read_to_end(kafka.client_config(), &topic, Isolation::ReadCommitted, TIMEOUT).await?;
    let seen_all = read_to_end(kafka.client_config(), &topic, Isolation::ReadUncommitted, TIMEOUT).await?;

    assert_eq!(seen_committed.len(), committed, "read_committed must see exactly the committed records");
    assert!(
        seen_committed.iter().all(|r| r.key.as_deref().is_some_and(|k| k.starts_with(b"committed-"))),
        "read_committed saw a record of the aborted transaction"
    );
    assert_eq!(seen_all.len(), committed + aborted, "read_uncommitted must see committed and aborted records");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("fence", 1).await?;
    let transactional_id = unique("fenced");

    let zombie = transactional_producer(kafka, &transactional_id)?;
    zombie.begin_transaction()?;
    send(&zombie, &topic, "zombie", 10)?;
    zombie.flush(TIMEOUT)?;

    // A new incarnation with the same id bumps the epoch and aborts the zombie's transaction.
    let successor = transactional_producer(kafka, &transactional_id)?;

    let outcome = zombie.commit_transaction(TIMEOUT);
    let error = match outcome {
        Ok(()) => panic!("the fenced producer's commit succeeded"),
        Err(KafkaError::Transaction(e)) => e,
        Err(other) => panic!("unexpected error kind from the fenced commit: {other}"),
    };
    assert!(
        error.is_fatal()
            && matches!(
                error.code(),
                RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
            ),
        "expected a fatal fencing error, got {error} ({:?})",
        error.code()
    );

    successor.begin_transaction()?;
    send(&successor, &topic, "successor", 7)?;
    successor.commit_transaction(TIMEOUT)?;

    let seen = read_to_end(kafka.client_config(), &topic, Isolation::ReadCommitted, TIMEOUT).await?;
    assert_eq!(seen.len(), 7, "only the successor's records may be committed");
    assert!(seen.iter().all(|r| r.key.as_deref().is_some_and(|k| k.starts_with(b"successor-"))));
    Ok(())
}
