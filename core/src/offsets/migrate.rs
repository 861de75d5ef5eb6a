//! exactly's own tables, created and upgraded by embedded migrations.
//!
//! They live in the `exactly` schema with their own migration history
//! (`exactly._migrations`), so they never mix with your application's sqlx migrations.

use std::borrow::Cow;

use sqlx::PgPool;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::error::Result;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "offsets", include_str!("../../migrations/0001_offsets.sql")),
    (2, "outbox", include_str!("../../migrations/0002_outbox.sql")),
    (3, "dead_letters", include_str!("../../migrations/0003_dead_letters.sql")),
    (4, "parked", include_str!("../../migrations/0004_parked.sql")),
];

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
pub async fn migrate(pool: &PgPool) -> Result<()> {
    migrator().run(pool).await?;
    Ok(())
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
/// When the query fails.
pub async fn migration_status(pool: &PgPool) -> Result<Vec<MigrationState>> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('exactly._migrations') IS NOT NULL").fetch_one(pool).await?;
    let applied: Vec<i64> = if exists {
        sqlx::query_scalar("SELECT version FROM exactly._migrations WHERE success").fetch_all(pool).await?
    } else {
        Vec::new()
    };
    Ok(MIGRATIONS
        .iter()
        .map(|(version, name, _)| MigrationState { version: *version, name, applied: applied.contains(version) })
        .collect())
}
