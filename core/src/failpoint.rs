//! Named failpoints for crash tests: with the `failpoints` cargo feature, the process aborts
//! (as abruptly as a SIGKILL: no destructor, no flush, no goodbye to Kafka or PostgreSQL)
//! the `n`-th time it passes the failpoint named by `EXACTLY_FAILPOINT=name` (`n` from
//! `EXACTLY_FAILPOINT_HIT`, default 1). With `EXACTLY_FAILPOINT_ACTION=stop` it freezes
//! instead, as a SIGSTOP would, at that exact point (it sends itself SIGSTOP through
//! `kill(1)`, since the crate forbids `unsafe`); a test resumes it with SIGCONT. Without the
//! feature every failpoint compiles to nothing.
//!
//! | failpoint | where |
//! | --- | --- |
//! | `db.before_commit` | Database mode: effects and new position written, `COMMIT` not sent |
//! | `db.after_commit` | Database mode: committed, the position not yet copied to Kafka |
//! | `kafka.after_produce` | Kafka mode: a record's output sent inside the open transaction |
//! | `kafka.after_send_offsets` | Kafka mode: offsets added to the transaction, not committed |
//! | `kafka.during_commit` | Kafka mode: aborts from another thread while `commit_transaction` runs |
//! | `relay.after_produce` | outbox relay: records sent inside its transaction |
//! | `relay.after_commit` | outbox relay: transaction committed, published rows not yet deleted |

#[cfg(feature = "failpoints")]
mod enabled {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Armed {
        name: String,
        hit: u64,
        stop: bool,
        passes: AtomicU64,
    }

    fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let name = std::env::var("EXACTLY_FAILPOINT").ok().filter(|n| !n.is_empty())?;
                let hit = std::env::var("EXACTLY_FAILPOINT_HIT").ok().and_then(|h| h.parse().ok()).unwrap_or(1);
                let stop = std::env::var("EXACTLY_FAILPOINT_ACTION").is_ok_and(|action| action == "stop");
                Some(Armed { name, hit, stop, passes: AtomicU64::new(0) })
            })
            .as_ref()
    }

    /// Whether this pass of failpoint `name` is the one that must crash.
    fn fires(name: &str) -> bool {
        armed().is_some_and(|armed| armed.name == name && armed.passes.fetch_add(1, Ordering::SeqCst) + 1 == armed.hit)
    }

    fn crash(name: &str) -> ! {
        eprintln!("exactly: failpoint {name} reached: aborting the process");
        std::process::abort();
    }

    /// Stops the whole process until it gets SIGCONT; aborts if it cannot.
    fn freeze(name: &str) {
        eprintln!("exactly: failpoint {name} reached: stopping the process");
        let pid = std::process::id().to_string();
        let stopped = std::process::Command::new("kill").args(["-STOP", &pid]).status();
        if !stopped.is_ok_and(|status| status.success()) {
            crash(name);
        }
        eprintln!("exactly: failpoint {name}: resumed");
    }

    pub(crate) fn hit(name: &str) {
        if fires(name) {
            if armed().is_some_and(|armed| armed.stop) {
                freeze(name);
            } else {
                crash(name);
            }
        }
    }

    pub(crate) fn hit_soon(name: &'static str) {
        if fires(name) {
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(rand::random_range(0..5)));
                crash(name);
            });
        }
    }
}

/// Passes failpoint `name`: aborts (or stops) the process if it is armed for this pass.
#[cfg(feature = "failpoints")]
pub(crate) fn hit(name: &str) {
    enabled::hit(name);
}

/// Like [`hit`], but the abort comes from another thread a few milliseconds later, while
/// the caller goes on into the call it is about to make.
#[cfg(feature = "failpoints")]
pub(crate) fn hit_soon(name: &'static str) {
    enabled::hit_soon(name);
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_name: &str) {}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit_soon(_name: &'static str) {}
