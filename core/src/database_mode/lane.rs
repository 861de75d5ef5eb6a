//! One lane of a key-concurrent partition: does the jobs its dispatcher hands it, one
//! after another, through the same attempts, failure handling, dead letters and parked
//! retries as a sequential worker; each commit records its messages as completed.

use tokio::sync::mpsc;
use tracing::Instrument;

use super::parked::ParkedKeys;
use super::partition::{Item, PartitionWorker, Report};
use crate::api::mode::Database;
use crate::pipeline::work::Work;
use crate::store::parking::KeyBytes;

/// What a dispatcher hands a lane.
pub(super) enum Job<K, P> {
    /// Handle and commit these messages; `parked` are the parked keys among theirs (their
    /// messages are parked, not handled).
    Batch { items: Vec<Item<K, P>>, parked: Vec<KeyBytes> },
    /// Retry the parked messages of this key, oldest first.
    RetryParked(KeyBytes),
}

/// A lane and the jobs it is handed.
pub(super) struct Lane<H: Work<Mode = Database>> {
    pub(super) index: usize,
    pub(super) worker: PartitionWorker<H>,
    pub(super) jobs: mpsc::UnboundedReceiver<Job<H::Key, H::Payload>>,
}

impl<H: Work<Mode = Database>> Lane<H> {
    /// Does every job it is handed until the dispatcher closes the channel. Returns whether
    /// it ended that way (`false`: fenced, stopped or failed for good mid-job, what it held
    /// left to the partition's next owner).
    pub(super) async fn run(mut self) -> bool {
        let span = tracing::info_span!("lane", lane = self.index);
        async move {
            while let Some(job) = self.jobs.recv().await {
                let carried_on = match job {
                    Job::Batch { items, parked } => self.commit(items, parked).await,
                    Job::RetryParked(key) => self.retry(key).await,
                };
                if !carried_on {
                    return false;
                }
            }
            true
        }
        .instrument(span)
        .await
    }

    async fn commit(&mut self, items: Vec<Item<H::Key, H::Payload>>, parked: Vec<KeyBytes>) -> bool {
        let worker = &mut self.worker;
        if let Some(keys) = &mut worker.parked {
            *keys = ParkedKeys::of(parked);
        }
        worker.batch = items;
        worker.limit = worker.batch_limit;
        worker.commit_with_retries().await
    }

    async fn retry(&mut self, key: KeyBytes) -> bool {
        let worker = &mut self.worker;
        worker.parked = Some(ParkedKeys::of([key.clone()]));
        if !worker.retry_parked().await {
            return false;
        }
        let due = worker.parked.as_ref().and_then(|parked| parked.due(&key));
        worker.report(Report::Retried { lane: self.index, key, due });
        true
    }
}
