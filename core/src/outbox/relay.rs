//! The outbox relay: publishes `exactly.outbox` to Kafka exactly once.
//!
//! Each Kafka transaction carries a batch of outbox records and the relay's new position
//! (the `(txid, id)` of the last record), written as a record keyed by the relay's name to
//! the positions topic. On start the relay reads its position back with `read_committed`,
//! so whatever moment it crashed at, it goes on right after the last batch that committed:
//! nothing is published twice, nothing is skipped. Only rows of transactions older than
//! every running one are read, in `(txid, id)` order, so a slow writer's row can never
//! appear behind the position. Published rows are then deleted.
//!
//! One relay per name publishes at a time: instances elect one with a PostgreSQL advisory
//! lock, and all use the relay's name as `transactional.id`, so a relay that lost the lock
//! but still runs is fenced by its successor. Each database call has a 30 s deadline: a
//! connection whose server went away without closing it is given up, with the lock, and
//! the relay starts over from the position it reads back from Kafka. The server bounds the
//! lock's session too (`Relay::leader_timeout`): a leader that stops answering (frozen, its
//! host lost, cut off) loses the lock, and another relay leads.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorHook, Result};
use crate::kafka::producer::{CALL_TIMEOUT, TxnProducer, record, send, transactional};
use crate::kafka::properties::KafkaProperties;
use crate::ops::metrics::handles::RelayMetrics;

/// A position in the outbox: the `(txid, id)` of the last published row.
type Position = (i64, i64);

/// How long one database call of the relay may take before the relay gives up its
/// connection and starts over. A connection whose server went away without closing it (a
/// failover, a host that lost power, a restarted container behind NAT) is never answered,
/// and sqlx sets no TCP keepalive that would notice: without a deadline the relay would
/// wait on it for good. The relay's queries are small; a long one means a lost server.
const DATABASE_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes the outbox to Kafka exactly once. See [the outbox](crate::outbox).
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> exactly::Result<()> {
/// let relay = exactly::outbox::Relay::new("billing-outbox", "localhost:9092", pool).start().await?;
/// // ... later
/// relay.stop().await
/// # }
/// ```
#[must_use]
pub struct Relay {
    name: String,
    kafka: KafkaProperties,
    pool: PgPool,
    positions_topic: String,
    batch_size: i64,
    poll_interval: Duration,
    leader_timeout: Duration,
    on_error: Option<ErrorHook>,
    /// Whether `start` first checks that the brokers accept the client (a runtime's relay
    /// needs no check: its consumers stop the runtime on a refused login).
    check: bool,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("name", &self.name)
            .field("kafka", &self.kafka)
            .field("positions_topic", &self.positions_topic)
            .finish_non_exhaustive()
    }
}

/// A running relay. Dropping the handle stops the relay after its batch in flight, as
/// [`RelayHandle::stop`] does, without waiting for it.
#[derive(Debug)]
pub struct RelayHandle {
    stop: watch::Sender<bool>,
    /// `None` once [`RelayHandle::ended`] has returned the relay's outcome.
    task: Option<JoinHandle<Result<()>>>,
}

impl RelayHandle {
    /// Stops after the batch in flight (committed or aborted) and waits.
    ///
    /// # Errors
    /// What the relay stopped on, if anything (`Ok` if [`RelayHandle::ended`] already
    /// returned it).
    pub async fn stop(self) -> Result<()> {
        self.stop.send_replace(true);
        match self.task {
            Some(task) => outcome(task.await),
            None => Ok(()),
        }
    }

    /// Waits until the relay ends by itself, and returns why. It does so only when Kafka
    /// refuses it access (credentials, TLS, a missing ACL), which retrying cannot mend, or
    /// when it panicked; every other error it reports and retries. Cancel-safe, so it fits in a `select!`
    /// beside a shutdown signal:
    ///
    /// ```no_run
    /// # async fn run(mut relay: exactly::outbox::RelayHandle) -> exactly::Result<()> {
    /// tokio::select! {
    ///     outcome = relay.ended() => outcome,
    ///     _ = tokio::signal::ctrl_c() => relay.stop().await,
    /// }
    /// # }
    /// ```
    ///
    /// Once it has returned, it never returns again, and [`RelayHandle::stop`] returns `Ok`.
    ///
    /// # Errors
    /// What the relay ended on.
    pub async fn ended(&mut self) -> Result<()> {
        let Some(task) = self.task.as_mut() else { return std::future::pending().await };
        let result = task.await;
        self.task = None;
        outcome(result)
    }
}

