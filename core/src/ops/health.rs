//! Health of a runtime, for liveness and readiness probes: served over HTTP by
//! [`RuntimeBuilder::serve_http`](crate::RuntimeBuilder::serve_http), or read with
//! [`Runtime::health`](crate::Runtime::health) from a server of your own.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

/// How long a readiness probe waits for the database to answer.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthStatus {
    /// Healthy.
    Up,
    /// Not healthy, and why (one line).
    Down(String),
}

impl HealthStatus {
    /// Whether it is [`HealthStatus::Up`].
    pub fn is_up(&self) -> bool {
        matches!(self, HealthStatus::Up)
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthStatus::Up => f.write_str("ok"),
            HealthStatus::Down(reason) => f.write_str(reason),
        }
    }
}

/// The health of one runtime; cheap to clone. Made by [`Runtime::health`](crate::Runtime::health).
///
/// - [`Health::liveness`]: up while [`Runtime::run`](crate::Runtime::run) runs and every
///   handler's consumer loop is alive; down before, after, and once a loop has died (a
///   panic outside the handler, which the runtime cannot recover from: restart the process).
/// - [`Health::readiness`]: up once every handler's consumer has joined its group and been
///   given its partitions (or none), while the database answers (when the runtime has
///   one); down before that, while shutting down, and once a loop has died.
///
/// Not covered: a partition whose worker stopped on a fatal error while the others go on
/// (reported through `on_error`), the outbox relay (it retries by itself), and rebalances
/// after the first assignment (readiness stays up through them).
#[derive(Clone)]
pub struct Health {
    state: Arc<HealthState>,
    pool: Option<PgPool>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health").field("liveness", &self.liveness()).finish_non_exhaustive()
    }
}

impl Health {
    pub(crate) fn new(state: Arc<HealthState>, pool: Option<PgPool>) -> Self {
        Self { state, pool }
    }

    /// Whether the runtime runs and none of its consumer loops has died.
    pub fn liveness(&self) -> HealthStatus {
        self.state.liveness()
    }

    /// Whether the runtime is ready to process: every consumer assigned, the database
    /// answering `SELECT 1` within 5 s.
    pub async fn readiness(&self) -> HealthStatus {
        let status = self.state.readiness();
        if !status.is_up() {
            return status;
        }
        let Some(pool) = &self.pool else { return status };
        match tokio::time::timeout(DATABASE_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await {
            Ok(Ok(_)) => HealthStatus::Up,
            Ok(Err(e)) => HealthStatus::Down(one_line(&format!("the database does not answer: {e}"))),
            Err(_) => HealthStatus::Down(format!("the database did not answer within {DATABASE_TIMEOUT:?}")),
        }
    }
}

/// Health as the runtime's loops report it.
#[derive(Debug)]
pub(crate) struct HealthState {
    running: AtomicBool,
    shutdown: watch::Receiver<bool>,
    /// The first loop that died, and how.
    died: Mutex<Option<String>>,
    /// Each handler's group, and whether its consumer has had its first assignment.
    groups: Vec<(String, AtomicBool)>,
}

impl HealthState {
    pub(crate) fn new(groups: impl IntoIterator<Item = String>, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            running: AtomicBool::new(false),
            shutdown,
            died: Mutex::new(None),
            groups: groups.into_iter().map(|group| (group, AtomicBool::new(false))).collect(),
        }
    }

