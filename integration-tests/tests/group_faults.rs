//! Faults 3 and 4 of the fault suite: the consumer group itself. Instances join and leave
//! (1 to 3 to 1, repeatedly, under eager and cooperative assignment), and an instance frozen
//! with SIGSTOP past its session timeout comes back as a zombie. Both modes run on the same
//! input while a steady feed keeps every partition busy; afterwards the usual check applies
//! (each value once, order per partition and per key, positions at the end, no transaction
//! left open) and each test prints its rows of the fault table.
//!
//! Recovery here is the time from a membership change (or a freeze) until every partition
//! has moved again in that mode: the time the group needs to work as a whole again.

use std::time::Duration;

use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::copy_check::keyed_inputs_on;
use exactly_integration_tests::faults::{FaultRun, Profile, check_and_report};
use exactly_integration_tests::progress::{
    CommittedOffsets, SteadyFeed, stored_positions, wait_every_partition_moved, wait_group_settled,
};
use exactly_integration_tests::recorder::{Recorder, create_effects_table, effect_rows};
use exactly_integration_tests::support::{Running, builder, signal, spawn_logged};
use exactly_integration_tests::{Input, Kafka, Postgres, committed_records, unique, wait_until};
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(180);
const PARTITIONS: i32 = 6;

/// One input topic read by both modes: a Database-mode recorder and a Kafka-mode copier.
struct BothModes {
    kafka: &'static Kafka,
    input: String,
    output: String,
    url: String,
    pool: PgPool,
    record_group: String,
    copy_group: String,
    committed: CommittedOffsets,
}

