//! Where the examples find Kafka and PostgreSQL: `EXACTLY_BROKERS` and `DATABASE_URL` if set,
//! otherwise containers started for the run (removed when it ends).

use exactly_testkit::{Kafka, Postgres};

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
        let (brokers, kafka) = kafka_from_env().await?;
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
        let (brokers, kafka) = kafka_from_env().await?;
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

/// The high watermark (the offset the next record will get) of each of `topic`'s
/// partitions `0..partitions`: where a consumer that has handled everything stands.
pub async fn high_watermarks(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let reader: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
        (0..partitions)
            .map(|partition| Ok(reader.fetch_watermarks(&topic, partition, std::time::Duration::from_secs(10))?.1))
            .collect()
    })
    .await?
}

/// How far a consumer group got on a topic, by the offsets it committed to Kafka (in Kafka
/// mode they commit in the transaction of the output, so they count what is done).
#[derive(Clone)]
pub struct CommittedOffsets {
    reader: std::sync::Arc<rdkafka::consumer::BaseConsumer>,
    topic: String,
    partitions: i32,
}

impl std::fmt::Debug for CommittedOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommittedOffsets").field("topic", &self.topic).field("partitions", &self.partitions).finish()
    }
}

impl CommittedOffsets {
    /// Reads what `group` committed on `topic`'s partitions `0..partitions` (never joins it).
    ///
    /// # Errors
    /// When the client cannot be created.
    pub fn new(brokers: &str, group: &str, topic: &str, partitions: i32) -> anyhow::Result<CommittedOffsets> {
        let reader = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("isolation.level", "read_committed")
            .create()?;
        Ok(CommittedOffsets { reader: std::sync::Arc::new(reader), topic: topic.to_owned(), partitions })
    }

    /// The committed offsets summed over the partitions: on a topic written from offset 0,
    /// how many records the group is done with.
    ///
    /// A lookup that times out is asked again, for up to a minute: on a loaded machine the
    /// group coordinator can be slow to answer while a killed member's session expires, and
    /// a slow answer is not a failure of what is being measured.
    ///
    /// # Errors
    /// When Kafka does not answer within that minute, or answers with another error.
    pub async fn total(&self) -> anyhow::Result<i64> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.committed_sum()).await? {
                Err(rdkafka::error::KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::OperationTimedOut))
                    if std::time::Instant::now() < deadline =>
                {
                    continue;
                }
                other => return Ok(other?),
            }
        }
    }

    /// One lookup of the committed offsets, summed; blocks for up to 10 s.
    fn committed_sum(&self) -> rdkafka::error::KafkaResult<i64> {
        use rdkafka::consumer::Consumer;
        let mut wanted = rdkafka::TopicPartitionList::new();
        for partition in 0..self.partitions {
            wanted.add_partition(&self.topic, partition);
        }
        let committed = self.reader.committed_offsets(wanted, std::time::Duration::from_secs(10))?;
        Ok(committed.elements().iter().filter_map(|e| e.offset().to_raw()).filter(|o| *o > 0).sum())
    }
}

/// `EXACTLY_BROKERS`, or a broker started in a container.
async fn kafka_from_env() -> anyhow::Result<(String, Option<Kafka>)> {
    match std::env::var("EXACTLY_BROKERS") {
        Ok(brokers) => Ok((brokers, None)),
        Err(_) => {
            println!("starting Kafka in a container ...");
            let kafka = Kafka::single().await?;
            Ok((kafka.bootstrap_servers(), Some(kafka)))
        }
    }
}

/// Reads `topic` as a downstream service would (`read_committed`), until `expected` distinct
/// values of the JSON field `field` were seen (at most 120 s), then 2 s more so duplicates
/// would show. Returns how many records were read and the distinct values.
pub async fn read_committed_ids(
    brokers: &str,
    topic: &str,
    field: &str,
    expected: i64,
) -> anyhow::Result<(i64, std::collections::HashSet<i64>)> {
    let (brokers, topic, field) = (brokers.to_owned(), topic.to_owned(), field.to_owned());
    tokio::task::spawn_blocking(move || read_blocking(&brokers, &topic, &field, expected)).await?
}

fn read_blocking(
    brokers: &str,
    topic: &str,
    field: &str,
    expected: i64,
) -> anyhow::Result<(i64, std::collections::HashSet<i64>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message as _;
    use std::time::{Duration, Instant};

    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-reader"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()?;
    reader.subscribe(&[topic])?;
    let (mut records, mut distinct) = (0_i64, std::collections::HashSet::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut settle: Option<Instant> = None;
    while settle.is_none_or(|until| Instant::now() < until) && Instant::now() < deadline {
        if let Some(message) = reader.poll(Duration::from_millis(200)) {
            let value: serde_json::Value = serde_json::from_slice(message?.payload().unwrap_or_default())?;
            records += 1;
            distinct.insert(value[field].as_i64().unwrap_or(-1));
        }
        if settle.is_none() && i64::try_from(distinct.len())? >= expected {
            settle = Some(Instant::now() + Duration::from_secs(2));
        }
    }
    Ok((records, distinct))
}
