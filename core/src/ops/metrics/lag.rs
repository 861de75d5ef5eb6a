//! Consumer lag: every assigned partition's committed position against the end of the
//! partition as a `read_committed` reader sees it (its last stable offset).
//!
//! Consumers register a partition when it is assigned and remove it when it goes; one
//! thread per runtime asks the brokers for the last stable offsets of all of them at once
//! (a `ListOffsets` request per leader, with the client's `read_committed` isolation) every
//! interval, busy or idle, and sets each partition's gauge. Positions are read before the
//! offsets, so a message produced in between can only make the lag look larger, never
//! negative.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::metrics::{Gauge, gauge};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::CONSUMER_LAG;
use super::handles::{PartitionId, PartitionMetrics};

/// How long one round of offset requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The partitions this runtime owns now, with their positions.
#[derive(Debug, Default)]
pub(crate) struct LagRegistry {
    partitions: Mutex<HashMap<PartitionId, Arc<PartitionMetrics>>>,
}

impl LagRegistry {
    /// Adds (or replaces) an assigned partition.
    pub(crate) fn insert(&self, partition: Arc<PartitionMetrics>) {
        self.lock().insert(partition.id.clone(), partition);
    }

    /// Removes a partition that is no longer assigned here.
    pub(crate) fn remove(&self, id: &PartitionId) {
        self.lock().remove(id);
    }

    fn snapshot(&self) -> Vec<Arc<PartitionMetrics>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PartitionId, Arc<PartitionMetrics>>> {
        self.partitions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The client the lag is measured with: a consumer with the runtime's settings
/// (`read_committed`), without a group: it never joins one, and never reads a message.
pub(crate) type LagClient = BaseConsumer<LagClientContext>;

/// Makes the [`LagClient`] from a group consumer's configuration.
///
/// # Errors
/// When librdkafka refuses the configuration.
pub(crate) fn client(mut config: ClientConfig) -> crate::error::Result<LagClient> {
    config.remove("group.id");
    Ok(config.create_with_context(LagClientContext)?)
}

/// Sends the lag client's librdkafka log to `tracing` at debug level: the group consumers
/// report the same broker trouble where it matters.
#[derive(Debug)]
pub(crate) struct LagClientContext;

impl ClientContext for LagClientContext {
    fn log(&self, _: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(target: "librdkafka", "lag client: {fac}: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", "lag client: {error}: {reason}");
    }
}

impl ConsumerContext for LagClientContext {}

/// Measures the lag of the registered partitions every `interval` until `stopped` says so.
pub(crate) fn measure(registry: &LagRegistry, client: &LagClient, interval: Duration, stopped: &dyn Fn() -> bool) {
    let mut gauges: HashMap<PartitionId, Gauge> = HashMap::new();
    let mut next = Instant::now() + interval;
    while !stopped() {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50).min(next.saturating_duration_since(Instant::now())));
            continue;
        }
        next = Instant::now() + interval;
        let partitions = registry.snapshot();
        // Partitions gone since the last round read 0 here: their new owner reports them.
        gauges.retain(|id, gauge| {
            let owned = partitions.iter().any(|p| &p.id == id);
            if !owned {
                gauge.set(0.0);
            }
            owned
        });
        if partitions.is_empty() {
            continue;
        }
        let positions: Vec<Option<i64>> = partitions.iter().map(|p| p.position()).collect();
        let ends = match last_stable_offsets(client, &partitions) {
            Ok(ends) => ends,
            Err(e) => {
                tracing::debug!("measuring consumer lag failed (tried again next round): {e}");
                continue;
            }
        };
        for (partition, position) in partitions.iter().zip(positions) {
            let (Some(position), Some(end)) =
                (position, ends.get(&(partition.id.topic.as_str(), partition.id.partition)))
            else {
                continue;
            };
            let gauge = gauges
                .entry(partition.id.clone())
                .or_insert_with(|| gauge!(CONSUMER_LAG, partition.id.labels(partition.mode).iter()));
            #[allow(clippy::cast_precision_loss)] // a lag stays far below 2^52
            gauge.set((end - position).max(0) as f64);
        }
    }
}

/// The last stable offset of each partition's topic-partition, by one `ListOffsets` round
/// (timestamp "latest" under `read_committed`).
fn last_stable_offsets<'p>(
    client: &LagClient,
    partitions: &'p [Arc<PartitionMetrics>],
) -> rdkafka::error::KafkaResult<HashMap<(&'p str, i32), i64>> {
    let mut request = TopicPartitionList::new();
    for partition in partitions {
        let id = &partition.id;
        if request.find_partition(&id.topic, id.partition).is_none() {
            request.add_partition_offset(&id.topic, id.partition, Offset::End)?;
        }
    }
    let answer = client.offsets_for_times(request, REQUEST_TIMEOUT)?;
    let mut ends = HashMap::new();
    for partition in partitions {
        let id = &partition.id;
        if let Some(element) = answer.find_partition(&id.topic, id.partition)
            && element.error().is_ok()
            && let Offset::Offset(end) = element.offset()
        {
            ends.insert((id.topic.as_str(), id.partition), end);
        }
    }
    Ok(ends)
}
