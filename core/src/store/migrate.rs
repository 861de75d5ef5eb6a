//! exactly's own tables, created and upgraded by embedded migrations.
//!
//! They live in the `exactly` schema with their own migration history
//! (`exactly._migrations`), so they never mix with your application's sqlx migrations.
//!
//! Creating and upgrading them needs DDL rights; a database that is already current is
//! only read (`SELECT` on `exactly._migrations`), so a service can run with a role that has
//! no DDL rights while an owner role runs `exactly migrate` (see the security chapter).

use std::borrow::Cow;

use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::{PgPool, SqlSafeStr};

use crate::error::{Error, Result};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "offsets", include_str!("../../migrations/0001_offsets.sql")),
    (2, "outbox", include_str!("../../migrations/0002_outbox.sql")),
    (3, "dead_letters", include_str!("../../migrations/0003_dead_letters.sql")),
    (4, "parked", include_str!("../../migrations/0004_parked.sql")),
    (5, "completed", include_str!("../../migrations/0005_completed.sql")),
];

/// SQLSTATE `insufficient_privilege`.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// What a role that may not create or change exactly's tables should do instead.
const RUN_AS_OWNER: &str = "run `exactly migrate` (the command-line tool) or `exactly::migrate` as the role that \
                            owns schema `exactly`; the service itself needs no DDL rights, and once the tables are \
                            current its runtime only checks them";

/// What a role that may not read the migration history should do instead.
const GRANT_HISTORY: &str = "grant it to the service's role (the runtime reads it to check that exactly's tables are \
                             current), or build the runtime with `migrate(false)`";

fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, name, sql)| {
            Migration::new(*version, Cow::Borrowed(*name), MigrationType::Simple, sql.into_sql_str(), false)
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.create_schema("exactly");
    migrator.dangerous_set_table_name("exactly._migrations");
    migrator
}

/// Creates or upgrades exactly's tables; safe to run concurrently from several instances.
///
/// A database that already has every migration is only read: nothing is locked or
/// created, so a role without DDL rights may call this (it needs `SELECT` on
/// `exactly._migrations`).
///
/// # Errors
/// [`Error::MigrateNotPermitted`] when the role lacks a right that migrating needs (the
/// message names it); [`Error::Migrate`] when a migration fails or the history does not
/// match these migrations; [`Error::Database`] when the database cannot be reached.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    let migrator = migrator();
    if is_current(pool, &migrator).await? {
        return Ok(());
    }
    let rights = sqlx::query_as::<_, (String, String, bool, bool, bool)>(
        "SELECT current_user::text, current_database()::text,
                has_database_privilege(current_database(), 'CREATE'),
                to_regnamespace('exactly') IS NOT NULL,
                to_regnamespace('exactly') IS NULL OR has_schema_privilege('exactly', 'CREATE')",
    )
    .fetch_one(pool)
    .await?;
    let (role, database, create_on_database, schema_exists, create_on_schema) = rights;
    // sqlx runs `CREATE SCHEMA IF NOT EXISTS`, which PostgreSQL checks for CREATE on the
    // database before it looks whether the schema exists.
    if !create_on_database {
        let missing = if schema_exists {
            format!("CREATE on database `{database}` (needed even though schema `exactly` exists)")
        } else {
            format!("CREATE on database `{database}` (to create schema `exactly`)")
        };
        return Err(Error::MigrateNotPermitted { role, missing, remedy: RUN_AS_OWNER });
    }
    if !create_on_schema {
        return Err(Error::MigrateNotPermitted {
            role,
            missing: "CREATE on schema `exactly`".into(),
            remedy: RUN_AS_OWNER,
        });
    }
    // A connection of our own: on failure it is closed rather than returned to the pool,
    // because sqlx leaves its advisory lock held when a step fails.
    let mut conn = pool.acquire().await?;
    match migrator.run_direct(None, &mut *conn, false).await {
        Ok(()) => Ok(()),
        Err(error) => {
            let _ = conn.close().await;
            Err(match insufficient_privilege(&error) {
                Some(server) => Error::MigrateNotPermitted {
                    role,
                    missing: format!("a right PostgreSQL asked for ({server})"),
                    remedy: RUN_AS_OWNER,
                },
                None => Error::Migrate(error),
            })
        }
    }
}

