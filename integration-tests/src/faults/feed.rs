//! Input for a kill loop, produced as its worker lives go by, so that every planned kill
//! finds work to interrupt.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use tokio::task::JoinHandle;

use crate::Input;
use crate::produce::{producer, send_all};

/// Records per slice of input.
const SLICE: usize = 100;

/// Produces `inputs` to `topic` in `lives` portions of equal size (at most `lives`): the
/// `p`-th once `p + 1` worker lives have started (`started`, which the loop's spawn counts
/// up), each portion in slices of 100, one every `pace`. Give it the kill plan's length
/// plus one: the last portion comes only with the loop's final life, so the input cannot
/// run out before the last planned kill (a loop whose input is done stops killing).
pub fn feed_by_lives(
    config: ClientConfig,
    topic: String,
    inputs: Vec<Input>,
    lives: usize,
    started: Arc<AtomicUsize>,
    pace: Duration,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let producer = producer(&config)?;
        let portion = inputs.len().div_ceil(lives.max(1)).max(1);
        for (index, part) in inputs.chunks(portion).enumerate() {
            while started.load(Ordering::SeqCst) <= index {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for slice in part.chunks(SLICE) {
                send_all(&producer, &topic, slice.to_vec()).await?;
                tokio::time::sleep(pace).await;
            }
        }
        Ok(())
    })
}
