//! Connecting to PostgreSQL and configuring Kafka clients from the connection settings.

use std::time::Duration;

use rdkafka::ClientConfig;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::args::Connection;
use crate::error::{Context, Error};

impl Connection {
    /// A small pool on the database; fails fast (10 s) when it does not answer.
    pub(crate) async fn pool(&self) -> Result<PgPool, Error> {
        let url = self
            .database_url
            .as_deref()
            .ok_or_else(|| Error::Usage("no database given: pass --database-url or set EXACTLY_DATABASE_URL".into()))?;
        // sqlx would log a parameter it ignores with its value.
        let (url, ignored) = exactly::redact::known_database_parameters(url);
        if !ignored.is_empty() {
            return Err(Error::Usage(format!(
                "the database URL has parameters PostgreSQL connections do not take: {}",
                ignored.join(", ")
            )));
        }
        let options: PgConnectOptions =
            url.parse().map_err(|_| Error::Usage("the database URL is not a valid PostgreSQL URL".into()))?;
        let place =
            format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or_default());
        PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .context(|| format!("cannot connect to PostgreSQL at {place}"))
    }

    /// Fails at once, saying why, when the brokers refuse the tool's login or TLS fails
    /// (librdkafka would retry for ever, and each call would only time out).
    pub(crate) async fn check_kafka(&self) -> Result<(), Error> {
        let config = self.kafka()?;
        let brokers = config.get("bootstrap.servers").unwrap_or_default().to_owned();
        exactly::check_kafka(&config, Duration::from_secs(10))
            .await
            .context(|| format!("cannot use the Kafka brokers at {brokers}"))
    }

    /// Whether brokers were given.
    pub(crate) fn has_brokers(&self) -> bool {
        self.brokers.is_some()
    }

    /// A Kafka client configuration: the brokers, then every `EXACTLY_RDKAFKA_<KEY>`
    /// variable of the environment (see [`exactly::kafka_settings_from_env`]), then every
    /// `-X` setting (which wins).
    pub(crate) fn kafka(&self) -> Result<ClientConfig, Error> {
        let brokers = self
            .brokers
            .as_deref()
            .ok_or_else(|| Error::Usage("no Kafka brokers given: pass --brokers or set EXACTLY_BROKERS".into()))?;
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        // An unreachable cluster is reported, not waited on for minutes.
        config.set("socket.timeout.ms", "10000");
        for (key, value) in exactly::kafka_settings_from_env() {
            config.set(key, value);
        }
        for (key, value) in self.kafka_settings()? {
            config.set(key, value);
        }
        Ok(config)
    }
}
