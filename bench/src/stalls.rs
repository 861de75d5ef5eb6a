//! Stalls of a consumer group's partitions around one membership change (an instance
//! joining, leaving or killed), as exactly's stored positions show them: per partition,
//! when its stored position advanced, and when it was claimed. exactly raises a partition's
//! epoch whenever an instance is assigned it, so a rise of the epoch is a change of owner.
//! S9's figures come from here; the reads are [`stored_positions`], taken every 50 ms by
//! [`crate::group_watch`].

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;

/// A gap between two advances of a partition longer than this is a stall. At S9's rate a
/// partition whose owner works advances every 50 to 150 ms (a batch closes 50 ms after its
/// first message), so a gap of this size means it had no owner working on it.
pub(crate) const STALL: Duration = Duration::from_millis(500);

/// How long no partition may have been claimed before the group counts as steady or
/// settled: a rebalance that moves partitions in steps (a consumer-protocol member learns at
/// its next heartbeat, a second apart in S9, of partitions freed for it) has taken its last.
pub(crate) const QUIET: Duration = Duration::from_secs(1);

/// Advances every partition must show after the event before the group counts as settled:
/// one could still be the previous owner's last commit.
const ADVANCES_AFTER_EVENT: u32 = 2;

/// A partition's row in `exactly.offsets`, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The next offset to process: it rises with every committed batch.
    pub(crate) next_offset: i64,
    /// The claim epoch: it rises with every assignment of the partition to an instance.
    pub(crate) epoch: i64,
}

/// The stored positions of `group` in `topic`, per partition (only those claimed so far).
pub(crate) async fn stored_positions(pool: &PgPool, group: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, Stored>> {
    let rows: Vec<(i32, i64, i64)> =
        sqlx::query_as("SELECT partition, next_offset, epoch FROM exactly.offsets WHERE group_id = $1 AND topic = $2")
            .bind(group)
            .bind(topic)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(partition, next_offset, epoch)| (partition, Stored { next_offset, epoch })).collect())
}

/// S9's figures for one event, each from the event on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rebalance {
    /// The longest time any partition went between two advances, among the gaps that ended
    /// after the event (a gap spanning the event counts whole).
    pub(crate) longest_stall: Duration,
    /// From the event until every partition claimed after it was advanced by its new owner
    /// and every partition that stalled advanced again.
    pub(crate) settled_after: Duration,
    /// Partitions with a gap over [`STALL`] that ended after the event.
    pub(crate) partitions_stalled: usize,
}

/// What the reads showed of one partition. Times are from the start of the watch.
#[derive(Debug, Default, Clone)]
struct Trace {
    /// Its row at the last read that had it.
    last: Option<Stored>,
    /// When its position last rose.
    advanced_at: Option<Duration>,
    /// When it was last claimed: its epoch rose, or its row was first read (claimed before
    /// the watch began, or just now).
    claimed_at: Option<Duration>,
    /// When its owner since that claim first advanced it. Only an advance read after the
    /// read that showed the claim counts: one read showing both could be the previous
    /// owner's last commit followed by the claim.
    owner_advanced_at: Option<Duration>,
    /// Whether it was claimed after the event.
    claimed_after_event: bool,
    /// Advances read after the event.
    advances_after_event: u32,
    /// The longest gap between two advances that ended after the event.
    longest_gap: Duration,
    /// When it last advanced after a gap over [`STALL`] (after the event).
    resumed_at: Option<Duration>,
}

impl Trace {
    /// Takes in its row as read at `at` (`event`: when the event happened, if it has);
    /// returns whether it was claimed since the previous read.
    fn note(&mut self, at: Duration, stored: Stored, event: Option<Duration>) -> bool {
        let event = event.filter(|&event| at >= event);
        let claimed = match self.last {
            None => true,
            Some(last) => {
                if stored.next_offset > last.next_offset {
                    self.advanced(at, stored.epoch == last.epoch, event);
                }
                stored.epoch != last.epoch
            }
        };
        if claimed {
            self.claimed_at = Some(at);
            self.owner_advanced_at = None;
            self.claimed_after_event |= event.is_some();
        }
        self.last = Some(stored);
        claimed
    }

    /// Its position rose by `at`; `same_owner`: with no claim in between.
    fn advanced(&mut self, at: Duration, same_owner: bool, event: Option<Duration>) {
        if let Some(event) = event {
            // A partition never advanced before the event counts as stalled from it.
            let gap = at.saturating_sub(self.advanced_at.unwrap_or(event));
            self.advances_after_event += 1;
            self.longest_gap = self.longest_gap.max(gap);
            if gap > STALL {
                self.resumed_at = Some(at);
            }
        }
        self.advanced_at = Some(at);
        if same_owner && self.owner_advanced_at.is_none() {
            self.owner_advanced_at = Some(at);
        }
    }

