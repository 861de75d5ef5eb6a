//! Writing test input to Kafka.

use std::time::Duration;

use anyhow::Context;
use futures::future::try_join_all;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// How long a test record may take to be acknowledged.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// One record to write to the topic a handler reads; `partition: None` lets the key choose.
///
/// ```
/// use exactly_testkit::Input;
///
/// #[derive(serde::Serialize)]
/// struct Order { id: i64 }
///
/// let input = Input::json(&Order { id: 7 })?.key("customer-1").header("source", "test");
/// assert_eq!(input.payload, br#"{"id":7}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// Target partition, or `None` to partition by key.
    pub partition: Option<i32>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Input {
    /// A record for `partition` with a UTF-8 key and payload.
    pub fn to(partition: i32, key: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self::bytes(payload).key(key.into()).partition(partition)
    }

    /// A record whose payload is these bytes, with no key.
    pub fn bytes(payload: impl Into<Vec<u8>>) -> Self {
        Self { payload: payload.into(), ..Self::default() }
    }

    /// A record whose payload is `value` as JSON, with no key.
    ///
    /// # Errors
    /// When `value` cannot be written as JSON.
    pub fn json<T: serde::Serialize>(value: &T) -> serde_json::Result<Self> {
        Ok(Self::bytes(serde_json::to_vec(value)?))
    }

    /// The same record with this key (bytes or text).
    #[must_use]
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The same record with header `name` added.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The same record, written to `partition` whatever its key.
    #[must_use]
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The record as librdkafka sends it, to `topic`.
    pub(crate) fn record<'a>(&'a self, topic: &'a str) -> FutureRecord<'a, [u8], [u8]> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(&self.payload);
        if let Some(key) = &self.key {
            record = record.key(key);
        }
        if let Some(partition) = self.partition {
            record = record.partition(partition);
        }
        if !self.headers.is_empty() {
            let headers = self.headers.iter().fold(OwnedHeaders::new(), |headers, (name, value)| {
                headers.insert(Header { key: name, value: Some(value) })
            });
            record = record.headers(headers);
        }
        record
    }
}

/// An input as Kafka stored it: where it landed, and what it was.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The partition it landed in.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// What was sent.
    pub input: Input,
}

impl Sent {
    /// The payload read as JSON.
    ///
    /// # Errors
    /// When the payload is not JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.input.payload)
    }

    /// The key as text (lossy), or `""` for no key.
    pub fn key_text(&self) -> String {
        self.input.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned()
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
    send_and_locate(producer, topic, records).await?;
    Ok(())
}

/// Writes `records` through `producer`, waits until all are acknowledged, and says where
/// each landed, in the order given.
pub async fn send_and_locate(
    producer: &FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = Input>,
) -> anyhow::Result<Vec<Sent>> {
    let deliveries = records.into_iter().map(|input| async move {
        let delivery = producer.send(input.record(topic), SEND_TIMEOUT).await.map_err(|(e, _)| e)?;
        anyhow::Ok(Sent { partition: delivery.partition, offset: delivery.offset, input })
    });
    try_join_all(deliveries).await.context("a test record was not delivered")
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
