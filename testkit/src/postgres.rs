//! PostgreSQL in a container, with a fresh database for each test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::OnceCell;

use crate::engine::on_harness;
use crate::images::{self, POSTGRES_IMAGE_VAR, POSTGRES_LOCAL, POSTGRES_OFFICIAL};
use crate::names::unique;
use crate::node::{Node, NodeSpec, free_port};
use crate::pki::TestCa;

pub(crate) const PASSWORD: &str = "exactly";

/// The security chapter's statements that create the two roles (run as a superuser).
const ROLES_SQL: &str = include_str!("../security/roles.sql");
/// The security chapter's grants to the service role (run as the owner, after migrating).
const GRANTS_SQL: &str = include_str!("../security/grants.sql");
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    node: Node,
    port: u16,
    /// Set for a server that accepts only TLS connections ([`Postgres::tls`]).
    tls: Option<Tls>,
}

/// The CA that signed a TLS server's certificate, and a file holding it.
#[derive(Debug)]
struct Tls {
    ca: TestCa,
    ca_file: PathBuf,
}

/// Run by the image's entrypoint as `postgres` after `initdb`: the key must be private to
/// the server's user (files copied in belong to root), and `ssl = on` must not be on the
/// command line, which the temporary init server shares (it starts before the key is here).
const TLS_INIT: &str = r#"#!/bin/bash
set -euo pipefail
install -m 0644 /etc/exactly-tls/server.crt "$PGDATA/server.crt"
install -m 0600 /etc/exactly-tls/server.key "$PGDATA/server.key"
cat >>"$PGDATA/postgresql.conf" <<'EOF'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
EOF
cat >"$PGDATA/pg_hba.conf" <<'EOF'
local     all all     trust
hostnossl all all all reject
hostssl   all all all scram-sha-256
EOF
"#;

/// Where [`Postgres::with_small_disk`] mounts its small volume.
pub const SMALL_DISK: &str = "/mnt/small";

/// How to start a server.
#[derive(Default)]
struct Start {
    tls: Option<Tls>,
    network: Option<String>,
    small_disk: Option<i64>,
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
static TLS_SHARED: OnceCell<Postgres> = OnceCell::const_new();

impl Postgres {
    /// One server shared by every test of this test binary (started on first use).
    ///
    /// Tests must not stop or pause it; use [`Postgres::dedicated`] for that.
    pub async fn shared() -> anyhow::Result<&'static Postgres> {
        SHARED.get_or_try_init(Self::dedicated).await
    }

    /// A server owned by the caller; removed when dropped.
    pub async fn dedicated() -> anyhow::Result<Postgres> {
        Self::start(Start::default()).await
    }

    /// A server owned by the caller with a volume of only `bytes` (memory-backed) at
    /// [`SMALL_DISK`], for a tablespace to fill: what a full disk does to the tables in it,
    /// while the server's own files and its write-ahead log stay on a disk with room.
    pub async fn with_small_disk(bytes: i64) -> anyhow::Result<Postgres> {
        Self::start(Start { small_disk: Some(bytes), ..Start::default() }).await
    }

    /// A server owned by the caller on Docker network `network`, where other containers
    /// reach it by its [`Node::name`] on port 5432.
    pub(crate) async fn on_network(network: &str) -> anyhow::Result<Postgres> {
        Self::start(Start { network: Some(network.to_owned()), ..Start::default() }).await
    }

