//! Running a runtime in the background of a test.

use exactly::{Error, Runtime, RuntimeBuilder};

use crate::recorder::create_effects_table;
use crate::wait::Check;
use crate::{Kafka, Postgres};

pub use exactly_testkit::kill_loop::spawn_logged;
pub use exactly_testkit::{Reported, Running};

/// How a test group's partitions are assigned: by a client-side strategy under the classic
/// protocol, or by the broker under the consumer group protocol (KIP-848).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// The classic protocol with this `partition.assignment.strategy` (`range`: eager;
    /// `cooperative-sticky`: incremental, exactly's default).
    Classic(&'static str),
    /// The consumer group protocol: the broker assigns, incrementally.
    Broker,
}

impl Assignment {
    /// The group protocol this assignment belongs to.
    pub fn protocol(self) -> exactly::GroupProtocol {
        match self {
            Assignment::Classic(_) => exactly::GroupProtocol::Classic,
            Assignment::Broker => exactly::GroupProtocol::Consumer,
        }
    }

    /// `builder` set up to be assigned this way.
    pub fn apply(self, builder: RuntimeBuilder) -> RuntimeBuilder {
        match self {
            Assignment::Classic(strategy) => builder.kafka_setting("partition.assignment.strategy", strategy),
            Assignment::Broker => builder.group_protocol(self.protocol()),
        }
    }
}

/// The environment variable that makes a worker process speak the consumer group protocol.
pub const GROUP_PROTOCOL_ENV: (&str, &str) = ("EXACTLY_TEST_GROUP_PROTOCOL", "consumer");

/// The group settings of a worker process (`recorder-worker`, `copier`): a 6 s session and
/// heartbeats every second, so a killed or frozen worker's partitions move on soon. Under
/// the classic protocol they are the client's settings; with [`GROUP_PROTOCOL_ENV`] set, the
/// worker speaks the consumer group protocol (KIP-848), whose timings the test brokers set
/// to the same values (see `Kafka`'s broker environment).
pub fn worker_group_settings(builder: RuntimeBuilder) -> RuntimeBuilder {
    match std::env::var(GROUP_PROTOCOL_ENV.0) {
        Ok(protocol) if protocol == GROUP_PROTOCOL_ENV.1 => builder.group_protocol(exactly::GroupProtocol::Consumer),
        _ => builder.kafka_setting("session.timeout.ms", "6000").kafka_setting("heartbeat.interval.ms", "1000"),
    }
}

/// A builder with the test defaults: `database_url`, quick revocation.
pub fn builder(database_url: &str) -> RuntimeBuilder {
    Runtime::builder().database_url(database_url).revoke_grace(std::time::Duration::from_secs(5))
}

/// The usual start of a runtime test: the shared broker with a new topic of `partitions`
/// partitions, and a fresh database (URL and pool) with the `effects` table.
pub async fn topic_and_database(partitions: i32) -> anyhow::Result<(&'static Kafka, String, String, sqlx::PgPool)> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("in", partitions).await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    Ok((kafka, topic, database.url, pool))
}

/// Sends `signal` (`TERM`, `INT`, `STOP`, `CONT`) to `child` with kill(1); a child that
/// already exited is not an error (the caller waits for it next).
pub fn signal(child: &std::process::Child, signal: &str) -> anyhow::Result<()> {
    std::process::Command::new("kill").args([format!("-{signal}"), child.id().to_string()]).status()?;
    Ok(())
}

/// Asserts that building a runtime was refused for `key` = `value`, with a message that
/// names the setting and contains `reason`.
///
/// # Panics
/// When it was not refused, or the message is unclear.
pub fn assert_refused(outcome: exactly::Result<Runtime>, key: &str, value: &str, reason: &str) {
    match outcome {
        Err(error @ Error::UnsafeSetting { .. }) => {
            let text = error.to_string();
            assert!(text.contains(key) && text.contains(reason), "unclear refusal: {text}");
        }
        other => panic!("{key}={value} was not refused: {other:?}"),
    }
}

/// A builder logging in to the secure broker `kafka` as `user` (SASL over TLS, trusting
/// the run's CA), with quick revocation.
pub fn secure_builder(kafka: &Kafka, user: &crate::kafka::Credentials) -> anyhow::Result<RuntimeBuilder> {
    let mut builder =
        Runtime::builder().brokers(kafka.bootstrap_servers()).revoke_grace(std::time::Duration::from_secs(5));
    for (key, value) in kafka.client_settings(user)? {
        builder = builder.kafka_setting(key, value);
    }
    Ok(builder)
}

/// Builds and runs `builder` until it stops by itself, for at most `limit`: what `run`
/// returned (an `Error::Config` saying so when it was still running), and how long it took.
pub async fn run_until_it_stops(
    builder: RuntimeBuilder,
    limit: std::time::Duration,
) -> (exactly::Result<()>, std::time::Duration) {
    let started = std::time::Instant::now();
    let outcome = match builder.build().await {
        Ok(runtime) => match tokio::time::timeout(limit, runtime.run_until(std::future::pending())).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Config(format!("still running after {limit:?}"))),
        },
        Err(e) => Err(e),
    };
    (outcome, started.elapsed())
}

/// Waits until a `read_committed` reader sees `expected` records on `topic`; fails at once
/// when it sees more (records are never taken back, so more can only grow), with
/// [`Error::Fatal`](exactly_testkit::Error::Fatal) inside the error.
pub async fn wait_for_committed(
    kafka: &Kafka,
    topic: &str,
    expected: usize,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    crate::wait_for(timeout, &format!("{expected} records on {topic}"), || async {
        match crate::read_to_end(kafka.client_config(), topic, crate::Isolation::ReadCommitted, timeout).await {
            Ok(records) if records.len() > expected => {
                Check::Fatal(anyhow::anyhow!("{} records for {expected} inputs", records.len()))
            }
            Ok(records) if records.len() == expected => Check::Done(()),
            Ok(records) => Check::NotYet(format!("{} records", records.len())),
            // A reader can fail for a moment (a broker still electing leaders): look again.
            Err(e) => Check::NotYet(format!("{e:#}")),
        }
    })
    .await?;
    Ok(())
}
