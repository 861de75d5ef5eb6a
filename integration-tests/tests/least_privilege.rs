//! Least privilege: a service role with only the grants of the security chapter
//! (`docs/src/security/*.sql`) processes messages (positions, outbox, parking, dead
//! letters) with the default `migrate(true)`, and may create nothing; `migrate` under that
//! role is refused with a message that names the missing right and says who must migrate.

use std::time::Duration;

use exactly::{Error, RetryPolicy};
use exactly_integration_tests::recorder::{Recorder, create_blocked_keys_table, create_effects_table, effect_counts};
use exactly_integration_tests::support::{Running, builder};
use exactly_integration_tests::{Input, Isolation, Kafka, Postgres, produce, read_to_end, unique, wait_until};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const WAIT: Duration = Duration::from_secs(120);

async fn pool(url: &str) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new().max_connections(2).connect(url).await?)
}

/// The SQLSTATE of `outcome`'s database error.
fn sqlstate<T>(outcome: Result<T, sqlx::Error>) -> Option<String> {
    match outcome {
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
}

async fn count(pool: &PgPool, sql: &'static str, group: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).bind(group).fetch_one(pool).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_role_without_ddl_rights_processes_with_the_default_migrate() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let server = Postgres::shared().await?;
    let (input, output) = (kafka.unique_topic("in", 2).await?, kafka.unique_topic("out", 2).await?);
    let database = server.database().await?;
    let roles = server.least_privilege_roles(&database).await?;
    roles.migrate_and_grant().await?;
    // The user's own tables, created by their owner, with DML granted to the service.
    let admin = database.pool().await?;
    create_effects_table(&admin).await?;
    create_blocked_keys_table(&admin).await?;
    for grant in [
        "GRANT SELECT, INSERT, UPDATE, DELETE ON effects, blocked_keys TO {app}",
        "GRANT USAGE ON SEQUENCE effects_seq_seq TO {app}",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(grant.replace("{app}", &roles.app))).execute(&admin).await?;
    }
    sqlx::query("INSERT INTO blocked_keys VALUES ('k3')").execute(&admin).await?;

    let app = pool(&roles.app_url).await?;
    // It really has no DDL rights: not on the database, not in `exactly`, not in `public`.
    let rights: (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT has_database_privilege(current_database(), 'CREATE'),
                has_database_privilege(current_database(), 'TEMPORARY'),
                has_schema_privilege('exactly', 'CREATE'), has_schema_privilege('public', 'CREATE')",
    )
    .fetch_one(&app)
    .await?;
    assert_eq!(rights, (false, false, false, false), "the service role has DDL rights");
    for ddl in [
        "CREATE TABLE exactly.mine (id INT)",
        "CREATE TABLE public.mine (id INT)",
        "CREATE TEMPORARY TABLE mine (id INT)",
        "ALTER TABLE exactly.offsets ADD COLUMN mine INT",
        "DROP TABLE exactly.outbox",
        // Why `migrate` must not reach sqlx on a current database: PostgreSQL checks CREATE on
        // the database before it looks whether the schema exists.
        "CREATE SCHEMA IF NOT EXISTS exactly",
    ] {
        assert_eq!(sqlstate(sqlx::query(ddl).execute(&app).await).as_deref(), Some("42501"), "{ddl}");
    }
    // The migration history is readable, not writable.
    let tampered = sqlx::query("DELETE FROM exactly._migrations").execute(&app).await;
    assert_eq!(sqlstate(tampered).as_deref(), Some("42501"));

    // 200 messages, key k3 parked until unblocked, one dead-lettered, each emitted through the outbox.
    let mut records: Vec<Input> =
        (0..200).map(|i| Input::to(i % 2, format!("k{}", i % 10), format!("m-{i}"))).collect();
    records.push(Input::to(0, "k1", "poison"));
    produce(&kafka.client_config(), &input, records).await?;
    let group = unique("lp");
    let mut recorder = Recorder::new(&input, &group, "a");
    recorder.emit_to = Some(output.clone());
    recorder.key_parking = true;
    recorder.blocked_keys = true;
    recorder.permanent_on = vec!["poison".into()];
    recorder.retry = Some(
        RetryPolicy::default()
            .max_attempts(10_000)
            .initial_backoff(Duration::from_millis(50))
            .max_backoff(Duration::from_millis(300)),
    );
    // `builder` connects with the service role's URL; `migrate` is left at its default (on).
    let running =
        Running::start(kafka, builder(&roles.app_url).outbox_relay(unique("relay")).handler(recorder)).await?;
    wait_until(WAIT, "k3 parked, the other keys done", || async {
        let parked = count(&admin, "SELECT count(*) FROM exactly.parked WHERE group_id = $1", &group).await?;
        let (effects, _) = effect_counts(&admin, &group).await?;
        Ok((parked == 20 && effects == 180).then_some(()))
    })
    .await?;
    sqlx::query("DELETE FROM blocked_keys").execute(&admin).await?;
    wait_until(WAIT, "every message processed and published", || async {
        let parked = count(&admin, "SELECT count(*) FROM exactly.parked WHERE group_id = $1", &group).await?;
        let (effects, _) = effect_counts(&admin, &group).await?;
        let backlog = exactly::outbox::backlog(&admin).await?;
        Ok((parked == 0 && effects == 200 && backlog == 0).then_some(()))
    })
    .await?;
    running.stop().await?;

    assert_eq!(effect_counts(&admin, &group).await?, (200, 200));
    assert_eq!(count(&admin, "SELECT count(*) FROM exactly.dead_letters WHERE group_id = $1", &group).await?, 1);
    // Partition 0 also held the dead-lettered message.
    assert_eq!(exactly::offsets::position(&admin, &group, &input, 0).await?, Some(101));
    assert_eq!(exactly::offsets::position(&admin, &group, &input, 1).await?, Some(100));
    let published = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
    assert_eq!(published.len(), 200, "the outbox relay published each record once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_under_the_service_role_is_refused_with_the_missing_right() -> anyhow::Result<()> {
    let server = Postgres::shared().await?;
    let database = server.database().await?;
    let roles = server.least_privilege_roles(&database).await?;
    let app = pool(&roles.app_url).await?;

    // A fresh database: the service role may not create schema `exactly`.
    let error = exactly::migrate(&app).await.err();
    let text = error.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(matches!(error, Some(Error::MigrateNotPermitted { .. })), "{error:?}");
    assert!(error.as_ref().is_some_and(|e| e.class() == exactly::ErrorClass::Fatal));
    for needle in [roles.app.as_str(), "CREATE on database", &database.name, "exactly migrate", "owns schema `exactly`"]
    {
        assert!(text.contains(needle), "`{needle}` missing from: {text}");
    }
    let schema: bool = sqlx::query_scalar("SELECT to_regnamespace('exactly') IS NULL").fetch_one(&app).await?;
    assert!(schema, "the refused migrate created something");

    // A runtime built with the default `migrate(true)` stops at the same refusal.
    let (kafka, group) = (Kafka::shared().await?, unique("lp"));
    let built = builder(&roles.app_url)
        .brokers(kafka.bootstrap_servers())
        .handler(Recorder::new("unused", &group, "a"))
        .build()
        .await;
    assert!(matches!(built, Err(Error::MigrateNotPermitted { .. })), "{built:?}");

    // The owner migrates; the service role, not yet granted anything, may not even read the history.
    exactly::migrate(&pool(&roles.owner_url).await?).await?;
    let error = exactly::migrate(&app).await.err();
    let text = error.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(matches!(error, Some(Error::MigrateNotPermitted { .. })), "{error:?}");
    assert!(text.contains("exactly._migrations") && text.contains("migrate(false)"), "{text}");

    // Granted as the chapter says, it may check a current database, but not apply a pending
    // migration: CREATE on the database is the right it lacks (sqlx asks for it first).
    roles.migrate_and_grant().await?;
    exactly::migrate(&app).await?;
    let admin = database.pool().await?;
    sqlx::query("DELETE FROM exactly._migrations WHERE version = (SELECT max(version) FROM exactly._migrations)")
        .execute(&admin)
        .await?;
    let error = exactly::migrate(&app).await.err();
    let text = error.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(matches!(error, Some(Error::MigrateNotPermitted { .. })), "{error:?}");
    assert!(text.contains("CREATE on database") && text.contains("exactly migrate"), "{text}");
    // The owner applies it again, and the service role finds the database current.
    exactly::migrate(&pool(&roles.owner_url).await?).await?;
    exactly::migrate(&app).await?;
    Ok(())
}
