//! A crash test of your own handler: the test runs it in worker processes, kills them with
//! SIGKILL again and again while input flows, lets the last one finish, and hands back the
//! inputs as Kafka stored them so the test can check its effects against them.
//!
//! The worker processes are the test binary itself, run again with only this test selected
//! and variables that tell [`CrashTest::start`] to run the worker instead: there is no
//! second program to write or build, and the worker runs exactly the handler code the test
//! names. That is why `CrashTest::start` must be the first thing the test does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use exactly::{GroupProtocol, RuntimeBuilder};
use sqlx::PgPool;

use crate::kill_loop::{Feed, Worker, kill_while_busy};
use crate::positions::{CommittedOffsets, Store, caught_up, stored_positions};
use crate::{Input, Kafka, Postgres, Sent, TestDatabase, unique};

mod report;

pub use report::CrashReport;

/// Set in a worker process: the name its runtime's instance goes by.
const INSTANCE_VAR: &str = "EXACTLY_TESTKIT_WORKER";
/// The brokers a worker process connects to.
const BROKERS_VAR: &str = "EXACTLY_TESTKIT_BROKERS";
/// The database a worker process connects to.
const DATABASE_VAR: &str = "EXACTLY_TESTKIT_DATABASE_URL";
/// Set to `consumer` when the workers speak the consumer group protocol (KIP-848).
const PROTOCOL_VAR: &str = "EXACTLY_TESTKIT_GROUP_PROTOCOL";
/// The name of the worker that is killed, restarted under the same name each time (a
/// Kafka-mode handler's transactional id taken from it fences the killed one).
const KILLED: &str = "killed";
/// How long the feed allows for each kill: a killed member's partitions wait out its 6 s
/// session before they move, and its successor joins, works a moment and is killed, so
/// that input still flows at the last kill.
const KILL_CYCLE: Duration = Duration::from_secs(10);
/// How long a lookup of the stored positions is tried again before it counts as failed.
const LOOKUP_PATIENCE: Duration = Duration::from_secs(60);
/// How long the last worker may take to finish what the killed ones left.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);

/// What a worker process is told: where to connect and who it is.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    brokers: String,
    database_url: String,
    instance: String,
    protocol: GroupProtocol,
}

impl WorkerContext {
    /// The brokers of the test's Kafka (the kit sets them on the runtime too).
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The test's database (the kit sets it on the runtime too).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// This worker's name: `killed` for the one killed and restarted again and again,
    /// `companion-1`, `companion-2`, ... for those that run throughout. Stable across
    /// restarts, so it suits a transactional id or a static member's `group.instance.id`.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Read from the variables the test set, in a worker process; `None` in the test.
    fn from_env() -> Option<WorkerContext> {
        let instance = std::env::var(INSTANCE_VAR).ok()?;
        let protocol = match std::env::var(PROTOCOL_VAR).as_deref() {
            Ok("consumer") => GroupProtocol::Consumer,
            _ => GroupProtocol::Classic,
        };
        Some(WorkerContext {
            brokers: std::env::var(BROKERS_VAR).unwrap_or_default(),
            database_url: std::env::var(DATABASE_VAR).unwrap_or_default(),
            instance,
            protocol,
        })
    }

    /// `builder` connected to the test's Kafka and database, with group timings that let
    /// a killed worker's partitions move on within seconds.
    fn apply(&self, builder: RuntimeBuilder) -> RuntimeBuilder {
        let builder = builder.brokers(&self.brokers).database_url(&self.database_url);
        match self.protocol {
            // The test broker sets the same timings for groups of this protocol.
            GroupProtocol::Consumer => builder.group_protocol(GroupProtocol::Consumer),
            GroupProtocol::Classic => {
                builder.kafka_setting("session.timeout.ms", "6000").kafka_setting("heartbeat.interval.ms", "1000")
            }
        }
    }
}

/// A crash test of a handler: see the [module documentation](self), and the book's chapter
/// "Testing your handlers" for a whole test.
#[derive(Debug)]
pub struct CrashTest {
    kafka: Kafka,
    database: TestDatabase,
    pool: PgPool,
    test_name: Option<String>,
    topic: Option<(String, i32)>,
    group: Option<String>,
    kills: usize,
    companions: usize,
    kafka_mode: bool,
    protocol: GroupProtocol,
}