impl BothModes {
    async fn new() -> anyhow::Result<Self> {
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
    fn feed(&self) -> (Vec<Input>, SteadyFeed) {
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
    async fn wait_both_moved(&self, what: &str, before: &(Vec<i64>, Vec<i64>)) -> anyhow::Result<(Duration, Duration)> {
        let (database_what, kafka_what) = (format!("{what} (Database mode)"), format!("{what} (Kafka mode)"));
        let database = wait_every_partition_moved(&database_what, &before.0, || self.database_positions(), WAIT);
        let kafka = wait_every_partition_moved(&kafka_what, &before.1, || async { self.kafka_positions() }, WAIT);
        tokio::try_join!(database, kafka)
    }

    /// Waits until both groups have settled with `members` members each.
    async fn settled(&self, members: usize) -> anyhow::Result<()> {
        wait_group_settled(self.kafka, &self.record_group, members, WAIT).await?;
        wait_group_settled(self.kafka, &self.copy_group, members, WAIT).await
    }

    /// After a change began at `since`: waits for both groups to settle with `members`
    /// members, then for every partition to move in both modes; records each mode's time.
    async fn recover(
        &self,
        what: &str,
        since: std::time::Instant,
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

    /// Waits for both modes to finish the first `produced` inputs, then checks them and
    /// reports a row per mode.
    async fn check(
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

/// Fault 3: instances go 1, 2, 3, 2, 1, `rounds` times, with `strategy` assignment. Every
/// instance runs both modes; leaving is graceful (a rebalance, not a crash: crashes are
/// fault 1).
async fn churn(strategy: &str, label: &str) -> anyhow::Result<()> {
    let rounds = Profile::current().pick(1, 5);
    let run = BothModes::new().await?;
    let transactional_id = unique("group-tx");
    let start = |instance: String| {
        let runtime = builder(&run.url)
            .kafka_setting("partition.assignment.strategy", strategy)
            .transactional_id(format!("{transactional_id}-{instance}"))
            .handler(Copier::new(&run.input, &run.output, &run.copy_group))
            .handler(Recorder::new(&run.input, &run.record_group, &instance));
        Running::start(run.kafka, runtime)
    };
    let (inputs, feed) = run.feed();
    let first = start("a".to_owned()).await?;
    run.settled(1).await?;
    run.wait_both_moved("the first instance starting", &(vec![0; 6], vec![0; 6])).await?;
    let mut recovery = (Vec::new(), Vec::new());
    let mut changes = 0;
    for round in 0..rounds {
        let mut joined = Vec::new();
        for (members, instance) in [(2, "b"), (3, "c")] {
            let since = std::time::Instant::now();
            joined.push(start(format!("{instance}{round}")).await?);
            run.recover(&format!("round {round}: {instance} joining"), since, members, &mut recovery).await?;
            changes += 1;
        }
        for ((members, instance), running) in [(2, "b"), (1, "c")].into_iter().zip(joined) {
            let since = std::time::Instant::now();
            running.stop().await?;
            run.recover(&format!("round {round}: {instance} leaving"), since, members, &mut recovery).await?;
            changes += 1;
        }
    }
    let produced = feed.finish().await?;
    let outcome =
        run.check(&format!("group churn 1→3→1, {label} assignment"), changes, &inputs[..produced], recovery).await;
    first.stop().await?;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_churn_with_eager_assignment() -> anyhow::Result<()> {
    churn("range", "eager (range)").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_churn_with_cooperative_assignment() -> anyhow::Result<()> {
    churn("cooperative-sticky", "cooperative").await
}

/// Fault 4: two processes per mode; one of each is frozen with SIGSTOP for twice its 6 s
/// session timeout, then resumed, `rounds` times. The group moves its partitions to the
/// other process; the resumed zombie must not commit anything for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_frozen_past_its_session_timeout_comes_back_as_a_zombie() -> anyhow::Result<()> {
    let rounds = Profile::current().pick(2, 8);
    let run = BothModes::new().await?;
    let brokers = run.kafka.bootstrap_servers();
    let log = |name: &str| std::env::temp_dir().join(format!("{}-{name}.log", run.record_group));
    let recorder = |instance: &str| {
        spawn_logged(
            env!("CARGO_BIN_EXE_recorder-worker"),
            &[&brokers, &run.url, &run.input, &run.record_group],
            &[("EXACTLY_TEST_INSTANCE", instance)],
            &log(instance),
        )
    };
    let copier = |instance: &str| {
        spawn_logged(
            env!("CARGO_BIN_EXE_copier"),
            &[&brokers, &run.input, &run.output, &run.copy_group, &format!("{}-{instance}", run.copy_group), instance],
            &[("COPIER_DELAY_MS", "2")],
            &log(instance),
        )
    };
    let (inputs, feed) = run.feed();
    let mut processes =
        vec![recorder("recorder-a")?, recorder("recorder-b")?, copier("copier-a")?, copier("copier-b")?];
    let outcome = async {
        run.wait_both_moved("the processes starting", &(vec![0; 6], vec![0; 6])).await?;
        let mut recovery = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which process of each pair freezes.
            let (recorder, copier) = if round % 2 == 0 { (0, 2) } else { (1, 3) };
            signal(&processes[recorder], "STOP")?;
            signal(&processes[copier], "STOP")?;
            let frozen = std::time::Instant::now();
            // The other two take over the frozen ones' partitions after the session timeout.
            run.recover(&format!("round {round}: taking over from the frozen"), frozen, 1, &mut recovery).await?;
            tokio::time::sleep(Duration::from_secs(12).saturating_sub(frozen.elapsed())).await;
            signal(&processes[recorder], "CONT")?;
            signal(&processes[copier], "CONT")?;
            // The zombies notice they were fenced, rejoin, and the group settles again.
            let resumed = std::time::Instant::now();
            run.recover(
                &format!("round {round}: after the zombies resumed"),
                resumed,
                2,
                &mut (Vec::new(), Vec::new()),
            )
            .await?;
        }
        let produced = feed.finish().await?;
        run.check("SIGSTOP past the session timeout, then SIGCONT", rounds, &inputs[..produced], recovery).await
    }
    .await;
    for process in &mut processes {
        signal(process, "CONT")?;
        signal(process, "TERM")?;
        process.wait()?;
    }
    outcome.map_err(|e| anyhow::anyhow!("{e:#}\nprocess logs: {}", log("*").display()))?;
    // They really were zombies: a frozen copier's session expired while it was stopped.
    let copier_logs = std::fs::read_to_string(log("copier-a"))? + &std::fs::read_to_string(log("copier-b"))?;
    assert!(copier_logs.contains("session timed out"), "no copier was ever fenced out of the group");
    Ok(())
}
