//! One input topic read by both modes at once, for the faults of the consumer group itself
//! (instances joining and leaving, frozen zombies): a Database-mode recorder group and a
//! Kafka-mode copier group, a steady feed that keeps every partition busy, their positions
//! watched per partition, and the shared check applied to each mode at the end. Which
//! handlers run (per-message or batch, keys one at a time or concurrently) is the test's
//! choice; [`BothModes::churn`] makes the membership changes of fault 3.
//!
//! Recovery is the time from a membership change (or a freeze) until every partition has
//! moved again in that mode: the time the group needs to work as a whole again.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::copy_check::keyed_inputs_on;
use crate::faults::{FaultRun, check_and_report};
use crate::progress::{CommittedOffsets, SteadyFeed, stored_positions, wait_every_partition_moved, wait_group_settled};
use crate::recorder::{create_effects_table, effect_rows};
use crate::support::Running;
use crate::{Input, Kafka, Postgres, committed_records, unique, wait_until};

/// How long any one wait of a run may take.
const WAIT: Duration = Duration::from_secs(180);

/// Partitions of the input and output topics.
pub const PARTITIONS: i32 = 6;

/// One input topic read by both modes: a Database-mode recorder and a Kafka-mode copier.
#[derive(Debug)]
pub struct BothModes {
    /// The broker (the shared one, unless the run was made [`BothModes::on`] another).
    pub kafka: &'static Kafka,
    /// The topic both modes read.
    pub input: String,
    /// The topic the copier writes.
    pub output: String,
    /// The run's database, with the `effects` table and exactly's tables.
    pub url: String,
    /// A pool on it.
    pub pool: PgPool,
    /// The recorder's consumer group.
    pub record_group: String,
    /// The copier's consumer group.
    pub copy_group: String,
    /// Whether the recorders handle a partition's keys concurrently: their effects are then
    /// checked in order per key, not per partition, with no completed offsets left at the
    /// end ([`FaultRun::key_concurrent`]). Off unless the test turns it on.
    pub key_concurrent_recorders: bool,
    committed: CommittedOffsets,
}

impl BothModes {
    /// New topics, groups and database, on the shared broker.
    pub async fn new() -> anyhow::Result<Self> {
        Self::on(Kafka::shared().await?).await
    }

    /// New topics, groups and database, on `kafka`.
    pub async fn on(kafka: &'static Kafka) -> anyhow::Result<Self> {
        let input = kafka.unique_topic("group-in", PARTITIONS).await?;
        let output = kafka.unique_topic("group-out", PARTITIONS).await?;
        let database = Postgres::shared().await?.database().await?;
        let pool = database.pool().await?;
        create_effects_table(&pool).await?;
        exactly::migrate(&pool).await?;
        let copy_group = unique("group-copy");
        let committed = CommittedOffsets::new(kafka, &copy_group, &input, PARTITIONS)?;
        Ok(Self {
            kafka,
            input,
            output,
            url: database.url,
            pool,
            record_group: unique("group-record"),
            copy_group,
            key_concurrent_recorders: false,
            committed,
        })
    }

    /// Input enough for any run; the feed stops when the test is done with it.
    pub fn feed(&self) -> (Vec<Input>, SteadyFeed) {
        let inputs = keyed_inputs_on(200_000, 60, PARTITIONS);
        let feed = SteadyFeed::start(
            self.kafka.client_config(),
            self.input.clone(),
            inputs.clone(),
            60,
            Duration::from_millis(300),
        );
        (inputs, feed)
    }

    async fn database_positions(&self) -> anyhow::Result<Vec<i64>> {
        stored_positions(&self.pool, &self.record_group, &self.input, PARTITIONS).await
    }

    fn kafka_positions(&self) -> anyhow::Result<Vec<i64>> {
        self.committed.per_partition()
    }

    /// Waits until both modes moved every partition past `before` (Database, Kafka);
    /// returns each mode's time.
    pub async fn wait_both_moved(
        &self,
        what: &str,
        before: &(Vec<i64>, Vec<i64>),
    ) -> anyhow::Result<(Duration, Duration)> {
        let (database_what, kafka_what) = (format!("{what} (Database mode)"), format!("{what} (Kafka mode)"));
        let database = wait_every_partition_moved(&database_what, &before.0, || self.database_positions(), WAIT);
        let kafka = wait_every_partition_moved(&kafka_what, &before.1, || async { self.kafka_positions() }, WAIT);
        tokio::try_join!(database, kafka)
    }

    /// Waits until both groups have settled with `members` members each.
    pub async fn settled(&self, members: usize) -> anyhow::Result<()> {
        wait_group_settled(self.kafka, &self.record_group, members, WAIT).await?;
        wait_group_settled(self.kafka, &self.copy_group, members, WAIT).await
    }

