//! The instances of one consumer group (S9): worker processes started from the same spec,
//! so with the same group id; one taken away by SIGTERM or SIGKILL, the rest stopped at the
//! end of the run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::process::Measured;
use crate::worker::WorkerSpec;

/// The running instances, oldest first; dropping them kills them.
#[derive(Debug)]
pub(crate) struct Instances {
    spec: WorkerSpec,
    logs: PathBuf,
    running: Vec<Measured>,
}

impl Instances {
    /// None yet; each will run `spec`, its log in `logs`.
    pub(crate) fn new(spec: WorkerSpec, logs: PathBuf) -> Self {
        Self { spec, logs, running: Vec::new() }
    }

    /// Starts one more, its log named `name`.
    pub(crate) fn start(&mut self, name: &str) -> anyhow::Result<()> {
        self.running.push(Measured::worker(&self.spec, name, &self.logs)?);
        Ok(())
    }

    /// Fails, with the end of its log, if one of them has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        self.running.iter_mut().try_for_each(Measured::check_running)
    }

    /// Takes the one started first out of the group's instances, for the caller to stop.
    pub(crate) fn take_oldest(&mut self) -> anyhow::Result<Measured> {
        anyhow::ensure!(!self.running.is_empty(), "no instance is running");
        Ok(self.running.remove(0))
    }

    /// Stops them all: SIGTERM to each at once, then up to `grace` for each to end (then
    /// SIGKILL). Fails with the first that did not end cleanly, once all are gone.
    pub(crate) async fn stop(self, grace: Duration) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        for instance in &self.running {
            if let Err(e) = instance.terminate().await {
                failures.push(e);
            }
        }
        for instance in self.running {
            if let Err(e) = instance.stopped(grace).await {
                failures.push(e);
            }
        }
        match failures.into_iter().next() {
            Some(first) => Err(first).context("stopping the group's instances"),
            None => Ok(()),
        }
    }
}
