//! The check every fault test ends with can fail: runs left exactly once pass it, and the
//! same runs with a duplicate, a lost effect, effects out of order, a position short of the
//! end or a transaction left open fail it, each counted where it belongs. No runtime runs
//! here: the runs are written by hand, then spoiled one way at a time.

use std::time::Duration;

use exactly_integration_tests::copy_check::keyed_inputs;
use exactly_integration_tests::faults::{FaultRun, high_watermarks};
use exactly_integration_tests::produce::hanging_transaction;
use exactly_integration_tests::support::topic_and_database;
use exactly_integration_tests::{Input, Kafka, produce, unique};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

/// Long enough for a settled run to be seen at its end, short enough to fail quickly.
const SETTLE: Duration = Duration::from_secs(3);

/// Writes the `effects` row a recorder would write for `input` at `offset`.
async fn record(pool: &sqlx::PgPool, topic: &str, group: &str, input: &Input, offset: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO effects (topic, partition, message_offset, key, payload, instance, group_id, txid)
         VALUES ($1, $2, $3, 'k', $4, 'by-hand', $5, 0)",
    )
    .bind(topic)
    .bind(input.partition.unwrap_or_default())
    .bind(offset)
    .bind(String::from_utf8_lossy(&input.payload).into_owned())
    .bind(group)
    .execute(pool)
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_fails_a_database_mode_run_that_doubled_lost_reordered_stopped_short_or_left_input_open()
-> anyhow::Result<()> {
    let (kafka, topic, _, pool) = topic_and_database(2).await?;
    exactly::migrate(&pool).await?;
    // Input i lands on partition i % 2 at offset i / 2.
    let inputs: Vec<Input> = (0..20).map(|i| Input::to(i % 2, "k", format!("v-{i}"))).collect();
    produce(&kafka.client_config(), &topic, inputs.clone()).await?;
    let group = unique("check");
    for (i, input) in inputs.iter().enumerate() {
        record(&pool, &topic, &group, input, i as i64 / 2).await?;
    }
    for partition in 0..2 {
        exactly::offsets::set(&pool, &group, &topic, partition, 10).await?;
    }
    let run = FaultRun::database(kafka.client_config(), &inputs, &pool, &group, &topic);
    let clean = run.check_within(SETTLE).await?;
    assert!(clean.problems().is_empty(), "a run left exactly once fails the check: {clean:?}");

    // v-0 applied a second time, after later offsets of its partition; v-19 never applied.
    record(&pool, &topic, &group, &inputs[0], 0).await?;
    sqlx::query("DELETE FROM effects WHERE payload = 'v-19'").execute(&pool).await?;
    // Partition 1 gets a record nobody handled; partition 0 a transaction nobody ends.
    produce(&kafka.client_config(), &topic, [Input::to(1, "k", "unhandled")]).await?;
    let hanging = hanging_transaction(&kafka.client_config(), &unique("hanging"), &topic, 0)?;
    let spoiled = run.check_within(SETTLE).await;
    hanging.abort_transaction(Duration::from_secs(30))?;
    let spoiled = spoiled?;
    assert_eq!(
        (spoiled.applied, spoiled.duplicates, spoiled.unexpected, spoiled.missing, spoiled.out_of_order),
        (20, 1, 0, 1, 1),
        "{spoiled:?}"
    );
    assert_eq!(spoiled.positions_behind.len(), 2, "both partitions grew past their stored positions: {spoiled:?}");
    assert_eq!(spoiled.open_transactions.len(), 1, "the input's open transaction: {spoiled:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_fails_a_kafka_mode_run_that_doubled_invented_reordered_stopped_short_or_left_a_transaction_open()
-> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("check-in", 2).await?, kafka.unique_topic("check-out", 2).await?);
    let inputs = keyed_inputs(40, 4);
    // A perfect copy, and the input's offsets committed at its end.
    produce(&kafka.client_config(), &input, inputs.clone()).await?;
    produce(&kafka.client_config(), &output, inputs.clone()).await?;
    let group = unique("check");
    commit_at_end(kafka, &group, &input)?;
    let run = FaultRun::kafka_mode(kafka.client_config(), &inputs, &input, &output, &group);
    let clean = run.check_within(SETTLE).await?;
    assert!(clean.problems().is_empty(), "a run left exactly once fails the check: {clean:?}");

    // k0:0 copied again after k0:1..k0:9, and a record of no input; the input grows past
    // the committed offsets; a transaction on the output is never ended.
    let invented = Input::bytes("k9:0").key("k9");
    produce(&kafka.client_config(), &output, [inputs[0].clone(), invented]).await?;
    produce(&kafka.client_config(), &input, [Input::to(0, "k", "k:100"), Input::to(1, "k", "k:101")]).await?;
    let hanging = hanging_transaction(&kafka.client_config(), &unique("hanging"), &output, 0)?;
    let spoiled = run.check_within(SETTLE).await;
    hanging.abort_transaction(Duration::from_secs(30))?;
    let spoiled = spoiled?;
    assert_eq!(
        (spoiled.applied, spoiled.duplicates, spoiled.unexpected, spoiled.missing, spoiled.out_of_order),
        (42, 1, 1, 0, 1),
        "{spoiled:?}"
    );
    assert_eq!(spoiled.positions_behind.len(), 2, "both input partitions grew past their commits: {spoiled:?}");
    assert_eq!(spoiled.open_transactions.len(), 1, "the output's open transaction: {spoiled:?}");
    Ok(())
}

/// Commits, for `group`, every partition of `topic` at its end, as a finished run would.
fn commit_at_end(kafka: &Kafka, group: &str, topic: &str) -> anyhow::Result<()> {
    let consumer: BaseConsumer = kafka.client_config().set("group.id", group).create()?;
    let mut offsets = TopicPartitionList::new();
    for (partition, end) in high_watermarks(kafka.client_config(), topic, "read_uncommitted")? {
        offsets.add_partition_offset(topic, partition, Offset::Offset(end))?;
    }
    consumer.commit(&offsets, CommitMode::Sync)?;
    Ok(())
}
