//! The processes measured: started, watched, sized (peak RSS), stopped and killed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};

use crate::worker::WorkerSpec;

/// What a process that times itself reports on its `RESULT` line.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) messages: u64,
    pub(crate) seconds: f64,
    pub(crate) peak_rss_kib: u64,
}

/// Peak resident set size of process `pid` so far (`VmHWM`), in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user and system) that process `pid` has used so far, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the first, then
    // utime and stime are the 12th and 13th, in clock ticks of 1/100 s on Linux.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// A child process under measurement; killed when dropped.
#[derive(Debug)]
pub(crate) struct Measured {
    name: String,
    child: Child,
    log: PathBuf,
    /// When it was started.
    pub(crate) started: Instant,
}

impl Measured {
    /// Starts this program as a worker running `spec`; its stderr goes to a log in `logs`.
    pub(crate) fn worker(spec: &WorkerSpec, name: &str, logs: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the bench executable")?;
        let mut command = Command::new(exe);
        command.arg("worker").arg(serde_json::to_string(spec)?);
        Self::start(command, name, logs)
    }

    /// Starts `command` with stdout piped and stderr to `logs/<name>.log`.
    pub(crate) fn start(mut command: Command, name: &str, logs: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(logs)?;
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self { name: name.to_owned(), child, log, started: Instant::now() })
    }

    /// Its peak RSS so far, in KiB (0 once it has exited).
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        self.child.id().and_then(peak_rss_kib).unwrap_or_default()
    }

    /// The CPU time it has used so far, in seconds (`None` once it has exited).
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        self.child.id().and_then(cpu_seconds)
    }

    /// Fails, with the end of its log, if it has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}) before the measurement ended; its log ends with:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Waits for a line on stdout that starts with `prefix` and returns the rest.
    pub(crate) async fn line_starting(&mut self, prefix: &str) -> anyhow::Result<String> {
        let stdout = self.child.stdout.as_mut().context("stdout is not piped")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.trim().to_owned());
            }
        }
        let status = self.child.wait().await?;
        bail!("{} exited ({status}) without printing {prefix}; its log ends with:\n{}", self.name, self.log_tail())
    }

    /// Sends it SIGTERM, a graceful stop: exactly commits or rolls back what is in flight and
    /// leaves its group. [`Self::stopped`] waits for the end.
    pub(crate) async fn terminate(&self) -> anyhow::Result<()> {
        let pid = self.child.id().with_context(|| format!("{} has already exited", self.name))?;
        // `kill(1)`: the workspace forbids the `unsafe` a direct `kill(2)` would need.
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
        anyhow::ensure!(status.success(), "cannot send SIGTERM to {}", self.name);
        Ok(())
    }

    /// Waits up to `grace` for it to end after [`Self::terminate`]. Fails, with the end of
    /// its log, when it ends with a failure, or when it is still running then (it is killed).
    pub(crate) async fn stopped(mut self, grace: Duration) -> anyhow::Result<()> {
        let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await else {
            self.child.start_kill().ok();
            self.child.wait().await?;
            bail!("{} still ran {grace:?} after SIGTERM (killed); its log ends with:\n{}", self.name, self.log_tail());
        };
        let status = status?;
        anyhow::ensure!(
            status.success(),
            "{} ended with {status} after SIGTERM; its log ends with:\n{}",
            self.name,
            self.log_tail()
        );
        Ok(())
    }

    /// Kills it with SIGKILL and waits until it is gone.
    pub(crate) async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill().ok();
        self.child.wait().await?;
        Ok(())
    }

    /// The last lines of its log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}
