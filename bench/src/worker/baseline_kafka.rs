//! Hand-written Kafka-side baselines with rdkafka alone.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::WorkerSpec;
use super::baseline_db::subscribed;

/// Ends the process on a failed delivery: committing offsets past a record that was not
/// written would lose it, and a restart redoes everything since the last commit.
struct FailOnError;

impl ClientContext for FailOnError {}

impl ProducerContext for FailOnError {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Err((e, _)) = result {
            eprintln!("exactly-bench worker: a copied record was not delivered: {e}");
            std::process::exit(1);
        }
    }
}

/// Reads every message and touches its payload; offsets are auto-committed every
/// `spec.commit_interval_ms` (librdkafka stores each offset as the message is returned).
pub(super) async fn consume_only(spec: &WorkerSpec) -> anyhow::Result<()> {
    let consumer = subscribed(spec, true)?;
    let mut bytes = 0_usize;
    loop {
        let message = consumer.recv().await?;
        bytes = bytes.wrapping_add(message.payload().map_or(0, <[u8]>::len));
        std::hint::black_box(bytes);
    }
}

/// Waits until the producer has delivered (and reported) every record. Not rdkafka's
/// `flush`: it polls for delivery reports in steps of up to 100 ms, which the threaded
/// producer's own thread takes, so each flush would wait a whole step.
fn flush<C: ProducerContext>(producer: &ThreadedProducer<C>) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while producer.in_flight_count() > 0 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "the producer did not deliver within 30 s");
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Copies every record with an idempotent producer (acks=all); every
/// `spec.commit_interval_ms` it flushes the producer, then commits the offsets of what
/// was flushed. A crash between the two copies some records again: at-least-once.
///
/// The offsets are committed as an explicit list taken at the flush. An offset-less
/// commit (`commit_consumer_state`) would be wrong here: librdkafka reads the stored
/// offsets when its own thread gets to the commit, by which time the loop has stored
/// offsets of records sent after the flush and not yet delivered; a crash then loses them.
/// The bench's smoke found exactly that (records missing from the output while every
/// offset was committed).
pub(super) async fn idempotent_copy(spec: &WorkerSpec) -> anyhow::Result<()> {
    let consumer = subscribed(spec, false)?;
    let producer: ThreadedProducer<FailOnError> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &spec.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create_with_context(FailOnError)
        .context("cannot create the producer")?;
    let interval = Duration::from_millis(spec.commit_interval_ms);
    let mut commit_at = tokio::time::Instant::now() + interval;
    // The next offset of each partition, for the records sent so far.
    let mut next = std::collections::HashMap::<i32, i64>::new();
    let mut copied = false;
    loop {
        // Checked first: under a steady stream `recv` is always ready and a timeout
        // around it would never fire.
        if tokio::time::Instant::now() >= commit_at {
            if copied {
                tokio::task::block_in_place(|| flush(&producer))?;
                let mut offsets = TopicPartitionList::with_capacity(next.len());
                for (&partition, &offset) in &next {
                    offsets.add_partition_offset(&spec.input, partition, Offset::Offset(offset))?;
                }
                consumer.commit(&offsets, CommitMode::Async)?;
                copied = false;
            }
            commit_at = tokio::time::Instant::now() + interval;
        }
        let Ok(message) = tokio::time::timeout_at(commit_at, consumer.recv()).await else { continue };
        let message = message?;
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(&spec.output).payload(message.payload().unwrap_or_default());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        // A full local queue is back-pressure: let the producer drain, then send again.
        while let Err((e, returned)) = producer.send(record) {
            if !matches!(e.rdkafka_error_code(), Some(rdkafka::types::RDKafkaErrorCode::QueueFull)) {
                return Err(e.into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            record = returned;
        }
        next.insert(message.partition(), message.offset() + 1);
        copied = true;
    }
}
