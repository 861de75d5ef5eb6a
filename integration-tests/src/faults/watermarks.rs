//! The ends of a topic's partitions as readers see them, and the wait until no transaction
//! holds a `read_committed` reader back.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;

pub use exactly_testkit::positions::high_watermarks;

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
