//! The server's bound on how long one of the runtime's transactions may sit idle waiting
//! for its client.
//!
//! The runtime's own deadline on a transaction (`database_transaction_timeout`) is kept by
//! the client. A client that stops (frozen by SIGSTOP, a paused virtual machine, a process
//! the scheduler never runs) keeps its transaction open and its locks on `exactly.offsets`
//! held, and the partition's next owner cannot claim it until that client resumes. So the
//! sessions of the pool the runtime opens set `idle_in_transaction_session_timeout` to the
//! same deadline: once a client has been silent that long inside a transaction, the server
//! ends the session, which rolls the transaction back and frees its locks. A live client
//! never meets it first: it gives the transaction up at that deadline itself. It is a
//! session setting, made once per connection (no round trip per transaction), which a
//! pooler in session mode keeps; transaction pooling is refused anyway (`store::session`).
//! A pool the application passes in is its own: the runtime only reads the setting and
//! warns when it leaves the gap open.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

/// Sets the session's idle-in-transaction bound to `limit` (rounded up to a millisecond,
/// and at most the server's limit, about 24 days).
pub(crate) async fn bound_idle_transactions(connection: &mut PgConnection, limit: Duration) -> sqlx::Result<()> {
    sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, false)")
        .bind(millis(limit).to_string())
        .execute(connection)
        .await?;
    Ok(())
}

/// Warns when the sessions of `pool`, which the application made, leave the gap open (no
/// bound) or would end a live transaction before the runtime's own deadline.
pub(crate) async fn check_idle_bound(pool: &PgPool, limit: Duration) -> sqlx::Result<()> {
    let bound: i64 = sqlx::query_scalar(
        "SELECT setting::bigint FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'",
    )
    .fetch_one(pool)
    .await?;
    if bound == 0 {
        tracing::warn!(
            "the database pool's sessions have no idle_in_transaction_session_timeout: an instance frozen inside a \
             transaction would hold its partition's row against the next owner until it resumes; set it to the \
             runtime's database_transaction_timeout ({limit:?}) on the service's role or in the pool's after_connect, \
             or let the runtime open its pool (database_url)"
        );
    } else if u128::try_from(bound).unwrap_or(0) < millis(limit) {
        tracing::warn!(
            "the database pool's idle_in_transaction_session_timeout ({bound} ms) is shorter than the runtime's \
             database_transaction_timeout ({limit:?}): a handler that waits longer than it inside a transaction is \
             ended by the server first"
        );
    }
    Ok(())
}

fn millis(limit: Duration) -> u128 {
    limit.as_millis().clamp(1, i32::MAX as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_in_whole_milliseconds_within_the_servers_range() {
        assert_eq!(millis(Duration::from_secs(60)), 60_000);
        // Zero would switch the bound off.
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), i32::MAX as u128);
    }
}
