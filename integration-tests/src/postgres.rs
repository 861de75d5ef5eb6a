//! PostgreSQL in a container, with a fresh database for each test.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::OnceCell;

use crate::engine::on_harness;
use crate::images::{self, POSTGRES_IMAGE_VAR, POSTGRES_LOCAL, POSTGRES_OFFICIAL};
use crate::names::unique;
use crate::node::{Node, NodeSpec, free_port};

const PASSWORD: &str = "exactly";
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    node: Node,
    port: u16,
}

/// A database of its own for one test, on a [`Postgres`] server.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// A `postgres://` URL that reaches it from this host.
    pub url: String,
}

static SHARED: OnceCell<Postgres> = OnceCell::const_new();

impl Postgres {
    /// One server shared by every test of this test binary (started on first use).
    ///
    /// Tests must not stop or pause it; use [`Postgres::dedicated`] for that.
    pub async fn shared() -> anyhow::Result<&'static Postgres> {
        SHARED.get_or_try_init(Self::dedicated).await
    }

    /// A server owned by the caller; removed when dropped.
    pub async fn dedicated() -> anyhow::Result<Postgres> {
        crate::engine::ensure_engine().await?;
        let image = on_harness(async {
            let docker = crate::engine::docker().await?;
            anyhow::Ok(images::resolve(&docker, POSTGRES_IMAGE_VAR, POSTGRES_OFFICIAL, POSTGRES_LOCAL).await)
        })
        .await?;
        let port = free_port()?;
        let spec = NodeSpec {
            image,
            name: unique("postgres"),
            network: None,
            env: vec![("POSTGRES_PASSWORD".into(), PASSWORD.into())],
            ports: vec![(port, 5432)],
            cmd: ["postgres", "-c", "max_connections=300"].map(String::from).to_vec(),
        };
        let server = Postgres { node: Node::start(spec).await?, port };
        server.wait_ready(READY_TIMEOUT).await?;
        Ok(server)
    }

    /// The container, to stop, kill, start or pause.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// URL of database `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/{database}", self.port)
    }

    /// Waits until the server accepts connections and answers `SELECT 1`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let options: PgConnectOptions = self.url("postgres").parse()?;
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            match options.connect().await {
                Ok(mut conn) => match sqlx::query("SELECT 1").execute(&mut conn).await {
                    Ok(_) => {
                        let _ = conn.close().await;
                        return Ok(());
                    }
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            self.node.ensure_running().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("PostgreSQL on port {} not ready after {timeout:?}: {last}", self.port)
    }

    /// Creates a fresh, empty database for one test.
    pub async fn database(&self) -> anyhow::Result<TestDatabase> {
        let name = unique("test");
        let mut conn = PgConnection::connect(&self.url("postgres")).await.context("cannot connect to PostgreSQL")?;
        // Names come from `unique`, so they need no quoting beyond this.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await?;
        conn.close().await?;
        Ok(TestDatabase { url: self.url(&name), name })
    }
}

impl TestDatabase {
    /// A connection pool on this database.
    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&self.url)
            .await
            .with_context(|| format!("cannot connect to database {}", self.name))
    }
}
