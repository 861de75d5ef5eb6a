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
