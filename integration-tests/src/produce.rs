//! Writing test input to Kafka.

use std::time::Duration;

use anyhow::Context;
use futures::future::try_join_all;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// One record to write; `partition: None` lets the key choose.
#[derive(Debug, Clone)]
pub struct Input {
    /// Target partition, or `None` to partition by key.
    pub partition: Option<i32>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

impl Input {
    /// A record for `partition` with a UTF-8 key and payload.
    pub fn to(partition: i32, key: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self { partition: Some(partition), key: Some(key.into().into_bytes()), payload: payload.into() }
    }
}

/// Writes `records` with an idempotent `acks=all` producer and waits until all are acknowledged.
pub async fn produce(
    config: &ClientConfig,
    topic: &str,
    records: impl IntoIterator<Item = Input>,
) -> anyhow::Result<()> {
    send_all(&producer(config)?, topic, records).await
}

/// An idempotent `acks=all` producer, for [`send_all`].
pub fn producer(config: &ClientConfig) -> anyhow::Result<FutureProducer> {
    config
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .context("cannot create a producer")
}

/// Writes `records` through `producer` and waits until all are acknowledged.
pub async fn send_all(
    producer: &FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = Input>,
) -> anyhow::Result<()> {
    let deliveries = records.into_iter().map(|input| async move {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(&input.payload);
        if let Some(key) = &input.key {
            record = record.key(key);
        }
        if let Some(partition) = input.partition {
            record = record.partition(partition);
        }
        producer.send(record, Duration::from_secs(60)).await.map_err(|(e, _)| e)
    });
    try_join_all(deliveries).await.context("a test record was not delivered")?;
    Ok(())
}

/// Produces `inputs` in slices of 100, one slice every `pace`, in the background.
pub fn feed(
    config: ClientConfig,
    topic: String,
    inputs: Vec<Input>,
    pace: Duration,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        // One producer for the whole feed: a new one per slice costs a connection and a
        // metadata round each, which on a loaded machine slows the feed below its pace.
        let producer = producer(&config)?;
        for slice in inputs.chunks(100) {
            send_all(&producer, &topic, slice.to_vec()).await?;
            tokio::time::sleep(pace).await;
        }
        Ok(())
    })
}

/// A transactional producer (`transactional_id`, as `config`'s user) that began a
/// transaction, wrote one record to `topic` partition `partition` and never ends it, as a
/// killed instance leaves one: the partition's last stable offset stays behind it for 10
/// minutes, or until the id is fenced.
pub fn hanging_transaction(
    config: &ClientConfig,
    transactional_id: &str,
    topic: &str,
    partition: i32,
) -> anyhow::Result<rdkafka::producer::BaseProducer> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let hanging: BaseProducer =
        config.clone().set("transactional.id", transactional_id).set("transaction.timeout.ms", "600000").create()?;
    hanging.init_transactions(Duration::from_secs(30))?;
    hanging.begin_transaction()?;
    hanging
        .send(BaseRecord::<str, str>::to(topic).partition(partition).key("k").payload("stuck"))
        .map_err(|(e, _)| e)?;
    hanging.flush(Duration::from_secs(30))?;
    Ok(hanging)
}
