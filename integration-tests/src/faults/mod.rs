//! The fault-injection suite's common parts: profiles, kill loops with recovery times and
//! the input they interrupt, the check applied after every run, and the table every run
//! prints.
//!
//! Two profiles: `quick` (the default, part of `cargo test`) and `full`
//! (`EXACTLY_FAULT_PROFILE=full`, run by `scripts/faults`). Each fault test ends with
//! [`check_and_report`]: it checks the run and prints its row straight to stderr (so it shows
//! even when the test passes) and, when `EXACTLY_FAULT_REPORT` names a file, appends it there
//! as a markdown table row.

pub mod check;
pub mod copier_kill_loop;
pub mod feed;
pub mod kill_loop;
pub mod row;
pub mod watermarks;

pub use check::{Effects, FaultRun, Positions, Verdict, check_and_report};
pub use copier_kill_loop::{CopierKillLoop, CopierKillRun, KAFKA_FAILPOINTS};
pub use feed::feed_by_lives;
pub use kill_loop::{Kill, KillOutcome, kill_loop, kill_plan};
pub use row::{Row, TABLE_HEADER, percentile};
pub use watermarks::{high_watermarks, wait_for_stable_end};

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