impl CrashTest {
    /// In the test: starts a Kafka broker of its own and a fresh database. In a worker
    /// process the test started: runs the runtime `worker` builds, connected to them, until
    /// it is killed or stopped, and ends the process; it never returns there.
    ///
    /// Call it first in the test: a worker process runs the test from its start up to here.
    ///
    /// # Errors
    /// When no Docker engine answers, or a container does not start.
    pub async fn start<W>(worker: W) -> anyhow::Result<CrashTest>
    where
        W: FnOnce(&WorkerContext) -> RuntimeBuilder + Send + 'static,
    {
        if let Some(context) = WorkerContext::from_env() {
            run_worker(context, worker);
        }
        let kafka = Kafka::single().await?;
        let database = Postgres::shared().await?.database().await?;
        let pool = database.pool().await?;
        Ok(CrashTest {
            kafka,
            database,
            pool,
            test_name: std::thread::current().name().filter(|name| *name != "main").map(str::to_owned),
            topic: None,
            group: None,
            kills: 10,
            companions: 0,
            kafka_mode: false,
            protocol: GroupProtocol::Classic,
        })
    }

    /// The topic the handler reads, created with `partitions` partitions when the test
    /// runs. Required.
    #[must_use]
    pub fn topic(mut self, name: impl Into<String>, partitions: i32) -> Self {
        self.topic = Some((name.into(), partitions));
        self
    }

    /// The handler's consumer group, whose stored positions tell when the work is done.
    /// Required.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// How many times a worker is killed with SIGKILL (10 unless set).
    #[must_use]
    pub fn kills(mut self, kills: usize) -> Self {
        self.kills = kills;
        self
    }

    /// How many workers run throughout besides the one killed (none unless set), so that
    /// partitions also move between live members at each kill and restart. They share the
    /// work, so fewer kills land inside the killed worker's transactions: raise
    /// [`kills`](CrashTest::kills) with them.
    #[must_use]
    pub fn companions(mut self, companions: usize) -> Self {
        self.companions = companions;
        self
    }

    /// The handler runs in Kafka mode: its positions are the group's committed offsets,
    /// not rows in PostgreSQL.
    #[must_use]
    pub fn kafka_mode(mut self) -> Self {
        self.kafka_mode = true;
        self
    }

    /// The workers speak this group protocol (classic unless set).
    #[must_use]
    pub fn group_protocol(mut self, protocol: GroupProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Names the test a worker process runs (`module::test_name`, as `cargo test` lists
    /// it), for test harnesses that do not name each test's thread after the test.
    #[must_use]
    pub fn test_name(mut self, name: impl Into<String>) -> Self {
        self.test_name = Some(name.into());
        self
    }

    /// The test's broker: create output topics here before [`CrashTest::run`], read them
    /// after.
    pub fn kafka(&self) -> &Kafka {
        &self.kafka
    }

    /// A pool on the test's database: create the handler's tables here before
    /// [`CrashTest::run`], query its effects after.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The URL of the test's database.
    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    /// Publishes `inputs` to the topic at a steady pace while workers run the handler and
    /// one is killed [`kills`](CrashTest::kills) times, each time once it has done more than
    /// the one before and while published input waits; then publishes the rest, lets a last
    /// worker finish (every partition's stored position at its end), and stops the workers.
    ///
    /// # Errors
    /// When the topic or group is not set, a worker cannot start, the workers stop making
    /// progress, or they do not finish within three minutes; the error names the log the
    /// workers wrote to.
    pub async fn run(&self, inputs: Vec<Input>) -> anyhow::Result<CrashReport> {
        let (topic, partitions) =
            self.topic.clone().context("CrashTest::topic was not set: name the topic the handler reads")?;
        let group = self.group.clone().context("CrashTest::group was not set: name the handler's consumer group")?;
        let test_name = self.test_name.clone().context(
            "this test's thread has no name to run it again by in a worker process: name it with CrashTest::test_name",
        )?;
        self.kafka.create_topic(&topic, partitions).await?;
        if !self.kafka_mode {
            // The positions table exists before the first worker makes it: it is read from
            // the start to see the workers' progress.
            exactly::migrate(&self.pool).await.context("cannot create exactly's tables")?;
        }
        let log = std::env::temp_dir().join(format!("{}.log", unique("exactly-crash-test")));
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let workers = Workers { test_name, brokers: self.kafka.bootstrap_servers(), test: self, log: log.clone() };
        let sent = workers
            .run(&topic, partitions, &group, inputs)
            .await
            .with_context(|| format!("crash test failed; the workers' output is in {}", log.display()))?;
        Ok(CrashReport::new(sent, self.kills, log))
    }

    fn store(&self) -> Store<'_> {
        if self.kafka_mode { Store::Kafka } else { Store::Database(&self.pool) }
    }
}

/// The worker processes of one [`CrashTest::run`].
struct Workers<'a> {
    test: &'a CrashTest,
    test_name: String,
    brokers: String,
    log: PathBuf,
}

