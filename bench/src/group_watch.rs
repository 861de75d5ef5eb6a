//! Watching a consumer group of exactly's Database mode through a membership change (S9):
//! its stored positions, read every [`POLL`] into [`Stalls`], and its coordinator's view of
//! it (state and members), until the group is steady or has settled; then until it has
//! caught up with its input.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use exactly_integration_tests::Kafka;
use exactly_integration_tests::progress::group_state;
use sqlx::PgPool;

use crate::stalls::{Stalls, stored_positions};

/// How often the stored positions are read: the figures' resolution.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// Longest any one wait may take before the run fails: a kill costs a 6 s session timeout,
/// so a group that has not settled by then is not going to.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// What [`GroupWatch::until`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Every partition worked on, before the event ([`Stalls::steady`]).
    Steady,
    /// The rebalance the event caused is over ([`Stalls::settled`]).
    Settled,
}

impl Until {
    fn label(self) -> &'static str {
        match self {
            Self::Steady => "steady",
            Self::Settled => "settled",
        }
    }
}

/// One group's watch; its clock starts when it is made.
#[derive(Debug)]
pub(crate) struct GroupWatch<'a> {
    kafka: &'a Kafka,
    pool: &'a PgPool,
    group: &'a str,
    topic: &'a str,
    origin: Instant,
}

impl<'a> GroupWatch<'a> {
    /// Watches `group` reading `topic`, its positions in `pool`, its coordinator in `kafka`.
    pub(crate) fn new(kafka: &'a Kafka, pool: &'a PgPool, group: &'a str, topic: &'a str) -> Self {
        Self { kafka, pool, group, topic, origin: Instant::now() }
    }

    /// The time since the watch began: the clock of every read and of the event.
    pub(crate) fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Reads the positions into `stalls` every [`POLL`] until they show the group `until`
    /// and its coordinator reports it `Stable` with `members` members (asked only once the
    /// positions agree: each look is a round trip or two to the broker). `alive` checks,
    /// before each read, that the instances still run.
    ///
    /// # Errors
    /// When `alive` fails, a read fails, or [`WAIT_LIMIT`] passes first (saying where each
    /// partition stands and what the coordinator last said).
    pub(crate) async fn until(
        &self,
        stalls: &mut Stalls,
        until: Until,
        members: usize,
        mut alive: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let deadline = self.now() + WAIT_LIMIT;
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut coordinator = "not asked".to_owned();
        loop {
            ticks.tick().await;
            alive()?;
            if self.read(stalls, until).await? {
                // A failed look (no coordinator yet, say) is not an answer: look again.
                match tokio::task::block_in_place(|| group_state(self.kafka, self.group)) {
                    // The look took a while (a client of its own, a round trip or two) in
                    // which nothing was read. The event follows at once, and a gap spanning
                    // it counts as a stall: read again, so that the look's time does not.
                    Ok((state, count)) if state == "Stable" && count == members => {
                        if self.read(stalls, until).await? {
                            return Ok(());
                        }
                    }
                    Ok((state, count)) => coordinator = format!("{state} with {count} members"),
                    Err(e) => coordinator = format!("unknown ({e:#})"),
                }
            }
            let at = self.now();
            if at > deadline {
                bail!(
                    "the group was not {} with {members} members within {WAIT_LIMIT:?} (its coordinator last \
                     said: {coordinator}); {}",
                    until.label(),
                    stalls.describe(at)
                );
            }
        }
    }

    /// Reads the positions into `stalls`; returns whether they show the group `until`.
    async fn read(&self, stalls: &mut Stalls, until: Until) -> anyhow::Result<bool> {
        // The read's time is taken before it: what it shows happened by then or during it.
        let at = self.now();
        stalls.note(at, &stored_positions(self.pool, self.group, self.topic).await?);
        Ok(match until {
            Until::Steady => stalls.steady(at),
            Until::Settled => stalls.settled(at),
        })
    }

    /// Waits until every partition's stored position has reached its end in `ends`: the
    /// group has processed all its input. `alive` as for [`Self::until`].
    ///
    /// # Errors
    /// When `alive` fails, a read fails, or [`WAIT_LIMIT`] passes first.
    pub(crate) async fn caught_up(
        &self,
        ends: &BTreeMap<i32, i64>,
        mut alive: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let deadline = self.now() + WAIT_LIMIT;
        loop {
            alive()?;
            let positions = stored_positions(self.pool, self.group, self.topic).await?;
            let behind: Vec<String> = ends
                .iter()
                .filter_map(|(partition, &end)| {
                    let position = positions.get(partition).map_or(0, |stored| stored.next_offset);
                    (position < end).then(|| format!("partition {partition} at {position} of {end}"))
                })
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if self.now() > deadline {
                bail!("the group did not catch up with its input within {WAIT_LIMIT:?}: {}", behind.join(", "));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