/// Whether every migration is applied with the checksum it has here. Fails as sqlx would
/// on a history it does not know (a failed, changed or unknown migration).
async fn is_current(pool: &PgPool, migrator: &Migrator) -> Result<bool> {
    let Some(applied) = applied(pool).await? else {
        return Ok(false);
    };
    if applied.iter().any(|(_, _, success)| !success) {
        // Dirty: sqlx reports it (under the migrating role).
        return Ok(false);
    }
    for (version, _, _) in &applied {
        if !migrator.iter().any(|m| m.version == *version) {
            return Err(Error::Migrate(MigrateError::VersionMissing(*version)));
        }
    }
    for migration in migrator.iter() {
        match applied.iter().find(|(version, _, _)| *version == migration.version) {
            Some((_, checksum, _)) if *checksum != *migration.checksum => {
                return Err(Error::Migrate(MigrateError::VersionMismatch(migration.version)));
            }
            Some(_) => {}
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// The rows of `exactly._migrations` (version, checksum, success), or `None` when there is
/// no such table.
async fn applied(pool: &PgPool) -> Result<Option<Vec<(i64, Vec<u8>, bool)>>> {
    // Without USAGE on schema `exactly`, even `to_regclass` is refused.
    let exists: bool =
        match sqlx::query_scalar("SELECT to_regclass('exactly._migrations') IS NOT NULL").fetch_one(pool).await {
            Ok(exists) => exists,
            Err(error) => return Err(history_not_readable(pool, error).await),
        };
    if !exists {
        return Ok(None);
    }
    match sqlx::query_as("SELECT version, checksum, success FROM exactly._migrations").fetch_all(pool).await {
        Ok(rows) => Ok(Some(rows)),
        Err(error) => Err(history_not_readable(pool, error).await),
    }
}

/// `error` from reading `exactly._migrations`, as [`Error::MigrateNotPermitted`] when the
/// role may not read it.
async fn history_not_readable(pool: &PgPool, error: sqlx::Error) -> Error {
    let server = match &error {
        sqlx::Error::Database(e) if e.code().as_deref() == Some(INSUFFICIENT_PRIVILEGE) => e.message().to_owned(),
        _ => return Error::Database(error),
    };
    let role = sqlx::query_scalar::<_, String>("SELECT current_user::text")
        .fetch_one(pool)
        .await
        .unwrap_or_else(|_| "(unknown)".into());
    Error::MigrateNotPermitted {
        role,
        missing: format!("USAGE on schema `exactly` or SELECT on table `exactly._migrations` ({server})"),
        remedy: GRANT_HISTORY,
    }
}

/// The server's message, when `error` is PostgreSQL refusing a right.
fn insufficient_privilege(error: &MigrateError) -> Option<String> {
    let source = match error {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => e,
        _ => return None,
    };
    match source {
        sqlx::Error::Database(e) if e.code().as_deref() == Some(INSUFFICIENT_PRIVILEGE) => Some(e.message().to_owned()),
        _ => None,
    }
}

/// One of exactly's migrations, and whether a database has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct MigrationState {
    /// Its version (1, 2, ...).
    pub version: i64,
    /// What it creates.
    pub name: &'static str,
    /// Whether it has been applied.
    pub applied: bool,
}

/// exactly's migrations and which of them the database behind `pool` has.
///
/// # Errors
/// When the query fails; [`Error::MigrateNotPermitted`] when the role may not read
/// `exactly._migrations`.
pub async fn migration_status(pool: &PgPool) -> Result<Vec<MigrationState>> {
    let applied: Vec<i64> = applied(pool)
        .await?
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, _, success)| *success)
        .map(|(version, _, _)| version)
        .collect();
    Ok(MIGRATIONS
        .iter()
        .map(|(version, name, _)| MigrationState { version: *version, name, applied: applied.contains(version) })
        .collect())
}
