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
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::OnceCell;

use crate::engine::on_harness;
use crate::images::{self, KAFKA_IMAGE_VAR, KAFKA_LOCAL, KAFKA_OFFICIAL};
use crate::names::unique;
use crate::node::{Node, NodeSpec, free_port};
use crate::pki::TestCa;
use crate::wait::Check;

/// How long a broker or cluster may take to answer metadata after its containers start.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The listener the host's clients use, inside the container.
const CLIENT_PORT: u16 = 9092;

/// A running Kafka: one broker or several, with their bootstrap address.
#[derive(Debug)]
pub struct Kafka {
    nodes: Vec<Node>,
    host_ports: Vec<u16>,
    /// Set for a broker that accepts only SASL over TLS ([`Kafka::secure`]).
    security: Option<Security>,
}

/// What a [`Kafka::secure`] broker trusts and whom it knows.
#[derive(Debug)]
struct Security {
    ca: TestCa,
    ca_file: std::path::PathBuf,
    /// The PLAIN super user the harness's own clients and tools log in as.
    admin: Credentials,
    /// A PLAIN user declared in the broker's JAAS file.
    plain: Credentials,
    /// Whether the broker enforces ACLs ([`Kafka::authorizing`]).
    authorizer: bool,
}

/// A SASL user of a [`Kafka::secure`] broker.
#[derive(Clone)]
pub struct Credentials {
    /// `SCRAM-SHA-512` or `PLAIN`.
    pub mechanism: &'static str,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

impl Credentials {
    /// The same user with another password.
    pub fn with_password(&self, password: &str) -> Credentials {
        Credentials { password: password.to_owned(), ..self.clone() }
    }
}

/// The JAAS file, certificates and client settings live here in the secure broker's container.
const SECRETS: &str = "/etc/kafka/secrets";

/// A random password of 24 letters and digits (safe inside `kafka-configs`' `[...]` syntax).
pub fn random_password() -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(24).map(char::from).collect()
}

/// The ACLs of the Security chapter, as the script a Kafka administrator runs.
const KAFKA_ACLS_SH: &str = include_str!("../security/kafka-acls.sh");

