//! The `exactly` tool against real Kafka and PostgreSQL: every command, checking what it
//! printed and what it changed.

use std::process::Output;
use std::time::Duration;

use exactly::GroupProtocol;
use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::produce::hanging_transaction;
use exactly_integration_tests::recorder::{Recorder, effect_rows};
use exactly_integration_tests::support::{Running, builder, topic_and_database};
use exactly_integration_tests::{Input, Kafka, Postgres, committed_records, produce, unique, wait_until};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use sqlx::PgPool;

const WAIT: Duration = Duration::from_secs(90);

/// Runs `exactly` with `args` against `kafka` and the database at `url`.
fn exactly(kafka: &Kafka, url: &str, args: &[&str]) -> anyhow::Result<Output> {
    Ok(std::process::Command::new(env!("CARGO_BIN_EXE_exactly"))
        .args(args)
        .env("EXACTLY_BROKERS", kafka.bootstrap_servers())
        .env("EXACTLY_DATABASE_URL", url)
        .output()?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `exactly --json ...`, requires success and parses what it printed.
fn json(kafka: &Kafka, url: &str, args: &[&str]) -> anyhow::Result<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = exactly(kafka, url, &all)?;
    anyhow::ensure!(output.status.success(), "exactly {args:?} failed: {}", stderr(&output));
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn inputs(partitions: i32, count: usize, prefix: &str) -> Vec<Input> {
    (0..count).map(|i| Input::to(i as i32 % partitions, format!("k{i}"), format!("{prefix}-{i}"))).collect()
}

async fn stored(pool: &PgPool, group: &str, topic: &str) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT partition, next_offset, epoch FROM exactly.offsets WHERE group_id = $1 AND topic = $2 ORDER BY partition",
    )
    .bind(group)
    .bind(topic)
    .fetch_all(pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_tables_then_finds_them_up_to_date() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let database = Postgres::shared().await?.database().await?;
    let first = json(kafka, &database.url, &["migrate"])?;
    let statuses: Vec<&str> = first.as_array().into_iter().flatten().filter_map(|m| m["status"].as_str()).collect();
    assert_eq!(statuses, ["applied now"; 5], "{first}");
    let pool = database.pool().await?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'exactly' \
         AND table_name IN ('offsets', 'completed', 'outbox', 'dead_letters', 'parked')",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(tables, 5);
    let again = exactly(kafka, &database.url, &["migrate"])?;
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again).matches("already applied").count(), 5, "{}", stdout(&again));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_as_a_role_without_ddl_rights_says_which_right_is_missing() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let server = Postgres::shared().await?;
    let database = server.database().await?;
    let roles = server.least_privilege_roles(&database).await?;
    let refused = exactly(kafka, &roles.app_url, &["migrate"])?;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let message = stderr(&refused);
    for needle in
        ["cannot create or upgrade exactly's tables", &roles.app, "lacks CREATE on database", "exactly migrate"]
    {
        assert!(message.contains(needle), "`{needle}` missing: {message}");
    }
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    let owner = exactly(kafka, &roles.owner_url, &["migrate"])?;
    assert!(owner.status.success(), "{}", stderr(&owner));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_and_offsets_show_read_the_stored_positions_against_the_end() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(3).await?;
    let group = unique("cli-lag");
    let running = Running::start(kafka, builder(&url).handler(Recorder::new(&topic, &group, "a"))).await?;
    produce(&kafka.client_config(), &topic, inputs(3, 30, "a")).await?;
    wait_until(WAIT, "30 effects", || async { Ok((effect_rows(&pool, &group).await? == 30).then_some(())) }).await?;
    running.stop().await?;
    // 7 more that nobody processes: 3, 2 and 2 per partition.
    produce(&kafka.client_config(), &topic, inputs(3, 7, "b")).await?;

    let lag = json(kafka, &url, &["lag", "--group", &group, "--topic", &topic])?;
    assert_eq!(lag["mode"], "database", "{lag}");
    assert_eq!(lag["total_lag"], 7, "{lag}");
    let per_partition: Vec<(i64, i64, i64)> = lag["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (p["position"].as_i64().unwrap_or(-1), p["end"].as_i64().unwrap_or(-1), p["lag"].as_i64().unwrap_or(-1))
        })
        .collect();
    assert_eq!(per_partition, [(10, 13, 3), (10, 12, 2), (10, 12, 2)], "{lag}");

    let table = exactly(kafka, &url, &["offsets", "show", "--group", &group])?;
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert_eq!(text.matches(topic.as_str()).count(), 3, "{text}");
    let lag_table = stdout(&exactly(kafka, &url, &["lag", "--group", &group, "--topic", &topic])?);
    assert!(lag_table.lines().any(|l| l.contains("total") && l.contains(" 7 ")), "{lag_table}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_set_and_reset_refuse_a_live_group_and_fence_when_forced() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(2).await?;
    let group = unique("cli-set");
    let running = Running::start(kafka, builder(&url).handler(Recorder::new(&topic, &group, "a"))).await?;
    produce(&kafka.client_config(), &topic, inputs(2, 20, "a")).await?;
    wait_until(WAIT, "20 effects", || async { Ok((effect_rows(&pool, &group).await? == 20).then_some(())) }).await?;
    exactly_integration_tests::progress::wait_group_settled(kafka, &group, 1, WAIT).await?;

    let refused =
        exactly(kafka, &url, &["offsets", "set", "--group", &group, "--topic", &topic, "-p", "0", "--offset", "3"])?;
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("live member"), "{}", stderr(&refused));
    assert_eq!(stored(&pool, &group, &topic).await?.iter().map(|r| r.1).collect::<Vec<_>>(), [10, 10]);

    // Forced: the position moves and the epoch rises, fencing the live owner.
    let epoch_before = stored(&pool, &group, &topic).await?[0].2;
    let forced = json(
        kafka,
        &url,
        &["offsets", "set", "--group", &group, "--topic", &topic, "-p", "0", "--offset", "3", "--force"],
    )?;
    assert_eq!((forced["changes"][0]["before"].as_i64(), forced["changes"][0]["after"].as_i64()), (Some(10), Some(3)));
    let after = stored(&pool, &group, &topic).await?;
    assert_eq!((after[0].1, after[1].1), (3, 10));
    assert!(after[0].2 > epoch_before, "the epoch did not rise: {after:?}");
    running.stop().await?;

    // Stopped: a dry run changes nothing, then reset to earliest, latest and an offset.
    let dry = json(
        kafka,
        &url,
        &["offsets", "reset", "--group", &group, "--topic", &topic, "--to", "earliest", "--dry-run"],
    )?;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(stored(&pool, &group, &topic).await?.iter().map(|r| r.1).collect::<Vec<_>>(), [3, 10]);
    json(kafka, &url, &["offsets", "reset", "--group", &group, "--topic", &topic, "--to", "earliest"])?;
    assert_eq!(stored(&pool, &group, &topic).await?.iter().map(|r| r.1).collect::<Vec<_>>(), [0, 0]);
    json(kafka, &url, &["offsets", "reset", "--group", &group, "--topic", &topic, "--to", "latest", "-p", "1"])?;
    assert_eq!(stored(&pool, &group, &topic).await?.iter().map(|r| r.1).collect::<Vec<_>>(), [0, 10]);
    json(kafka, &url, &["offsets", "reset", "--group", &group, "--topic", &topic, "--to", "4"])?;
    assert_eq!(stored(&pool, &group, &topic).await?.iter().map(|r| r.1).collect::<Vec<_>>(), [4, 4]);

    // Restarted from the reset positions, the group processes offsets 4..10 again.
    let running = Running::start(kafka, builder(&url).handler(Recorder::new(&topic, &group, "b"))).await?;
    wait_until(WAIT, "12 effects re-applied", || async {
        let again: i64 = sqlx::query_scalar("SELECT count(*) FROM effects WHERE group_id = $1 AND instance = 'b'")
            .bind(&group)
            .fetch_one(&pool)
            .await?;
        Ok((again == 12).then_some(()))
    })
    .await?;
    running.stop().await?;

    // Not a time at all, and a date the calendar does not have (once taken as 3 March).
    let before = stored(&pool, &group, &topic).await?;
    for to in ["yesterday", "2026-02-31T00:00:00Z"] {
        let bad = exactly(kafka, &url, &["offsets", "reset", "--group", &group, "--topic", &topic, "--to", to])?;
        assert_eq!(bad.status.code(), Some(2), "--to {to}: {}", stderr(&bad));
        assert!(stderr(&bad).contains("expected earliest, latest, an offset, or a time"), "{}", stderr(&bad));
    }
    assert_eq!(stored(&pool, &group, &topic).await?, before, "a refused reset changes nothing");
    Ok(())
}