    /// One TLS-only server ([`Postgres::tls`]) shared by the tests of this binary.
    pub async fn tls_shared() -> anyhow::Result<&'static Postgres> {
        TLS_SHARED.get_or_try_init(Self::tls).await
    }

    /// A server that refuses connections without TLS (`hostnossl ... reject`) and checks
    /// passwords (SCRAM) on TLS ones; its certificate names `127.0.0.1` and `localhost` and
    /// is signed by a CA made for this run. Its [`url`](Postgres::url)s ask for
    /// `sslmode=verify-full` with that CA.
    pub async fn tls() -> anyhow::Result<Postgres> {
        let ca = TestCa::new()?;
        let ca_file = ca.write_pem_file()?;
        Self::start(Start { tls: Some(Tls { ca, ca_file }), ..Start::default() }).await
    }

    async fn start(Start { tls, network, small_disk }: Start) -> anyhow::Result<Postgres> {
        crate::engine::ensure_engine().await?;
        let image = on_harness(async {
            let docker = crate::engine::docker().await?;
            anyhow::Ok(images::resolve(&docker, POSTGRES_IMAGE_VAR, POSTGRES_OFFICIAL, POSTGRES_LOCAL).await)
        })
        .await?;
        let port = free_port()?;
        let mut files = Vec::new();
        if let Some(tls) = &tls {
            let cert = tls.ca.issue(&["localhost"], &["127.0.0.1"])?;
            files = vec![
                ("/etc/exactly-tls/server.crt".to_owned(), cert.chain_pem.into_bytes(), 0o644),
                ("/etc/exactly-tls/server.key".to_owned(), cert.key_pem.into_bytes(), 0o644),
                ("/docker-entrypoint-initdb.d/10-tls.sh".to_owned(), TLS_INIT.as_bytes().to_vec(), 0o755),
            ];
        }
        let spec = NodeSpec {
            image,
            name: unique("postgres"),
            network,
            env: vec![("POSTGRES_PASSWORD".into(), PASSWORD.into())],
            ports: vec![(port, 5432)],
            cmd: ["postgres", "-c", "max_connections=300"].map(String::from).to_vec(),
            files,
            tmpfs: small_disk.map(|bytes| (SMALL_DISK.to_owned(), bytes)).into_iter().collect(),
        };
        let server = Postgres { node: Node::start(spec).await?, port, tls };
        server.wait_ready(READY_TIMEOUT).await?;
        Ok(server)
    }

    /// The container, to stop, kill, start or pause.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// URL of database `database` as the superuser (on a TLS server, with
    /// `sslmode=verify-full` and this run's CA as `sslrootcert`).
    pub fn url(&self, database: &str) -> String {
        let url = self.url_with(database, "");
        match &self.tls {
            Some(tls) => format!("{url}?sslmode=verify-full&sslrootcert={}", tls.ca_file.display()),
            None => url,
        }
    }

    /// URL of database `database` as the superuser, followed by `query` (e.g.
    /// `?sslmode=disable`) and nothing else.
    pub fn url_with(&self, database: &str, query: &str) -> String {
        format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/{database}{query}", self.port)
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca(&self) -> anyhow::Result<&TestCa> {
        self.tls.as_ref().map(|tls| &tls.ca).context("not a TLS server: start it with Postgres::tls")
    }

    /// URL of database `database` as `user` with `password`.
    pub fn url_as(&self, user: &str, password: &str, database: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates the two roles of the security chapter on `database`, with the chapter's own
    /// statements (`docs/src/security/roles.sql`, names replaced by unique ones): an owner
    /// that may migrate exactly's tables and a service role that may only connect. Then
    /// [`Roles::migrate_and_grant`] does what the chapter says comes next.
    pub async fn least_privilege_roles(&self, database: &TestDatabase) -> anyhow::Result<Roles> {
        let owner = unique("owner");
        let app = unique("app");
        let password = unique("pw");
        let mut admin = PgConnection::connect(&database.url).await.context("cannot connect as the superuser")?;
        // Names and password come from `unique`: lowercase letters, digits and `_`.
        let sql = adapt(ROLES_SQL, &owner, &app)
            .replace("DATABASE orders ", &format!("DATABASE {} ", database.name))
            .replace("'change-me'", &format!("'{password}'"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await.context("roles.sql")?;
        admin.close().await?;
        Ok(Roles {
            owner_url: self.url_as(&owner, &password, &database.name),
            app_url: self.url_as(&app, &password, &database.name),
            owner,
            app,
        })
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

/// The roles of [`Postgres::least_privilege_roles`].
#[derive(Debug, Clone)]
pub struct Roles {
    /// The role that owns schema `exactly` and migrates it.
    pub owner: String,
    /// A URL of the test database as the owner.
    pub owner_url: String,
    /// The service role: no DDL rights.
    pub app: String,
    /// A URL of the test database as the service role.
    pub app_url: String,
}

impl Roles {
    /// As the owner: `exactly::migrate`, then the chapter's grants to the service role
    /// (`docs/src/security/grants.sql`). The caller grants the service role its own tables.
    pub async fn migrate_and_grant(&self) -> anyhow::Result<()> {
        let pool = PgPoolOptions::new().max_connections(1).connect(&self.owner_url).await?;
        exactly::migrate(&pool).await.context("migrating as the owner")?;
        let sql = adapt(GRANTS_SQL, &self.owner, &self.app);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.context("grants.sql")?;
        pool.close().await;
        Ok(())
    }
}

/// `sql` of the security chapter with its example roles replaced by `owner` and `app`.
fn adapt(sql: &str, owner: &str, app: &str) -> String {
    sql.replace("orders_app", app).replace("exactly_owner", owner)
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
