//! The fault-injection suite's common parts: profiles, kill loops with recovery times, the
//! checks applied after every run, and the table every run prints.
//!
//! Two profiles: `quick` (the default, part of `cargo test`) and `full`
//! (`EXACTLY_FAULT_PROFILE=full`, run by `scripts/faults`). Each fault test prints its rows
//! straight to stderr (so they show even when the test passes) and, when
//! `EXACTLY_FAULT_REPORT` names a file, appends them there as markdown table rows.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::Child;
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::PgPool;

use crate::support::signal;
use crate::{Kafka, unique};

/// How hard the suite pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A few iterations of every fault: part of the test command.
    Quick,
    /// Many iterations (at least 200 kill points in all): `scripts/faults`.
    Full,
}

impl Profile {
    /// `EXACTLY_FAULT_PROFILE=full` selects the full profile; anything else the quick one.
    pub fn current() -> Self {
        match std::env::var("EXACTLY_FAULT_PROFILE").as_deref() {
            Ok("full") => Profile::Full,
            _ => Profile::Quick,
        }
    }

    /// `quick` or `full`, by profile.
    pub fn pick<T>(self, quick: T, full: T) -> T {
        match self {
            Profile::Quick => quick,
            Profile::Full => full,
        }
    }
}

/// One row of the fault table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The fault injected.
    pub fault: String,
    /// The mode under test (Database, Kafka, outbox).
    pub mode: &'static str,
    /// How many times the fault was injected.
    pub iterations: usize,
    /// Input messages.
    pub messages: usize,
    /// Messages applied more than once.
    pub duplicates: usize,
    /// Messages never applied.
    pub missing: usize,
    /// Time from each fault's end (restart, resume) until processing moved again.
    pub recovery: Vec<Duration>,
}

/// The header of the fault table, in markdown.
pub const TABLE_HEADER: &str = "| fault | mode | iterations | messages | duplicates | missing | recovery p50 | recovery p99 |\n\
                                | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |";

impl Row {
    /// The row in markdown.
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.fault,
            self.mode,
            self.iterations,
            self.messages,
            self.duplicates,
            self.missing,
            show(percentile(&self.recovery, 50)),
            show(percentile(&self.recovery, 99)),
        )
    }

    /// Prints the row (with the header) to stderr, bypassing the test harness's capture,
    /// and appends it to `EXACTLY_FAULT_REPORT` if set.
    pub fn report(&self) {
        let line = self.markdown();
        let _ = writeln!(std::io::stderr().lock(), "\n{TABLE_HEADER}\n{line}\n");
        if let Ok(path) = std::env::var("EXACTLY_FAULT_REPORT")
            && let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }

    /// Reports the row, then fails if anything was lost or doubled.
    pub fn report_and_check(&self) -> anyhow::Result<()> {
        self.report();
        anyhow::ensure!(
            self.duplicates == 0 && self.missing == 0,
            "{}: {} duplicates, {} missing",
            self.fault,
            self.duplicates,
            self.missing
        );
        Ok(())
    }
}

fn show(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// The `p`-th percentile (nearest rank).
pub fn percentile(samples: &[Duration], p: usize) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// How one life of a worker process ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kill {
    /// SIGKILL after the given time of progress.
    Random(Duration),
    /// The process aborts itself at the `hit`-th pass of a failpoint.
    Failpoint(&'static str, u32),
}

impl Kill {
    /// The environment that arms the failpoint, if any.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Kill::Random(_) => vec![("EXACTLY_FAILPOINT", String::new())],
            Kill::Failpoint(name, hit) => {
                vec![("EXACTLY_FAILPOINT", (*name).to_owned()), ("EXACTLY_FAILPOINT_HIT", hit.to_string())]
            }
        }
    }
}