/// A group of the consumer group protocol, which `DescribeGroups` reports as `Dead` with no
/// members: the tool asks its coordinator with `ConsumerGroupDescribe`, so a live group is
/// still refused, and once its members have left the change goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_set_refuses_a_live_group_of_the_consumer_group_protocol() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(2).await?;
    let group = unique("cli-848");
    let runtime = builder(&url).group_protocol(GroupProtocol::Consumer).handler(Recorder::new(&topic, &group, "a"));
    let running = Running::start(kafka, runtime).await?;
    produce(&kafka.client_config(), &topic, inputs(2, 20, "a")).await?;
    wait_until(WAIT, "20 effects", || async { Ok((effect_rows(&pool, &group).await? == 20).then_some(())) }).await?;

    let set = ["offsets", "set", "--group", &group, "--topic", &topic, "-p", "0", "--offset", "3"];
    let refused = exactly(kafka, &url, &set)?;
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("1 live member(s) (state Stable)"), "{}", stderr(&refused));
    assert_eq!(stored(&pool, &group, &topic).await?.iter().map(|r| r.1).collect::<Vec<_>>(), [10, 10]);

    running.stop().await?;
    let changed = json(kafka, &url, &set)?;
    assert_eq!(
        (changed["changes"][0]["before"].as_i64(), changed["changes"][0]["after"].as_i64()),
        (Some(10), Some(3))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_reset_to_a_time_finds_the_first_offset_at_or_after_it() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    exactly::migrate(&pool).await?;
    let group = unique("cli-time");
    let producer: BaseProducer = kafka.client_config().create()?;
    // 2026-11-26T10:00:00Z is 1_795_687_200_000 ms: records one minute apart around it.
    for (i, minutes) in [-2i64, -1, 0, 1, 2].into_iter().enumerate() {
        let payload = format!("t{i}");
        producer
            .send(
                BaseRecord::<str, str>::to(&topic)
                    .key("k")
                    .payload(&payload)
                    .timestamp(1_795_687_200_000 + minutes * 60_000),
            )
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    let changed = json(
        kafka,
        &url,
        &[
            "offsets",
            "reset",
            "--group",
            &group,
            "--topic",
            &topic,
            "--mode",
            "database",
            "--to",
            "2026-11-26T10:00:00Z",
        ],
    )?;
    assert_eq!(changed["changes"][0]["after"], 2, "{changed}");
    assert_eq!(stored(&pool, &group, &topic).await?[0].1, 2);
    let later = "2026-11-26T11:00:30.500+01:00"; // 10:00:30.5 UTC
    json(kafka, &url, &["offsets", "reset", "--group", &group, "--topic", &topic, "--to", later])?;
    assert_eq!(stored(&pool, &group, &topic).await?[0].1, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_mode_group_is_shown_and_reset_through_its_committed_offsets() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("cli-in", 2).await?, kafka.unique_topic("cli-out", 2).await?);
    let database = Postgres::shared().await?.database().await?;
    let group = unique("cli-copy");
    let running = Running::start(
        kafka,
        exactly::Runtime::builder().transactional_id(unique("cli-tx")).handler(Copier::new(&input, &output, &group)),
    )
    .await?;
    produce(&kafka.client_config(), &input, inputs(2, 12, "c")).await?;
    wait_until(WAIT, "12 copies", || async {
        Ok((committed_records(kafka.client_config(), &output).await?.len() == 12).then_some(()))
    })
    .await?;
    // Live: a reset is refused.
    let refused =
        exactly(kafka, &database.url, &["offsets", "reset", "--group", &group, "--topic", &input, "--to", "earliest"])?;
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    running.stop().await?;
    wait_until(WAIT, "the group to empty", || async {
        Ok((exactly_integration_tests::progress::group_state(kafka, &group)?.1 == 0).then_some(()))
    })
    .await?;

    let shown = json(kafka, &database.url, &["offsets", "show", "--group", &group, "--topic", &input])?;
    assert_eq!(shown["mode"], "kafka", "{shown}");
    let positions: Vec<i64> =
        shown["partitions"].as_array().into_iter().flatten().filter_map(|p| p["position"].as_i64()).collect();
    assert_eq!(positions, [6, 6], "{shown}");
    assert_eq!(shown["total_lag"], 0, "{shown}");

    json(kafka, &database.url, &["offsets", "reset", "--group", &group, "--topic", &input, "--to", "earliest"])?;
    let lag = json(kafka, &database.url, &["lag", "--group", &group, "--topic", &input])?;
    assert_eq!(lag["total_lag"], 12, "{lag}");
    // Nothing was written to PostgreSQL for a Kafka-mode group.
    let pool = database.pool().await?;
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'exactly' AND table_name = 'offsets'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(rows, 0, "the tool created tables in a database it only had to read");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_status_counts_waiting_rows_per_topic() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let database = Postgres::shared().await?.database().await?;
    let pool = database.pool().await?;
    exactly::migrate(&pool).await?;
    let empty = json(kafka, &database.url, &["outbox", "status"])?;
    assert_eq!((empty["rows"].as_i64(), empty["oldest_age_seconds"].is_null()), (Some(0), true), "{empty}");
    let mut tx = pool.begin().await?;
    for (topic, n) in [("orders", 3), ("payments", 2)] {
        for i in 0..n {
            exactly::outbox::enqueue(&mut tx, &exactly::Output::to(topic).key(format!("{i}")).payload("x")).await?;
        }
    }
    tx.commit().await?;
    let status = json(kafka, &database.url, &["outbox", "status"])?;
    assert_eq!(status["rows"], 5, "{status}");
    assert_eq!(status["per_topic"], serde_json::json!([["orders", 3], ["payments", 2]]), "{status}");
    assert!(status["oldest_age_seconds"].as_f64().is_some_and(|age| age >= 0.0), "{status}");
    let table = stdout(&exactly(kafka, &database.url, &["outbox", "status"])?);
    assert!(table.contains("orders") && table.contains("payments"), "{table}");
    Ok(())
}

async fn insert_dead_letter(
    pool: &PgPool,
    group: &str,
    topic: &str,
    offset: i64,
    payload: &[u8],
) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO exactly.dead_letters
             (group_id, topic, partition, message_offset, key, payload, header_names, header_values, error, attempts)
         VALUES ($1, $2, 0, $3, 'k', $4, ARRAY['trace'], ARRAY['abc'::bytea], 'the handler failed: no such customer', 3)
         RETURNING id",
    )
    .bind(group)
    .bind(topic)
    .bind(offset)
    .bind(payload)
    .fetch_one(pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_replayed_once_through_the_outbox() -> anyhow::Result<()> {
    let (kafka, topic, url, pool) = topic_and_database(1).await?;
    exactly::migrate(&pool).await?;
    let group = unique("cli-dead");
    let first = insert_dead_letter(&pool, &group, &topic, 5, b"order-5").await?;
    let second = insert_dead_letter(&pool, &group, &topic, 9, &[0xff, 0x00]).await?;

    let listed = json(kafka, &url, &["dead-letters", "list", "--group", &group])?;
    let ids: Vec<i64> = listed.as_array().into_iter().flatten().filter_map(|l| l["id"].as_i64()).collect();
    assert_eq!(ids, [first, second], "{listed}");
    let table = stdout(&exactly(kafka, &url, &["dead-letters", "list", "--group", &group])?);
    assert!(table.contains("no such customer"), "{table}");

    let shown = json(kafka, &url, &["dead-letters", "show", &second.to_string()])?;
    assert_eq!((shown["payload"].as_str(), shown["offset"].as_i64()), (Some("0xff00"), Some(9)), "{shown}");
    assert_eq!(shown["headers"], serde_json::json!([["trace", "abc"]]), "{shown}");
    let missing = exactly(kafka, &url, &["dead-letters", "show", "999999"])?;
    assert_eq!(missing.status.code(), Some(4));
    assert!(stderr(&missing).contains("there is no dead letter 999999"), "{}", stderr(&missing));

    let replayed = json(kafka, &url, &["dead-letters", "replay", "--group", &group, "--id", &first.to_string()])?;
    assert_eq!(replayed["moved"], serde_json::json!([first]), "{replayed}");
    assert_eq!(replayed["outbox_rows_waiting"], 1, "{replayed}");
    let again = json(kafka, &url, &["dead-letters", "replay", "--group", &group, "--id", &first.to_string()])?;
    assert_eq!(
        (again["moved"].as_array().map(Vec::len), again["missing"].clone()),
        (Some(0), serde_json::json!([first]))
    );
    let all = json(kafka, &url, &["dead-letters", "replay", "--group", &group, "--all"])?;
    assert_eq!(all["moved"], serde_json::json!([second]), "{all}");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM exactly.dead_letters WHERE group_id = $1")
        .bind(&group)
        .fetch_one(&pool)
        .await?;
    assert_eq!(left, 0);

    // A relay publishes the replayed records to their topic, once each, with their headers.
    let relay =
        exactly::outbox::Relay::new(unique("cli-relay"), kafka.bootstrap_servers(), pool.clone()).start().await?;
    let records = wait_until(WAIT, "the replayed records published", || async {
        let records = committed_records(kafka.client_config(), &topic).await?;
        Ok((records.len() >= 2).then_some(records))
    })
    .await?;
    relay.stop().await?;
    let payloads: Vec<Option<Vec<u8>>> = records.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, [Some(b"order-5".to_vec()), Some(vec![0xff, 0x00])]);
    assert_eq!(records[0].header("trace").as_deref(), Some("abc"));
    assert_eq!(records[0].header("exactly.replayed-from"), Some(format!("{topic}/0/5")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_transaction_is_listed_then_aborted_by_fencing_its_id() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let topic = kafka.unique_topic("cli-txn", 2).await?;
    let database = Postgres::shared().await?.database().await?;
    let url = &database.url;
    let clean = exactly(kafka, url, &["transactions", "list", "--topic", &topic])?;
    let text = stdout(&clean);
    assert!(text.contains("no transaction is ongoing on") && text.contains("held back"), "{text}");

    // A transactional producer that begins, writes, and never ends (as a killed instance).
    let transactional_id = unique("cli-hanging");
    let hanging = hanging_transaction(&kafka.client_config(), &transactional_id, &topic, 1)?;

    // Its coordinator names it, with the partition it holds back.
    let listing = json(kafka, url, &["transactions", "list", "--topic", &topic])?;
    let ours: Vec<&Value> = listing["transactions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["transactional_id"] == transactional_id.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "{listing}");
    assert_eq!(ours[0]["partitions"], serde_json::json!([format!("{topic}/1")]), "{listing}");
    assert_eq!((ours[0]["state"].as_str(), ours[0]["timeout_ms"].as_i64()), (Some("Ongoing"), Some(600_000)));
    assert!(ours[0]["open_for_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{listing}");
    let held = listing["held_partitions"].as_array().cloned().unwrap_or_default();
    assert_eq!(held.len(), 1, "{listing}");
    assert_eq!((held[0]["partition"].as_i64(), held[0]["last_stable_offset"].as_i64()), (Some(1), Some(0)));
    assert!(held[0]["open_for_seconds"].as_f64().is_some(), "{listing}");
    let table = stdout(&exactly(kafka, url, &["transactions", "list"])?);
    assert!(table.contains(&transactional_id), "{table}");

    // Fencing another id leaves it open: the tool says so and fails.
    let wrong = exactly(
        kafka,
        url,
        &["transactions", "abort", "--transactional-id", "not-it", "--topic", &topic, "--wait", "2"],
    )?;
    assert_eq!(wrong.status.code(), Some(5), "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("still open"), "{}", stderr(&wrong));

    let aborted =
        exactly(kafka, url, &["transactions", "abort", "--transactional-id", &transactional_id, "--topic", &topic])?;
    assert!(aborted.status.success(), "{}", stderr(&aborted));
    assert!(stdout(&aborted).contains("no transaction is open"), "{}", stdout(&aborted));
    // The old producer is fenced: it can no longer commit.
    assert!(hanging.commit_transaction(Duration::from_secs(30)).is_err(), "a fenced producer committed");
    assert!(committed_records(kafka.client_config(), &topic).await?.is_empty(), "the aborted record is visible");
    let after = json(kafka, url, &["transactions", "list", "--topic", &topic])?;
    assert_eq!(after["transactions"], serde_json::json!([]), "{after}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_sentence_with_the_cause_and_no_password() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let url = "postgres://app:s3cret-pw@127.0.0.1:1/orders";
    let down = exactly(kafka, url, &["outbox", "status"])?;
    assert_eq!(down.status.code(), Some(1));
    let message = stderr(&down);
    assert!(message.starts_with("error: cannot connect to PostgreSQL at 127.0.0.1:1/orders: "), "{message}");
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    assert!(!message.contains("s3cret-pw"), "the password leaked: {message}");

    let no_database = std::process::Command::new(env!("CARGO_BIN_EXE_exactly"))
        .args(["dead-letters", "list", "--group", "g"])
        .env_remove("EXACTLY_DATABASE_URL")
        .output()?;
    assert_eq!(no_database.status.code(), Some(2));
    assert!(
        stderr(&no_database).contains("pass --database-url or set EXACTLY_DATABASE_URL"),
        "{}",
        stderr(&no_database)
    );

    let unknown =
        exactly(kafka, url, &["lag", "--group", "g", "--topic", "t", "--mode", "kafka", "--brokers", "127.0.0.1:1"])?;
    assert_ne!(unknown.status.code(), Some(0));
    assert_eq!(stderr(&unknown).trim_end().lines().count(), 1, "{}", stderr(&unknown));

    // Secrets in the wrong place are named, never shown: a malformed or misspelt `-X`
    // setting, a misspelt URL parameter.
    let lag = ["lag", "--group", "g", "--topic", "t", "--mode", "kafka"];
    for (extra, code, named) in [
        (["-X", "s3cret-no-equals-sign"], 2, "is not `key=value`"),
        (["-X", "sasl.pasword=s3cret-pw"], 1, "sasl.pasword"),
    ] {
        let output = exactly(kafka, url, &[&lag[..], &extra[..]].concat())?;
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{message}");
        assert!(message.contains(named) && !message.contains("s3cret"), "{message}");
    }
    let misspelt = exactly(kafka, "postgres://app@127.0.0.1:1/orders?pasword=s3cret-pw", &["outbox", "status"])?;
    let message = stderr(&misspelt);
    assert_eq!(misspelt.status.code(), Some(2), "{message}");
    assert!(message.contains("pasword") && !message.contains("s3cret"), "{message}");
    Ok(())
}
