//! Upgrades: a database as a released version of exactly left it, with positions, outbox
//! rows, dead letters, parked keys and completed offsets in it and a group running, taken
//! over by an instance of the current code that starts with its migrations on, loses
//! nothing: every position goes on from where it stood (each input handled once, counted),
//! every outbox row is published once, every dead letter is still there and re-drives, and
//! the parked key resumes in order.
//!
//! Each release's schema is frozen in `fixtures/schema/RELEASE/schema.sql`
//! (`scripts/schema-fixture` dumps it: its tables and its migration history, checksums
//! included), so the test starts from the database that release left, whatever
//! `core/migrations/` holds today. A guard (no containers) keeps that true: released
//! migrations never change, each release has an upgrade test, and each migration an upgrade
//! applies has a check of what it must keep.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use exactly::{Batch, RetryPolicy, RuntimeBuilder};
use exactly_integration_tests::copy_check::keyed_inputs_on;
use exactly_integration_tests::faults::{Effects, FaultRun, Positions, high_watermarks};
use exactly_integration_tests::progress::{SteadyFeed, parked_messages, wait_group_settled};
use exactly_integration_tests::recorder::{
    Hold, Recorder, create_blocked_keys_table, create_effects_table, effect_counts,
};
use exactly_integration_tests::support::{Running, builder};
use exactly_integration_tests::{Kafka, Postgres, TestDatabase, produce, unique, wait_until};
use exactly_testkit::{Store, caught_up};
use futures::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationType};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool, SqlSafeStr as _};
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(60);

/// The upgrade tests, one per release with a fixture. The guard checks this list against
/// `fixtures/schema/`.
macro_rules! upgrade_tests {
    ($($test:ident: $release:literal),* $(,)?) => {
        const TESTED_RELEASES: &[&str] = &[$($release),*];
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() -> anyhow::Result<()> {
                upgrade_from($release).await
            }
        )*
    };
}

upgrade_tests! {
    upgrade_from_0_1_0: "0.1.0",
}

/// A check of what one migration must keep or fill in, run on the upgraded database after
/// every upgrade test that applies the migration.
type SchemaCheck = for<'a> fn(&'a PgPool) -> BoxFuture<'a, anyhow::Result<()>>;

/// Each migration newer than the oldest release, with its check. Empty while every
/// migration is released; the guard refuses a newer migration that is not here. An entry:
///
/// ```text
/// const SCHEMA_CHANGES: &[(i64, SchemaCheck)] = &[(6, leases_start_free)];
///
/// fn leases_start_free(pool: &PgPool) -> BoxFuture<'_, anyhow::Result<()>> {
///     Box::pin(async move { /* read the rows the test left, say what is wrong */ Ok(()) })
/// }
/// ```
const SCHEMA_CHANGES: &[(i64, SchemaCheck)] = &[];

/// The tables of the released schema, with the columns a running group may change in a row
/// (a position's progress and claims, a parked message's retries): every other column of
/// every row must come through the upgrade as it was. The outbox is left out: the new
/// relay empties it, and the output topic shows that each row was published once.
const KEPT: &[(&str, &[&str])] = &[
    ("exactly._migrations", &[]),
    ("exactly.offsets", &["next_offset", "epoch", "updated_at"]),
    ("exactly.dead_letters", &[]),
    ("exactly.parked", &["attempts", "retry_at", "error"]),
    ("exactly.completed", &[]),
];

/// Input: `k{j}:{seq}` on partition `j % 2`; 200 before the upgrade, 100 while the new
/// instance starts, 100 once both instances share the groups, 100 after the old one stopped.
const INPUTS: usize = 500;
const KEYS: usize = 10;
const PARTITIONS: i32 = 2;
const BEFORE: usize = 200;
const DURING: usize = 100;
const BOTH: usize = 100;

/// The dead-lettering group's handler fails on these (all before the upgrade).
const FAILING: [&str; 3] = ["k1:3", "k4:7", "k8:12"];
/// The parking group's handler fails this key until the old instance is gone.
const BLOCKED: &str = "k3";
/// Held inside its transaction when the upgrade starts: the key-concurrent group has
/// completed offsets above it, which the new instance must skip.
const HELD: &str = "k0:15";
/// Its partition (`k0`'s); the other one is done with the first input by then.
const HELD_PARTITION: i32 = 0;

