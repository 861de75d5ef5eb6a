//! The runtime: consumes with one consumer per handler (group), claims partitions in
//! PostgreSQL, and runs a worker per partition that commits effects and positions together.

pub(crate) mod decode;
mod group;
mod kafka_mode;
pub(crate) mod panics;
mod parking;
mod partition_worker;
mod shared;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::{Semaphore, watch};

pub(crate) use self::group::log_librdkafka;
use self::group::{Group, Spawner};
use self::partition_worker::PartitionWorker;
use self::shared::{ErrorHook, Shared};
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::health::{Health, HealthState};
use crate::http::{Endpoints, Server};
use crate::metrics::lag::{self, LagRegistry};
use crate::mode::{Database, Kafka, Mode, ModeKind};
use crate::settings::{Batch, KafkaProperties, RetryPolicy, StartFrom};
use crate::subscription::Subscription;

/// Most records in one Kafka-mode transaction (unless the batch size is larger). A commit
/// costs a few broker round trips, so a transaction must be allowed to hold what arrives in
/// a commit interval: at 1 000, the cap it had, a copy ran at a tenth of the rate of
/// at-least-once code (benchmark S3).
const KAFKA_TRANSACTION_RECORDS: usize = 100_000;

/// How long `run` waits for a broker to answer its first check before it goes on (brokers
/// that are down are waited for as always; only a refusal stops the runtime).
const START_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

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
    max_concurrent_batches: usize,
    on_error: Option<ErrorHook>,
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

enum DatabaseSource {
    Url(String),
    Pool(PgPool),
}

impl std::fmt::Debug for DatabaseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // `PgConnectOptions` (in a pool's `Debug`) prints the password.
            DatabaseSource::Url(url) => f.debug_tuple("Url").field(&crate::redact::redact_url(url)).finish(),
            DatabaseSource::Pool(_) => f.debug_tuple("Pool").finish_non_exhaustive(),
        }
    }
}

impl RuntimeBuilder {
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
        self.groups.push(<H::Mode as Mode>::runner(handler).0);
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
    /// handler without a policy of its own ([`Subscription::with_retry`]; default: 5
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
    /// (default 8). Each holds a pooled connection.
    pub fn max_concurrent_batches(mut self, max: usize) -> Self {
        self.max_concurrent_batches = max.max(1);
        self
    }

    /// Called with every error the runtime reports (besides logging it with `tracing`).
    pub fn on_error(mut self, hook: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(hook));
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

    /// Checks every setting, connects to PostgreSQL and creates exactly's tables.
    ///
    /// # Errors
    /// [`Error::UnsafeSetting`] for a setting that would break the guarantee,
    /// [`Error::Config`] for a missing or contradictory one, [`Error::Database`] when
    /// PostgreSQL cannot be reached, [`Error::Listen`] when the HTTP address cannot be bound.
    pub async fn build(self) -> Result<Runtime> {
        self.kafka.check()?;
        if self.groups.is_empty() {
            return Err(Error::Config("no handlers: add at least one with `handler(...)`".into()));
        }
        let kafka_groups = self.groups.iter().filter(|spec| spec.kind() == ModeKind::Kafka).count();
        if self.outbox_relay.is_some() {
            self.kafka.check_producer(Duration::ZERO)?;
        }
        if kafka_groups > 0 {
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
            if spec.kind() == ModeKind::Kafka && subscription.key_parking() {
                return Err(Error::Config(format!(
                    "group {}: key parking keeps parked messages in PostgreSQL, so it needs Database mode; a \
                     Kafka-mode handler retries at the failing message, then dead-letters it",
                    subscription.group()
                )));
            }
            if !seen.insert(subscription.group().to_owned()) {
                return Err(Error::Config(format!(
                    "two handlers use group `{}`: a group has one handler per runtime, and its \
                     instances share the work (run more runtimes for more instances)",
                    subscription.group()
                )));
            }
        }
        let database_groups = self.groups.len() - kafka_groups;
        let pool = match self.database {
            Some(DatabaseSource::Pool(pool)) => Some(pool),
            Some(DatabaseSource::Url(url)) => Some(
                PgPoolOptions::new()
                    .max_connections(u32::try_from(self.max_concurrent_batches + 2).unwrap_or(u32::MAX))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(&database_url(&url))
                    .await?,
            ),
            None if database_groups > 0 || self.outbox_relay.is_some() => {
                return Err(Error::Config("no database: call `database_url(...)` or `pool(...)`".into()));
            }
            None => None,
        };
        if self.migrate
            && (database_groups > 0 || self.outbox_relay.is_some())
            && let Some(pool) = &pool
        {
            crate::offsets::migrate(pool).await?;
        }
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
                    prometheus: crate::metrics::prometheus::install()?,
                };
                Some((crate::http::bind(addr).await?, endpoints))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            pool,
            batch: self.batch,
            start_from: self.start_from,
            batch_permits: Semaphore::new(self.max_concurrent_batches),
            on_error: self.on_error,
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
        let settings = StartSettings {
            kafka: self.kafka,
            transactional_id: self.transactional_id.unwrap_or_default(),
            suffix_transactional_id: kafka_groups > 1,
            commit_interval: self.commit_interval,
            max_records: self.batch.max_records.max(KAFKA_TRANSACTION_RECORDS),
            outbox_relay: self.outbox_relay,
            lag_interval: self.lag_interval,
        };
        Ok(Runtime { shared, settings, groups: self.groups, shutdown: ShutdownHandle { sender: shutdown_tx }, http })
    }
}