impl Workers<'_> {
    /// Feeds `inputs` to `topic` while the workers run and one is killed again and again,
    /// then lets a last worker finish and stops them all.
    async fn run(&self, topic: &str, partitions: i32, group: &str, inputs: Vec<Input>) -> anyhow::Result<Vec<Sent>> {
        let total = i64::try_from(inputs.len())?;
        let feed = Feed::spread(&self.brokers, topic, inputs, KILL_CYCLE * u32::try_from(self.test.kills)?)?;
        let mut companions = (1..=self.test.companions)
            .map(|i| self.spawn(&format!("companion-{i}")))
            .collect::<anyhow::Result<Vec<Worker>>>()?;
        let progress = Progress::new(self.test, group, topic, partitions)?;
        let (done, busy) = (|| progress.done(), || progress.busy());
        kill_while_busy(self.test.kills, total, "inputs done", || self.spawn(KILLED), done, &feed, busy).await?;
        let sent = feed.finish().await?;
        let mut last = self.spawn(KILLED)?;
        caught_up(&self.test.kafka, self.test.store(), group, topic, SETTLE_TIMEOUT).await?;
        last.stop()?;
        for companion in &mut companions {
            companion.stop()?;
        }
        Ok(sent)
    }

    /// Starts this test again as the worker named `instance`.
    fn spawn(&self, instance: &str) -> anyhow::Result<Worker> {
        let protocol = match self.test.protocol {
            GroupProtocol::Consumer => "consumer",
            GroupProtocol::Classic => "classic",
        };
        let env = [
            (INSTANCE_VAR, instance),
            (BROKERS_VAR, self.brokers.as_str()),
            (DATABASE_VAR, self.test.database.url.as_str()),
            (PROTOCOL_VAR, protocol),
        ];
        let args = [self.test_name.as_str(), "--exact", "--nocapture", "--include-ignored", "--test-threads=1"];
        Worker::spawn(&args, &env, &self.log)
    }
}

/// Runs the worker's runtime until SIGTERM or SIGKILL, on a runtime of its own (the test's
/// may have one thread only), then ends the process.
fn run_worker<W>(context: WorkerContext, worker: W) -> !
where
    W: FnOnce(&WorkerContext) -> RuntimeBuilder + Send + 'static,
{
    let outcome = std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(async move {
            let builder = context.apply(worker(&context));
            builder.build().await?.run().await?;
            anyhow::Ok(())
        })
    })
    .join();
    match outcome {
        Ok(Ok(())) => std::process::exit(0),
        Ok(Err(e)) => {
            eprintln!("crash-test worker failed: {e:#}");
            std::process::exit(1)
        }
        Err(_) => {
            eprintln!("crash-test worker panicked");
            std::process::exit(101)
        }
    }
}

/// How far the workers got: how many inputs the group's stored positions cover (a fresh
/// topic's offsets start at 0 and hold nothing but inputs).
enum Progress<'a> {
    Database { pool: &'a PgPool, group: &'a str, topic: &'a str, partitions: i32 },
    Kafka(CommittedOffsets),
}

impl<'a> Progress<'a> {
    fn new(test: &'a CrashTest, group: &'a str, topic: &'a str, partitions: i32) -> anyhow::Result<Self> {
        Ok(if test.kafka_mode {
            Progress::Kafka(CommittedOffsets::new(&test.kafka, group, topic, partitions)?)
        } else {
            Progress::Database { pool: &test.pool, group, topic, partitions }
        })
    }

    /// Whether a worker is inside its work. In Database mode: whether a transaction other
    /// than the test's own is open on the test's database (a batch being handled, whose
    /// effects and position commit together or not at all), so the kill lands inside one.
    /// In Kafka mode the kit cannot see the workers' transactions: always.
    async fn busy(&self) -> anyhow::Result<bool> {
        match self {
            Progress::Database { pool, .. } => Ok(sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND xact_start IS NOT NULL)",
            )
            .fetch_one(*pool)
            .await?),
            Progress::Kafka(_) => Ok(true),
        }
    }

    /// The inputs done. A lookup that fails is tried again for up to [`LOOKUP_PATIENCE`]:
    /// on a loaded machine the group coordinator can be slow to answer while a killed
    /// member's session expires, and that is not what the test is about.
    async fn done(&self) -> anyhow::Result<i64> {
        let deadline = Instant::now() + LOOKUP_PATIENCE;
        loop {
            let positions = match self {
                Progress::Database { pool, group, topic, partitions } => {
                    stored_positions(pool, group, topic, *partitions).await
                }
                Progress::Kafka(committed) => committed.per_partition(),
            };
            match positions {
                Ok(positions) => return Ok(positions.iter().sum()),
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => return Err(e.context("cannot read the group's positions")),
            }
        }
    }
}
