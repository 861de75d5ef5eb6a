//! Hand-written Kafka-side baselines with rdkafka alone.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::WorkerSpec;
use super::baseline_db::{Commits, subscribed};
use super::delivered::Deliveries;

/// Notes each delivered record in [`Deliveries`], and ends the process on a failed
/// delivery: committing offsets past a record that was not written would lose it, and a
/// restart redoes everything since the last commit.
struct CopyContext {
    deliveries: Arc<Deliveries>,
}

impl ClientContext for CopyContext {}

impl ProducerContext for CopyContext {
    /// The input partition and offset the record was copied from.
    type DeliveryOpaque = Box<(i32, i64)>;

    fn delivery(&self, result: &DeliveryResult<'_>, from: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            eprintln!("exactly-bench worker: a copied record was not delivered: {e}");
            std::process::exit(1);
        }
        let (partition, offset) = *from;
        self.deliveries.delivered(partition, offset);
    }
}

/// Reads every message and touches its payload; offsets are auto-committed every
/// `spec.commit_interval_ms` (librdkafka stores each offset as the message is returned).
pub(super) async fn consume_only(spec: &WorkerSpec) -> anyhow::Result<()> {
    let consumer = subscribed(spec, Commits::Automatic)?;
    let mut bytes = 0_usize;
    loop {
        let message = consumer.recv().await?;
        bytes = bytes.wrapping_add(message.payload().map_or(0, <[u8]>::len));
        std::hint::black_box(bytes);
    }
}

/// Copies every record with an idempotent producer (acks=all) and never stops to wait
/// for it: every `spec.commit_interval_ms` it commits, asynchronously, each input
/// partition's offset up to which every copied record was delivered (delivery reports
/// say which, [`Deliveries`]). A crash copies again what was sent after the last commit:
/// at-least-once.
///
/// The offsets are committed as an explicit list. An offset-less commit
/// (`commit_consumer_state`) would be wrong here: librdkafka would commit the offsets
/// stored as messages were read, records not yet delivered among them; a crash then
/// loses those. The bench's smoke found exactly that once (records missing from the
/// output while every offset was committed).
pub(super) async fn idempotent_copy(spec: &WorkerSpec) -> anyhow::Result<()> {
    let consumer = subscribed(spec, Commits::Explicit)?;
    let deliveries = Arc::new(Deliveries::default());
    let producer: ThreadedProducer<CopyContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &spec.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create_with_context(CopyContext { deliveries: Arc::clone(&deliveries) })
        .context("cannot create the producer")?;
    let interval = Duration::from_millis(spec.commit_interval_ms);
    let mut commit_at = tokio::time::Instant::now() + interval;
    loop {
        // Checked first: under a steady stream `recv` is always ready and a timeout
        // around it would never fire.
        if tokio::time::Instant::now() >= commit_at {
            commit_delivered(&consumer, &spec.input, &deliveries)?;
            commit_at = tokio::time::Instant::now() + interval;
        }
        let Ok(message) = tokio::time::timeout_at(commit_at, consumer.recv()).await else { continue };
        let message = message?;
        let from = (message.partition(), message.offset());
        let mut record =
            BaseRecord::with_opaque_to(&spec.output, Box::new(from)).payload(message.payload().unwrap_or_default());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        deliveries.sent(from.0, from.1);
        // A full local queue is back-pressure: let the producer drain, then send again.
        while let Err((e, returned)) = producer.send(record) {
            if !matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::QueueFull)) {
                return Err(e.into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            record = returned;
        }
    }
}

/// Commits, asynchronously, the offsets [`Deliveries`] says are safe, if any moved.
fn commit_delivered(consumer: &StreamConsumer, input: &str, deliveries: &Deliveries) -> anyhow::Result<()> {
    let committable = deliveries.take_committable();
    if committable.is_empty() {
        return Ok(());
    }
    let mut offsets = TopicPartitionList::with_capacity(committable.len());
    for (partition, offset) in committable {
        offsets.add_partition_offset(input, partition, Offset::Offset(offset))?;
    }
    consumer.commit(&offsets, CommitMode::Async)?;
    Ok(())
}
