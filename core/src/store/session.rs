//! Whether the database connections keep their server session from one transaction to the
//! next, which a pooler in transaction or statement mode does not.
//!
//! exactly relies on the session in two places: sqlx prepares each statement once per
//! connection and runs it by name afterwards (PgBouncer before 1.21 does not carry named
//! statements across server connections), and the outbox relay elects its leader with a
//! session-level advisory lock, which a transaction-mode pooler leaves on a server
//! connection that other clients then use. Neither loses or doubles an effect by itself,
//! but the first makes statements fail at random and the second lets two relays lead, so
//! the runtime refuses such a connection when it is built rather than run on it.
//!
//! The check cannot ask the pooler (its console is another database, under other
//! credentials), so it watches what a pooler must do: three connections of their own, no
//! prepared statements. `held` keeps a transaction open, so its server session is taken;
//! `probe` runs a statement and notes its backend; `other` opens a transaction too, and so
//! takes `probe`'s server session if `probe` does not keep it; `held` commits; `probe`
//! asks again. A connection that keeps its session sees the same backend both times; one
//! behind a transaction pooler cannot, since its first backend is now `other`'s.

use sqlx::{Connection as _, PgConnection, PgPool, Row as _};

use crate::error::{Error, Result};

/// Checks that connections like those of `pool` keep their session; see the module.
///
/// # Errors
/// [`Error::SessionNotKept`] when they do not; [`Error::Database`] when the check cannot
/// run.
pub(crate) async fn check_kept(pool: &PgPool) -> Result<()> {
    let options = pool.connect_options();
    let mut held = PgConnection::connect_with(&options).await?;
    let mut probe = PgConnection::connect_with(&options).await?;
    let mut other = PgConnection::connect_with(&options).await?;
    let outcome = watch(&mut held, &mut probe, &mut other).await;
    for connection in [held, probe, other] {
        let _ = connection.close().await;
    }
    let (first, second) = outcome.map_err(|error| match error {
        // A pooler in statement mode refuses the transaction itself.
        Error::Database(e) if e.to_string().contains("statement pooling") => {
            Error::SessionNotKept { found: format!("a transaction was refused: {e}") }
        }
        other => other,
    })?;
    if first != second {
        return Err(Error::SessionNotKept {
            found: format!("one connection was served by backend {first}, then by backend {second}"),
        });
    }
    Ok(())
}

/// The backends that served `probe` before and after its session could have moved.
async fn watch(held: &mut PgConnection, probe: &mut PgConnection, other: &mut PgConnection) -> Result<(i32, i32)> {
    sqlx::raw_sql("BEGIN; SELECT pg_backend_pid()").execute(&mut *held).await?;
    let first = backend(probe).await?;
    sqlx::raw_sql("BEGIN; SELECT pg_backend_pid()").execute(&mut *other).await?;
    sqlx::raw_sql("COMMIT").execute(&mut *held).await?;
    let second = backend(probe).await?;
    sqlx::raw_sql("COMMIT").execute(&mut *other).await?;
    Ok((first, second))
}

/// The process id of the server session that answers `connection` now (a simple query:
/// nothing is prepared, so nothing depends on the session it asks about).
async fn backend(connection: &mut PgConnection) -> Result<i32> {
    let row = sqlx::raw_sql("SELECT pg_backend_pid()").fetch_one(connection).await?;
    Ok(row.try_get(0)?)
}
