//! How the runtime opens its database transactions: with a bound, kept by PostgreSQL, on
//! how long one may sit idle waiting for its client.
//!
//! The runtime's own deadline on a transaction (`database_transaction_timeout`) is kept by
//! the client. A client that stops (frozen by SIGSTOP, a paused virtual machine, a process
//! the scheduler never runs) keeps its transaction open and its locks on `exactly.offsets`
//! held, and the partition's next owner cannot claim it until that client resumes. So each
//! transaction also sets `idle_in_transaction_session_timeout`: once its client has been
//! silent that long, the server ends the session, which rolls the transaction back and
//! frees its locks. `SET LOCAL`, not a session setting, so that it holds behind a pooler
//! in transaction mode and leaves a pool the application passed in as it was; both
//! statements go in one round trip.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

/// Opens transactions that PostgreSQL ends once they sit idle for a given time.
#[derive(Debug, Clone)]
pub(crate) struct Begin {
    statement: Arc<str>,
}

impl Begin {
    /// Transactions that PostgreSQL ends after `idle_limit` without a statement from their
    /// client (rounded up to a millisecond, and at most the server's limit, about 24 days).
    pub(crate) fn new(idle_limit: Duration) -> Self {
        let millis = idle_limit.as_millis().clamp(1, i32::MAX as u128);
        Self { statement: format!("BEGIN; SET LOCAL idle_in_transaction_session_timeout = {millis}").into() }
    }

    /// Takes a connection from `pool` and opens a transaction on it.
    pub(crate) async fn on(&self, pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        pool.begin_with(AssertSqlSafe(Arc::clone(&self.statement))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_in_whole_milliseconds_within_the_servers_range() {
        let statement = |limit| Begin::new(limit).statement.to_string();
        assert_eq!(statement(Duration::from_secs(60)), "BEGIN; SET LOCAL idle_in_transaction_session_timeout = 60000");
        // Zero would switch the bound off.
        assert!(statement(Duration::ZERO).ends_with("= 1"));
        assert!(statement(Duration::from_secs(u64::MAX)).ends_with(&format!("= {}", i32::MAX)));
    }
}