/// A plan of `random` random kills (each after 0.2 to 2 s of progress), and for each
/// failpoint `per_failpoint` kills at a random pass (1 to 5), shuffled.
pub fn kill_plan(random: usize, failpoints: &[&'static str], per_failpoint: usize) -> Vec<Kill> {
    let mut rng = rand::rng();
    let mut plan: Vec<Kill> =
        (0..random).map(|_| Kill::Random(Duration::from_millis(rng.random_range(200..2000)))).collect();
    for name in failpoints {
        for _ in 0..per_failpoint {
            plan.push(Kill::Failpoint(name, rng.random_range(1..=5)));
        }
    }
    for i in (1..plan.len()).rev() {
        plan.swap(i, rng.random_range(0..=i));
    }
    plan
}

/// A row for a copy (Kafka mode, outbox) checked with [`verify_copy`](crate::copy_check::verify_copy):
/// records beyond the input count as duplicates too.
pub fn copy_row(
    fault: String,
    mode: &'static str,
    iterations: usize,
    messages: usize,
    verdict: &crate::copy_check::CopyVerdict,
    recovery: Vec<Duration>,
) -> Row {
    Row {
        fault,
        mode,
        iterations,
        messages,
        duplicates: verdict.duplicates + verdict.records.saturating_sub(messages),
        missing: verdict.missing,
        recovery,
    }
}

/// What a kill loop did.
#[derive(Debug, Default)]
pub struct KillOutcome {
    /// Lives ended by SIGKILL or a failpoint.
    pub kills: usize,
    /// Failpoints that fired (the process aborted itself).
    pub fired: usize,
    /// Time from each (re)start until progress moved.
    pub recovery: Vec<Duration>,
}

/// Runs worker processes one after another, each ended as `plan` says, then one last worker
/// until `progress` reaches `target`. `spawn` starts a worker with extra environment;
/// `progress` measures work done (it must only grow).
pub async fn kill_loop<S, P, F>(
    plan: &[Kill],
    mut spawn: S,
    mut progress: P,
    target: u64,
    timeout: Duration,
) -> anyhow::Result<KillOutcome>
where
    S: FnMut(&[(&str, &str)]) -> anyhow::Result<Child>,
    P: FnMut() -> F,
    F: Future<Output = anyhow::Result<u64>>,
{
    let mut outcome = KillOutcome::default();
    for kill in plan {
        let before = progress().await?;
        if before >= target {
            break; // nothing left to interrupt
        }
        let started = Instant::now();
        let env = kill.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut child = spawn(&env)?;
        let moved = wait_for_progress(&mut child, &mut progress, before, timeout).await?;
        if moved {
            outcome.recovery.push(started.elapsed());
        }
        match kill {
            Kill::Random(after) => {
                tokio::time::sleep(*after).await;
                let _ = child.kill();
                child.wait()?;
            }
            Kill::Failpoint(..) => {
                // It aborts itself when it gets there; if the work ends first, kill it.
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    if let Some(status) = child.try_wait()? {
                        if !status.success() {
                            outcome.fired += 1;
                        }
                        break;
                    }
                    if Instant::now() > deadline || progress().await? >= target {
                        let _ = child.kill();
                        child.wait()?;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        outcome.kills += 1;
    }
    let started = Instant::now();
    let before = progress().await?;
    let mut child = spawn(&[("EXACTLY_FAILPOINT", "")])?;
    let finished = async {
        if before < target && wait_for_progress(&mut child, &mut progress, before, timeout).await? {
            outcome.recovery.push(started.elapsed());
        }
        // Stuck means no progress for `timeout`, not the input taking longer than that to
        // arrive (the feed may still be running).
        let (mut last, mut moved) = (progress().await?, Instant::now());
        while last < target {
            anyhow::ensure!(moved.elapsed() < timeout, "progress stuck at {last} (of {target}) for {timeout:?}");
            anyhow::ensure!(child.try_wait()?.is_none(), "the last worker exited early");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = progress().await?;
            if now > last {
                (last, moved) = (now, Instant::now());
            }
        }
        Ok(())
    }
    .await;
    signal(&child, "TERM")?;
    child.wait()?;
    finished.map(|()| outcome)
}

/// Waits until `progress` exceeds `before` (true) or the child exits first (false).
async fn wait_for_progress<P, F>(
    child: &mut Child,
    progress: &mut P,
    before: u64,
    timeout: Duration,
) -> anyhow::Result<bool>
where
    P: FnMut() -> F,
    F: Future<Output = anyhow::Result<u64>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if progress().await? > before {
            return Ok(true);
        }
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        anyhow::ensure!(Instant::now() < deadline, "no progress past {before} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a Database-mode run left: each input value's effects, against the input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EffectsVerdict {
    /// Effects rows.
    pub rows: usize,
    /// Values applied more than once.
    pub duplicates: usize,
    /// Values never applied.
    pub missing: usize,
    /// Effects applied before an earlier offset of their partition.
    pub out_of_order: usize,
    /// Partitions whose stored position is not the end of the partition.
    pub positions_behind: usize,
}

/// Checks the `effects` of `group` against `expected` payloads: each exactly once, in
/// offset order per partition, and every stored position at the partition's end.
pub async fn check_effects(
    kafka: &Kafka,
    pool: &PgPool,
    group: &str,
    topic: &str,
    expected: &[String],
) -> anyhow::Result<EffectsVerdict> {
    let rows: Vec<(i32, i64, String)> =
        sqlx::query_as("SELECT partition, message_offset, payload FROM effects WHERE group_id = $1 ORDER BY seq")
            .bind(group)
            .fetch_all(pool)
            .await?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut last: HashMap<i32, i64> = HashMap::new();
    let mut verdict = EffectsVerdict { rows: rows.len(), ..EffectsVerdict::default() };
    for (partition, offset, payload) in &rows {
        *seen.entry(payload.as_str()).or_default() += 1;
        if last.insert(*partition, *offset).is_some_and(|previous| previous >= *offset) {
            verdict.out_of_order += 1;
        }
    }
    verdict.duplicates = seen.values().filter(|n| **n > 1).count();
    verdict.missing = expected.iter().filter(|value| !seen.contains_key(value.as_str())).count();
    for (partition, end) in high_watermarks(kafka.client_config(), topic, "read_uncommitted")? {
        if exactly::offsets::position(pool, group, topic, partition).await? != Some(end) {
            verdict.positions_behind += 1;
        }
    }
    Ok(verdict)
}

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
    Ok(ends)
}

/// Waits until no transaction is left open on `topic`: its last stable offset equals its
/// high watermark on every partition (read_committed readers are not stuck).
pub async fn wait_for_stable_end(kafka: &Kafka, topic: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let committed = high_watermarks(kafka.client_config(), topic, "read_committed")?;
        let written = high_watermarks(kafka.client_config(), topic, "read_uncommitted")?;
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
