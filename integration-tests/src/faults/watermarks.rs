//! The ends of a topic's partitions as readers see them, and the wait until no transaction
//! holds a `read_committed` reader back.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::unique;

/// The end of every partition of `topic`, as a reader with `isolation` sees it: the high
/// watermark for `read_uncommitted`, the last stable offset for `read_committed`.
pub fn high_watermarks(config: ClientConfig, topic: &str, isolation: &str) -> anyhow::Result<Vec<(i32, i64)>> {
    let consumer: BaseConsumer =
        config.clone().set("group.id", unique("watermarks")).set("isolation.level", isolation).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut ends = Vec::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) = consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
        ends.push((partition.id(), high));
    }
    ends.sort_unstable();
    Ok(ends)
}

/// Waits until no transaction is left open on `topic`: its last stable offset equals its
/// high watermark on every partition (read_committed readers are not stuck).
pub async fn wait_for_stable_end(config: &ClientConfig, topic: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let committed = high_watermarks(config.clone(), topic, "read_committed")?;
        let written = high_watermarks(config.clone(), topic, "read_uncommitted")?;
        if committed == written {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "{topic}: last stable offsets {committed:?} still behind high watermarks {written:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
