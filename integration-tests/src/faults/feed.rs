//! Input for a kill loop, produced as its worker lives go by, so that every planned kill
//! finds work to interrupt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use tokio::task::JoinHandle;

use crate::Input;
use crate::produce::{producer, send_all};

/// Records per slice of input.
const SLICE: usize = 100;

/// The time between two slices.
const PACE: Duration = Duration::from_millis(400);

/// Produces `inputs` to `topic` in `lives` portions of equal size (at most `lives`): the
/// `p`-th once `p + 1` worker lives have started (`started`, which the loop's spawn counts
/// up), each portion in slices of 100, one every 400 ms. Give it the kill plan's length
/// plus one: the last portion comes only with the loop's final life, so the input cannot
/// run out before the last planned kill (a loop whose input is done stops killing).
///
/// With `handled` (how many inputs the workers have finished, kept up to date by the
/// loop's progress), a slice is sent only once every earlier one is handled, so each slice
/// is a transaction of its own. A life that gets its partitions only after its portion has
/// arrived (a dynamic member waiting for its killed predecessor's session to expire) would
/// otherwise take the whole portion in one or two transactions and never reach a failpoint
/// armed for a later pass (a CI run fired 1 of 3 that way).
pub fn feed_by_lives(
    config: ClientConfig,
    topic: String,
    inputs: Vec<Input>,
    lives: usize,
    started: Arc<AtomicUsize>,
    handled: Option<Arc<AtomicU64>>,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let producer = producer(&config)?;
        let portion = inputs.len().div_ceil(lives.max(1)).max(1);
        let mut sent = 0;
        for (index, part) in inputs.chunks(portion).enumerate() {
            while started.load(Ordering::SeqCst) <= index {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for slice in part.chunks(SLICE) {
                while handled.as_ref().is_some_and(|handled| handled.load(Ordering::SeqCst) < sent) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                send_all(&producer, &topic, slice.to_vec()).await?;
                sent += slice.len() as u64;
                tokio::time::sleep(PACE).await;
            }
        }
        Ok(())
    })
}
