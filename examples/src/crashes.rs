//! Killing a worker process with SIGKILL again and again while it works, as the demo and
//! the outbox and Kafka-mode examples do, to show that a crash neither loses nor doubles
//! anything.
//!
//! Input is published at a steady pace ([`Feed`]) while [`kill_while_working`] kills each
//! worker once it has done more than its predecessor and while published input waits; the
//! last slice of input is published only after the last kill, so every kill falls before
//! the work is done. Each kill prints a line `crash k/K: ...; done/total <what>`, which the
//! examples' test reads.

use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Records sent to Kafka at once, one slice every pace.
const SLICE: usize = 10;
/// Time the feed allows for each worker's life: generous, so that input still flows at the
/// last kill on a loaded machine.
const LIFE_BUDGET: Duration = Duration::from_secs(3);
/// Longest wait for a worker to do more than its predecessor did.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for published input to be waiting when the kill is due.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(30);

/// A worker process: this program run with other arguments. Killed when dropped, so that
/// a run that fails on the way leaves no worker behind.
#[derive(Debug)]
pub struct Worker(Child);

impl Worker {
    /// Starts this program with `args`, its output appended to `log`.
    ///
    /// # Errors
    /// When the process cannot be started.
    pub fn spawn(args: &[&str], log: &Path) -> anyhow::Result<Worker> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Worker(child))
    }

    /// SIGKILL: no shutdown, no flush, transactions cut mid-way.
    ///
    /// # Errors
    /// When the signal cannot be sent or the process not reaped.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }

    /// SIGTERM, then wait: the worker commits its in-flight work and leaves its group.
    ///
    /// # Errors
    /// When the signal cannot be sent or the process not reaped.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status()?;
        anyhow::ensure!(status.success(), "cannot send SIGTERM to the worker");
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Already ended in the normal course: then both fail harmlessly.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Input published at a steady pace while workers are killed, the last slice held back
/// until [`Feed::finish`].
#[derive(Debug)]
pub struct Feed {
    published: Arc<AtomicI64>,
    release: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Feed {
    /// Starts publishing `records` (key, payload) to `topic`, paced so that all but the last
    /// slice would take `LIFE_BUDGET` per crash.
    ///
    /// # Errors
    /// When there is less than two slices of input, or the producer cannot be created.
    pub fn start(brokers: &str, topic: &str, records: Vec<(String, Vec<u8>)>, crashes: usize) -> anyhow::Result<Feed> {
        anyhow::ensure!(records.len() > 2 * SLICE, "more than {} records are needed", 2 * SLICE);
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        let slices = u32::try_from((records.len() - SLICE).div_ceil(SLICE))?;
        let pace = LIFE_BUDGET * u32::try_from(crashes)? / slices;
        let published = Arc::new(AtomicI64::new(0));
        let (release, released) = oneshot::channel();
        let sending = Sending { producer, topic: topic.to_owned(), published: Arc::clone(&published) };
        let task = tokio::spawn(sending.run(records, pace, released));
        Ok(Feed { published, release, task })
    }

    /// How many records Kafka acknowledged so far.
    pub fn published(&self) -> i64 {
        self.published.load(Ordering::SeqCst)
    }

    /// Publishes the rest at once, the last slice included, and waits until Kafka
    /// acknowledged all of it.
    ///
    /// # Errors
    /// When a record could not be published.
    pub async fn finish(self) -> anyhow::Result<()> {
        let _ = self.release.send(());
        self.task.await?
    }
}

/// The publishing half of a [`Feed`].
struct Sending {
    producer: FutureProducer,
    topic: String,
    published: Arc<AtomicI64>,
}

impl Sending {
    /// Publishes `records` one slice every `pace` until `released`, then the rest at once;
    /// the last slice waits for `released`.
    async fn run(
        self,
        mut records: Vec<(String, Vec<u8>)>,
        pace: Duration,
        mut released: oneshot::Receiver<()>,
    ) -> anyhow::Result<()> {
        let last = records.split_off(records.len() - SLICE);
        let mut paced = true;
        for slice in records.chunks(SLICE) {
            self.send(slice).await?;
            // The pace holds only while workers are being killed.
            if paced {
                paced = tokio::time::timeout(pace, &mut released).await.is_err();
            }
        }
        if paced {
            // An error means the run failed and dropped the feed: nothing to wait for then.
            let _ = released.await;
        }
        self.send(&last).await
    }

    /// Sends `slice` and waits until Kafka acknowledged all of it.
    async fn send(&self, slice: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
        let sends = slice.iter().map(|(key, payload)| async move {
            let record = FutureRecord::to(&self.topic).key(key).payload(payload);
            self.producer.send(record, Duration::from_secs(60)).await.map_err(|(e, _)| e)?;
            anyhow::Ok(())
        });
        futures::future::try_join_all(sends).await?;
        self.published.fetch_add(i64::try_from(slice.len())?, Ordering::SeqCst);
        Ok(())
    }
}

/// Kills `crashes` workers started by `spawn`, one after the other, each once `done` (how
/// much of the `total` input is done, as the run's own check counts it) has grown since the
/// kill before, after a random moment more, and while input `feed` published is not done
/// yet. Prints a line per kill, saying `what` was done.
///
/// # Errors
/// When a worker cannot be started or killed, `done` fails, or a worker does nothing new
/// within `PROGRESS_TIMEOUT`.
pub async fn kill_while_working<Done, Fut>(
    crashes: usize,
    total: i64,
    what: &str,
    mut spawn: impl FnMut() -> anyhow::Result<Worker>,
    done: Done,
    feed: &Feed,
) -> anyhow::Result<()>
where
    Done: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<i64>>,
{
    let mut done_before = 0;
    for crash in 1..=crashes {
        let mut worker = spawn()?;
        let born = Instant::now();
        wait_for_progress(&done, done_before).await?;
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(100..1500))).await;
        let waiting = wait_for_backlog(&done, feed).await?;
        worker.kill()?;
        let done_at_kill = done().await?;
        println!(
            "crash {crash:>2}/{crashes}: killed the worker {:.1} s after it started, {}; {done_at_kill:>6}/{total} {what}",
            born.elapsed().as_secs_f64(),
            if waiting { "input waiting" } else { "NO input waiting" },
        );
        done_before = done_at_kill;
    }
    Ok(())
}

/// Waits until `done` is above `before`: the worker is at work.
async fn wait_for_progress<Done, Fut>(done: &Done, before: i64) -> anyhow::Result<()>
where
    Done: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<i64>>,
{
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    while done().await? <= before {
        anyhow::ensure!(Instant::now() < deadline, "the worker did nothing new within {PROGRESS_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Waits until some published input is not done yet, so the kill falls while there is
/// work; false if none was waiting within [`BACKLOG_TIMEOUT`] (the kill goes ahead).
async fn wait_for_backlog<Done, Fut>(done: &Done, feed: &Feed) -> anyhow::Result<bool>
where
    Done: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<i64>>,
{
    let deadline = Instant::now() + BACKLOG_TIMEOUT;
    while Instant::now() < deadline {
        if done().await? < feed.published() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(false)
}