/// The three groups the runtimes run, on one input topic: `copy` emits each message to the
/// output topic through the outbox (with key-level concurrency), `dead` dead-letters
/// [`FAILING`], `park` parks [`BLOCKED`].
struct Groups {
    copy: Recorder,
    dead: Recorder,
    park: Recorder,
    hold: Arc<Hold>,
}

impl Groups {
    fn new(input: &str, output: &str) -> Self {
        let hold =
            Arc::new(Hold { payloads: vec![HELD.to_owned()], gate: Semaphore::new(0), waiting: AtomicUsize::new(0) });
        let mut copy = Recorder::new(input, &unique("copy"), "");
        copy.emit_to = Some(output.to_owned());
        copy.key_concurrency = 4;
        copy.hold = Some(Arc::clone(&hold));
        let mut dead = Recorder::new(input, &unique("dead"), "");
        dead.fail_on = FAILING.map(String::from).to_vec();
        dead.retry = Some(RetryPolicy::default().max_attempts(2).initial_backoff(Duration::from_millis(20)));
        let mut park = Recorder::new(input, &unique("park"), "");
        park.key_parking = true;
        park.blocked_keys = true;
        // Retries never run out: the key waits until it is unblocked.
        park.retry = Some(
            RetryPolicy::default()
                .max_attempts(10_000)
                .initial_backoff(Duration::from_millis(50))
                .max_backoff(Duration::from_millis(300)),
        );
        Self { copy, dead, park, hold }
    }

    /// A runtime running the three groups, recording its effects as `instance`.
    fn runtime(&self, url: &str, instance: &str) -> RuntimeBuilder {
        let named = |recorder: &Recorder| Recorder { instance: instance.to_owned(), ..recorder.clone() };
        // Batches of 5: the held message's lane holds a few others, the other lanes go on,
        // and the partition reads 50 messages above its position, all of the first input.
        builder(url)
            .batch(Batch::default().max_records(5))
            .handler(named(&self.copy))
            .handler(named(&self.dead))
            .handler(named(&self.park))
    }
}

async fn upgrade_from(release: &str) -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let database = released_database(release).await?;
    let pool = database.pool().await?;
    create_effects_table(&pool).await?;
    create_blocked_keys_table(&pool).await?;
    sqlx::query("INSERT INTO blocked_keys VALUES ($1)").bind(BLOCKED).execute(&pool).await?;
    let (input, output) = (kafka.unique_topic("in", PARTITIONS).await?, kafka.unique_topic("out", PARTITIONS).await?);
    let groups = Groups::new(&input, &output);
    let inputs = keyed_inputs_on(INPUTS, KEYS, PARTITIONS);

    // The release's deployment, before the upgrade. The current code stands in for the
    // release's runtime, with `migrate(false)`: it finds the tables as the release made them.
    produce(&kafka.client_config(), &input, inputs[..BEFORE].to_vec()).await?;
    let old = Running::start(kafka, groups.runtime(&database.url, "old").migrate(false)).await?;
    wait_for_the_release_state(kafka, &pool, &groups, &input).await?;
    let kept = Kept::take(&pool).await?;

    // The upgrade: a new instance starts with migrations on while the old one runs on, and
    // input keeps arriving.
    let feed = SteadyFeed::start(
        kafka.client_config(),
        input.clone(),
        inputs[BEFORE..BEFORE + DURING].to_vec(),
        10,
        Duration::from_millis(50),
    );
    let new = Running::start(kafka, groups.runtime(&database.url, "new").outbox_relay(unique("relay"))).await?;
    kept.check(&pool).await?;
    check_history(&pool, release).await?;
    groups.hold.gate.add_permits(1);
    let fed = feed.finish().await?;
    produce(&kafka.client_config(), &input, inputs[BEFORE + fed..BEFORE + DURING].to_vec()).await?;
    // Then the groups share their partitions between the two instances, and the new one
    // goes on from the positions the old one stored.
    for group in [&groups.copy.group, &groups.dead.group, &groups.park.group] {
        wait_group_settled(kafka, group, 2, WAIT).await?;
    }
    produce(&kafka.client_config(), &input, inputs[BEFORE + DURING..BEFORE + DURING + BOTH].to_vec()).await?;
    wait_until(WAIT, "the new instance to handle messages of the copying group", || async {
        Ok((instance_effects(&pool, &groups.copy.group, "new").await? > 0).then_some(()))
    })
    .await?;
    old.stop().await?;

    // After the upgrade: more input, the parked key unblocked.
    produce(&kafka.client_config(), &input, inputs[BEFORE + DURING + BOTH..].to_vec()).await?;
    sqlx::query("DELETE FROM blocked_keys").execute(&pool).await?;
    for group in [&groups.copy.group, &groups.dead.group, &groups.park.group] {
        caught_up(kafka, Store::Database(&pool), group, &input, WAIT).await?;
    }
    wait_until(WAIT, "the parked key to resume and the outbox to be emptied", || async {
        let parked = parked_messages(&pool, &groups.park.group).await?;
        Ok((parked == 0 && exactly::outbox::backlog(&pool).await? == 0).then_some(()))
    })
    .await?;
    new.stop().await?;

    let config = kafka.client_config();
    let (copy, park) = (&groups.copy.group, &groups.park.group);
    let handled_once = [
        ("copying group", FaultRun::key_concurrent(config.clone(), &inputs, &pool, copy, &input)),
        (
            "outbox",
            FaultRun {
                kafka: config.clone(),
                inputs: &inputs,
                effects: Effects::Records { topic: &output },
                positions: Positions::OutboxDrained { pool: &pool },
            },
        ),
        // Key order is the order that parking keeps (the parked key's messages come last).
        ("parking group", FaultRun::key_concurrent(config.clone(), &inputs, &pool, park, &input)),
    ];
    for (what, run) in handled_once {
        let problems = run.check().await?.problems();
        assert!(problems.is_empty(), "{what} after the upgrade from {release}: {problems:?}");
    }
    let redriven = redrive_dead_letters(&pool, &groups.dead).await?;
    assert_eq!(redriven, INPUTS as i64, "the dead-lettering group: each input handled once, re-driven ones included");
    let newest = fixture_release(release)?.newest();
    for (version, check) in SCHEMA_CHANGES {
        if *version > newest {
            check(&pool).await.with_context(|| format!("migration {version} after the upgrade from {release}"))?;
        }
    }
    Ok(())
}