    /// After a change began at `since`: waits for both groups to settle with `members`
    /// members, then for every partition to move in both modes; records each mode's time.
    pub async fn recover(
        &self,
        what: &str,
        since: Instant,
        members: usize,
        recovery: &mut (Vec<Duration>, Vec<Duration>),
    ) -> anyhow::Result<()> {
        self.settled(members).await?;
        let to_settle = since.elapsed();
        let settled = self.positions().await?;
        let (database, kafka) = self.wait_both_moved(what, &settled).await?;
        recovery.0.push(to_settle + database);
        recovery.1.push(to_settle + kafka);
        Ok(())
    }

    /// Fault 3's membership changes, beside a first instance already running: instances
    /// join and leave, 1 → 2 → 3 → 2 → 1, `rounds` times, each started by `start` under its
    /// name (`b0`, `c0`, `b1`, ...) and stopped gracefully (a rebalance, not a crash), each
    /// change waited out with [`BothModes::recover`]. Returns how many changes there were
    /// and each mode's recovery times.
    pub async fn churn<S, F>(&self, rounds: usize, start: S) -> anyhow::Result<(usize, (Vec<Duration>, Vec<Duration>))>
    where
        S: Fn(String) -> F,
        F: Future<Output = anyhow::Result<Running>>,
    {
        let mut recovery = (Vec::new(), Vec::new());
        let mut changes = 0;
        for round in 0..rounds {
            let mut joined = Vec::new();
            for (members, instance) in [(2, "b"), (3, "c")] {
                let since = Instant::now();
                joined.push(start(format!("{instance}{round}")).await?);
                self.recover(&format!("round {round}: {instance} joining"), since, members, &mut recovery).await?;
                changes += 1;
            }
            for ((members, instance), running) in [(2, "b"), (1, "c")].into_iter().zip(joined) {
                let since = Instant::now();
                running.stop().await?;
                self.recover(&format!("round {round}: {instance} leaving"), since, members, &mut recovery).await?;
                changes += 1;
            }
        }
        Ok((changes, recovery))
    }

    /// Fault 3 from start to check, reported as `fault`: with the feed running, a first
    /// instance started by `start` (`a`), both groups settled with it and `at_start` done (a
    /// test's own look at the groups), every partition moved in both modes; then
    /// [`BothModes::churn`] for `rounds` rounds, and [`BothModes::check`] of all that was
    /// produced. The first instance is stopped whatever the check found.
    pub async fn churn_and_check<S, F>(
        &self,
        fault: &str,
        rounds: usize,
        start: S,
        at_start: impl AsyncFnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()>
    where
        S: Fn(String) -> F,
        F: Future<Output = anyhow::Result<Running>>,
    {
        let (inputs, feed) = self.feed();
        let first = start("a".to_owned()).await?;
        self.settled(1).await?;
        at_start().await?;
        let at_zero = (vec![0; PARTITIONS as usize], vec![0; PARTITIONS as usize]);
        self.wait_both_moved("the first instance starting", &at_zero).await?;
        let (changes, recovery) = self.churn(rounds, &start).await?;
        let produced = feed.finish().await?;
        let outcome = self.check(fault, changes, &inputs[..produced], recovery).await;
        first.stop().await?;
        outcome
    }

    async fn positions(&self) -> anyhow::Result<(Vec<i64>, Vec<i64>)> {
        Ok((self.database_positions().await?, self.kafka_positions()?))
    }

    /// Waits for both modes to finish `inputs` (the first ones produced), then checks them
    /// and reports a row per mode.
    pub async fn check(
        &self,
        fault: &str,
        iterations: usize,
        inputs: &[Input],
        recovery: (Vec<Duration>, Vec<Duration>),
    ) -> anyhow::Result<()> {
        let count = inputs.len();
        wait_until(WAIT, "every input recorded and copied", || async {
            let copies = committed_records(self.kafka.client_config(), &self.output).await?.len();
            let rows = effect_rows(&self.pool, &self.record_group).await? as usize;
            Ok((copies >= count && rows >= count).then_some(()))
        })
        .await?;
        let config = self.kafka.client_config();
        let record = if self.key_concurrent_recorders {
            FaultRun::key_concurrent(config.clone(), inputs, &self.pool, &self.record_group, &self.input)
        } else {
            FaultRun::database(config.clone(), inputs, &self.pool, &self.record_group, &self.input)
        };
        check_and_report(fault, "Database", iterations, recovery.0, &record).await?;
        let copy = FaultRun::kafka_mode(config, inputs, &self.input, &self.output, &self.copy_group);
        check_and_report(fault, "Kafka", iterations, recovery.1, &copy).await?;
        Ok(())
    }
}
