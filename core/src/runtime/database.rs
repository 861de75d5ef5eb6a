//! The runtime's database pool: the one it opens from a URL, or the application's, and
//! what is checked of it before the runtime starts.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::error::Result;
use crate::store::{migrate, session, transaction};

/// Where the runtime's database pool comes from.
pub(super) enum DatabaseSource {
    /// A URL: the runtime opens the pool.
    Url(String),
    /// The application's pool.
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

/// How to make the pool ready.
pub(super) struct Connect {
    /// The size of the pool the runtime opens.
    pub(super) max_connections: u32,
    /// The deadline of one transaction, which the server enforces too
    /// (`store::transaction`).
    pub(super) transaction_timeout: Duration,
    /// Whether a Database-mode handler or the outbox relay uses the pool: only then is it
    /// checked and migrated.
    pub(super) needed: bool,
    /// Whether exactly's tables are created or upgraded.
    pub(super) migrate: bool,
}

impl Connect {
    /// The pool from `source`, checked and migrated if it is needed.
    pub(super) async fn to(&self, source: &DatabaseSource) -> Result<PgPool> {
        let limit = self.transaction_timeout;
        let pool = match source {
            DatabaseSource::Pool(pool) => {
                if self.needed {
                    transaction::check_idle_bound(pool, limit).await?;
                }
                pool.clone()
            }
            DatabaseSource::Url(url) => {
                PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(move |connection, _| {
                        Box::pin(async move { transaction::bound_idle_transactions(connection, limit).await })
                    })
                    .connect(&database_url(url))
                    .await?
            }
        };
        if self.needed {
            session::check_kept(&pool).await?;
            if self.migrate {
                migrate::migrate(&pool).await?;
            }
        }
        Ok(pool)
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