/// `url` without the parameters sqlx would ignore: it would log them with their values.
fn database_url(url: &str) -> String {
    let (url, ignored) = crate::redact::known_database_parameters(url);
    for parameter in ignored {
        tracing::warn!(%parameter, "ignoring an unknown parameter of the database URL (its value is not shown)");
    }
    url
}

/// Processes messages until shut down. Made by [`Runtime::builder`].
pub struct Runtime {
    shared: Arc<Shared>,
    settings: StartSettings,
    groups: Vec<Box<dyn GroupSpec>>,
    shutdown: ShutdownHandle,
    /// The bound operations listener and what it serves.
    http: Option<(tokio::net::TcpListener, Endpoints)>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("shared", &self.shared)
            .field("handlers", &self.groups.len())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A builder with safe defaults.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            kafka: KafkaProperties::default(),
            database: None,
            groups: Vec::new(),
            batch: Batch::default(),
            start_from: StartFrom::default(),
            max_concurrent_batches: 8,
            on_error: None,
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

    /// A handle that stops this runtime gracefully from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The health of this runtime, for probes of your own (the same answers
    /// [`RuntimeBuilder::serve_http`] serves); take it before [`Runtime::run`].
    pub fn health(&self) -> Health {
        Health::new(Arc::clone(&self.shared.health), self.shared.pool.clone())
    }

    /// The address the operations HTTP server listens on, when
    /// [`RuntimeBuilder::serve_http`] was called (with port 0, the port picked).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// The pool the runtime commits through (none when every handler runs in Kafka mode).
    pub fn pool(&self) -> Option<&PgPool> {
        self.shared.pool.as_ref()
    }