static SHARED: OnceCell<Kafka> = OnceCell::const_new();
static SECURE_SHARED: OnceCell<Kafka> = OnceCell::const_new();

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

    /// One broker shared by the tests of this binary that accepts only SASL over TLS
    /// ([`Kafka::secure`]).
    pub async fn secure_shared() -> anyhow::Result<&'static Kafka> {
        SECURE_SHARED.get_or_try_init(Self::secure).await
    }

    /// A single broker whose every listener speaks SASL: the one for clients and the one
    /// between brokers over TLS (`SASL_SSL`), the controller's without (`SASL_PLAINTEXT`, not
    /// published). Mechanisms SCRAM-SHA-512 and PLAIN; its certificate is signed by a CA made
    /// for this run and names `127.0.0.1`. Configured only through `KAFKA_*` variables and
    /// files copied in (the JAAS file reaches the JVM through `KAFKA_OPTS`), so the official
    /// image works too. The harness's own clients ([`Kafka::client_config`]) log in as a
    /// PLAIN super user; [`Kafka::add_scram_user`] and [`Kafka::plain_user`] give users for
    /// the code under test.
    pub async fn secure() -> anyhow::Result<Kafka> {
        Self::secure_with(false).await
    }

    /// A [`Kafka::secure`] broker that also enforces ACLs (KRaft's `StandardAuthorizer`):
    /// the harness's admin is its only super user, and no one else may do anything an ACL
    /// does not allow. Grant with [`Kafka::grant_documented_acls`] and [`Kafka::remove_acl`].
    pub async fn authorizing() -> anyhow::Result<Kafka> {
        Self::secure_with(true).await
    }

    async fn secure_with(authorizer: bool) -> anyhow::Result<Kafka> {
        let ca = TestCa::new()?;
        let ca_file = ca.write_pem_file()?;
        let admin = Credentials { mechanism: "PLAIN", username: "admin".into(), password: random_password() };
        let plain = Credentials { mechanism: "PLAIN", username: "plainsvc".into(), password: random_password() };
        Self::start_with(1, Some(Security { ca, ca_file, admin, plain, authorizer })).await
    }

    /// Three brokers, replication factor 3 and `min.insync.replicas` 2 for every topic,
    /// the consumer offsets and the transaction state log.
    pub async fn cluster() -> anyhow::Result<Kafka> {
        Self::start(3).await
    }

    async fn start(brokers: usize) -> anyhow::Result<Kafka> {
        Self::start_with(brokers, None).await
    }

    async fn start_with(brokers: usize, security: Option<Security>) -> anyhow::Result<Kafka> {
        crate::engine::ensure_engine().await?;
        let image = on_harness(async {
            let docker = crate::engine::docker().await?;
            anyhow::Ok(images::resolve(&docker, KAFKA_IMAGE_VAR, KAFKA_OFFICIAL, KAFKA_LOCAL).await)
        })
        .await?;
        let run = unique("kafka");
        let network = format!("{run}_net");
        // Over TLS the name is checked against the certificate, and Java refuses host names
        // with `_` ("Illegal given domain name"): a secure broker's name has none.
        let names: Vec<String> = (1..=brokers)
            .map(
                |id| if security.is_some() { format!("{}-{id}", run.replace('_', "-")) } else { format!("{run}_{id}") },
            )
            .collect();
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
                // Groups of the consumer protocol (KIP-848) take their session timeout and
                // heartbeat interval from the broker (45 s and 5 s, and no less, by default):
                // the tests' classic 6 s and 1 s, with minimums low enough for a group's own
                // (`consumer.session.timeout.ms`, `consumer.heartbeat.interval.ms`) to go lower.
                ("KAFKA_GROUP_CONSUMER_MIN_SESSION_TIMEOUT_MS", "1000".into()),
                ("KAFKA_GROUP_CONSUMER_SESSION_TIMEOUT_MS", "6000".into()),
                ("KAFKA_GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL_MS", "250".into()),
                ("KAFKA_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS", "1000".into()),
                ("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false".into()),
                // A killed broker's successor registers in seconds, not after the default 9 s.
                ("KAFKA_BROKER_SESSION_TIMEOUT_MS", "2000".into()),
                ("KAFKA_BROKER_HEARTBEAT_INTERVAL_MS", "500".into()),
            ];
            let mut env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let mut files = Vec::new();
            if let Some(security) = &security {
                let (secure_env, secure_files) = security.broker(name, *port)?;
                for (key, value) in secure_env {
                    env.retain(|(k, _)| *k != key);
                    env.push((key, value));
                }
                files = secure_files;
            }
            anyhow::Ok(NodeSpec {
                image: image.clone(),
                name: name.clone(),
                network: Some(network.clone()),
                env,
                ports: vec![(*port, CLIENT_PORT)],
                cmd: Vec::new(),
                files,
                tmpfs: Vec::new(),
            })
        });
        let specs = specs.collect::<anyhow::Result<Vec<_>>>()?;
        let nodes = futures::future::try_join_all(specs.into_iter().map(Node::start)).await?;
        let kafka = Kafka { nodes, host_ports, security };
        kafka.wait_ready(kafka.nodes.len(), READY_TIMEOUT).await?;
        Ok(kafka)
    }

    fn security(&self) -> anyhow::Result<&Security> {
        self.security.as_ref().context("not a secure broker: start it with Kafka::secure")
    }

    /// The CA that signed a secure broker's certificate.
    pub fn ca(&self) -> anyhow::Result<&TestCa> {
        Ok(&self.security()?.ca)
    }

    /// A file holding that CA's certificate (for `ssl.ca.location`).
    pub fn ca_file(&self) -> anyhow::Result<&std::path::Path> {
        Ok(&self.security()?.ca_file)
    }

    /// The PLAIN user (not a super user) declared in a secure broker's JAAS file.
    pub fn plain_user(&self) -> anyhow::Result<Credentials> {
        Ok(self.security()?.plain.clone())
    }

    /// Creates SCRAM-SHA-512 user `username` with a random password on a secure broker (as
    /// the admin, with Kafka's own `kafka-configs.sh` in the container; the password goes
    /// through the environment, not the command line) and waits until it can log in.
    pub async fn add_scram_user(&self, username: &str) -> anyhow::Result<Credentials> {
        self.security()?;
        let credentials =
            Credentials { mechanism: "SCRAM-SHA-512", username: username.to_owned(), password: random_password() };
        let node = &self.nodes[0];
        let script = format!(
            "/opt/kafka/bin/kafka-configs.sh {} --alter \
               --add-config \"SCRAM-SHA-512=[password=$SCRAM_PASSWORD]\" \
               --entity-type users --entity-name \"$SCRAM_USER\"",
            self.admin_tool_flags()
        );
        let (code, output) =
            node.exec(&script, &[("SCRAM_USER", username), ("SCRAM_PASSWORD", credentials.password.as_str())]).await?;
        anyhow::ensure!(code == 0, "kafka-configs could not create SCRAM user {username} (exit {code}):\n{output}");
        self.wait_authenticated(&credentials, READY_TIMEOUT).await?;
        Ok(credentials)
    }

    /// Runs the Security chapter's ACL script (`docs/src/security/kafka-acls.sh`) as the
    /// admin, in the broker's container with Kafka's own `kafka-acls.sh`: grants
    /// `principal` (`User:name`) the ACLs of `parts` (`handler`, `kafka-mode`, `relay`,
    /// `tool`, `tool-admin`), with the script's variables (`INPUT_TOPICS`, `GROUP`, ...)
    /// from `vars`. Returns what it printed.
    pub async fn grant_documented_acls(
        &self,
        principal: &str,
        parts: &[&str],
        vars: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        self.security()?;
        let (bootstrap, admin_config) = self.admin_tool_connection();
        let mut env = vec![
            ("ACL_SCRIPT", KAFKA_ACLS_SH),
            ("KAFKA_ACLS", "/opt/kafka/bin/kafka-acls.sh"),
            ("BOOTSTRAP", bootstrap.as_str()),
            ("ADMIN_CONFIG", admin_config.as_str()),
            ("PRINCIPAL", principal),
        ];
        env.extend_from_slice(vars);
        let script = format!("sh -c \"$ACL_SCRIPT\" kafka-acls.sh {}", parts.join(" "));
        let (code, output) = self.nodes[0].exec(&script, &env).await?;
        anyhow::ensure!(code == 0, "kafka-acls.sh {} failed (exit {code}):\n{output}", parts.join(" "));
        Ok(output)
    }

    /// Removes one ACL of `principal` (`kafka-acls.sh --remove` with `acl`, e.g.
    /// `["--operation", "Read", "--group", "g"]`), to show that it is needed.
    pub async fn remove_acl(&self, principal: &str, acl: &[&str]) -> anyhow::Result<()> {
        self.security()?;
        // Each word travels in a variable of its own, so none is read by the shell.
        let names: Vec<String> = (0..acl.len()).map(|i| format!("ACL_{i}")).collect();
        let words: Vec<String> = names.iter().map(|name| format!("\"${name}\"")).collect();
        let script = format!(
            "/opt/kafka/bin/kafka-acls.sh {} --remove --force --allow-principal \"$PRINCIPAL\" {}",
            self.admin_tool_flags(),
            words.join(" ")
        );
        let mut env: Vec<(&str, &str)> = vec![("PRINCIPAL", principal)];
        env.extend(names.iter().map(String::as_str).zip(acl.iter().copied()));
        let (code, output) = self.nodes[0].exec(&script, &env).await?;
        anyhow::ensure!(code == 0, "kafka-acls.sh --remove {acl:?} failed (exit {code}):\n{output}");
        Ok(())
    }

    /// How Kafka's own tools in the first broker's container reach it as the admin: its
    /// inter-broker listener, and the admin's client properties.
    fn admin_tool_connection(&self) -> (String, String) {
        (format!("{}:19092", self.nodes[0].name()), format!("{SECRETS}/admin.properties"))
    }

    /// [`Kafka::admin_tool_connection`] as a Kafka tool's flags.
    fn admin_tool_flags(&self) -> String {
        let (bootstrap, admin_config) = self.admin_tool_connection();
        format!("--bootstrap-server {bootstrap} --command-config {admin_config}")
    }

    /// The librdkafka settings of a client logging in as `user` over TLS, trusting this run's
    /// CA (given as a file, as most deployments do).
    pub fn client_settings(&self, user: &Credentials) -> anyhow::Result<Vec<(String, String)>> {
        let security = self.security()?;
        Ok(vec![
            ("security.protocol".into(), "SASL_SSL".into()),
            ("sasl.mechanism".into(), user.mechanism.into()),
            ("sasl.username".into(), user.username.clone()),
            ("sasl.password".into(), user.password.clone()),
            ("ssl.ca.location".into(), security.ca_file.display().to_string()),
            ("ssl.endpoint.identification.algorithm".into(), "https".into()),
        ])
    }

    /// [`Kafka::client_config`] (only the brokers) with `settings` added.
    pub fn config_with(&self, settings: &[(String, String)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap_servers());
        for (key, value) in settings {
            config.set(key, value);
        }
        config
    }

    /// Waits until `user` can fetch metadata. Fails at once when the client settings are
    /// refused or TLS fails, and once a refused login has lasted [`CREDENTIAL_PROPAGATION`],
    /// with [`Error::Fatal`](crate::Error::Fatal) inside the error.
    pub async fn wait_authenticated(&self, user: &Credentials, timeout: Duration) -> anyhow::Result<()> {
        let config = self.config_with(&self.client_settings(user)?);
        let started = Instant::now();
        let what = format!("user {} to log in", user.username);
        crate::wait_for(timeout, &what, || login(config.clone(), started.elapsed())).await?;
        Ok(())
    }

    /// `bootstrap.servers` for clients on this host.
    pub fn bootstrap_servers(&self) -> String {
        self.host_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// The broker with node id `id` (1-based), to stop, kill or pause.
    pub fn broker(&self, id: usize) -> &Node {
        &self.nodes[id - 1]
    }

    /// The address clients on this host reach broker `id` (1-based) at.
    pub fn broker_address(&self, id: usize) -> anyhow::Result<String> {
        let port = id.checked_sub(1).and_then(|i| self.host_ports.get(i)).with_context(|| format!("no broker {id}"))?;
        Ok(format!("127.0.0.1:{port}"))
    }

    /// How many brokers this Kafka has.
    pub fn broker_count(&self) -> usize {
        self.nodes.len()
    }

    /// A client configuration holding `bootstrap.servers` (and, on a secure broker, the
    /// admin's SASL_SSL login, so every helper works there too).
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap_servers());
        if let Some(security) = &self.security {
            config
                .set("security.protocol", "SASL_SSL")
                .set("sasl.mechanism", "PLAIN")
                .set("sasl.username", &security.admin.username)
                .set("sasl.password", &security.admin.password)
                .set("ssl.ca.pem", &security.ca.pem);
        }
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
    ///
    /// librdkafka can drop the connection a request went out on once the first metadata
    /// names the brokers (the bootstrap connection is replaced by the broker's own), which
    /// fails that request with `DestroyBroker`; the request is then sent again from a new
    /// client, and a topic the first one did create counts as created.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        self.create_topic_with(name, partitions, &[]).await
    }

    /// Creates topic `name` with `partitions` and the topic settings `config`, as
    /// [`Kafka::create_topic`] does.
    pub async fn create_topic_with(&self, name: &str, partitions: i32, config: &[(&str, &str)]) -> anyhow::Result<()> {
        let replication = i32::try_from(self.nodes.len().min(3))?;
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        for (key, value) in config {
            topic = topic.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let admin: AdminClient<DefaultClientContext> =
                self.client_config().create().context("cannot create an admin client")?;
            let results = match admin.create_topics([&topic], &options).await {
                Err(KafkaError::AdminOp(RDKafkaErrorCode::DestroyBroker)) if attempts < 3 => continue,
                other => other?,
            };
            for result in results {
                match result {
                    Ok(_) => {}
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if attempts > 1 => {}
                    Err((topic, code)) => bail!("cannot create topic {topic}: {code}"),
                }
            }
            return Ok(());
        }
    }

    /// A new topic with a unique name; returns the name.
    pub async fn unique_topic(&self, prefix: &str, partitions: i32) -> anyhow::Result<String> {
        let name = unique(prefix);
        self.create_topic(&name, partitions).await?;
        Ok(name)
    }
}