/// A fresh database holding what `release` left: its fixture, loaded as it was dumped.
async fn released_database(release: &str) -> anyhow::Result<TestDatabase> {
    let database = Postgres::shared().await?.database().await?;
    let dump = std::fs::read_to_string(fixture(release))?;
    // A connection of its own: the dump empties `search_path`, which must not reach a pool.
    let mut conn = PgConnection::connect(&database.url).await?;
    sqlx::raw_sql(AssertSqlSafe(dump)).execute(&mut conn).await.with_context(|| format!("loading {release}"))?;
    conn.close().await?;
    Ok(database)
}

/// Waits until the old instance has put the release's tables in the state the upgrade must
/// keep, each row still until the upgrade is done: the dead letters and the parked key
/// written (their groups at the end of the input), the held message inside its transaction
/// with completed offsets above it (and the other partition at the end, none left there),
/// and the outbox filled with no relay to empty it.
async fn wait_for_the_release_state(kafka: &Kafka, pool: &PgPool, groups: &Groups, input: &str) -> anyhow::Result<()> {
    for group in [&groups.dead.group, &groups.park.group] {
        caught_up(kafka, Store::Database(pool), group, input, WAIT).await?;
    }
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM exactly.dead_letters WHERE group_id = $1")
        .bind(&groups.dead.group)
        .fetch_one(pool)
        .await?;
    assert_eq!(dead, FAILING.len() as i64, "dead letters before the upgrade");
    let parked = parked_messages(pool, &groups.park.group).await?;
    assert_eq!(parked, (BEFORE / KEYS) as i64, "the blocked key's messages parked before the upgrade");
    let ends = high_watermarks(kafka.client_config(), input, "read_uncommitted")?;
    let ends = &ends;
    wait_until(WAIT, "the held message in its transaction, completed offsets above it alone", || async move {
        let copy = &groups.copy.group;
        let (held, elsewhere): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE partition = $2), count(*) FILTER (WHERE partition <> $2)
               FROM exactly.completed WHERE group_id = $1",
        )
        .bind(copy)
        .bind(HELD_PARTITION)
        .fetch_one(pool)
        .await?;
        let mut others_done = elsewhere == 0;
        for &(partition, end) in ends.iter().filter(|(partition, _)| *partition != HELD_PARTITION) {
            others_done &= exactly::offsets::position(pool, copy, input, partition).await? == Some(end);
        }
        let waiting = groups.hold.waiting.load(Ordering::SeqCst) == 1;
        Ok((waiting && held > 0 && others_done).then_some(()))
    })
    .await?;
    assert!(exactly::outbox::backlog(pool).await? > 0, "no outbox rows before the upgrade");
    Ok(())
}