fn outcome(joined: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    joined.map_err(|e| Error::Config(format!("the outbox relay panicked: {e}")))?
}

impl Relay {
    /// A relay named `name` (its `transactional.id` and the key of its position) for the
    /// outbox in `pool`'s database, publishing to `brokers`.
    pub fn new(name: impl Into<String>, brokers: impl Into<String>, pool: PgPool) -> Self {
        let mut kafka = KafkaProperties::default();
        kafka.set("bootstrap.servers", brokers);
        Self {
            name: name.into(),
            kafka,
            pool,
            positions_topic: "exactly-outbox-positions".into(),
            batch_size: 500,
            poll_interval: Duration::from_millis(20),
            leader_timeout: Duration::from_secs(60),
            on_error: None,
            check: true,
        }
    }

    pub(crate) fn with_properties(name: String, kafka: KafkaProperties, pool: PgPool) -> Self {
        Self { kafka, check: false, ..Self::new(name, String::new(), pool) }
    }

    /// Every librdkafka setting given in the environment as `EXACTLY_RDKAFKA_<KEY>` (see
    /// [`kafka_settings_from_env`](crate::kafka_settings_from_env)); settings given later
    /// with [`Relay::kafka_setting`] win.
    pub fn kafka_settings_from_env(mut self) -> Self {
        for (key, value) in crate::kafka_settings_from_env() {
            self.kafka.set(key, value);
        }
        self
    }

    /// Any librdkafka property (TLS, SASL, ...); unsafe producer settings are refused.
    pub fn kafka_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka.set(key, value);
        self
    }

    /// The compacted topic the relay keeps its position in (default
    /// `exactly-outbox-positions`; created with one partition if missing).
    pub fn positions_topic(mut self, topic: impl Into<String>) -> Self {
        self.positions_topic = topic.into();
        self
    }

    /// Records per Kafka transaction (default 500).
    pub fn batch_size(mut self, records: i64) -> Self {
        self.batch_size = records.max(1);
        self
    }

    /// How often an empty outbox is looked at again (default 20 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long the leader's database session may stay silent before PostgreSQL ends it,
    /// and with it the lead (default 60 s; `idle_session_timeout`, PostgreSQL 14 and later).
    ///
    /// The advisory lock that elects the leader belongs to a session. A leader that stops
    /// (frozen, its host lost, cut off from the database) would keep it, and the outbox
    /// would wait, until TCP gives up on the connection, which takes hours by default. A
    /// running leader queries that session at every poll and after every batch; one whose
    /// Kafka calls keep it away longer than this loses the lead, and its successor fences
    /// it, so nothing is published twice. On an older server the bound is missing and the
    /// relay says so once.
    pub fn leader_timeout(mut self, timeout: Duration) -> Self {
        self.leader_timeout = timeout;
        self
    }

    /// Called with every error the relay reports (besides logging it).
    pub fn on_error(mut self, hook: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(hook));
        self
    }

    /// Checks the settings, checks that the brokers accept the client, and starts the relay
    /// in the background.
    ///
    /// # Errors
    /// When a setting would break the guarantee; [`Error::KafkaAuthentication`] when a broker
    /// refuses the credentials, [`Error::KafkaTls`] when the TLS handshake fails (brokers
    /// that do not answer within 10 s are not an error: the relay retries them).
    pub async fn start(self) -> Result<RelayHandle> {
        self.kafka.check_producer(Duration::ZERO)?;
        if self.check {
            crate::kafka::check::check_kafka(
                &self.kafka.consumer("exactly-relay-check"),
                crate::kafka::check::CHECK_TIMEOUT,
            )
            .await?;
        }
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::runtime::Handle::current();
        let metrics = RelayMetrics::new(&self.name);
        let task = tokio::task::spawn_blocking(move || Worker { relay: self, handle, stopped, metrics }.run());
        Ok(RelayHandle { stop, task: Some(task) })
    }
}

struct Worker {
    relay: Relay,
    handle: tokio::runtime::Handle,
    stopped: watch::Receiver<bool>,
    metrics: RelayMetrics,
}

impl Worker {
    /// Asked to stop, or its [`RelayHandle`] was dropped (nobody would wait for it).
    fn stopping(&self) -> bool {
        *self.stopped.borrow() || self.stopped.has_changed().is_err()
    }

    fn report(&self, error: &Error) {
        tracing::error!(relay = %self.relay.name, "{error}");
        if let Some(hook) = &self.relay.on_error {
            hook(error);
        }
    }

