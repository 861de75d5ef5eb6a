//! [`RuntimeBuilder`]: the settings of a runtime, checked against the guarantee when it is
//! built.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};

use super::database::{Connect, DatabaseSource};
use super::groups::{ToGroup, check_key_concurrency};
use super::{Runtime, ShutdownHandle};
use crate::api::batch::BatchHandler;
use crate::api::handler::Handler;
use crate::api::mode::{Mode, ModeKind};
use crate::api::settings::{Batch, RetryPolicy, StartFrom};
use crate::engine::group::{GroupSpec, StartSettings};
use crate::engine::shared::{DeadLetterHook, Shared};
use crate::error::{Error, ErrorHook, Result};
use crate::kafka::group_protocol::GroupProtocol;
use crate::kafka::properties::KafkaProperties;
use crate::ops::health::{Health, HealthState};
use crate::ops::http::Endpoints;
use crate::ops::metrics::lag::LagRegistry;
use crate::pipeline::dead_letter::DeadLettered;
use crate::pipeline::panics;

/// Most records in one Kafka-mode transaction (unless the batch size is larger). A commit
/// costs a few broker round trips, so a transaction must be allowed to hold what arrives in
/// a commit interval: capped at 1 000, a copy runs at a tenth of the rate of at-least-once
/// code (the performance chapter, fix 2).
const KAFKA_TRANSACTION_RECORDS: usize = 100_000;

/// How many batches may be inside a database transaction at once, unless set or raised by
/// a key-concurrent handler.
const DEFAULT_CONCURRENT_BATCHES: usize = 8;

/// Builds a [`Runtime`]: brokers, database, handlers, batching.
///
/// ```no_run
/// # use exactly::{Runtime, Batch};
/// # async fn run(handler: impl exactly::Handler) -> exactly::Result<()> {
/// let runtime = Runtime::builder()
///     .brokers("localhost:9092")
///     .database_url("postgres://app@localhost/app")
///     .handler(handler)
///     .batch(Batch::default().max_records(1000))
///     .build()
///     .await?;
/// runtime.run().await // until Ctrl-C or SIGTERM
/// # }
/// ```
#[must_use]
pub struct RuntimeBuilder {
    kafka: KafkaProperties,
    database: Option<DatabaseSource>,
    groups: Vec<Box<dyn GroupSpec>>,
    batch: Batch,
    start_from: StartFrom,
    /// `None`: [`DEFAULT_CONCURRENT_BATCHES`], or more for a key-concurrent handler.
    max_concurrent_batches: Option<usize>,
    on_error: Option<ErrorHook>,
    on_dead_letter: Option<DeadLetterHook>,
    migrate: bool,
    revoke_grace: Duration,
    database_transaction_timeout: Duration,
    transactional_id: Option<String>,
    commit_interval: Duration,
    outbox_relay: Option<String>,
    retry: RetryPolicy,
    http: Option<SocketAddr>,
    trace_context: bool,
    lag_interval: Duration,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("kafka", &self.kafka)
            .field("database", &self.database)
            .field("handlers", &self.groups.len())
            .field("batch", &self.batch)
            .field("start_from", &self.start_from)
            .field("max_concurrent_batches", &self.max_concurrent_batches)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// A builder with safe defaults.
    pub(super) fn new() -> Self {
        RuntimeBuilder {
            kafka: KafkaProperties::default(),
            database: None,
            groups: Vec::new(),
            batch: Batch::default(),
            start_from: StartFrom::default(),
            max_concurrent_batches: None,
            on_error: None,
            on_dead_letter: None,
            migrate: true,
            revoke_grace: Duration::from_secs(30),
            database_transaction_timeout: Duration::from_secs(60),
            transactional_id: None,
            commit_interval: Duration::from_millis(100),
            outbox_relay: None,
            retry: RetryPolicy::default(),
            http: None,
            trace_context: false,
            lag_interval: Duration::from_secs(5),
        }
    }

