//! Worker processes ended again and again, by SIGKILL at a random moment or by a failpoint
//! where the work aborts itself, with the time each new life took to move the work on.

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::support::signal;

/// The signal a fired failpoint ends its process with (`std::process::abort`).
const SIGABRT: i32 = 6;

/// How long a life armed with a failpoint may run without reaching it.
const FAILPOINT_DEADLINE: Duration = Duration::from_secs(20);

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

/// What a kill loop did.
#[derive(Debug, Default)]
pub struct KillOutcome {
    /// Lives that really were ended by a fault: a SIGKILL that found the process running, or
    /// a failpoint that fired. These are the row's iterations.
    pub kills: usize,
    /// Failpoints planned.
    pub planned_failpoints: usize,
    /// Failpoints that fired: the process died of the abort a fired failpoint makes.
    pub fired: usize,
    /// Time from each (re)start until progress moved.
    pub recovery: Vec<Duration>,
}

impl KillOutcome {
    /// `"f of p failpoints fired"`, for the row's fault name.
    pub fn fired_text(&self) -> String {
        format!("{} of {} failpoints fired", self.fired, self.planned_failpoints)
    }

    /// Fails unless at least half the planned failpoints fired and at least half the plan
    /// was carried out: a run whose faults did not land proves nothing.
    pub fn ensure_enough_landed(&self, plan: &[Kill]) -> anyhow::Result<()> {
        anyhow::ensure!(self.fired * 2 >= self.planned_failpoints, "too few failpoints fired: {}", self.fired_text());
        anyhow::ensure!(self.kills * 2 >= plan.len(), "only {} of {} planned kills landed", self.kills, plan.len());
        Ok(())
    }
}

/// Whether a process ended the way a fired failpoint ends it: aborted, after writing the
/// failpoint's line to its log (`log_before` is the log's length when it started). An abort
/// without that line (an assertion in librdkafka, say) is an error, not a fired failpoint.
fn died_at_failpoint(status: ExitStatus, name: &str, log: &Path, log_before: usize) -> anyhow::Result<bool> {
    if status.signal() != Some(SIGABRT) {
        return Ok(false);
    }
    let marker = format!("failpoint {name} reached");
    let text = std::fs::read(log)?;
    let since_start = String::from_utf8_lossy(text.get(log_before..).unwrap_or_default());
    anyhow::ensure!(
        since_start.contains(&marker),
        "a worker aborted without reaching failpoint {name}; see {}",
        log.display()
    );
    Ok(true)
}

/// How much text the log holds now.
fn log_length(log: &Path) -> usize {
    std::fs::metadata(log).map_or(0, |m| m.len() as usize)
}

/// Runs worker processes one after another, each ended as `plan` says, then one last worker
/// until `progress` reaches `target`. `spawn` starts a worker with extra environment, its
/// output appended to `log` (where a fired failpoint leaves its line); `progress` measures
/// work done (it must only grow).
pub async fn kill_loop<S, P, F>(
    plan: &[Kill],
    log: &Path,
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
    let mut outcome = KillOutcome {
        planned_failpoints: plan.iter().filter(|k| matches!(k, Kill::Failpoint(..))).count(),
        ..KillOutcome::default()
    };
    for kill in plan {
        let before = progress().await?;
        if before >= target {
            break; // nothing left to interrupt
        }
        let started = Instant::now();
        let env = kill.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let log_before = log_length(log);
        let mut child = spawn(&env)?;
        if wait_for_progress(&mut child, &mut progress, before, timeout).await? {
            outcome.recovery.push(started.elapsed());
        }
        let landed = match kill {
            Kill::Random(after) => {
                tokio::time::sleep(*after).await;
                sigkill_if_running(&mut child)?
            }
            Kill::Failpoint(name, _) => {
                let status = wait_for_failpoint(&mut child, &mut progress, target).await?;
                let fired = died_at_failpoint(status, name, log, log_before)?;
                outcome.fired += usize::from(fired);
                fired
            }
        };
        outcome.kills += usize::from(landed);
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

/// SIGKILLs `child`; true if it was still running, so the kill landed.
fn sigkill_if_running(child: &mut Child) -> anyhow::Result<bool> {
    let running = child.try_wait()?.is_none();
    let _ = child.kill();
    child.wait()?;
    Ok(running)
}

/// Waits for `child`, armed with a failpoint, to end; a child that gets no further (the
/// work ran out, or the deadline passed) is killed. Returns how it ended.
async fn wait_for_failpoint<P, F>(child: &mut Child, progress: &mut P, target: u64) -> anyhow::Result<ExitStatus>
where
    P: FnMut() -> F,
    F: Future<Output = anyhow::Result<u64>>,
{
    let deadline = Instant::now() + FAILPOINT_DEADLINE;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline || progress().await? >= target {
            let _ = child.kill();
            // It may have fired between the last look and the kill: the status says.
            return Ok(child.wait()?);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
