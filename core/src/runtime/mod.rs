//! The runtime: one consumer group per handler, each run by the code of its mode
//! (`database_mode`, `kafka_mode`), and the outbox relay, the lag meter and the operations
//! HTTP server beside them, until it is told to stop.

mod builder;
mod database;
mod groups;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

pub use self::builder::RuntimeBuilder;
use crate::engine::group::{GroupSpec, StartSettings};
use crate::engine::shared::Shared;
use crate::error::{Error, Result};
use crate::ops::health::{Health, HealthState};
use crate::ops::http::{Endpoints, Server};
use crate::ops::metrics::lag;

/// How long `run` waits for a broker to answer its first check before it goes on (brokers
/// that are down are waited for as always; only a refusal stops the runtime).
const START_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

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
        RuntimeBuilder::new()
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
    /// [`Error::KafkaAuthentication`] (the brokers refused the credentials),
    /// [`Error::KafkaTls`] (the TLS handshake failed) or [`Error::KafkaConsumerFailed`]
    /// (librdkafka gave up on a consumer, e.g. a restarted static member the broker refuses):
    /// those stop the runtime at once.
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
        crate::kafka::check::check_kafka(&self.settings.kafka.consumer("exactly-check"), START_CHECK_TIMEOUT).await?;
        crate::ops::metrics::describe();
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
            match spec.start(&self.shared, &self.settings) {
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
                    let task = format!("the consumer of group {}", group.name);
                    outcome = outcome.and(Err(Error::Panicked { task, message: e.to_string() }))
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

#[cfg(test)]
mod redaction_tests {
    //! Every settings type, formatted with secrets set, shows none of them.

    use rdkafka::ClientConfig;
    use rdkafka::consumer::BaseConsumer;

    use super::*;
    use crate::api::settings::{Batch, RetryPolicy, StartFrom};
    use crate::engine::group::StartSettings;
    use crate::error::{Error, Result};
    use crate::kafka::properties::KafkaProperties;
    use crate::outbox::Relay;
    use sqlx::postgres::PgPoolOptions;
    use std::time::Duration;

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
            // Misspelt secrets: no secret word in them, and librdkafka knows neither.
            "sasl.passwd",
            "ssl.key.pm",
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
        let mode = crate::kafka_mode::KafkaModeSettings {
            producers: crate::kafka_mode::transactional_ids("tx").map(|id| kafka.producer(&id)),
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
