//! Killing a worker process with SIGKILL again and again while it works, to show that a
//! crash neither loses nor doubles anything: what [`CrashTest`](crate::CrashTest) does to a
//! handler, and what exactly's demo and examples do to theirs.
//!
//! Input is published at a steady pace ([`Feed`]) while [`kill_while_working`] kills each
//! worker once it has done more than its predecessor and while published input waits; the
//! last slice of input is published only after the last kill, so every kill falls before
//! the work is done. Each kill prints a line `crash k/K: ...; done/total <what>`.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::producer::FutureProducer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Input;
use crate::produce::{Sent, producer, send_and_locate};

/// Records sent to Kafka at once, one slice every pace.
const SLICE: usize = 10;
/// Time the feed allows for each worker's life: generous, so that input still flows at the
/// last kill on a loaded machine.
const LIFE_BUDGET: Duration = Duration::from_secs(3);
/// Longest wait for a worker to do more than its predecessor did.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for published input to be waiting when the kill is due.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `program` with `args` and the environment variables `env` added, its stdout and
/// stderr appended to `log`, for tests that kill, stop and resume real processes.
///
/// # Errors
/// When the log cannot be opened or the process cannot be started.
pub fn spawn_logged(
    program: impl AsRef<OsStr>,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    Ok(Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

/// A worker process: this program run with other arguments. Killed when dropped, so that
/// a run that fails on the way leaves no worker behind.
#[derive(Debug)]
pub struct Worker(Child);

impl Worker {
    /// Starts this program with `args` and the environment variables `env` added, its
    /// output appended to `log`.
    ///
    /// # Errors
    /// When the process cannot be started.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], log: &Path) -> anyhow::Result<Worker> {
        Ok(Worker(spawn_logged(std::env::current_exe()?, args, env, log)?))
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
    task: JoinHandle<anyhow::Result<Vec<Sent>>>,
}

impl Feed {
    /// Starts publishing `records` to `topic`, paced so that all but the last slice would
    /// take `LIFE_BUDGET` per crash: for workers that take over at once when restarted
    /// (static members).
    ///
    /// # Errors
    /// When there is less than two slices of input, or the producer cannot be created.
    pub fn start(brokers: &str, topic: &str, records: Vec<Input>, crashes: usize) -> anyhow::Result<Feed> {
        Self::spread(brokers, topic, records, LIFE_BUDGET * u32::try_from(crashes)?)
    }

    /// Starts publishing `records` to `topic`, all but the last slice spread over `span`.
    ///
    /// # Errors
    /// When there is less than two slices of input, or the producer cannot be created.
    pub fn spread(brokers: &str, topic: &str, records: Vec<Input>, span: Duration) -> anyhow::Result<Feed> {
        anyhow::ensure!(records.len() > 2 * SLICE, "more than {} records are needed", 2 * SLICE);
        let producer = producer(rdkafka::ClientConfig::new().set("bootstrap.servers", brokers))?;
        let slices = u32::try_from((records.len() - SLICE).div_ceil(SLICE))?;
        let pace = span / slices;
        let published = Arc::new(AtomicI64::new(0));
        let (release, released) = oneshot::channel();
        let sending =
            Sending { producer, topic: topic.to_owned(), published: Arc::clone(&published), sent: Vec::new() };
        let task = tokio::spawn(sending.run(records, pace, released));
        Ok(Feed { published, release, task })
    }

    /// How many records Kafka acknowledged so far.
    pub fn published(&self) -> i64 {
        self.published.load(Ordering::SeqCst)
    }

    /// Publishes the rest at once, the last slice included, waits until Kafka acknowledged
    /// all of it, and says where each record landed, in the order given.
    ///
    /// # Errors
    /// When a record could not be published.
    pub async fn finish(self) -> anyhow::Result<Vec<Sent>> {
        let _ = self.release.send(());
        self.task.await?
    }
}

/// The publishing half of a [`Feed`].
struct Sending {
    producer: FutureProducer,
    topic: String,
    published: Arc<AtomicI64>,
    sent: Vec<Sent>,
}

impl Sending {
    /// Publishes `records` one slice every `pace` until `released`, then the rest at once;
    /// the last slice waits for `released`.
    async fn run(
        mut self,
        mut records: Vec<Input>,
        pace: Duration,
        mut released: oneshot::Receiver<()>,
    ) -> anyhow::Result<Vec<Sent>> {
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
        self.send(&last).await?;
        Ok(self.sent)
    }

    /// Sends `slice` and waits until Kafka acknowledged all of it.
    async fn send(&mut self, slice: &[Input]) -> anyhow::Result<()> {
        let sent = send_and_locate(&self.producer, &self.topic, slice.to_vec()).await?;
        self.sent.extend(sent);
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
    spawn: impl FnMut() -> anyhow::Result<Worker>,
    done: Done,
    feed: &Feed,
) -> anyhow::Result<()>
where
    Done: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<i64>>,
{
    kill_while_busy(crashes, total, what, spawn, done, feed, || async { Ok(true) }).await
}

/// As [`kill_while_working`], and each kill also waits, as long as for input, until `busy`
/// says the worker is in the middle of its work (a transaction of its open, say): input
/// waiting alone does not mean the worker is at it, and a kill between two transactions
/// tests less than one inside.
///
/// # Errors
/// As [`kill_while_working`], and when `busy` fails.
pub async fn kill_while_busy<Done, Fut, Busy, BusyFut>(
    crashes: usize,
    total: i64,
    what: &str,
    mut spawn: impl FnMut() -> anyhow::Result<Worker>,
    done: Done,
    feed: &Feed,
    busy: Busy,
) -> anyhow::Result<()>
where
    Done: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<i64>>,
    Busy: Fn() -> BusyFut,
    BusyFut: Future<Output = anyhow::Result<bool>>,
{
    let mut done_before = 0;
    for crash in 1..=crashes {
        let mut worker = spawn()?;
        let born = Instant::now();
        wait_for_progress(&done, done_before).await?;
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(100..1500))).await;
        let waiting = wait_for_backlog(&done, feed, &busy).await?;
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

/// Waits until some published input is not done yet and `busy` holds, so the kill falls
/// while there is work; false if that did not happen within [`BACKLOG_TIMEOUT`] (the kill
/// goes ahead).
async fn wait_for_backlog<Done, Fut, Busy, BusyFut>(done: &Done, feed: &Feed, busy: &Busy) -> anyhow::Result<bool>
where
    Done: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<i64>>,
    Busy: Fn() -> BusyFut,
    BusyFut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + BACKLOG_TIMEOUT;
    while Instant::now() < deadline {
        if done().await? < feed.published() && busy().await? {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(false)
}
