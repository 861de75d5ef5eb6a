//! Apache Kafka in containers: one broker, or a three-broker cluster, in KRaft mode.
//!
//! Each broker runs as combined broker and controller and is configured only through the
//! `KAFKA_*` variables the official `apache/kafka` image reads, so the official image and the
//! local drop-in run from the same code. Clients on the host reach broker `i` through
//! `127.0.0.1:<fixed port>`; brokers reach each other by container name on a private network.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::OnceCell;

use crate::engine::on_harness;
use crate::images::{self, KAFKA_IMAGE_VAR, KAFKA_LOCAL, KAFKA_OFFICIAL};
use crate::names::unique;
use crate::node::{Node, NodeSpec, free_port};

/// How long a broker or cluster may take to answer metadata after its containers start.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The listener the host's clients use, inside the container.
const CLIENT_PORT: u16 = 9092;

/// A running Kafka: one broker or several, with their bootstrap address.
#[derive(Debug)]
pub struct Kafka {
    nodes: Vec<Node>,
    host_ports: Vec<u16>,
}

static SHARED: OnceCell<Kafka> = OnceCell::const_new();

impl Kafka {
    /// One broker shared by every test of this test binary (started on first use).
    ///
    /// Tests must not stop or pause it; use [`Kafka::single`] for that.
    pub async fn shared() -> anyhow::Result<&'static Kafka> {
        SHARED.get_or_try_init(Self::single).await
    }

    /// A single broker owned by the caller; removed when dropped.
    pub async fn single() -> anyhow::Result<Kafka> {
        Self::start(1).await
    }

    /// Three brokers, replication factor 3 and `min.insync.replicas` 2 for every topic,
    /// the consumer offsets and the transaction state log.
    pub async fn cluster() -> anyhow::Result<Kafka> {
        Self::start(3).await
    }

    async fn start(brokers: usize) -> anyhow::Result<Kafka> {
        crate::engine::ensure_engine().await?;
        let image = on_harness(async {
            let docker = crate::engine::docker().await?;
            anyhow::Ok(images::resolve(&docker, KAFKA_IMAGE_VAR, KAFKA_OFFICIAL, KAFKA_LOCAL).await)
        })
        .await?;
        let run = unique("kafka");
        let network = format!("{run}_net");
        let names: Vec<String> = (1..=brokers).map(|id| format!("{run}_{id}")).collect();
        let host_ports = (0..brokers).map(|_| free_port()).collect::<anyhow::Result<Vec<u16>>>()?;
        let voters =
            names.iter().enumerate().map(|(i, name)| format!("{}@{name}:9093", i + 1)).collect::<Vec<_>>().join(",");
        let replication = brokers.min(3).to_string();
        let min_isr = if brokers >= 3 { "2" } else { "1" }.to_owned();

        let specs = names.iter().zip(&host_ports).enumerate().map(|(i, (name, port))| {
            let env = [
                ("KAFKA_NODE_ID", (i + 1).to_string()),
                ("KAFKA_PROCESS_ROLES", "broker,controller".into()),
                (
                    "KAFKA_LISTENERS",
                    format!("PLAINTEXT://0.0.0.0:{CLIENT_PORT},BROKER://0.0.0.0:19092,CONTROLLER://0.0.0.0:9093"),
                ),
                ("KAFKA_ADVERTISED_LISTENERS", format!("PLAINTEXT://127.0.0.1:{port},BROKER://{name}:19092")),
                (
                    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                    "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
                ),
                ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".into()),
                ("KAFKA_INTER_BROKER_LISTENER_NAME", "BROKER".into()),
                ("KAFKA_CONTROLLER_QUORUM_VOTERS", voters.clone()),
                ("CLUSTER_ID", "ZXhhY3RseS10ZXN0LWNsdQ".into()),
                ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", replication.clone()),
                ("KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS", "4".into()),
                ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", replication.clone()),
                ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", min_isr.clone()),
                ("KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS", "4".into()),
                ("KAFKA_DEFAULT_REPLICATION_FACTOR", replication.clone()),
                ("KAFKA_MIN_INSYNC_REPLICAS", min_isr.clone()),
                ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".into()),
                ("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false".into()),
                // A killed broker's successor registers in seconds, not after the default 9 s.
                ("KAFKA_BROKER_SESSION_TIMEOUT_MS", "2000".into()),
                ("KAFKA_BROKER_HEARTBEAT_INTERVAL_MS", "500".into()),
            ];
            NodeSpec {
                image: image.clone(),
                name: name.clone(),
                network: Some(network.clone()),
                env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                ports: vec![(*port, CLIENT_PORT)],
                cmd: Vec::new(),
            }
        });
        let nodes = futures::future::try_join_all(specs.map(Node::start)).await?;
        let kafka = Kafka { nodes, host_ports };
        kafka.wait_ready(kafka.nodes.len(), READY_TIMEOUT).await?;
        Ok(kafka)
    }

    /// `bootstrap.servers` for clients on this host.
    pub fn bootstrap_servers(&self) -> String {
        self.host_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// The broker with node id `id` (1-based), to stop, kill or pause.
    pub fn broker(&self, id: usize) -> &Node {
        &self.nodes[id - 1]
    }

    /// How many brokers this Kafka has.
    pub fn broker_count(&self) -> usize {
        self.nodes.len()
    }

    /// A client configuration holding only `bootstrap.servers`.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap_servers());
        config
    }

    /// Waits until `brokers` brokers answer metadata (after a start or a restart); fails
    /// fast when a broker's container exited.
    pub async fn wait_ready(&self, brokers: usize, timeout: Duration) -> anyhow::Result<()> {
        let config = self.client_config();
        let consumer: Arc<BaseConsumer> = Arc::new(
            config.clone().set("group.id", unique("probe")).create().context("cannot create a probe consumer")?,
        );
        let deadline = Instant::now() + timeout;
        loop {
            let probe = Arc::clone(&consumer);
            let answer = tokio::task::spawn_blocking(move || {
                probe.fetch_metadata(None, Duration::from_secs(2)).map(|m| m.brokers().len())
            })
            .await?;
            let last = match answer {
                Ok(count) if count >= brokers => return Ok(()),
                Ok(count) => format!("{count} of {brokers} brokers registered"),
                Err(e) => e.to_string(),
            };
            if brokers == self.nodes.len() {
                for node in &self.nodes {
                    node.ensure_running().await?;
                }
            }
            if Instant::now() >= deadline {
                bail!("Kafka at {} not ready after {timeout:?}: {last}", self.bootstrap_servers());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates a topic with `partitions` partitions, replicated on up to three brokers.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().context("cannot create an admin client")?;
        let replication = i32::try_from(self.nodes.len().min(3))?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics([&topic], &options).await? {
            result.map_err(|(topic, code)| anyhow::anyhow!("cannot create topic {topic}: {code}"))?;
        }
        Ok(())
    }

    /// A new topic with a unique name; returns the name.
    pub async fn unique_topic(&self, prefix: &str, partitions: i32) -> anyhow::Result<String> {
        let name = unique(prefix);
        self.create_topic(&name, partitions).await?;
        Ok(name)
    }
}