/// The rows of [`KEPT`] as they were before the upgrade, without their changing columns,
/// and the positions then.
struct Kept {
    tables: Vec<(&'static str, Vec<String>)>,
    positions: Vec<(String, i32, i64)>,
}

impl Kept {
    async fn take(pool: &PgPool) -> anyhow::Result<Self> {
        let positions = positions(pool).await?;
        let mut tables = Vec::new();
        for (table, changing) in KEPT {
            let sql = format!("SELECT (to_jsonb(t) - $1::text[])::text FROM {table} t");
            let rows: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql)).bind(*changing).fetch_all(pool).await?;
            anyhow::ensure!(!rows.is_empty(), "{table} is empty before the upgrade: the test would show nothing");
            tables.push((*table, rows));
        }
        Ok(Self { tables, positions })
    }

    /// Fails unless each row is still there once, its columns as they were (a migration may
    /// add columns: only the old ones are compared), and each position where it was or
    /// further on.
    async fn check(&self, pool: &PgPool) -> anyhow::Result<()> {
        let now = positions(pool).await?;
        for (group, partition, before) in &self.positions {
            let after = now.iter().find(|(g, p, _)| g == group && p == partition).map(|(_, _, next)| *next);
            anyhow::ensure!(
                after.is_some_and(|after| after >= *before),
                "the upgrade moved the position of {group} in partition {partition} from {before} to {after:?}"
            );
        }
        for (table, rows) in &self.tables {
            let sql = format!("SELECT count(*) FROM {table} t WHERE to_jsonb(t) @> $1::jsonb");
            let mut lost = Vec::new();
            for row in rows {
                let found: i64 = sqlx::query_scalar(AssertSqlSafe(sql.clone())).bind(row).fetch_one(pool).await?;
                if found != 1 {
                    lost.push(row);
                }
            }
            anyhow::ensure!(
                lost.is_empty(),
                "the upgrade lost or changed {} of the {} rows of {table}, such as {}",
                lost.len(),
                rows.len(),
                lost[0]
            );
        }
        Ok(())
    }
}

/// Every stored position: group, partition (of the one input topic), next offset.
async fn positions(pool: &PgPool) -> anyhow::Result<Vec<(String, i32, i64)>> {
    Ok(sqlx::query_as("SELECT group_id, partition, next_offset FROM exactly.offsets").fetch_all(pool).await?)
}

/// Fails unless the database has every migration of `core/migrations/` applied: the
/// upgrade ran what the release lacked.
async fn check_history(pool: &PgPool, release: &str) -> anyhow::Result<()> {
    let status = exactly::offsets::migration_status(pool).await?;
    let applied: Vec<i64> = status.iter().filter(|m| m.applied).map(|m| m.version).collect();
    let files: Vec<i64> = migration_files()?.iter().map(|m| m.version).collect();
    anyhow::ensure!(
        applied == files,
        "after the upgrade from {release}: migrations {applied:?} applied, core/migrations has {files:?}"
    );
    Ok(())
}

/// How many effects `instance` wrote for `group`.
async fn instance_effects(pool: &PgPool, group: &str, instance: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM effects WHERE group_id = $1 AND instance = $2")
        .bind(group)
        .bind(instance)
        .fetch_one(pool)
        .await?)
}

/// Re-drives the dead letters of `dead`'s group with a handler that no longer fails; checks
/// that each was there and handled; returns the group's effects, each input once.
async fn redrive_dead_letters(pool: &PgPool, dead: &Recorder) -> anyhow::Result<i64> {
    let letters: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT id, payload FROM exactly.dead_letters WHERE group_id = $1 ORDER BY message_offset")
            .bind(&dead.group)
            .fetch_all(pool)
            .await?;
    let payloads: Vec<String> = letters.iter().map(|(_, p)| String::from_utf8_lossy(p).into_owned()).collect();
    assert_eq!(payloads, FAILING, "the dead letters after the upgrade");
    let fixed = Recorder { fail_on: Vec::new(), instance: "redrive".into(), ..dead.clone() };
    let ids: Vec<i64> = letters.iter().map(|(id, _)| *id).collect();
    let redriven = exactly::dead_letters::redrive(pool, &fixed, &ids).await?;
    assert_eq!(redriven.handled, ids, "{redriven:?}");
    let (all, distinct) = effect_counts(pool, &dead.group).await?;
    assert_eq!(all, distinct, "the dead-lettering group handled a message twice");
    Ok(all)
}