    fn run(self) -> Result<()> {
        while !self.stopping() {
            match self.lead() {
                Ok(()) => {}
                // Kafka refused access (a missing ACL): retrying would hide it.
                Err(error) if error.refused_access().is_some() => {
                    self.report(&error);
                    return Err(error);
                }
                Err(error) => {
                    self.report(&error);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        Ok(())
    }

    /// Waits for the advisory lock on a connection of its own, then publishes while it
    /// holds it. That connection makes every query: if it is lost, so is the lock, and the
    /// next query fails instead of running unlocked.
    fn lead(&self) -> Result<()> {
        let mut lock: PgConnection = self.database(self.relay.pool.acquire())?.detach();
        let outcome = self.lock_and_publish(&mut lock);
        // A connection that stopped answering may not answer the goodbye either.
        let _ = self.handle.block_on(tokio::time::timeout(Duration::from_secs(5), lock.close()));
        outcome
    }

    fn lock_and_publish(&self, lock: &mut PgConnection) -> Result<()> {
        let key = format!("exactly-relay:{}", self.relay.name);
        self.bound_session(lock)?;
        loop {
            if self.stopping() {
                return Ok(());
            }
            let acquired: bool = self.database(
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))").bind(&key).fetch_one(&mut *lock),
            )?;
            if acquired {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        tracing::info!(relay = %self.relay.name, "leading: publishing the outbox");
        self.publish(lock)
    }

    /// Makes the server end the lock's session once it has been silent for the leader
    /// timeout (see [`Relay::leader_timeout`]).
    fn bound_session(&self, lock: &mut PgConnection) -> Result<()> {
        let millis = self.relay.leader_timeout.as_millis().clamp(1, i32::MAX as u128);
        let set = sqlx::query("SELECT set_config('idle_session_timeout', $1, false)").bind(millis.to_string());
        match self.database(set.execute(&mut *lock)) {
            Ok(_) => Ok(()),
            // SQLSTATE undefined_object: a server older than PostgreSQL 14 has no such setting.
            Err(Error::Database(sqlx::Error::Database(e))) if e.code().as_deref() == Some("42704") => {
                tracing::warn!(relay = %self.relay.name, "the database has no idle_session_timeout (PostgreSQL 14 \
                    and later): a leader that stops answering keeps the lead until TCP gives up on its connection");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs one database call, for at most [`DATABASE_CALL_TIMEOUT`].
    fn database<T>(&self, call: impl Future<Output = sqlx::Result<T>>) -> Result<T> {
        match self.handle.block_on(tokio::time::timeout(DATABASE_CALL_TIMEOUT, call)) {
            Ok(outcome) => Ok(outcome?),
            Err(_) => Err(Error::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the database did not answer within {DATABASE_CALL_TIMEOUT:?} (its server may be gone without \
                     closing the connection); the relay reconnects"
                ),
            )))),
        }
    }

    /// Fences a previous relay with this name and aborts what it left open.
    fn producer(&self) -> Result<TxnProducer> {
        transactional(&self.relay.kafka.producer(&self.relay.name))
    }

    fn publish(&self, lock: &mut PgConnection) -> Result<()> {
        self.ensure_positions_topic();
        let mut producer = self.producer()?;
        let mut position = self.read_position()?;
        tracing::info!(relay = %self.relay.name, ?position, "outbox position read from Kafka");
        while !self.stopping() {
            if self.metrics.backlog_due()
                && let Ok(rows) = self.database(super::backlog(&mut *lock))
            {
                self.metrics.backlog(rows);
            }
            let rows = self.fetch(lock, position)?;
            let Some(last) = rows.last().map(|row| row.position) else {
                std::thread::sleep(self.relay.poll_interval);
                continue;
            };
            match self.send_batch(&producer, &rows, last) {
                Ok(()) => {
                    position = last;
                    if let Err(e) = self.delete_through(lock, position) {
                        self.report(&e); // harmless: the rows stay behind the position
                    }
                }
                Err(error) => {
                    let _ = producer.abort_transaction(CALL_TIMEOUT);
                    // Fenced (another relay publishes now), or Kafka refused access (a
                    // missing ACL): `run` reports it.
                    if error.refused_access().is_some()
                        || matches!(&error, Error::Kafka(KafkaError::Transaction(e)) if e.is_fatal())
                    {
                        return Err(error);
                    }
                    self.report(&error);
                    // The outcome may be unknown: start over from what Kafka says.
                    producer = self.producer()?;
                    position = self.read_position()?;
                }
            }
        }
        Ok(())
    }

    fn send_batch(&self, producer: &TxnProducer, rows: &[OutboxRow], last: Position) -> Result<()> {
        producer.begin_transaction()?;
        for row in rows {
            send(producer, record(&row.topic, row.key.as_deref(), row.payload.as_deref(), &row.headers))?;
        }
        let value = format!("{}:{}", last.0, last.1);
        send(
            producer,
            BaseRecord::to(&self.relay.positions_topic).key(self.relay.name.as_bytes()).payload(value.as_bytes()),
        )?;
        crate::failpoint::hit("relay.after_produce");
        let started = std::time::Instant::now();
        producer.commit_transaction(CALL_TIMEOUT)?;
        self.metrics.published(rows.len(), started.elapsed());
        crate::failpoint::hit("relay.after_commit");
        Ok(())
    }

    /// The next rows after `after`, read through the relay's own connection.
    fn fetch(&self, lock: &mut PgConnection, after: Position) -> Result<Vec<OutboxRow>> {
        let rows = self.database(
            sqlx::query(
                "SELECT id, txid, topic, key, payload, header_names, header_values FROM exactly.outbox
             WHERE (txid, id) > ($1, $2) AND txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
             ORDER BY txid, id LIMIT $3",
            )
            .bind(after.0)
            .bind(after.1)
            .bind(self.relay.batch_size)
            .fetch_all(lock),
        )?;
        rows.into_iter()
            .map(|row| {
                let names: Vec<String> = row.try_get("header_names")?;
                let values: Vec<Vec<u8>> = row.try_get("header_values")?;
                Ok(OutboxRow {
                    position: (row.try_get("txid")?, row.try_get("id")?),
                    topic: row.try_get("topic")?,
                    key: row.try_get("key")?,
                    payload: row.try_get("payload")?,
                    headers: names.into_iter().zip(values).collect(),
                })
            })
            .collect()
    }

    fn delete_through(&self, lock: &mut PgConnection, position: Position) -> Result<()> {
        self.database(
            sqlx::query("DELETE FROM exactly.outbox WHERE (txid, id) <= ($1, $2)")
                .bind(position.0)
                .bind(position.1)
                .execute(lock),
        )?;
        Ok(())
    }

    /// The last committed position of this relay, read back from the positions topic.
    fn read_position(&self) -> Result<Position> {
        let consumer: BaseConsumer = self
            .relay
            .kafka
            .consumer(&format!("exactly-relay-reader-{}", self.relay.name))
            .set("enable.partition.eof", "true")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&self.relay.positions_topic), CALL_TIMEOUT)?;
        let mut assignment = TopicPartitionList::new();
        for topic in metadata.topics() {
            for partition in topic.partitions() {
                assignment.add_partition_offset(&self.relay.positions_topic, partition.id(), Offset::Beginning)?;
            }
        }
        let partitions = assignment.count();
        consumer.assign(&assignment)?;
        let mut position = (0, 0);
        let mut at_end = 0;
        let deadline = std::time::Instant::now() + CALL_TIMEOUT * 2;
        while at_end < partitions {
            if std::time::Instant::now() > deadline {
                return Err(Error::Config(format!(
                    "cannot read the relay position from {}",
                    self.relay.positions_topic
                )));
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) if message.key() == Some(self.relay.name.as_bytes()) => {
                    let text = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
                    if let Some((txid, id)) = text.split_once(':')
                        && let (Ok(txid), Ok(id)) = (txid.parse(), id.parse())
                    {
                        position = (txid, id);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => at_end += 1,
                Some(Err(e)) => return Err(e.into()),
                _ => {}
            }
        }
        Ok(position)
    }

    /// Creates the positions topic (compacted, one partition) unless it exists.
    fn ensure_positions_topic(&self) {
        let Ok(admin) = self.relay.kafka.producer(&self.relay.name).create::<AdminClient<DefaultClientContext>>()
        else {
            return;
        };
        let topic =
            NewTopic::new(&self.relay.positions_topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
        match self.handle.block_on(admin.create_topics([&topic], &AdminOptions::new())) {
            Ok(results) => {
                for result in results {
                    if let Err((topic, code)) = result
                        && code != RDKafkaErrorCode::TopicAlreadyExists
                    {
                        tracing::warn!(relay = %self.relay.name, "cannot create {topic}: {code}");
                    }
                }
            }
            Err(e) => tracing::warn!(relay = %self.relay.name, "cannot create the positions topic: {e}"),
        }
    }
}

struct OutboxRow {
    position: Position,
    topic: String,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}
