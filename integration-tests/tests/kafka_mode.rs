//! Kafka mode (consume-transform-produce): output records and input offsets commit in one
//! Kafka transaction; unsafe producer settings are refused; a failing record stops only its
//! partition.

use std::time::Duration;

use exactly::{Error, Runtime};
use exactly_integration_tests::copier::Copier;
use exactly_integration_tests::copy_check::{keyed_inputs, verify_copy};
use exactly_integration_tests::support::{Running, assert_refused};
use exactly_integration_tests::{Input, Isolation, Kafka, produce, read_to_end, unique, wait_until};

const WAIT: Duration = Duration::from_secs(120);

fn kafka_mode() -> exactly::RuntimeBuilder {
    Runtime::builder().transactional_id(unique("tx")).revoke_grace(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_each_record_exactly_once_in_order() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("a", 3).await?, kafka.unique_topic("b", 3).await?);
    let records = keyed_inputs(600, 12);
    produce(&kafka.client_config(), &input, records.clone()).await?;

    let running = Running::start(kafka, kafka_mode().handler(Copier::new(&input, &output, &unique("copy")))).await?;
    wait_until(WAIT, "600 committed copies", || async {
        let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
        Ok((copies.len() >= 600).then_some(()))
    })
    .await?;
    running.stop().await?;

    let verdict = verify_copy(kafka, &output, &records).await?;
    assert_eq!(verdict.records, 600, "{verdict:?}");
    assert_eq!((verdict.duplicates, verdict.missing, verdict.out_of_order), (0, 0, 0), "{verdict:?}");
    Ok(())
}

#[tokio::test]
async fn unsafe_producer_settings_are_refused_with_a_reason() {
    for (key, value, reason) in [
        ("acks", "1", "all in-sync replicas"),
        ("enable.idempotence", "false", "twice"),
        ("max.in.flight.requests.per.connection", "10", "at most 5"),
        ("transaction.timeout.ms", "1000", "commit interval"),
    ] {
        let outcome = Runtime::builder()
            .brokers("127.0.0.1:1")
            .transactional_id("t")
            .producer_setting(key, value)
            .handler(Copier::new("a", "b", "g"))
            .build()
            .await;
        assert_refused(outcome, key, value, reason);
    }
    let acks_everywhere = Runtime::builder()
        .brokers("127.0.0.1:1")
        .transactional_id("t")
        .kafka_setting("acks", "0")
        .handler(Copier::new("a", "b", "g"))
        .build()
        .await;
    assert!(
        matches!(acks_everywhere, Err(Error::UnsafeSetting { .. })),
        "acks=0 through kafka_setting: {acks_everywhere:?}"
    );
    let no_id = Runtime::builder().brokers("127.0.0.1:1").handler(Copier::new("a", "b", "g")).build().await;
    assert!(matches!(no_id, Err(Error::Config(ref m)) if m.contains("transactional_id")), "{no_id:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_record_stops_its_partition_and_the_others_flow() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("a", 2).await?, kafka.unique_topic("b", 1).await?);
    let mut records = Vec::new();
    for i in 0..10 {
        records.push(Input::to(0, "k0", if i == 4 { "poison".to_owned() } else { format!("p0-{i}") }));
        records.push(Input::to(1, "k1", format!("p1-{i}")));
    }
    produce(&kafka.client_config(), &input, records).await?;
    let mut copier = Copier::new(&input, &output, &unique("copy"));
    copier.fail_on = vec![b"poison".to_vec()];
    let running = Running::start(kafka, kafka_mode().handler(copier)).await?;
    let reported = running.reported.clone();
    wait_until(WAIT, "partition 1 copied and the poison reported twice", || async {
        let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
        Ok((copies.len() == 14 && reported.count("partition 0 offset 4") >= 2).then_some(()))
    })
    .await?;
    running.stop().await?;
    let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
    let payloads: Vec<String> =
        copies.iter().map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned()).collect();
    assert_eq!(
        payloads.iter().filter(|p| p.starts_with("p0-")).count(),
        4,
        "partition 0 must stop before the poison: {payloads:?}"
    );
    assert_eq!(payloads.iter().filter(|p| p.starts_with("p1-")).count(), 10, "{payloads:?}");
    assert!(reported.all().iter().any(|e| e.contains("refusing this payload")), "{:?}", reported.all());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_joining_and_leaving_commit_or_abort_and_never_double() -> anyhow::Result<()> {
    let kafka = Kafka::shared().await?;
    let (input, output) = (kafka.unique_topic("a", 6).await?, kafka.unique_topic("b", 6).await?);
    let group = unique("churn");
    let inputs = keyed_inputs(1_800, 30);
    let start = |instance: &str| {
        let runtime = Runtime::builder()
            .transactional_id(format!("{group}-{instance}"))
            .revoke_grace(Duration::from_secs(5))
            .handler(Copier::new(&input, &output, &group));
        Running::start(kafka, runtime)
    };
    let mut slices = inputs.chunks(300);
    let mut feed = async || -> anyhow::Result<()> {
        if let Some(slice) = slices.next() {
            produce(&kafka.client_config(), &input, slice.to_vec()).await?;
        }
        Ok(())
    };
    // 1 -> 2 -> 3 -> 2 -> 1 instances while input keeps arriving; every revocation commits
    // the open transaction first.
    let a = start("a").await?;
    feed().await?;
    let b = start("b").await?;
    feed().await?;
    let c = start("c").await?;
    feed().await?;
    b.stop().await?;
    feed().await?;
    c.stop().await?;
    feed().await?;
    feed().await?;
    wait_until(WAIT, "1800 committed copies", || async {
        let copies = read_to_end(kafka.client_config(), &output, Isolation::ReadCommitted, WAIT).await?;
        anyhow::ensure!(copies.len() <= 1_800, "{} copies of 1800 inputs", copies.len());
        Ok((copies.len() == 1_800).then_some(()))
    })
    .await?;
    a.stop().await?;
    let verdict = verify_copy(kafka, &output, &inputs).await?;
    assert_eq!(
        (verdict.records, verdict.duplicates, verdict.missing, verdict.out_of_order),
        (1_800, 0, 0, 0),
        "{verdict:?}"
    );
    Ok(())
}