impl Security {
    /// The variables and files that make broker `name` (host port `port`) accept only SASL
    /// over TLS.
    ///
    /// Listener names carry no protocol (`SECURE`, `BROKER`, `CONTROLLER`): the official
    /// image's start script has extra requirements for listeners named `SSL` or `SASL_*`
    /// (a JKS key store with passwords in files). The protocols come from the map.
    #[allow(clippy::type_complexity)]
    fn broker(&self, name: &str, port: u16) -> anyhow::Result<(Vec<(String, String)>, Vec<(String, Vec<u8>, u32)>)> {
        let cert = self.ca.issue(&[name, "localhost"], &["127.0.0.1"])?;
        let admin = &self.admin;
        let plain = &self.plain;
        // The broker logs in to itself (between brokers, and to its controller) as admin.
        let jaas = format!(
            "KafkaServer {{\n  org.apache.kafka.common.security.plain.PlainLoginModule required\n  \
             username=\"{u}\"\n  password=\"{p}\"\n  user_{u}=\"{p}\"\n  user_{pu}=\"{pp}\";\n}};\n",
            u = admin.username,
            p = admin.password,
            pu = plain.username,
            pp = plain.password,
        );
        let tools = format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n\
             sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \
             username=\"{}\" password=\"{}\";\nssl.truststore.type=PEM\nssl.truststore.location={SECRETS}/ca.pem\n",
            admin.username, admin.password
        );
        let env = [
            (
                "KAFKA_LISTENERS",
                format!("SECURE://0.0.0.0:{CLIENT_PORT},BROKER://0.0.0.0:19092,CONTROLLER://0.0.0.0:9093"),
            ),
            ("KAFKA_ADVERTISED_LISTENERS", format!("SECURE://127.0.0.1:{port},BROKER://{name}:19092")),
            (
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                "SECURE:SASL_SSL,BROKER:SASL_SSL,CONTROLLER:SASL_PLAINTEXT".into(),
            ),
            ("KAFKA_SASL_ENABLED_MECHANISMS", "SCRAM-SHA-512,PLAIN".into()),
            ("KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL", "PLAIN".into()),
            ("KAFKA_SASL_MECHANISM_CONTROLLER_PROTOCOL", "PLAIN".into()),
            ("KAFKA_SSL_KEYSTORE_TYPE", "PEM".into()),
            ("KAFKA_SSL_KEYSTORE_LOCATION", format!("{SECRETS}/broker.pem")),
            ("KAFKA_SSL_TRUSTSTORE_TYPE", "PEM".into()),
            ("KAFKA_SSL_TRUSTSTORE_LOCATION", format!("{SECRETS}/ca.pem")),
            ("KAFKA_OPTS", format!("-Djava.security.auth.login.config={SECRETS}/kafka_server_jaas.conf")),
            // The SCRAM server needs a login module of its own on each listener that offers it
            // (it cuts the connection otherwise); the value holds no `=`, so the official
            // image's variable parsing keeps it.
            (
                "KAFKA_LISTENER_NAME_SECURE_SCRAM___SHA___512_SASL_JAAS_CONFIG",
                "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
            ),
            (
                "KAFKA_LISTENER_NAME_BROKER_SCRAM___SHA___512_SASL_JAAS_CONFIG",
                "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
            ),
        ];
        let mut env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if self.authorizer {
            // The broker and its controller log in as admin: as the super user they pass.
            env.push((
                "KAFKA_AUTHORIZER_CLASS_NAME".into(),
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer".into(),
            ));
            env.push(("KAFKA_SUPER_USERS".into(), format!("User:{}", admin.username)));
        }
        let files = vec![
            (format!("{SECRETS}/broker.pem"), format!("{}{}", cert.key_pem, cert.chain_pem).into_bytes(), 0o644),
            (format!("{SECRETS}/ca.pem"), self.ca.pem.clone().into_bytes(), 0o644),
            (format!("{SECRETS}/kafka_server_jaas.conf"), jaas.into_bytes(), 0o644),
            (format!("{SECRETS}/admin.properties"), tools.into_bytes(), 0o644),
        ];
        Ok((env, files))
    }
}