    /// Runs until Ctrl-C, SIGTERM or [`ShutdownHandle::shutdown`], then stops gracefully:
    /// in-flight batches commit or roll back, the group is left cleanly.
    ///
    /// # Errors
    /// When a consumer cannot be created or stops on a fatal error, such as
    /// [`Error::KafkaAuthentication`] (the brokers refused the credentials) or
    /// [`Error::KafkaTls`] (the TLS handshake failed): those stop the runtime at once.
    pub async fn run(self) -> Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Runs until `signal` completes or [`ShutdownHandle::shutdown`] is called.
    ///
    /// Dropping the returned future (a `select!` that took another branch, a task aborted,
    /// a tokio runtime shut down) stops the runtime as [`ShutdownHandle::shutdown`] does:
    /// the consumers run on threads of their own, and would otherwise go on without anyone
    /// waiting for them.
    ///
    /// # Errors
    /// When a consumer cannot be created or stops on a fatal error.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send) -> Result<()> {
        let _stop_when_dropped = StopOnDrop(self.shutdown.clone());
        // A refused login or TLS handshake is found here, before any client blocks on it (a
        // Kafka-mode producer's init_transactions would wait out its timeout); later ones
        // reach the clients' error callbacks, which stop the runtime too.
        crate::kafka_client::check_kafka(&self.settings.kafka.consumer("exactly-check"), START_CHECK_TIMEOUT).await?;
        crate::metrics::describe();
        self.shared.health.set_running(true);
        let _not_running_when_done = NotRunningOnDrop(Arc::clone(&self.shared.health));
        // Dropped (stopping it at once) if this future is; stopped in order below otherwise.
        let server = self.http.map(|(listener, endpoints)| Server::start(listener, endpoints));
        let lag_meter = {
            let shared = Arc::clone(&self.shared);
            let client = lag::client(self.settings.kafka.consumer("exactly-lag"))?;
            let interval = self.settings.lag_interval;
            shared.handle.clone().spawn_blocking(move || {
                lag::measure(&shared.lag, &client, interval, &|| shared.shutting_down());
            })
        };
        let mut groups = Vec::with_capacity(self.groups.len());
        for spec in self.groups {
            let subscription = spec.subscription();
            match spec.start(&self.shared, &self.settings, &subscription) {
                Ok(group) => groups.push(group),
                Err(e) => {
                    self.shutdown.shutdown();
                    for group in groups {
                        let _ = group.poller.await;
                    }
                    let _ = lag_meter.await;
                    if let Some(server) = server {
                        server.stop().await;
                    }
                    return Err(e);
                }
            }
        }
        let relay = match (&self.settings.outbox_relay, &self.shared.pool) {
            (Some(name), Some(pool)) => {
                let shared = Arc::clone(&self.shared);
                let relay =
                    crate::outbox::Relay::with_properties(name.clone(), self.settings.kafka.clone(), pool.clone())
                        .on_error(move |e| shared.report(e));
                Some(relay.start().await?)
            }
            _ => None,
        };
        let mut stopped = self.shared.shutdown.clone();
        tokio::select! {
            () = signal => self.shutdown.shutdown(),
            _ = stopped.wait_for(|stop| *stop) => {}
        }
        let mut outcome = Ok(());
        if let Some(relay) = relay {
            outcome = relay.stop().await;
        }
        for group in groups {
            match group.poller.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => outcome = outcome.and(Err(e)),
                Err(e) => {
                    outcome =
                        outcome.and(Err(Error::Config(format!("the consumer of group {} panicked: {e}", group.name))))
                }
            }
        }
        let _ = lag_meter.await;
        self.shared.health.set_running(false);
        if let Some(server) = server {
            server.stop().await;
        }
        match self.shared.take_fatal() {
            Some(error) => Err(error),
            None => outcome,
        }
    }
}

/// Stops a [`Runtime`] gracefully; cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    sender: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Asks the runtime to stop: in-flight batches finish, then `run` returns.
    pub fn shutdown(&self) {
        self.sender.send_replace(true);
    }
}