    /// Kafka's `bootstrap.servers`: `host:port[,host:port...]`.
    pub fn brokers(mut self, servers: impl Into<String>) -> Self {
        self.kafka.set("bootstrap.servers", servers);
        self
    }

    /// Any librdkafka property (TLS, SASL, timeouts, ...). Properties that would break the
    /// guarantee (`enable.auto.commit=true`, `isolation.level=read_uncommitted`, ...) are
    /// refused by [`RuntimeBuilder::build`] with the reason.
    pub fn kafka_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka.set(key, value);
        self
    }

    /// Every librdkafka setting given in the environment as `EXACTLY_RDKAFKA_<KEY>` (see
    /// [`kafka_settings_from_env`](crate::kafka_settings_from_env)): TLS and SASL settings,
    /// passwords included, can then come from the deployment rather than the code. Settings
    /// given later with [`RuntimeBuilder::kafka_setting`] win.
    ///
    /// ```no_run
    /// # async fn run(handler: impl exactly::Handler) -> exactly::Result<()> {
    /// // EXACTLY_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL EXACTLY_RDKAFKA_SASL_MECHANISM=SCRAM-SHA-512
    /// // EXACTLY_RDKAFKA_SASL_USERNAME=orders EXACTLY_RDKAFKA_SASL_PASSWORD=...
    /// // EXACTLY_RDKAFKA_SSL_CA_LOCATION=/etc/kafka/ca.pem
    /// let runtime = exactly::Runtime::builder()
    ///     .brokers("kafka-1:9093")
    ///     .kafka_settings_from_env()
    ///     .database_url("postgres://orders@db/orders?sslmode=verify-full&sslrootcert=/etc/pg/ca.pem")
    ///     .handler(handler)
    ///     .build()
    ///     .await?;
    /// # runtime.run().await }
    /// ```
    pub fn kafka_settings_from_env(mut self) -> Self {
        for (key, value) in crate::kafka_settings_from_env() {
            self.kafka.set(key, value);
        }
        self
    }

    /// The consumer group protocol every handler's consumer speaks (default
    /// [`GroupProtocol::Classic`]; see [`GroupProtocol::Consumer`] for what changes with the
    /// protocol of KIP-848). It is librdkafka's `group.protocol`, so
    /// `kafka_setting("group.protocol", "consumer")` and `EXACTLY_RDKAFKA_GROUP_PROTOCOL=consumer`
    /// (with [`kafka_settings_from_env`](Self::kafka_settings_from_env)) choose it too; the
    /// one given last wins.
    ///
    /// With [`GroupProtocol::Consumer`], [`build`](Self::build) refuses the settings the
    /// broker owns under it (`session.timeout.ms`, `heartbeat.interval.ms`,
    /// `partition.assignment.strategy`, `group.protocol.type`), saying what to use instead.
    ///
    /// ```no_run
    /// # async fn run(handler: impl exactly::Handler) -> exactly::Result<()> {
    /// use exactly::GroupProtocol;
    ///
    /// let runtime = exactly::Runtime::builder()
    ///     .brokers("localhost:9092")
    ///     .group_protocol(GroupProtocol::Consumer)
    ///     .kafka_setting("group.remote.assignor", "uniform") // not partition.assignment.strategy
    ///     .database_url("postgres://app@localhost/app")
    ///     .handler(handler)
    ///     .build()
    ///     .await?;
    /// # runtime.run().await }
    /// ```
    pub fn group_protocol(mut self, protocol: GroupProtocol) -> Self {
        self.kafka.set("group.protocol", protocol.as_setting());
        self
    }

    /// The PostgreSQL database, by URL; the runtime makes its own pool.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database = Some(DatabaseSource::Url(url.into()));
        self
    }

    /// The PostgreSQL database, through your pool.
    pub fn pool(mut self, pool: PgPool) -> Self {
        self.database = Some(DatabaseSource::Pool(pool));
        self
    }

    /// Adds a handler; each handler consumes as its own consumer group.
    pub fn handler<H: Handler>(mut self, handler: H) -> Self {
        self.groups.push(<H::Mode as Mode>::visit(handler, ToGroup));
        self
    }

    /// Adds a batch handler, given each partition's messages a batch at a time (see
    /// [`BatchHandler`]); it consumes as its own consumer group, beside per-message handlers.
    pub fn batch_handler<B: BatchHandler>(mut self, handler: B) -> Self {
        self.groups.push(<B::Mode as Mode>::visit_batch(handler, ToGroup));
        self
    }

    /// Any librdkafka property of the transactional producer that Kafka-mode handlers
    /// write through. Settings that would break the guarantee (`acks=1`,
    /// `enable.idempotence=false`, a transaction timeout shorter than a transaction can
    /// take) are refused by [`RuntimeBuilder::build`] with the reason.
    pub fn producer_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.kafka.set_producer(key, value);
        self
    }

    /// The `transactional.id` of this instance's producer (Kafka mode). Give each instance
    /// its own, stable across restarts: a restarted instance then fences its predecessor and
    /// aborts what it left open at once, instead of leaving read_committed readers waiting
    /// for `transaction.timeout.ms`. A runtime with several Kafka-mode handlers suffixes it
    /// with each group. Each group has two producers that take turns (one commits while
    /// the other carries the next transaction): the second's id has `.2` appended.
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = Some(id.into());
        self
    }

    /// How a failing message is retried before it goes to the dead letters, for every
    /// handler without a policy of its own ([`Subscription::with_retry`](crate::Subscription::with_retry); default: 5
    /// attempts, 100 ms to 30 s apart, with jitter). Undecodable messages and errors made
    /// with [`HandlerError::permanent`](crate::HandlerError::permanent) go there at once.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Runs the [outbox relay](crate::outbox::Relay) named `name` in this runtime, so records
    /// Database-mode handlers emit are published to Kafka exactly once. Give every instance
    /// the same name: one of them publishes at a time, the others stand by.
    pub fn outbox_relay(mut self, name: impl Into<String>) -> Self {
        self.outbox_relay = Some(name.into());
        self
    }

    /// How long a Kafka transaction collects messages before it commits (Kafka mode;
    /// default 100 ms). Longer means fewer commits and more latency. A transaction also
    /// commits once it holds 100 000 records (or the batch size, if larger).
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Messages per database transaction (default: up to 500 or 50 ms; `Batch::single()`
    /// for one message per transaction).
    pub fn batch(mut self, batch: Batch) -> Self {
        self.batch = batch;
        self
    }

    /// Where partitions with no stored position start (default: earliest).
    pub fn start_from(mut self, start_from: StartFrom) -> Self {
        self.start_from = start_from;
        self
    }

    /// How many batches may be inside a database transaction at once, over all partitions
    /// and lanes. Each holds a pooled connection. The default is 8, or the largest
    /// [key concurrency](crate::Subscription::with_key_concurrency) of the runtime's
    /// handlers if that is more.
    pub fn max_concurrent_batches(mut self, max: usize) -> Self {
        self.max_concurrent_batches = Some(max.max(1));
        self
    }

    /// How many batches may be inside a database transaction at once: as set, or the
    /// default.
    fn concurrent_batches(&self) -> usize {
        self.max_concurrent_batches.unwrap_or_else(|| {
            let lanes = self.groups.iter().map(|spec| spec.subscription().key_concurrency()).max();
            lanes.unwrap_or(1).max(DEFAULT_CONCURRENT_BATCHES)
        })
    }

    /// Called with every error the runtime reports (besides logging it with `tracing`).
    pub fn on_error(mut self, hook: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(hook));
        self
    }

    /// Called with every message moved to the dead letters (besides logging it with
    /// `tracing` at `WARN` and counting it in
    /// [`MESSAGES_DEAD_LETTERED`](crate::metrics::MESSAGES_DEAD_LETTERED)). A dead letter is
    /// not an error of the runtime: its partition goes on, and the message waits in the
    /// dead letters (the table, or the dead-letter topic) to be re-driven or replayed.
    pub fn on_dead_letter(mut self, hook: impl Fn(&DeadLettered) + Send + Sync + 'static) -> Self {
        self.on_dead_letter = Some(Arc::new(hook));
        self
    }

    /// Whether `build` creates or upgrades exactly's tables (default: yes). A database that
    /// is already current is only read, so a service role without DDL rights can keep this
    /// on once `exactly migrate` has run as the owner role; if a migration is pending,
    /// `build` fails with [`Error::MigrateNotPermitted`], naming the missing right. Turn it
    /// off to skip even that check.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// How long a revocation waits for a partition's in-flight batch (default 30 s).
    pub fn revoke_grace(mut self, grace: Duration) -> Self {
        self.revoke_grace = grace;
        self
    }

    /// How long one attempt at a Database-mode batch may take, from its start (waiting for
    /// one of the [`max_concurrent_batches`](Self::max_concurrent_batches) slots and a
    /// pooled connection included) to `COMMIT`, its handler calls included (default 60 s);
    /// claiming a partition on assignment has the same deadline.
    ///
    /// A database server or network that goes away without closing the connection (a
    /// failover, a host that lost power) never answers it again, and without a deadline
    /// the partition would wait on it for good. Past the deadline the work is abandoned,
    /// reported as [`Error::DatabaseTimedOut`], and retried from the stored position: the
    /// abandoned transaction rolls back if the server ever sees it, and a `COMMIT` whose
    /// answer never came is looked up before the retry, so nothing is lost or applied
    /// twice. A handler that needs longer than this is abandoned the same way, again and
    /// again: raise the deadline for it.
    ///
    /// The server keeps a bound too: the sessions of the pool the runtime opens (from
    /// [`database_url`](Self::database_url)) set `idle_in_transaction_session_timeout` to
    /// this deadline. A client that stops inside a transaction (frozen, paused, never
    /// scheduled) cannot keep its own deadline, and would hold the partition's row in
    /// `exactly.offsets` against its next owner for as long as it stays stopped; PostgreSQL
    /// ends such a session once it has sat idle this long. A pool you pass in
    /// ([`pool`](Self::pool)) keeps its own settings: the runtime warns when they leave
    /// that bound off, or set it shorter than this deadline.
    pub fn database_transaction_timeout(mut self, timeout: Duration) -> Self {
        self.database_transaction_timeout = timeout;
        self
    }

    /// Serves operations endpoints over HTTP/1.1 on `addr` while the runtime runs (bound by
    /// [`RuntimeBuilder::build`]; port 0 picks a free one, see [`Runtime::http_addr`]):
    ///
    /// - `GET /health/live`: 200 while the runtime runs and its consumer loops are alive,
    ///   503 once one has died (see [`Health`] for what is and is not covered).
    /// - `GET /health/ready`: 200 once every handler's consumer has been given its
    ///   partitions and while the database answers; 503 otherwise, with the reason as a
    ///   one-line plain-text body.
    /// - `GET /metrics`: with the `prometheus` feature, every [metric](crate::metrics) in
    ///   Prometheus' text format. `build` then installs a Prometheus recorder as the
    ///   process's global `metrics` recorder (once; later runtimes share it), and fails if the
    ///   application installed one of its own. Without the feature: 404.
    ///
    /// Anything else gets 404 (unknown path), 405 (another method than `GET` or `HEAD`) or
    /// 400 (not an HTTP/1.x request). One request per connection; no TLS, no
    /// authentication: bind it to an address only your probes and scraper reach. The server
    /// stops listening before [`Runtime::run`] returns.
    ///
    /// ```no_run
    /// # async fn run(handler: impl exactly::Handler) -> exactly::Result<()> {
    /// exactly::Runtime::builder()
    ///     .brokers("localhost:9092")
    ///     .database_url("postgres://app@localhost/app")
    ///     .handler(handler)
    ///     .serve_http("0.0.0.0:9464".parse().expect("an address"))
    ///     .build()
    ///     .await?
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn serve_http(mut self, addr: SocketAddr) -> Self {
        self.http = Some(addr);
        self
    }

    /// Carries W3C trace context (default: off). On, the `traceparent` header of each
    /// consumed message is read (and ignored unless valid per the W3C Trace Context
    /// specification): the message's `tracing` span records its `trace_id` and
    /// `parent_span_id` and a new `span_id`, and every record its handler emits through
    /// [`Context::emit`](crate::Context::emit), in Kafka mode and through the outbox, gets a
    /// `traceparent` with the same trace id and that new span id as parent, unless the
    /// handler gave the record one itself, and the message's `tracestate` unchanged (the
    /// vendors' entries; repeated headers joined with commas).
    ///
    /// Not covered: a `tracestate` entry of exactly's own, messages without a valid `traceparent` (no
    /// new trace is started), records produced otherwise than through `emit`, and dead
    /// letters (they keep the original message's headers). Spans are `tracing` spans: to
    /// export them, use a `tracing` subscriber that does.
    pub fn trace_context(mut self, enabled: bool) -> Self {
        self.trace_context = enabled;
        self
    }

    /// How often the [consumer lag](crate::metrics::CONSUMER_LAG) of every partition this
    /// instance owns is measured (default 5 s; one `ListOffsets` request per partition
    /// leader each time, busy or idle, whether or not a metrics recorder is installed).
    pub fn lag_interval(mut self, interval: Duration) -> Self {
        self.lag_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// Checks every setting, connects to PostgreSQL, checks that its connections keep their
    /// session (three connections of their own, a few simple queries) and creates exactly's
    /// tables.
    ///
    /// # Errors
    /// [`Error::UnsafeSetting`] for a setting that would break the guarantee,
    /// [`Error::Config`] for a missing or contradictory one, [`Error::Database`] when
    /// PostgreSQL cannot be reached, [`Error::SessionNotKept`] behind a pooler in
    /// transaction or statement mode, [`Error::Listen`] when the HTTP address cannot be
    /// bound.
    pub async fn build(self) -> Result<Runtime> {
        self.check()?;
        let pool = self.connect().await?;
        panics::install_hook();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shutdown_tx = Arc::new(shutdown_tx);
        let health = Arc::new(HealthState::new(
            self.groups.iter().map(|spec| spec.subscription().group().to_owned()),
            shutdown_rx.clone(),
        ));
        let http = match self.http {
            Some(addr) => {
                let endpoints = Endpoints {
                    health: Health::new(Arc::clone(&health), pool.clone()),
                    #[cfg(feature = "prometheus")]
                    prometheus: crate::ops::metrics::prometheus::install()?,
                };
                Some((crate::ops::http::bind(addr).await?, endpoints))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            pool,
            batch: self.batch,
            start_from: self.start_from,
            batch_permits: Semaphore::new(self.concurrent_batches()),
            on_error: self.on_error,
            on_dead_letter: self.on_dead_letter,
            handle: tokio::runtime::Handle::current(),
            shutdown: shutdown_rx,
            revoke_grace: self.revoke_grace,
            transaction_timeout: self.database_transaction_timeout,
            retry: self.retry,
            health,
            lag: LagRegistry::default(),
            trace_context: self.trace_context,
            stop: Arc::clone(&shutdown_tx),
            fatal: std::sync::Mutex::new(None),
        });
        let kafka_groups = self.groups.iter().filter(|spec| spec.kind() == ModeKind::Kafka).count();
        let settings = StartSettings {
            kafka: self.kafka,
            transactional_id: self.transactional_id.unwrap_or_default(),
            suffix_transactional_id: kafka_groups > 1,
            commit_interval: self.commit_interval,
            max_records: self.batch.max_records.max(KAFKA_TRANSACTION_RECORDS),
            outbox_relay: self.outbox_relay,
            lag_interval: self.lag_interval,
        };
        let shutdown = ShutdownHandle { sender: shutdown_tx };
        Ok(Runtime { shared, settings, groups: self.groups, shutdown, http })
    }

    /// Refuses settings that would break the guarantee or contradict each other.
    fn check(&self) -> Result<()> {
        self.kafka.check()?;
        if self.groups.is_empty() {
            return Err(Error::Config("no handlers: add at least one with `handler(...)`".into()));
        }
        if self.outbox_relay.is_some() {
            self.kafka.check_producer(Duration::ZERO)?;
        }
        if self.groups.iter().any(|spec| spec.kind() == ModeKind::Kafka) {
            if self.transactional_id.as_deref().is_none_or(str::is_empty) {
                return Err(Error::Config(
                    "a Kafka-mode handler needs `transactional_id(...)`: a stable id per instance, so a \
                     restarted instance fences its predecessor and aborts what it left open"
                        .into(),
                ));
            }
            self.kafka.check_producer(self.commit_interval)?;
        }
        let mut seen = std::collections::HashSet::new();
        for spec in &self.groups {
            let subscription = spec.subscription();
            subscription.validate()?;
            if spec.batches() && subscription.key_parking() {
                return Err(Error::Config(format!(
                    "group {}: key parking does not apply to a batch handler: a parked key's messages are \
                     retried one at a time, apart from the batch, which would call the batch handler on \
                     batches of one; a failing message of a batch handler is retried, then dead-lettered",
                    subscription.group()
                )));
            }
            if spec.kind() == ModeKind::Kafka && subscription.key_parking() {
                return Err(Error::Config(format!(
                    "group {}: key parking keeps parked messages in PostgreSQL, so it needs Database mode; a \
                     Kafka-mode handler retries at the failing message, then dead-letters it",
                    subscription.group()
                )));
            }
            if subscription.key_concurrency() > 1 {
                check_key_concurrency(spec.kind(), spec.batches(), &subscription)?;
            }
            if !seen.insert(subscription.group().to_owned()) {
                return Err(Error::Config(format!(
                    "two handlers use group `{}`: a group has one handler per runtime, and its \
                     instances share the work (run more runtimes for more instances)",
                    subscription.group()
                )));
            }
        }
        Ok(())
    }

    /// The database pool, when a Database-mode handler or the outbox relay needs one.
    async fn connect(&self) -> Result<Option<PgPool>> {
        let needs_database =
            self.outbox_relay.is_some() || self.groups.iter().any(|spec| spec.kind() == ModeKind::Database);
        let connect = Connect {
            max_connections: u32::try_from(self.concurrent_batches() + 2).unwrap_or(u32::MAX),
            transaction_timeout: self.database_transaction_timeout,
            needed: needs_database,
            migrate: self.migrate,
        };
        match &self.database {
            Some(source) => connect.to(source).await.map(Some),
            None if needs_database => Err(Error::Config("no database: call `database_url(...)` or `pool(...)`".into())),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `build` refuses before it connects to anything.
    fn refusal(builder: RuntimeBuilder) -> String {
        builder.check().err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn build_refuses_what_the_consumer_protocol_moved_to_the_broker() {
        let consumer = || RuntimeBuilder::new().brokers("localhost:9092").group_protocol(GroupProtocol::Consumer);
        let session = refusal(consumer().kafka_setting("session.timeout.ms", "6000"));
        assert!(session.contains("`group.consumer.session.timeout.ms`"), "{session}");
        let strategy = refusal(consumer().kafka_setting("partition.assignment.strategy", "range"));
        assert!(strategy.contains("`group.remote.assignor`"), "{strategy}");
        // The same settings under the classic protocol, or the protocol set again later, pass
        // this check and stop at the next one.
        let classic = RuntimeBuilder::new().brokers("localhost:9092").kafka_setting("session.timeout.ms", "6000");
        assert!(refusal(classic).contains("no handlers"));
        let switched_back =
            consumer().kafka_setting("session.timeout.ms", "6000").group_protocol(GroupProtocol::Classic);
        assert!(refusal(switched_back).contains("no handlers"));
    }
}