    /// Whether, at `at`, an owner is working on it: its owner since the last claim has
    /// advanced it, and it is not stalled now.
    fn working(&self, at: Duration) -> bool {
        self.owner_advanced_at.is_some()
            && self.advanced_at.is_some_and(|advanced| at.saturating_sub(advanced) <= STALL)
    }
}

/// The reads of a group's stored positions, before and after one event, and what they show.
#[derive(Debug)]
pub(crate) struct Stalls {
    /// Per partition, by number.
    traces: Vec<Trace>,
    /// When the event happened, from the start of the watch.
    event: Option<Duration>,
    /// When any partition was last claimed.
    last_claim: Option<Duration>,
}

impl Stalls {
    /// For a topic of `partitions` partitions, nothing read yet.
    pub(crate) fn new(partitions: usize) -> Self {
        Self { traces: vec![Trace::default(); partitions], event: None, last_claim: None }
    }

    /// Takes in the rows read at `at` (a partition with no row yet is not claimed yet).
    pub(crate) fn note(&mut self, at: Duration, positions: &BTreeMap<i32, Stored>) {
        for (&partition, &stored) in positions {
            let Some(trace) = usize::try_from(partition).ok().and_then(|index| self.traces.get_mut(index)) else {
                continue;
            };
            if trace.note(at, stored, self.event) {
                self.last_claim = Some(at);
            }
        }
    }

    /// The event happened at `at`.
    pub(crate) fn mark_event(&mut self, at: Duration) {
        self.event = Some(at);
    }

    /// Whether no partition has been claimed for [`QUIET`] by `at` (and one has been).
    fn quiet(&self, at: Duration) -> bool {
        self.last_claim.is_some_and(|claim| at.saturating_sub(claim) >= QUIET)
    }

    /// Whether the group is steady at `at`, ready for the event: every partition worked on
    /// by its owner, none stalled, none claimed for [`QUIET`].
    pub(crate) fn steady(&self, at: Duration) -> bool {
        self.quiet(at) && self.traces.iter().all(|trace| trace.working(at))
    }

    /// Whether the group has settled after the event, at `at`: a partition was claimed
    /// after it (every event moves some), none for [`QUIET`] since, and every partition was
    /// advanced [`ADVANCES_AFTER_EVENT`] times after it, by its owner since its last claim,
    /// and is not stalled now.
    pub(crate) fn settled(&self, at: Duration) -> bool {
        self.event.is_some()
            && self.traces.iter().any(|trace| trace.claimed_after_event)
            && self.quiet(at)
            && self.traces.iter().all(|trace| trace.working(at) && trace.advances_after_event >= ADVANCES_AFTER_EVENT)
    }

    /// The figures, once [`Self::settled`]; `None` before.
    pub(crate) fn figures(&self) -> Option<Rebalance> {
        let event = self.event?;
        if self.traces.iter().any(|trace| trace.claimed_after_event && trace.owner_advanced_at.is_none()) {
            return None;
        }
        let new_owners_working =
            self.traces.iter().filter(|trace| trace.claimed_after_event).map(|trace| trace.owner_advanced_at);
        let resumed = self.traces.iter().map(|trace| trace.resumed_at);
        let settled = new_owners_working.chain(resumed).flatten().max()?;
        Some(Rebalance {
            longest_stall: self.traces.iter().map(|trace| trace.longest_gap).max().unwrap_or_default(),
            settled_after: settled.saturating_sub(event),
            partitions_stalled: self.traces.iter().filter(|trace| trace.resumed_at.is_some()).count(),
        })
    }