// The guard.

/// One migration file of `core/migrations/`.
#[derive(Debug, Clone)]
struct MigrationFile {
    version: i64,
    file: String,
    /// What sqlx records and compares: SHA-384 of the file, in hex.
    checksum: String,
}

/// What a release's fixture records as applied: version and checksum (hex).
#[derive(Debug, Clone)]
struct Release {
    name: String,
    applied: Vec<(i64, String)>,
}

impl Release {
    fn newest(&self) -> i64 {
        self.applied.iter().map(|(version, _)| *version).max().unwrap_or(0)
    }
}

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn fixture(release: &str) -> PathBuf {
    workspace().join("integration-tests/fixtures/schema").join(release).join("schema.sql")
}

fn migration_files() -> anyhow::Result<Vec<MigrationFile>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(workspace().join("core/migrations"))? {
        let file = entry?.file_name().to_string_lossy().into_owned();
        let Some((version, name)) = file.strip_suffix(".sql").and_then(|stem| stem.split_once('_')) else {
            anyhow::bail!("core/migrations/{file} is not named VERSION_NAME.sql");
        };
        let sql = std::fs::read_to_string(workspace().join("core/migrations").join(&file))?;
        let migration = Migration::new(
            version.parse()?,
            Cow::Owned(name.to_owned()),
            MigrationType::Simple,
            AssertSqlSafe(sql).into_sql_str(),
            false,
        );
        files.push(MigrationFile { version: migration.version, checksum: hex(&migration.checksum), file });
    }
    files.sort_by_key(|m| m.version);
    Ok(files)
}

fn releases() -> anyhow::Result<Vec<Release>> {
    let mut releases = Vec::new();
    for entry in std::fs::read_dir(workspace().join("integration-tests/fixtures/schema"))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            releases.push(fixture_release(&entry.file_name().to_string_lossy())?);
        }
    }
    Ok(releases)
}

fn fixture_release(name: &str) -> anyhow::Result<Release> {
    let read = || recorded(&std::fs::read_to_string(fixture(name))?);
    Ok(Release { name: name.to_owned(), applied: read().with_context(|| format!("the fixture of {name}"))? })
}