/// How long a refused login is taken for a credential still on its way: kafka-configs
/// returns once the controller has the new SCRAM credential, and the broker learns it a
/// moment later.
pub const CREDENTIAL_PROPAGATION: Duration = Duration::from_secs(15);

/// One login with `config` and a metadata request, `waited` into a wait.
async fn login(config: ClientConfig, waited: Duration) -> Check<()> {
    // Classifies what the broker says (`exactly` stops on the same refusals).
    match exactly::check_kafka(&config, Duration::from_secs(2)).await {
        Ok(()) => {}
        Err(exactly::Error::KafkaAuthentication { reason }) if waited < CREDENTIAL_PROPAGATION => {
            return Check::NotYet(reason);
        }
        Err(refused) if refused.class() == exactly::ErrorClass::Fatal => return Check::Fatal(refused.into()),
        Err(e) => return Check::NotYet(format!("{e:#}")),
    }
    let answer = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        let consumer: BaseConsumer = config.create()?;
        Ok(consumer.fetch_metadata(None, Duration::from_secs(2))?.brokers().len())
    })
    .await;
    match answer {
        Ok(Ok(_)) => Check::Done(()),
        Ok(Err(e)) => Check::NotYet(format!("{e:#}")),
        Err(panicked) => Check::Fatal(panicked.into()),
    }
}