    /// `run` started (`true`) or returned (`false`).
    pub(crate) fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
    }

    /// The consumer of `group` was given its partitions (maybe none).
    pub(crate) fn assigned(&self, group: &str) {
        if let Some((_, assigned)) = self.groups.iter().find(|(name, _)| name == group) {
            assigned.store(true, Ordering::SeqCst);
        }
    }

    /// A guard for the loop described by `what`, to hold for as long as the loop runs: if it
    /// ends (returns or panics) while the runtime is not shutting down, the runtime is no
    /// longer live.
    pub(crate) fn loop_guard(self: &Arc<Self>, what: String) -> LoopGuard {
        LoopGuard { state: Arc::clone(self), what }
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn died(&self) -> Option<String> {
        self.died.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn liveness(&self) -> HealthStatus {
        if let Some(reason) = self.died() {
            return HealthStatus::Down(reason);
        }
        if !self.running.load(Ordering::SeqCst) {
            return HealthStatus::Down("the runtime is not running".into());
        }
        HealthStatus::Up
    }

    /// Readiness, the database aside.
    pub(crate) fn readiness(&self) -> HealthStatus {
        let live = self.liveness();
        if !live.is_up() {
            return live;
        }
        if self.shutting_down() {
            return HealthStatus::Down("the runtime is shutting down".into());
        }
        match self.groups.iter().find(|(_, assigned)| !assigned.load(Ordering::SeqCst)) {
            Some((group, _)) => HealthStatus::Down(format!("group {group} has not been given its partitions yet")),
            None => HealthStatus::Up,
        }
    }
}

/// Marks the runtime dead if dropped while the runtime is not shutting down.
#[derive(Debug)]
pub(crate) struct LoopGuard {
    state: Arc<HealthState>,
    what: String,
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if self.state.shutting_down() {
            return;
        }
        let how = if std::thread::panicking() { "panicked" } else { "stopped" };
        let mut died = self.state.died.lock().unwrap_or_else(PoisonError::into_inner);
        if died.is_none() {
            *died = Some(format!("{} {how}", self.what));
        }
    }
}

/// `text` on one line (a probe answers with one).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (Arc<HealthState>, watch::Sender<bool>) {
        let (stop, stopped) = watch::channel(false);
        (Arc::new(HealthState::new(["a".to_owned(), "b".to_owned()], stopped)), stop)
    }

    #[test]
    fn ready_once_every_group_is_assigned_and_live_while_running() {
        let (state, _stop) = state();
        assert_eq!(state.liveness(), HealthStatus::Down("the runtime is not running".into()));
        state.set_running(true);
        assert!(state.liveness().is_up());
        assert_eq!(state.readiness(), HealthStatus::Down("group a has not been given its partitions yet".into()));
        state.assigned("a");
        assert_eq!(state.readiness(), HealthStatus::Down("group b has not been given its partitions yet".into()));
        state.assigned("b");
        assert_eq!(state.readiness(), HealthStatus::Up);
        state.set_running(false);
        assert!(!state.liveness().is_up() && !state.readiness().is_up());
    }

    #[test]
    fn a_loop_that_ends_while_running_makes_the_runtime_dead() {
        let (state, stop) = state();
        state.set_running(true);
        state.assigned("a");
        state.assigned("b");
        let panicking = state.loop_guard("the consumer loop of group a".into());
        let outcome = std::thread::spawn(move || {
            let _alive = panicking;
            panic!("boom");
        })
        .join();
        assert!(outcome.is_err());
        let dead = HealthStatus::Down("the consumer loop of group a panicked".into());
        assert_eq!(state.liveness(), dead);
        assert_eq!(state.readiness(), dead);
        // The first death is the one reported; loops ending at shutdown are not deaths.
        drop(state.loop_guard("the consumer loop of group b".into()));
        assert_eq!(state.liveness(), dead);

        let state = Arc::new(HealthState::new(["a".to_owned()], stop.subscribe()));
        state.set_running(true);
        stop.send_replace(true);
        drop(state.loop_guard("the consumer loop of group a".into()));
        assert!(state.liveness().is_up());
        assert_eq!(state.readiness(), HealthStatus::Down("the runtime is shutting down".into()));
    }

    #[test]
    fn statuses_read_as_one_line() {
        assert_eq!(HealthStatus::Up.to_string(), "ok");
        assert_eq!(one_line("error returned\nfrom database:  x"), "error returned from database: x");
    }
}
