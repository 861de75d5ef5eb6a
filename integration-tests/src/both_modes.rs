//! One input topic read by both modes at once, for the faults of the consumer group itself
//! (instances joining and leaving, frozen zombies): a Database-mode recorder group and a
//! Kafka-mode copier group, a steady feed that keeps every partition busy, their positions
//! watched per partition, and the shared check applied to each mode at the end. Which
//! handlers run (per-message or batch) is the test's choice.
//!
//! Recovery is the time from a membership change (or a freeze) until every partition has
//! moved again in that mode: the time the group needs to work as a whole again.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::copy_check::keyed_inputs_on;
use crate::faults::{FaultRun, check_and_report};
use crate::progress::{CommittedOffsets, SteadyFeed, stored_positions, wait_every_partition_moved, wait_group_settled};
use crate::recorder::{create_effects_table, effect_rows};
use crate::{Input, Kafka, Postgres, committed_records, unique, wait_until};

/// How long any one wait of a run may take.
const WAIT: Duration = Duration::from_secs(180);

/// Partitions of the input and output topics.
pub const PARTITIONS: i32 = 6;

/// One input topic read by both modes: a Database-mode recorder and a Kafka-mode copier.
#[derive(Debug)]
pub struct BothModes {
    /// The shared broker.
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
    committed: CommittedOffsets,
}

impl BothModes {
    /// New topics, groups and database.
    pub async fn new() -> anyhow::Result<Self> {
        let kafka = Kafka::shared().await?;
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
        let record = FaultRun::database(config.clone(), inputs, &self.pool, &self.record_group, &self.input);
        check_and_report(fault, "Database", iterations, recovery.0, &record).await?;
        let copy = FaultRun::kafka_mode(config, inputs, &self.input, &self.output, &self.copy_group);
        check_and_report(fault, "Kafka", iterations, recovery.1, &copy).await?;
        Ok(())
    }
}