/// The migrations a dump records as applied, from its `INSERT INTO exactly._migrations`
/// lines (`pg_dump --column-inserts`).
fn recorded(dump: &str) -> anyhow::Result<Vec<(i64, String)>> {
    let rows: Vec<(i64, String)> = dump
        .lines()
        .filter_map(|line| line.strip_prefix("INSERT INTO exactly._migrations "))
        .map(|row| {
            let values = row.split_once("VALUES (").context("no VALUES")?.1;
            let version = values.split(',').next().context("no version")?.trim().parse()?;
            let checksum = values.split_once("'\\x").context("no checksum")?.1;
            Ok((version, checksum.split('\'').next().unwrap_or_default().to_owned()))
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!rows.is_empty(), "no migration history (INSERT INTO exactly._migrations ...)");
    Ok(rows)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What is wrong, each with what to do about it; empty when released migrations are
/// unchanged, every release has an upgrade test and every migration an upgrade applies has
/// a check.
fn guard_problems(migrations: &[MigrationFile], releases: &[Release], tested: &[&str], checked: &[i64]) -> Vec<String> {
    let mut problems = Vec::new();
    for release in releases {
        for (version, checksum) in &release.applied {
            match migrations.iter().find(|m| m.version == *version) {
                None => problems.push(format!(
                    "release {} applied migration {version}, which core/migrations no longer has: put it back \
                     (a database that applied it is refused with VersionMissing({version}))",
                    release.name
                )),
                Some(m) if m.checksum != *checksum => problems.push(format!(
                    "core/migrations/{} changed after release {} applied it: a released migration never changes, \
                     since every database that applied it would be refused with VersionMismatch({version}) (its \
                     checksum, SHA-384 of the file, is {} in fixtures/schema/{}/schema.sql and {} now); restore \
                     it and put the change in a new migration",
                    m.file, release.name, checksum, release.name, m.checksum
                )),
                Some(_) => {}
            }
        }
        if !tested.contains(&release.name.as_str()) {
            problems.push(format!(
                "fixtures/schema/{0} has no upgrade test: add `upgrade_from_{1}: \"{0}\",` to `upgrade_tests!` in \
                 integration-tests/tests/upgrade.rs",
                release.name,
                release.name.replace('.', "_")
            ));
        }
    }
    for name in tested {
        if !releases.iter().any(|r| r.name == *name) {
            problems.push(format!(
                "the upgrade test from {name} has no fixture: make integration-tests/fixtures/schema/{name}/schema.sql \
                 with scripts/schema-fixture at that release's commit"
            ));
        }
    }
    if let Some(oldest) = releases.iter().min_by_key(|r| r.newest()) {
        for m in migrations.iter().filter(|m| m.version > oldest.newest() && !checked.contains(&m.version)) {
            problems.push(format!(
                "core/migrations/{} is newer than release {}, so the upgrade test from it applies the migration: \
                 add to SCHEMA_CHANGES in integration-tests/tests/upgrade.rs a check ({}, ...) of what it must keep \
                 or fill in on the rows the test leaves (add rows of any new table to what the test writes); when \
                 a release ships with it, freeze that release's schema with scripts/schema-fixture and add its \
                 upgrade test",
                m.file, oldest.name, m.version
            ));
        }
    }
    if releases.is_empty() {
        problems.push("no release in integration-tests/fixtures/schema: freeze one with scripts/schema-fixture".into());
    }
    problems
}

#[test]
fn released_migrations_are_unchanged_and_every_upgrade_is_tested() -> anyhow::Result<()> {
    let checked: Vec<i64> = SCHEMA_CHANGES.iter().map(|(version, _)| *version).collect();
    let problems = guard_problems(&migration_files()?, &releases()?, TESTED_RELEASES, &checked);
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n\n"));
    Ok(())
}

/// The guard on made-up histories: it says what to add for each kind of gap.
#[test]
fn the_guard_names_what_to_add() {
    let file = |version: i64, name: &str, checksum: &str| MigrationFile {
        version,
        file: format!("000{version}_{name}.sql"),
        checksum: checksum.into(),
    };
    let released = [Release { name: "0.1.0".into(), applied: vec![(1, "aa".into()), (2, "bb".into())] }];
    let today = [file(1, "offsets", "aa"), file(2, "outbox", "bb")];
    assert_eq!(guard_problems(&today, &released, &["0.1.0"], &[]), Vec::<String>::new());

    let changed = [file(1, "offsets", "aa"), file(2, "outbox", "cc")];
    let problems = guard_problems(&changed, &released, &["0.1.0"], &[]);
    assert!(
        matches!(problems.as_slice(), [p] if p.contains("0002_outbox.sql changed") && p.contains("VersionMismatch(2)")),
        "{problems:?}"
    );

    let deleted = [file(1, "offsets", "aa")];
    let problems = guard_problems(&deleted, &released, &["0.1.0"], &[]);
    assert!(matches!(problems.as_slice(), [p] if p.contains("VersionMissing(2)")), "{problems:?}");

    let newer = [file(1, "offsets", "aa"), file(2, "outbox", "bb"), file(3, "leases", "dd")];
    let problems = guard_problems(&newer, &released, &["0.1.0"], &[]);
    assert!(
        matches!(problems.as_slice(), [p] if p.contains("0003_leases.sql is newer") && p.contains("SCHEMA_CHANGES")),
        "{problems:?}"
    );
    assert!(guard_problems(&newer, &released, &["0.1.0"], &[3]).is_empty());

    let problems = guard_problems(&today, &released, &[], &[]);
    assert!(matches!(problems.as_slice(), [p] if p.contains("`upgrade_from_0_1_0: \"0.1.0\",`")), "{problems:?}");
    let problems = guard_problems(&today, &[], &["0.1.0"], &[]);
    assert!(problems.iter().any(|p| p.contains("scripts/schema-fixture")), "{problems:?}");
}

/// What the guard prevents: a released migration changed (here, its recorded checksum made
/// to differ, as an edit of the file would) is refused by `migrate`, so no instance starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_released_migration_is_refused_by_migrate() -> anyhow::Result<()> {
    let release = TESTED_RELEASES[0];
    let pool = released_database(release).await?.pool().await?;
    exactly::migrate(&pool).await.context("the fixture as released")?;
    let edited = sqlx::query("UPDATE exactly._migrations SET checksum = sha384(checksum) WHERE version = 3")
        .execute(&pool)
        .await?;
    assert_eq!(edited.rows_affected(), 1);
    match exactly::migrate(&pool).await {
        Err(exactly::Error::Migrate(sqlx::migrate::MigrateError::VersionMismatch(3))) => Ok(()),
        other => panic!("a changed migration 3 was not refused: {other:?}"),
    }
}