    /// Each partition as last read, for an error saying why the group never got steady or
    /// settled.
    pub(crate) fn describe(&self, at: Duration) -> String {
        let ago = |time: Option<Duration>| {
            time.map_or_else(
                || "never".to_owned(),
                |time| format!("{:.1} s ago", at.saturating_sub(time).as_secs_f64()),
            )
        };
        self.traces
            .iter()
            .enumerate()
            .map(|(partition, trace)| match trace.last {
                None => format!("partition {partition}: not claimed"),
                Some(stored) => format!(
                    "partition {partition}: position {} (epoch {}), advanced {}, claimed {}, advanced by that owner {}",
                    stored.next_offset,
                    stored.epoch,
                    ago(trace.advanced_at),
                    ago(trace.claimed_at),
                    ago(trace.owner_advanced_at)
                ),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::{Rebalance, Stalls, Stored};

    /// A read every 50 ms, as the watch takes them.
    const READ_MS: u64 = 50;

    /// Two partitions read every 50 ms from `from_ms` to `to_ms` (excluded); `row` gives
    /// each partition's row at each time, or `None` while it has none.
    fn read(stalls: &mut Stalls, (from_ms, to_ms): (u64, u64), row: impl Fn(i32, u64) -> Option<Stored>) {
        for ms in (from_ms..to_ms).step_by(READ_MS as usize) {
            let positions: BTreeMap<i32, Stored> =
                (0..2).filter_map(|partition| Some((partition, row(partition, ms)?))).collect();
            stalls.note(Duration::from_millis(ms), &positions);
        }
    }

    /// A partition worked on by the owner of `epoch`: 10 messages per read.
    fn working(ms: u64, epoch: i64) -> Stored {
        Stored { next_offset: i64::try_from(ms / READ_MS * 10).expect("small"), epoch }
    }

    #[test]
    fn a_killed_owner_stalls_its_partition_until_the_next_owner_works_on_it() {
        let mut stalls = Stalls::new(2);
        read(&mut stalls, (0, 2_000), |_, ms| Some(working(ms, 1)));
        assert!(stalls.steady(Duration::from_millis(1_950)));
        stalls.mark_event(Duration::from_millis(2_000));
        // Partition 1's owner is killed: its position stays at 1950 ms's until a new owner
        // claims it at 8000 ms and commits from 8050 ms on.
        let row = |partition: i32, ms: u64| match (partition, ms) {
            (0, _) => Some(working(ms, 1)),
            (_, ..8_000) => Some(working(1_950, 1)),
            (_, 8_000) => Some(working(1_950, 2)),
            _ => Some(working(ms, 2)),
        };
        read(&mut stalls, (2_000, 8_000), row);
        assert!(!stalls.settled(Duration::from_millis(7_950)), "no new owner yet");
        read(&mut stalls, (8_000, 8_950), row);
        assert!(!stalls.settled(Duration::from_millis(8_900)), "claimed less than a second ago");
        read(&mut stalls, (8_950, 9_050), row);
        assert!(stalls.settled(Duration::from_millis(9_000)));
        let figures = stalls.figures().expect("settled");
        assert_eq!(
            figures,
            Rebalance {
                longest_stall: Duration::from_millis(8_050 - 1_950),
                settled_after: Duration::from_millis(8_050 - 2_000),
                partitions_stalled: 1,
            }
        );
    }

    #[test]
    fn an_advance_read_with_the_claim_does_not_count_for_the_new_owner() {
        let mut stalls = Stalls::new(2);
        read(&mut stalls, (0, 1_000), |_, ms| Some(working(ms, 1)));
        stalls.mark_event(Duration::from_millis(1_000));
        // Partition 1 is handed over: the old owner's last commit and the claim in one read
        // at 1300 ms; the new owner's first commit read at 1400 ms.
        let row = |partition: i32, ms: u64| match (partition, ms) {
            (0, _) => Some(working(ms, 1)),
            (_, ..1_300) => Some(working(950, 1)),
            (_, 1_300..1_400) => Some(working(1_300, 2)),
            _ => Some(working(ms, 2)),
        };
        read(&mut stalls, (1_000, 3_000), row);
        assert!(stalls.settled(Duration::from_millis(2_950)));
        let figures = stalls.figures().expect("settled");
        assert_eq!(figures.settled_after, Duration::from_millis(400), "from the event to the read at 1400 ms");
        assert_eq!(figures.longest_stall, Duration::from_millis(350), "950 ms to 1300 ms");
        assert_eq!(figures.partitions_stalled, 0, "350 ms is no stall");
    }

    #[test]
    fn a_group_that_no_one_joined_yet_has_not_settled() {
        let mut stalls = Stalls::new(2);
        read(&mut stalls, (0, 1_000), |_, ms| Some(working(ms, 1)));
        stalls.mark_event(Duration::from_millis(1_000));
        read(&mut stalls, (1_000, 20_000), |_, ms| Some(working(ms, 1)));
        assert!(!stalls.settled(Duration::from_millis(19_950)), "nothing was claimed after the event");
        assert_eq!(stalls.figures(), None);
    }

    #[test]
    fn a_first_member_counts_its_partitions_stalled_from_the_event() {
        let mut stalls = Stalls::new(2);
        stalls.mark_event(Duration::ZERO);
        assert!(!stalls.steady(Duration::ZERO), "nothing read");
        // The rows appear with the claims at 3000 ms; commits are read from 3050 ms on.
        let row = |_: i32, ms: u64| (ms >= 3_000).then(|| working(ms.max(3_000), 1));
        read(&mut stalls, (0, 4_100), row);
        assert!(stalls.settled(Duration::from_millis(4_050)));
        let figures = stalls.figures().expect("settled");
        assert_eq!(figures.longest_stall, Duration::from_millis(3_050));
        assert_eq!(figures.settled_after, Duration::from_millis(3_050));
        assert_eq!(figures.partitions_stalled, 2);
        assert!(stalls.describe(Duration::from_millis(4_050)).contains("partition 1: position"));
    }
}
