//! PgBouncer, the pooler most PostgreSQL deployments put in front of the database, in front
//! of a PostgreSQL server of its own: to test that a handler (or exactly itself) keeps its
//! guarantee behind it.
//!
//! PgBouncer lends a client a server connection for a whole session (`session` mode) or
//! only for one transaction (`transaction` mode). In transaction mode, whatever belongs to
//! a session (a session-level advisory lock, a `SET`, a named prepared statement before
//! PgBouncer 1.21) may be on another server connection by the next transaction.

use anyhow::Context as _;

use crate::Postgres;
use crate::node::{Node, NodeSpec};
use crate::postgres::{PASSWORD, TestDatabase};
use crate::unique;
use crate::wait::{Check, wait_for};

/// How PgBouncer lends its server connections to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection for the whole client session.
    Session,
    /// A server connection for one transaction; between transactions, another client's.
    Transaction,
    /// A server connection for one statement; transactions of several are refused.
    Statement,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Transaction => "transaction",
            Self::Statement => "statement",
        }
    }
}

/// PgBouncer (Debian's 1.18) in `mode`, pooling a PostgreSQL server of its own; both on a
/// Docker network of their own, removed when dropped.
#[derive(Debug)]
pub struct PgBouncer {
    // Dropped first: the pooler, then the server it pools.
    node: Node,
    postgres: Postgres,
    port: u16,
    mode: PoolMode,
}

impl PgBouncer {
    /// Starts a PostgreSQL server and PgBouncer in `mode` in front of it, and waits until a
    /// query through the pooler is answered.
    pub async fn start(mode: PoolMode) -> anyhow::Result<PgBouncer> {
        let network = format!("{}_net", unique("pgbouncer"));
        let postgres = Postgres::on_network(&network).await?;
        let port = crate::node::free_port()?;
        let spec = NodeSpec {
            image: crate::images::pgbouncer(),
            name: unique("pgbouncer"),
            network: Some(network),
            env: vec![
                ("PGBOUNCER_UPSTREAM_HOST".into(), postgres.node().name().to_owned()),
                ("PGBOUNCER_UPSTREAM_PASSWORD".into(), PASSWORD.into()),
                ("PGBOUNCER_POOL_MODE".into(), mode.as_str().into()),
            ],
            ports: vec![(port, 6432)],
            cmd: Vec::new(),
            files: Vec::new(),
            tmpfs: Vec::new(),
        };
        let node = Node::start(spec).await.context("cannot start PgBouncer (built by scripts/setup)")?;
        let pooler = PgBouncer { node, postgres, port, mode };
        pooler.wait_ready().await?;
        Ok(pooler)
    }

    /// Its pool mode.
    pub fn mode(&self) -> PoolMode {
        self.mode
    }

    /// The server behind it, to reach directly (migrations, checks) or to inflict faults on.
    pub fn postgres(&self) -> &Postgres {
        &self.postgres
    }

    /// The pooler's container.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// URL of `database` through the pooler (in the clear: PgBouncer here speaks no TLS).
    pub fn url(&self, database: &TestDatabase) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}?sslmode=disable", self.port, database.name)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port);
        wait_for(std::time::Duration::from_secs(60), "PgBouncer to answer", || {
            let url = url.clone();
            async move {
                let answered = async {
                    use sqlx::Connection as _;
                    let mut conn = sqlx::PgConnection::connect(&url).await?;
                    sqlx::query("SELECT 1").execute(&mut conn).await?;
                    conn.close().await
                };
                match answered.await {
                    Ok(()) => Check::Done(()),
                    Err(e) => Check::NotYet(e.to_string()),
                }
            }
        })
        .await?;
        Ok(())
    }
}
