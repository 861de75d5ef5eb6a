//! Where the examples find Kafka and PostgreSQL: `EXACTLY_BROKERS` and `DATABASE_URL` if set,
//! otherwise containers started for the run (removed when it ends).

use exactly_integration_tests::{Kafka, Postgres};

/// Kafka and PostgreSQL for one run of an example.
#[derive(Debug)]
pub struct Environment {
    /// Kafka's `bootstrap.servers`.
    pub brokers: String,
    /// A URL of a database of its own.
    pub database_url: String,
    // Keeps the containers (if any) alive for the run.
    _kafka: Option<Kafka>,
    _postgres: Option<Postgres>,
}

impl Environment {
    /// Uses `EXACTLY_BROKERS` / `DATABASE_URL`, or starts containers.
    pub async fn start() -> anyhow::Result<Environment> {
        let (brokers, kafka) = match std::env::var("EXACTLY_BROKERS") {
            Ok(brokers) => (brokers, None),
            Err(_) => {
                println!("starting Kafka in a container ...");
                let kafka = Kafka::single().await?;
                (kafka.bootstrap_servers(), Some(kafka))
            }
        };
        let (database_url, postgres) = match std::env::var("DATABASE_URL") {
            Ok(url) => (url, None),
            Err(_) => {
                println!("starting PostgreSQL in a container ...");
                let postgres = Postgres::dedicated().await?;
                (postgres.database().await?.url, Some(postgres))
            }
        };
        Ok(Environment { brokers, database_url, _kafka: kafka, _postgres: postgres })
    }

    /// Uses `EXACTLY_BROKERS`, or starts Kafka alone (for examples that need no database).
    pub async fn start_kafka_only() -> anyhow::Result<Environment> {
        let (brokers, kafka) = match std::env::var("EXACTLY_BROKERS") {
            Ok(brokers) => (brokers, None),
            Err(_) => {
                println!("starting Kafka in a container ...");
                let kafka = Kafka::single().await?;
                (kafka.bootstrap_servers(), Some(kafka))
            }
        };
        Ok(Environment { brokers, database_url: String::new(), _kafka: kafka, _postgres: None })
    }

    /// Creates `topic` with `partitions` partitions unless it exists.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        use rdkafka::types::RDKafkaErrorCode;
        let admin: AdminClient<DefaultClientContext> =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &self.brokers).create()?;
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        for result in admin.create_topics([&new], &AdminOptions::new()).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
            }
        }
        Ok(())
    }
}