/// Asks the runtime to stop when dropped: `run_until` holds one, so that dropping its
/// future stops the consumer threads too.
struct StopOnDrop(ShutdownHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// Marks the runtime as not running when dropped (`run_until` returned, or its future was
/// dropped).
struct NotRunningOnDrop(Arc<HealthState>);

impl Drop for NotRunningOnDrop {
    fn drop(&mut self) {
        self.0.set_running(false);
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What a runtime's groups are started with.
#[derive(Debug)]
struct StartSettings {
    kafka: KafkaProperties,
    transactional_id: String,
    suffix_transactional_id: bool,
    commit_interval: Duration,
    max_records: usize,
    outbox_relay: Option<String>,
    lag_interval: Duration,
}

/// A handler ready to run, whatever its type and mode.
#[doc(hidden)]
pub struct Runner(Box<dyn GroupSpec>);

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("subscription", &self.0.subscription()).finish()
    }
}

impl Runner {
    pub(crate) fn database<H: Handler<Mode = Database>>(handler: H) -> Self {
        Self(Box::new(DatabaseGroup { handler: Arc::new(handler) }))
    }

    pub(crate) fn kafka<H: Handler<Mode = Kafka>>(handler: H) -> Self {
        Self(Box::new(KafkaGroup { handler: Arc::new(handler) }))
    }
}

/// A handler, type-erased so one runtime holds handlers of different types.
trait GroupSpec: Send {
    fn subscription(&self) -> Subscription;
    fn kind(&self) -> ModeKind;
    fn start(
        self: Box<Self>,
        shared: &Arc<Shared>,
        settings: &StartSettings,
        subscription: &Subscription,
    ) -> Result<Group>;
}

struct DatabaseGroup<H> {
    handler: Arc<H>,
}

impl<H: Handler<Mode = Database>> GroupSpec for DatabaseGroup<H> {
    fn subscription(&self) -> Subscription {
        self.handler.subscription()
    }

    fn kind(&self) -> ModeKind {
        ModeKind::Database
    }

    fn start(
        self: Box<Self>,
        shared: &Arc<Shared>,
        settings: &StartSettings,
        subscription: &Subscription,
    ) -> Result<Group> {
        let handler = self.handler;
        let worker_shared = Arc::clone(shared);
        let spawner: Spawner = Box::new(move |start| {
            let worker = PartitionWorker::new(Arc::clone(&handler), Arc::clone(&worker_shared), start);
            worker_shared.handle.spawn(worker.run())
        });
        Group::start(shared, settings.kafka.database_consumer(subscription.group()), subscription, spawner)
    }
}

struct KafkaGroup<H> {
    handler: Arc<H>,
}

impl<H: Handler<Mode = Kafka>> GroupSpec for KafkaGroup<H> {
    fn subscription(&self) -> Subscription {
        self.handler.subscription()
    }

    fn kind(&self) -> ModeKind {
        ModeKind::Kafka
    }

    fn start(
        self: Box<Self>,
        shared: &Arc<Shared>,
        settings: &StartSettings,
        subscription: &Subscription,
    ) -> Result<Group> {
        let transactional_id = if settings.suffix_transactional_id {
            format!("{}-{}", settings.transactional_id, subscription.group())
        } else {
            settings.transactional_id.clone()
        };
        let mode = kafka_mode::KafkaModeSettings {
            producers: kafka_mode::transactional_ids(&transactional_id).map(|id| settings.kafka.producer(&id)),
            commit_interval: settings.commit_interval,
            max_records: settings.max_records,
        };
        kafka_mode::start(self.handler, shared, settings.kafka.consumer(subscription.group()), subscription, mode)
    }
}

#[cfg(test)]
mod redaction_tests {
    //! Every settings type, formatted with secrets set, shows none of them.

    use rdkafka::ClientConfig;
    use rdkafka::consumer::BaseConsumer;

    use super::*;
    use crate::outbox::Relay;

    /// Every secret librdkafka knows, and the Java names users carry over, each with a value
    /// of its own.
    fn secrets() -> Vec<(String, String)> {
        [
            "sasl.username",
            "sasl.password",
            "sasl.jaas.config",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.client.credentials.client.secret",
            "sasl.oauthbearer.assertion.private.key.file",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.oauthbearer.assertion.private.key.pem",
            "ssl.key.location",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl_key",
            "ssl.ca.pem",
            "ssl.keystore.location",
            "ssl.keystore.password",
            "ssl.truststore.password",
            "my.vendor.api.token",
        ]
        .iter()
        .enumerate()
        .map(|(i, key)| ((*key).to_owned(), format!("S3CR3T{i:02}X")))
        .collect()
    }

    const DATABASE_SECRET: &str = "DBS3CR3T";

    fn assert_clean(what: &str, text: &str) {
        assert!(!text.contains("S3CR3T"), "{what} shows a secret: {text}");
    }

    fn properties() -> KafkaProperties {
        let mut kafka = KafkaProperties::default();
        kafka.set("bootstrap.servers", "localhost:9092");
        for (key, value) in secrets() {
            kafka.set(key.clone(), value.clone());
            kafka.set_producer(key, value);
        }
        kafka
    }

    #[tokio::test]
    async fn formatting_settings_with_secrets_shows_none_of_them() -> Result<()> {
        let url = format!("postgres://app:{DATABASE_SECRET}@db.example:5432/orders?sslmode=require&pasword=S3CR3T-URL");
        let mut builder = Runtime::builder().brokers("localhost:9092").database_url(&url);
        for (key, value) in secrets() {
            builder = builder.kafka_setting(key.clone(), value.clone()).producer_setting(key, value);
        }
        let debug = format!("{builder:?} {builder:#?}");
        assert_clean("RuntimeBuilder", &debug);
        assert!(debug.contains("db.example:5432/orders") && debug.contains("[redacted]"), "{debug}");
        assert!(debug.contains("bootstrap.servers"), "the non-secret settings are still shown: {debug}");

        let pool = PgPoolOptions::new().connect_lazy(&url)?;
        let builder = Runtime::builder().pool(pool.clone());
        assert_clean("RuntimeBuilder with a pool", &format!("{builder:?} {builder:#?}"));

        let kafka = properties();
        assert_clean("KafkaProperties", &format!("{kafka:?} {kafka:#?}"));
        let mode = kafka_mode::KafkaModeSettings {
            producers: kafka_mode::transactional_ids("tx").map(|id| kafka.producer(&id)),
            commit_interval: Duration::from_millis(100),
            max_records: 1,
        };
        assert_clean("KafkaModeSettings", &format!("{mode:?} {mode:#?}"));
        let start = StartSettings {
            kafka: kafka.clone(),
            transactional_id: "tx".into(),
            suffix_transactional_id: false,
            commit_interval: Duration::from_millis(100),
            max_records: 1,
            outbox_relay: Some("relay".into()),
            lag_interval: Duration::from_secs(5),
        };
        assert_clean("StartSettings", &format!("{start:?} {start:#?}"));
        let mut relay = Relay::new("relay", "localhost:9092", pool);
        for (key, value) in secrets() {
            relay = relay.kafka_setting(key, value);
        }
        assert_clean("Relay", &format!("{relay:?} {relay:#?}"));
        for other in
            [format!("{:?} {:#?}", Batch::default(), RetryPolicy::default()), format!("{:?}", StartFrom::default())]
        {
            assert_clean("Batch, RetryPolicy, StartFrom", &other);
        }
        Ok(())
    }

    #[test]
    fn errors_from_settings_show_no_secret() {
        // A secret refused as a setting.
        for (key, value) in secrets() {
            let error = Error::unsafe_setting(&key, &value, "a reason");
            assert_clean("UnsafeSetting", &format!("{error} {error:?}"));
        }
        // librdkafka refusing a value (its message quotes it), a misspelt key whose value is
        // a secret, a secret it cannot use.
        for settings in [
            &[("security.protocol", "S3CR3T-A")][..],
            &[("sasl.pasword", "S3CR3T-B")],
            &[("security.protocol", "ssl"), ("ssl.key.pem", "S3CR3T-C")],
        ] {
            let mut config = ClientConfig::new();
            config.set("bootstrap.servers", "localhost:9092");
            for (key, value) in settings {
                config.set(*key, *value);
            }
            let created: rdkafka::error::KafkaResult<BaseConsumer> = config.create();
            let error = created.err().map(Error::from);
            assert!(error.is_some(), "librdkafka accepted {settings:?}");
            assert_clean("Kafka client configuration error", &format!("{error:?}"));
            assert_clean("Kafka client configuration error", &error.map(|e| e.to_string()).unwrap_or_default());
        }
        // The settings `build` refuses.
        let mut kafka = properties();
        kafka.set("enable.auto.commit", "true");
        let refused = kafka.check().err().map(|e| format!("{e} {e:?}")).unwrap_or_default();
        assert!(refused.contains("enable.auto.commit"), "{refused}");
        assert_clean("check", &refused);
        kafka.set_producer("acks", "1");
        let refused = kafka.check_producer(Duration::ZERO).err().map(|e| format!("{e} {e:?}")).unwrap_or_default();
        assert!(refused.contains("acks"), "{refused}");
        assert_clean("check_producer", &refused);
    }
}
