//! A three-broker cluster (replication factor 3, `min.insync.replicas` 2): an idempotent,
//! `acks=all` producer keeps writing while a partition leader is killed, and every record
//! arrives exactly once, in order per partition.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use exactly_integration_tests::{Isolation, Kafka, read_to_end};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

const RECORDS: usize = 3_000;
const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_survives_a_killed_leader() -> anyhow::Result<()> {
    let kafka = Kafka::cluster().await?;
    let topic = kafka.unique_topic("cluster", PARTITIONS).await?;

    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("delivery.timeout.ms", "120000")
        .create()?;

    // Find the leader of partition 0: killing it forces a leader election under load.
    let probe: BaseConsumer = kafka.client_config().set("group.id", "probe").create()?;
    let metadata = probe.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let leader = metadata.topics()[0].partitions().iter().find(|p| p.id() == 0).map(|p| p.leader()).unwrap_or(1);
    let leader = usize::try_from(leader)?;

    let acked = Arc::new(AtomicUsize::new(0));
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        if i == RECORDS / 3 {
            // Let a quarter be acknowledged, then kill the leader with SIGKILL.
            while acked.load(Ordering::SeqCst) < RECORDS / 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            kafka.broker(leader).kill().await?;
        }
        let key = format!("{}", i % 50);
        let value = i.to_string();
        // Enqueue in order here (the producer keeps that order per partition); await later.
        let delivery = loop {
            match producer.send_result(FutureRecord::to(&topic).key(&key).payload(&value)) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        };
        let acked = Arc::clone(&acked);
        deliveries.push(tokio::spawn(async move {
            let outcome = delivery.await;
            acked.fetch_add(1, Ordering::SeqCst);
            outcome
        }));
    }
    for delivery in deliveries {
        delivery.await?.map_err(|_| anyhow::anyhow!("a delivery future was dropped"))?.map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;

    // Bring the broker back, as an operator would; the cluster must accept it again.
    kafka.broker(leader).start_again().await?;
    kafka.wait_ready(3, Duration::from_secs(120)).await?;

    let records =
        read_to_end(kafka.client_config(), &topic, Isolation::ReadCommitted, Duration::from_secs(120)).await?;
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut last_per_key: HashMap<Vec<u8>, usize> = HashMap::new();
    for record in &records {
        let value: usize = std::str::from_utf8(record.payload.as_deref().unwrap_or_default())?.parse()?;
        *seen.entry(value).or_default() += 1;
        let key = record.key.clone().unwrap_or_default();
        if let Some(previous) = last_per_key.insert(key, value) {
            assert!(previous < value, "records of one key out of order: {previous} before {value}");
        }
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).map(|(v, _)| *v).collect();
    let missing: Vec<_> = (0..RECORDS).filter(|v| !seen.contains_key(v)).collect();
    assert!(duplicated.is_empty(), "duplicated records: {duplicated:?}");
    assert!(missing.is_empty(), "missing records: {missing:?}");
    assert_eq!(records.len(), RECORDS);
    Ok(())
}
